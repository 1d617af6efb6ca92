//! A mock upstream speaking the real wire formats of Anthropic's Messages API
//! (`POST /v1/messages`, `POST /v1/messages/count_tokens`), OpenAI's Chat Completions API
//! (`POST /v1/chat/completions`, `GET /v1/models`) and OpenAI's Responses
//! API (`POST /v1/responses`), JSON and SSE, so the gateway can be tested
//! and benchmarked without the real providers.
//!
//! The Responses endpoint follows the OpenAI rules below (its auth, faults,
//! `greedy` and `nousage` modes and stats): `input` is a string (one user
//! message) or items; `instructions` counts like a system prompt; a
//! `function_call_output` item counts and answers like a tool message
//! (`function_call` items count nothing); a tool is `{type: "function",
//! name, …}`; `max_output_tokens` is the limit (4096 when greedy without
//! one); `"user": "cached"` reports `cached_tokens`. The answer is a
//! response object whose output is a `message` (`output_text`) and/or a
//! `function_call` (call id `call_mock1`), `status: "incomplete"` with
//! `incomplete_details.reason: "max_output_tokens"` when cut; a stream is
//! the typed events (`response.created` … `response.completed`, or
//! `response.incomplete`) with `sequence_number`s, usage only in the last.
//! Greedy requests also count `input_image` (`image_url`/`file_id`) at the
//! image allowance and `input_file` (`file_data`/`file_id`/`file_url`) at
//! the document allowance.
//!
//! Rules (deterministic, so tests can predict every number):
//! - Auth: Anthropic needs `x-api-key: mock-anthropic-key` and an
//!   `anthropic-version` header; OpenAI needs `Authorization: Bearer
//!   mock-openai-key`. Failures use each provider's error shape.
//! - Reply: "Hello from mock: " + the words of the last user message (text
//!   blocks/parts in order, each image adding the word "[image]").
//!   If the last message carries a tool result (Anthropic `tool_result` block,
//!   OpenAI `role: "tool"`), the reply is "The tool said: " + its text, or,
//!   when that text mentions "weather" and `tools` is non-empty, another call
//!   to the first tool (so tool loops can run several rounds). On Anthropic,
//!   a user message with both "weather" and "everywhere" calls the first
//!   tool twice at once (`toolu_mock1` for Paris, `toolu_mock2` for Rome).
//!   Otherwise, if `tools` is non-empty and the last message is a user message
//!   containing the word "weather", the reply is a call to the first tool with
//!   input `{"city":"Paris"}` (Anthropic adds the text "Let me check.").
//! - Input tokens: whitespace-separated words of the system prompt (Anthropic
//!   `system`; OpenAI system/developer messages are ordinary messages) and of
//!   every message's text (text blocks/parts, tool results), + 100 per image,
//!   + 10 per tool definition. Tool-use blocks and tool_calls count nothing.
//! - Anthropic's count_tokens answers `{"input_tokens": N}` by that rule
//!   (the `error-NNN` faults apply); it counts as a request in the stats,
//!   with no tokens, since it is free.
//! - Output tokens: words of the reply, + 10 for a tool call (not truncated).
//!   `max_tokens` / `max_completion_tokens` below the word count truncates
//!   the reply and stops with `max_tokens` / `length`.
//! - Cache: Anthropic requests with a `cache_control` key anywhere report
//!   `cache_read_input_tokens: 5` (input_tokens unchanged); OpenAI requests
//!   with `"user": "cached"` report `cached_tokens: min(5, input)`.
//! - Fault injection by model name substring: `error-500`, `error-429`
//!   (`retry-after: 1`), `error-400`, `error-529` (Anthropic overloaded; 503
//!   on OpenAI, which has no 529), `slow` (100 ms before the JSON and before
//!   every SSE event), `cut` (stream the start and 3 output tokens, then drop
//!   the connection; a JSON reply is cut in half), `hang` (never answer).
//!   Header `x-mock-delay-ms: N` waits N ms before answering. `flaky`
//!   (Anthropic): the first request with a given `messages` answers 429
//!   (`retry-after: 1`), the next one with the same messages answers. With
//!   `once` in the name as well, an `error-NNN` fault fails only the first
//!   request naming that model (since the mock started), so a retry succeeds.
//! - `nousage` in the model name: the answer reports no usage at all (no
//!   `usage` in JSON; OpenAI streams have no usage chunk and no `"usage":
//!   null` even with `include_usage`; Anthropic's `message_start` message and
//!   `message_delta` have no `usage`). The stats still count the tokens.
//! - `greedy` in the model name bills the most the real API could bill for
//!   the request (combinable with the faults and `nousage`):
//!   - Input tokens: the byte length of the body re-serialized as compact
//!     JSON, minus the byte length of each payload string's value, plus a
//!     fixed allowance per attachment: 100 per image (Anthropic `image` with
//!     source `base64` → `data`, `url` → `url`, `file` → `file_id`; OpenAI
//!     `image_url` → `image_url.url` or the string `image_url`) and 100,000
//!     per attachment whose size the request does not show (Anthropic
//!     `document` with source `base64`/`url`/`file`, payload as for images;
//!     OpenAI `file` → `file.file_data` and `file.file_id`, `input_audio` →
//!     `input_audio.data`). Recognised anywhere in the body (tool results,
//!     document `content` sources, …); malformed ones are plain JSON. No
//!     cached tokens.
//!   - Input above 1,000,000 tokens: a 400 in the provider's shape (OpenAI
//!     code `context_length_exceeded`, Anthropic "prompt is too long: N
//!     tokens > 1000000 maximum"), billing nothing. So is an output limit
//!     above 128,000, and on OpenAI an `n` that is not an integer in 1..=128.
//!   - Output per choice: exactly the limit (Anthropic `max_tokens`; OpenAI
//!     the larger of `max_tokens` and `max_completion_tokens`, 4096 if
//!     neither): the ordinary reply cut or padded with the word "more". A
//!     tool call is kept if its lead words + 10 fit, the filler before it.
//!     Stops with `max_tokens` / `length`.
//!   - OpenAI only (`n` is ignored elsewhere): `n` choices (index 0..n), each
//!     billed in full; streamed round-robin, one event per choice in turn. A
//!     `prediction` (`{"type": "content",
//!     "content": string | text parts}`) adds its text's byte length to each
//!     choice's output, reported as `completion_tokens_details.
//!     rejected_prediction_tokens` (always present, summed over choices) and
//!     counted as billed with each choice's finish chunk.
//! - Stats: every POST to a model endpoint counts as a request (failures too)
//!   and records its headers and JSON body; `max_in_flight` is the most
//!   model requests handled at once (from arrival until the response head). Tokens are counted as billed: the
//!   input (and cached) tokens once the response starts, output tokens as
//!   each SSE event carrying them is handed to the connection, so a cut or
//!   abandoned stream leaves what was actually sent (OpenAI streams count
//!   even without `include_usage`). `streams_finished` / `streams_dropped`
//!   count SSE answers sent to their end and those the client dropped
//!   before it.
//! - `POST /v1/embeddings` (OpenAI's shape): see `embeddings.rs`; `nousage`
//!   in the model name leaves `usage` out.
//! - OpenAI's Videos API (`POST /v1/videos`, `GET /v1/videos/{id}` and
//!   `/content`): see `video.rs`.
//! - Also `GET /_mock/stats` (the stats as JSON) and `POST /_mock/reset`, for
//!   clients of the `mock-upstream` binary.

mod anthropic;
pub mod audio;
mod embeddings;
mod greedy;
mod openai;
mod responses;
pub mod stripe;
#[cfg(test)]
mod tests;
pub mod video;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const ANTHROPIC_KEY: &str = "mock-anthropic-key";
pub const OPENAI_KEY: &str = "mock-openai-key";

/// Output tokens a tool call costs, whatever its arguments.
const TOOL_CALL_TOKENS: u64 = 10;
/// Input tokens per image.
const IMAGE_TOKENS: u64 = 100;
/// Input tokens per tool definition.
const TOOL_DEF_TOKENS: u64 = 10;
/// Cached tokens reported when the request asks for caching.
const CACHED_TOKENS: u64 = 5;
/// The arguments of every mock tool call.
const TOOL_ARGS: &str = r#"{"city":"Paris"}"#;
/// The same arguments as streamed, in two fragments.
const TOOL_ARG_FRAGMENTS: [&str; 2] = [r#"{"city":"#, r#""Paris"}"#];
/// Output-token-bearing SSE events a `cut` stream sends before dropping.
const CUT_AFTER_TOKENS: usize = 3;
const SLOW_STEP: Duration = Duration::from_millis(100);

/// What the mock has seen and reported so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MockStats {
    /// Model requests (Messages, Chat Completions and Responses), failed
    /// ones included.
    pub requests: u64,
    pub anthropic_requests: u64,
    pub openai_requests: u64,
    /// Model requests answered with a non-2xx status.
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Cache-read tokens reported: Anthropic's `cache_read_input_tokens`
    /// (on top of `input_tokens`), OpenAI's `cached_tokens` (part of it).
    pub cached_tokens: u64,
    /// The last model request's path, JSON body (None if not JSON) and
    /// headers (lower-case names, in arrival order).
    pub last_path: Option<String>,
    pub last_body: Option<Value>,
    pub last_headers: Vec<(String, String)>,
    /// Audio requests (transcriptions, speech, ElevenLabs, Deepgram), also
    /// counted in `requests`, and the upload bytes they carried.
    pub media_requests: u64,
    pub media_bytes: u64,
    /// The most model requests handled at once, from arrival until the
    /// response head is ready (the `x-mock-delay-ms` wait included), so a
    /// test can tell that requests really overlapped.
    pub max_in_flight: u64,
    /// Model requests per distinct `messages` (as compact JSON), so a test
    /// can tell how often each conversation reached the provider.
    pub by_messages: std::collections::BTreeMap<String, u64>,
    /// SSE answers sent to their last event, and those whose client went
    /// away before it (a `cut` fault's own break counts as neither).
    pub streams_finished: u64,
    pub streams_dropped: u64,
}

impl MockStats {
    /// The first value of header `name` (case-insensitive) on the last request.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.last_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "anthropic_requests": self.anthropic_requests,
            "openai_requests": self.openai_requests,
            "errors": self.errors,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "last_path": self.last_path,
            "last_body": self.last_body,
            "last_headers": self.last_headers,
            "max_in_flight": self.max_in_flight,
            "media_requests": self.media_requests,
            "media_bytes": self.media_bytes,
            "streams_finished": self.streams_finished,
            "streams_dropped": self.streams_dropped,
        })
    }
}

/// A running mock. Dropping it stops accepting connections; `stop` also
/// waits for the server task to finish.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MockUpstream {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start() -> MockUpstream {
        MockUpstream::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind mock upstream")
    }

    pub async fn bind(addr: SocketAddr) -> io::Result<MockUpstream> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            stats: Mutex::new(MockStats::default()),
            next_id: AtomicU64::new(1),
            in_flight: AtomicU64::new(0),
            shutdown: rx.clone(),
            videos: Mutex::default(),
            flaky: Mutex::default(),
            failed_once: Mutex::default(),
        });
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let mut rx = rx;
            let stopped = async move {
                // Err means the sender was dropped: stop as well.
                let _ = rx.wait_for(|stop| *stop).await;
            };
            let _ = axum::serve(listener, app).with_graceful_shutdown(stopped).await;
        });
        Ok(MockUpstream { addr, shared, shutdown, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Like `ANTHROPIC_BASE_URL`: no `/v1`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Like `OPENAI_BASE_URL`: with `/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn stats(&self) -> MockStats {
        self.shared.stats().clone()
    }

    pub fn reset_stats(&self) {
        *self.shared.stats() = MockStats::default();
    }

    /// Stops the server, ending hanging requests, and waits (up to 5 s) for it.
    pub async fn stop(self) {
        let MockUpstream { shutdown, task, .. } = self;
        let _ = shutdown.send(true);
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
            abort.abort();
        }
    }
}

/// State shared by the handlers.
struct Shared {
    stats: Mutex<MockStats>,
    next_id: AtomicU64,
    /// Model requests being handled now (see `MockStats::max_in_flight`).
    in_flight: AtomicU64,
    shutdown: watch::Receiver<bool>,
    /// Videos being "rendered", by id.
    videos: Mutex<std::collections::HashMap<String, video::MockVideo>>,
    /// The `messages` of `flaky` requests refused once already.
    flaky: Mutex<std::collections::HashSet<String>>,
    /// Models whose `once` fault has fired.
    failed_once: Mutex<std::collections::HashSet<String>>,
}

#[derive(Clone, Copy)]
enum Api {
    Anthropic,
    OpenAi,
}

impl Shared {
    fn videos(&self) -> MutexGuard<'_, std::collections::HashMap<String, video::MockVideo>> {
        self.videos.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stats(&self) -> MutexGuard<'_, MockStats> {
        // A panicking test must not take the other tests' stats with it.
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a model request; returns its sequence number for ids.
    fn record(&self, api: Api, path: &str, headers: &HeaderMap, body: Option<Value>) -> u64 {
        let headers = headers
            .iter()
            .map(|(n, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_owned(), v)
            })
            .collect();
        let mut s = self.stats();
        s.requests += 1;
        match api {
            Api::Anthropic => s.anthropic_requests += 1,
            Api::OpenAi => s.openai_requests += 1,
        }
        s.last_path = Some(path.to_owned());
        if let Some(messages) = body.as_ref().and_then(|b| b.get("messages")) {
            *s.by_messages.entry(messages.to_string()).or_default() += 1;
        }
        s.last_body = body;
        s.last_headers = headers;
        drop(s);
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn count(&self, input: u64, output: u64, cached: u64) {
        if input == 0 && output == 0 && cached == 0 {
            return;
        }
        let mut s = self.stats();
        s.input_tokens += input;
        s.output_tokens += output;
        s.cached_tokens += cached;
    }

    /// The `error-NNN` fault to answer `model` with, if any (a `once`
    /// fault only the first time).
    fn fault_for(&self, model: &str, faults: &Faults) -> Option<u16> {
        let code = faults.error?;
        if !faults.once {
            return Some(code);
        }
        let mut failed = self.failed_once.lock().unwrap_or_else(|e| e.into_inner());
        failed.insert(model.to_owned()).then_some(code)
    }

    fn count_error(&self) {
        self.stats().errors += 1;
    }

    /// Sleeps, cut short by shutdown; false if the mock is stopping.
    async fn sleep(&self, d: Duration) -> bool {
        let mut rx = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = rx.wait_for(|stop| *stop) => false,
        }
    }

    /// Applies `x-mock-delay-ms`; false if the mock is stopping.
    async fn header_delay(&self, headers: &HeaderMap) -> bool {
        let ms = headers
            .get("x-mock-delay-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        ms == 0 || self.sleep(Duration::from_millis(ms)).await
    }

    /// One model request, whichever API: recorded, answered by `answer` (or
    /// by `stopping` while the mock shuts down), errors counted, and tagged
    /// with the provider's request-id header.
    async fn serve<Fut: Future<Output = Response>>(
        &self,
        (api, path, id_header): (Api, &str, &'static str),
        headers: &HeaderMap,
        body: Bytes,
        stopping: fn() -> Response,
        answer: impl FnOnce(u64, Option<Value>) -> Fut,
    ) -> Response {
        let _in_flight = InFlight::enter(self);
        let body = serde_json::from_slice::<Value>(&body).ok();
        let n = self.record(api, path, headers, body.clone());
        let mut resp =
            if self.header_delay(headers).await { answer(n, body).await } else { stopping() };
        if !resp.status().is_success() {
            self.count_error();
        }
        if let Ok(v) = HeaderValue::from_str(&format!("req_mock_{n}")) {
            resp.headers_mut().insert(id_header, v);
        }
        resp
    }
}

/// Counts one request in flight until dropped, also when the client goes
/// away and the handler is dropped mid-wait.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> InFlight<'a> {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut s = shared.stats();
        s.max_in_flight = s.max_in_flight.max(now);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/models", get(models))
        .route("/v1/audio/transcriptions", post(audio::transcriptions))
        .route("/v1/audio/translations", post(audio::translations))
        .route("/v1/audio/speech", post(audio::speech))
        .route("/v1/text-to-speech/{voice_id}", post(audio::text_to_speech))
        .route("/v1/text-to-speech/{voice_id}/stream", post(audio::text_to_speech_stream))
        .route("/v1/listen", post(audio::listen))
        .route("/v1/videos", post(video::create))
        .route("/v1/videos/{id}", get(video::get))
        .route("/v1/videos/{id}/content", get(video::content))
        .route("/_mock/stats", get(stats_json))
        .route("/_mock/reset", post(reset))
        .fallback(not_found)
        // Base64 images make bodies big; the real APIs take tens of MB.
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(shared)
}

/// Anthropic's list when called with `x-api-key`, OpenAI's otherwise.
async fn models(headers: HeaderMap) -> Response {
    if headers.contains_key("x-api-key") {
        if let Some(resp) = anthropic::auth_error(&headers) {
            return resp;
        }
        let ids =
            [("claude-sonnet-4-5", "Claude Sonnet 4.5"), ("claude-haiku-4-5", "Claude Haiku 4.5")];
        let data: Vec<Value> = ids
            .iter()
            .map(|(id, name)| {
                json!({"type": "model", "id": id, "display_name": name,
                       "created_at": "2025-10-01T00:00:00Z"})
            })
            .collect();
        let body = json!({"data": data, "has_more": false,
                          "first_id": ids[0].0, "last_id": ids[1].0});
        return json_response(StatusCode::OK, &body);
    }
    if let Some(resp) = openai::auth_error(&headers) {
        return resp;
    }
    let data: Vec<Value> = ["gpt-4o-mini", "gpt-4o"]
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1715367049, "owned_by": "system"}))
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

async fn stats_json(State(shared): State<Arc<Shared>>) -> Response {
    let body = shared.stats().to_json();
    json_response(StatusCode::OK, &body)
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    *shared.stats() = MockStats::default();
    StatusCode::NO_CONTENT
}

async fn not_found() -> Response {
    let body = json!({"error": {"message": "mock: no such route", "type": "not_found_error"}});
    json_response(StatusCode::NOT_FOUND, &body)
}

// ---- shared by both APIs ----

/// Faults requested through the model name.
#[derive(Default)]
struct Faults {
    /// `error-NNN`: the status to fail with.
    error: Option<u16>,
    slow: bool,
    cut: bool,
    hang: bool,
    /// Bill the most the real API could (see `greedy`).
    greedy: bool,
    /// Answer without usage (still counted in the stats).
    nousage: bool,
    /// 429 the first time each conversation is seen.
    flaky: bool,
    /// Fail only the first request (see `once`).
    once: bool,
}

impl Faults {
    fn from_model(model: &str) -> Faults {
        let error =
            [500, 429, 400, 529].into_iter().find(|code| model.contains(&format!("error-{code}")));
        Faults {
            error,
            slow: model.contains("slow"),
            cut: model.contains("cut"),
            hang: model.contains("hang"),
            greedy: model.contains("greedy"),
            nousage: model.contains("nousage"),
            flaky: model.contains("flaky"),
            once: model.contains("once"),
        }
    }
}

/// What the last message asks of the mock.
enum Intent {
    /// Echo these words after "Hello from mock:".
    Echo(Vec<String>),
    /// Answer a tool result with this text.
    ToolResult(String),
    /// Call the tool of this name.
    CallTool(String),
    /// Call the tool of this name twice at once (Paris and Rome).
    CallToolTwice(String),
}

/// The reply, decided independently of the wire format.
struct Plan {
    words: Vec<String>,
    tool: Option<String>,
    /// Parallel calls of `tool`: 1, or 2 for `CallToolTwice`.
    calls: u64,
    /// Cut short by the token limit.
    truncated: bool,
}

impl Plan {
    /// `lead` is the text said before a tool call ("Let me check." on
    /// Anthropic, nothing on OpenAI).
    fn new(intent: Intent, max_tokens: Option<u64>, lead: &str) -> Plan {
        let calls = if matches!(intent, Intent::CallToolTwice(_)) { 2 } else { 1 };
        let (mut words, tool) = match intent {
            Intent::Echo(echo) => {
                let mut w = words_of("Hello from mock:");
                w.extend(echo);
                (w, None)
            }
            Intent::ToolResult(text) => {
                let mut w = words_of("The tool said:");
                w.extend(words_of(&text));
                (w, None)
            }
            Intent::CallTool(name) | Intent::CallToolTwice(name) => (words_of(lead), Some(name)),
        };
        let limit = max_tokens.map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        let truncated = tool.is_none() && words.len() > limit;
        if truncated {
            words.truncate(limit);
        }
        Plan { words, tool, calls, truncated }
    }

    fn text(&self) -> String {
        self.words.join(" ")
    }

    fn output_tokens(&self) -> u64 {
        self.words.len() as u64
            + if self.tool.is_some() { TOOL_CALL_TOKENS * self.calls } else { 0 }
    }

    /// The streamed text deltas: each word with a trailing space but the last.
    fn deltas(&self) -> impl Iterator<Item = String> + '_ {
        let last = self.words.len().saturating_sub(1);
        self.words.iter().enumerate().map(
            move |(i, w)| {
                if i == last { w.clone() } else { format!("{w} ") }
            },
        )
    }
}

fn words_of(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn mentions_weather(words: &[String]) -> bool {
    words
        .iter()
        .any(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).eq_ignore_ascii_case("weather"))
}

/// True if `key` appears as an object key anywhere in `v`.
fn has_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(m) => m.contains_key(key) || m.values().any(|v| has_key(v, key)),
        Value::Array(a) => a.iter().any(|v| has_key(v, key)),
        _ => false,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, Body::from(body.to_string())).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A JSON body cut in half and then the connection dropped (`cut` without
/// streaming).
fn cut_json_response(body: &Value) -> Response {
    let text = body.to_string();
    let half = Bytes::from(text.as_bytes()[..text.len() / 2].to_vec());
    let stream = futures::stream::once(async { Ok(half) }).chain(futures::stream::once(abort()));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The body error that makes hyper drop the connection without finishing the
/// response. The pause first lets hyper flush what was sent: an error
/// straight after buffered data would discard it, headers included.
async fn abort() -> io::Result<Bytes> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Err(io::Error::new(io::ErrorKind::ConnectionAborted, "mock: cut"))
}

/// One SSE event and the tokens it reports as billed.
struct SseEvent {
    data: Bytes,
    input: u64,
    output: u64,
    cached: u64,
}

impl SseEvent {
    fn new(data: String) -> SseEvent {
        SseEvent { data: Bytes::from(data), input: 0, output: 0, cached: 0 }
    }

    fn output(mut self, tokens: u64) -> SseEvent {
        self.output = tokens;
        self
    }

    fn input(mut self, input: u64, cached: u64) -> SseEvent {
        self.input = input;
        self.cached = cached;
        self
    }
}

/// Counts a stream dropped before its end (the client went away) when it
/// is dropped unended.
struct StreamEnd {
    shared: Arc<Shared>,
    ended: bool,
}

impl StreamEnd {
    fn not_dropped(&mut self) {
        self.ended = true;
    }
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.stats().streams_dropped += 1;
        }
    }
}

/// Streams `events` one body chunk each. Tokens are counted as each event is
/// handed to the connection; a client that goes away drops the stream, so
/// counting stops there.
fn sse_response(shared: Arc<Shared>, mut events: Vec<SseEvent>, faults: &Faults) -> Response {
    let cut = faults.cut;
    if cut {
        let mut seen = 0;
        let end = events
            .iter()
            .position(|e| {
                seen += usize::from(e.output > 0);
                seen == CUT_AFTER_TOKENS
            })
            // Fewer tokens than that: drop before the closing events.
            .unwrap_or_else(|| events.iter().rposition(|e| e.output > 0).unwrap_or(0));
        events.truncate(end + 1);
    }
    let slow = faults.slow;
    let state = (events.into_iter(), cut, StreamEnd { shared, ended: false });
    let stream = futures::stream::unfold(state, move |(mut it, cut, mut end)| async move {
        match it.next() {
            Some(ev) => {
                if slow && !end.shared.sleep(SLOW_STEP).await {
                    // Stopping: not the client's doing.
                    end.not_dropped();
                    return None;
                }
                end.shared.count(ev.input, ev.output, ev.cached);
                Some((Ok(ev.data), (it, cut, end)))
            }
            None if cut => {
                end.ended = true;
                Some((abort().await, (it, false, end)))
            }
            None => {
                if !end.ended {
                    end.ended = true;
                    end.shared.stats().streams_finished += 1;
                }
                None
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
