//! Forwarding a provider's stream to the client as each event completes,
//! reading usage on the way, and settling when it ends.

use bytes::{Bytes, BytesMut};
use dropshot::Body;
use futures::StreamExt;
use http::Response;
use serde_json::Value;

use super::error::GatewayError;
use super::{Call, error_chain, sse, sse_response};
use crate::dialects::{ClientEncoder, Shape};
use crate::meter::call::Cancel;
use crate::meter::{Unreported, Usage};
use crate::providers::ir::Event;
use crate::providers::{anthropic, openai};
use crate::shutdown::Drain;
use crate::units::Quantities;

/// How a forwarded stream ended.
enum StreamEnd {
    /// The provider finished.
    Done,
    /// The client went away (or the job reading the stream was
    /// cancelled); the provider call was dropped with it.
    ClientGone,
    /// The provider's stream broke off.
    UpstreamFailed(String),
    /// The shutdown's drain deadline passed.
    Cut,
}

impl StreamEnd {
    fn status(&self) -> u16 {
        match self {
            StreamEnd::Done => 200,
            StreamEnd::ClientGone => 499,
            StreamEnd::UpstreamFailed(_) => 502,
            StreamEnd::Cut => 503,
        }
    }
}

/// Forwards upstream events to the client as each completes, through `tap`.
/// Returns when either side ends, the job reading the stream is cancelled,
/// or the shutdown's deadline passes; dropping the upstream body then
/// closes the provider connection, which stops generation.
async fn pump(
    upstream: reqwest::Response,
    tx: &sse::Sender,
    drain: &Drain,
    cancel: Cancel,
    mut tap: impl FnMut(Bytes) -> Option<Bytes>,
) -> StreamEnd {
    let mut framer = sse::Framer::default();
    let mut body = upstream.bytes_stream();
    let cut = drain.cut_off();
    tokio::pin!(cut);
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let chunk = tokio::select! {
            biased;
            () = &mut cut => return StreamEnd::Cut,
            // A job's reader that was cancelled is a client that left.
            () = &mut cancelled => return StreamEnd::ClientGone,
            chunk = body.next() => chunk,
        };
        let Some(chunk) = chunk else { break };
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return StreamEnd::UpstreamFailed(error_chain(&e)),
        };
        for event in framer.push(&chunk) {
            let Some(out) = tap(event) else { continue };
            // A client that reads slowly holds the send: the cut ends that too.
            let sent = tokio::select! {
                biased;
                () = &mut cut => return StreamEnd::Cut,
                sent = sse::send(tx, out) => sent,
            };
            if !sent {
                return StreamEnd::ClientGone;
            }
        }
    }
    match framer.rest() {
        Some(_) => StreamEnd::UpstreamFailed("the stream ended mid-event".into()),
        None => StreamEnd::Done,
    }
}

/// What a forwarded stream needs: turn each upstream event into what the
/// client gets, and say what the stream used so far.
pub trait StreamMeter: Send + 'static {
    fn tap(&mut self, raw: Bytes) -> Option<Bytes>;
    fn usage(&self) -> Usage;
    /// What the stream used beside tokens (a provider's built-in tool
    /// calls), billed with them.
    fn units(&self) -> Quantities {
        Quantities::default()
    }
    /// The event that tells the client the provider's stream broke off.
    fn error_event(&mut self, shape: Shape, err: GatewayError) -> Bytes {
        ClientEncoder::error_event(shape, err)
    }
    /// The whole response object of a Responses stream that completed.
    fn final_response(&mut self) -> Option<Value> {
        None
    }
}

impl StreamMeter for anthropic::StreamTap {
    fn tap(&mut self, raw: Bytes) -> Option<Bytes> {
        Some(self.on_event(raw))
    }
    fn usage(&self) -> Usage {
        self.final_usage()
    }
}

impl StreamMeter for openai::StreamTap {
    fn tap(&mut self, raw: Bytes) -> Option<Bytes> {
        self.on_event(raw)
    }
    fn usage(&self) -> Usage {
        self.final_usage()
    }
}

/// What a translated stream used, from its internal events: the provider's
/// final counts when they come, else the `Unreported` rule applied to what
/// came through.
pub(crate) struct UsageTracker {
    /// The provider's final counts, once they come.
    usage: Option<Usage>,
    /// Input counts reported at the start.
    input: Option<Usage>,
    /// Output the content that came through can stand for (its bytes).
    seen_output: u64,
    unreported: Unreported,
}

impl UsageTracker {
    pub(crate) fn new(unreported: Unreported) -> UsageTracker {
        UsageTracker { usage: None, input: None, seen_output: 0, unreported }
    }

    pub(crate) fn observe(&mut self, event: &Event) {
        match event {
            Event::Usage(u) => self.usage = Some(*u),
            Event::InputUsage(u) => self.input = Some(*u),
            Event::Text(t) | Event::ToolArgs(t) => self.seen_output += t.len().max(1) as u64,
            Event::ToolStart { name, .. } => self.seen_output += name.len() as u64,
            Event::Unseen(n) => self.seen_output += n,
            _ => {}
        }
    }

    pub(crate) fn usage(&self) -> Usage {
        if let Some(mut u) = self.usage {
            // Final counts without any input: the input went uncounted.
            if self.input.is_none()
                && u.input_tokens + u.cache_read_tokens + u.cache_write_tokens == 0
            {
                u.input_tokens = self.unreported.prompt_tokens;
            }
            return u;
        }
        self.unreported.usage(self.input, self.seen_output)
    }
}

/// A cross-shape stream: provider events → internal events → client events.
pub(super) struct Translator<D> {
    decode: D,
    encoder: ClientEncoder,
    tracker: UsageTracker,
}

impl<D: FnMut(&[u8]) -> Vec<Event> + Send + 'static> Translator<D> {
    pub(super) fn new(call: &Call, decode: D, wants_usage: bool) -> Translator<D> {
        let mut encoder = ClientEncoder::new(call.shape, call.model(), wants_usage);
        if let Some(keep) = &call.keep {
            encoder.echo(keep.echo());
        }
        Translator { decode, encoder, tracker: UsageTracker::new(call.admission().unreported) }
    }
}

impl<D> Translator<D> {
    /// Reports `tokens` as the input in the client's first event when the
    /// provider has not counted it by then (see `ClientEncoder::start_input`).
    pub(super) fn start_input(mut self, tokens: u64) -> Translator<D> {
        self.encoder.start_input(tokens);
        self
    }
}

impl<D: FnMut(&[u8]) -> Vec<Event> + Send + 'static> StreamMeter for Translator<D> {
    fn tap(&mut self, raw: Bytes) -> Option<Bytes> {
        let mut out = BytesMut::new();
        for event in (self.decode)(&raw) {
            self.tracker.observe(&event);
            for b in self.encoder.encode(event) {
                out.extend_from_slice(&b);
            }
        }
        (!out.is_empty()).then(|| out.freeze())
    }

    fn usage(&self) -> Usage {
        self.tracker.usage()
    }

    fn error_event(&mut self, shape: Shape, err: GatewayError) -> Bytes {
        self.encoder.error(shape, err)
    }

    fn final_response(&mut self) -> Option<Value> {
        self.encoder.final_response()
    }
}

/// What a stream ended by the shutdown's deadline tells its client.
pub(crate) fn cut_error() -> GatewayError {
    GatewayError::new(
        503,
        "qlaud is restarting: the answer was cut off here and is billed for what was sent; \
         retry the request",
    )
}

/// Sends the cut's final event, waiting briefly for a client that reads
/// slowly (the shutdown does not wait for it).
pub(crate) async fn send_cut_event(tx: &sse::Sender, event: Bytes) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sse::send(tx, event)).await;
}

/// Streams the provider's answer to the client through `meter`, then
/// settles what it used.
pub(super) fn stream(
    mut call: Call,
    upstream: reqwest::Response,
    mut meter: impl StreamMeter,
) -> Response<Body> {
    let (tx, body) = sse::channel();
    let response = sse_response(&call, body);
    let drain = call.drain.clone();
    let cancel = call.metered.cancel();
    drain.clone().spawn(async move {
        let end = pump(upstream, &tx, &drain, cancel, |e| meter.tap(e)).await;
        match &end {
            StreamEnd::UpstreamFailed(why) => {
                let err = GatewayError::new(502, format!("provider stream failed: {why}"));
                sse::send(&tx, meter.error_event(call.shape, err)).await;
            }
            StreamEnd::Cut => {
                drain.stream_cut();
                send_cut_event(&tx, meter.error_event(call.shape, cut_error())).await;
            }
            StreamEnd::Done | StreamEnd::ClientGone => {}
        }
        call.settle_with(end.status(), meter.usage(), meter.units()).await;
        // Kept before the body ends, so a client that read the stream to its
        // end can chain from the response at once.
        if let (StreamEnd::Done, Some(mut r)) = (&end, meter.final_response()) {
            call.keep(&mut r).await;
        }
    });
    response
}
