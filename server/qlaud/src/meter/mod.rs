//! Metering: what a request used and what it costs, and the one place every
//! model endpoint hands its usage to.

pub mod call;
pub mod estimate;
pub mod lease;
pub mod ledger;
pub mod period;
mod recorder;

pub use call::{Meter, Metered};
pub use recorder::Recorder;

use crate::config::Model;
use crate::units::{self, Prices, Quantities, Unit};

/// Tokens of one request, split the way prices are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens billed at the input price (cache reads and writes not
    /// included).
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Every token of the call, as the rate limits count them.
    pub fn total_tokens(&self) -> i64 {
        let n = self
            .input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens);
        i64::try_from(n).unwrap_or(i64::MAX)
    }
}

/// What a model call used, per priced unit: its tokens, and the call
/// itself (`requests`).
pub fn quantities(usage: &Usage) -> Quantities {
    let mut q = Quantities::default();
    for (unit, n) in [
        (Unit::INPUT_TOKENS, usage.input_tokens),
        (Unit::OUTPUT_TOKENS, usage.output_tokens),
        (Unit::CACHE_READ_TOKENS, usage.cache_read_tokens),
        (Unit::CACHE_WRITE_TOKENS, usage.cache_write_tokens),
        (Unit::REQUESTS, 1),
    ] {
        if n > 0 {
            // Five units always fit.
            let _ = q.set(unit, n);
        }
    }
    q
}

/// The cost of a model call's `usage` at `prices`, in micro-dollars,
/// rounded up once per call.
pub fn cost_micros(prices: &Prices, usage: &Usage) -> i64 {
    units::cost_micros(prices, &quantities(usage))
}

/// What an answer is billed when its provider reported no usage (a stream
/// cut before its last event, a provider that reports none): input as the
/// provider reported it at the start, else at the reserved prompt bound;
/// output at what the content that came through can stand for (its bytes)
/// plus what the provider bills without showing it (rejected prediction
/// tokens), never more than the output the provider could generate.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unreported {
    pub prompt_tokens: u64,
    /// Output billed that no stream or answer shows.
    pub hidden_output_tokens: u64,
    pub max_output_tokens: u64,
}

impl Unreported {
    pub fn usage(&self, input: Option<Usage>, seen_output: u64) -> Usage {
        let input =
            input.unwrap_or(Usage { input_tokens: self.prompt_tokens, ..Default::default() });
        let output = seen_output.saturating_add(self.hidden_output_tokens);
        Usage { output_tokens: output.min(self.max_output_tokens), ..input }
    }
}

/// The operation a metered call served, as the request log names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    ChatCompletions,
    Embeddings,
    Responses,
    /// A model round of a thread turn.
    Threads,
    /// `POST /v1/audio/transcriptions`.
    Transcriptions,
    /// `POST /v1/audio/translations`.
    Translations,
    /// `POST /v1/audio/speech`.
    Speech,
    /// Deepgram's `POST /v1/listen`.
    Listen,
    /// ElevenLabs' `POST /v1/text-to-speech/{voice_id}[/stream]`.
    TextToSpeech,
    /// `POST /v1/videos` (settled when a poll sees the video's outcome).
    Videos,
    /// The search index's embedding of thread turns, billed to each
    /// thread's owner key (no HTTP request: the indexer's own).
    TurnEmbeddings,
    /// A name this version does not know (written by a newer one), kept
    /// as it was.
    Other(String),
}

impl Endpoint {
    pub fn as_str(&self) -> &str {
        match self {
            Endpoint::Messages => "messages",
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Threads => "threads",
            Endpoint::Transcriptions => "audio_transcriptions",
            Endpoint::Translations => "audio_translations",
            Endpoint::Speech => "audio_speech",
            Endpoint::Listen => "listen",
            Endpoint::TextToSpeech => "text_to_speech",
            Endpoint::Videos => "videos",
            Endpoint::TurnEmbeddings => "turn_embeddings",
            Endpoint::Other(name) => name,
        }
    }

    /// Whether its calls may be admitted under a budget lease: those
    /// settled by their own record. A video's reservation is held past
    /// its call and a turn embedding's may be given back, so theirs stay.
    pub fn leases(&self) -> bool {
        !matches!(self, Endpoint::Videos | Endpoint::TurnEmbeddings | Endpoint::Other(_))
    }

    pub fn parse(name: &str) -> Endpoint {
        match name {
            "messages" => Endpoint::Messages,
            "chat_completions" => Endpoint::ChatCompletions,
            "embeddings" => Endpoint::Embeddings,
            "responses" => Endpoint::Responses,
            "threads" => Endpoint::Threads,
            "audio_transcriptions" => Endpoint::Transcriptions,
            "audio_translations" => Endpoint::Translations,
            "audio_speech" => Endpoint::Speech,
            "listen" => Endpoint::Listen,
            "text_to_speech" => Endpoint::TextToSpeech,
            "videos" => Endpoint::Videos,
            "turn_embeddings" => Endpoint::TurnEmbeddings,
            other => Endpoint::Other(other.to_string()),
        }
    }
}

/// Where billing side effects hang off the meter (spend alerts), so the
/// meter calls out through one hook instead of importing them.
pub trait SpendHook: Send + Sync {
    /// These records were just settled in the store.
    fn settled(&self, records: &[RequestRecord]);
    /// A request was refused for the cap with nothing of the key's in
    /// flight: its window's budget is spent.
    fn cap_reached(&self, tenant_id: &str, key_id: &str, period_start_ms: i64);
}

/// A hook that does nothing (tools and tests that need no alerts).
pub struct NoHook;

impl SpendHook for NoHook {
    fn settled(&self, _: &[RequestRecord]) {}
    fn cap_reached(&self, _: &str, _: &str, _: i64) {}
}

/// One finished model request, ready to settle.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// The reservation it settles; also the request's id in the log.
    pub reservation_id: String,
    /// The lease it was admitted under instead of a reservation of its
    /// own, if any: settling moves its cost out of the lease.
    pub lease_id: Option<String>,
    pub tenant_id: String,
    pub key_id: String,
    pub model: String,
    pub provider: String,
    pub endpoint: Endpoint,
    pub streamed: bool,
    /// The HTTP status the client got (for a stream: 200, 499 when the
    /// client went away first, 502 when the provider broke off; 0 when
    /// crash recovery settled it).
    pub status: u16,
    pub usage: Usage,
    /// What it used per priced unit (its tokens and the request itself).
    pub quantities: Quantities,
    pub cost_micros: i64,
    /// What admission held for it, released by settling.
    pub reserved_micros: i64,
    pub period_start_ms: i64,
    /// The rate-limit window admission counted it in, and the tokens it
    /// counted there (settlement gives back what went unused).
    pub rate_window_ms: i64,
    pub reserved_tokens: i64,
    pub latency_ms: i64,
    pub created_ms: i64,
    /// Settled at the reserved amount because its usage was never seen
    /// (qlaud stopped mid-request).
    pub recovered: bool,
}

impl RequestRecord {
    pub fn cost_for(model: &Model, q: &Quantities) -> i64 {
        model.prices.as_ref().map_or(0, |p| units::cost_micros(p, q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rounds_up_to_the_micro() {
        let prices = Prices::tokens(3_000_000, 15_000_000, 300_000, 3_750_000);
        // 1 input token at $3/Mtok = 3 micro-dollars exactly.
        assert_eq!(cost_micros(&prices, &Usage { input_tokens: 1, ..Default::default() }), 3);
        let u = Usage {
            input_tokens: 1000,
            output_tokens: 500,
            cache_read_tokens: 1,
            cache_write_tokens: 0,
        };
        // 3000 + 7500 + 0.3 → 10501 (rounded up).
        assert_eq!(cost_micros(&prices, &u), 10_501);
        assert_eq!(cost_micros(&prices, &Usage::default()), 0);
    }
}
