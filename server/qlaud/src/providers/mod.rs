//! Provider adapters. Each owns its wire details: how to call it, how to
//! render an internal request (`ir`) for it, and how to read its answers,
//! streams and usage. The gateway reaches a provider through
//! [`ChatProvider`] for translated calls, and through the module itself only
//! for pass-through (a client that already speaks the provider's shape).
//! Adding a provider is one module here and one arm in [`chat`].

pub mod anthropic;
pub mod deepgram;
pub mod echo;
pub mod elevenlabs;
pub mod ir;
pub mod openai;
pub mod perplexity;

use std::time::Duration;

use http::HeaderMap;
use serde_json::Value;

use crate::config::{Model, Provider, ProviderKind};
use crate::gateway::error::GatewayError;
use ir::{Completion, Event};

/// Decodes one streamed answer, event by event (each call gets one whole
/// server-sent event).
pub type StreamDecoder = Box<dyn FnMut(&[u8]) -> Vec<Event> + Send>;

/// A chat provider reached over HTTP, spoken to in the internal
/// representation.
pub trait ChatProvider: Sync {
    /// The provider's request body for `req`, naming `model`'s upstream id.
    fn body(&self, req: &ir::Request, model: &Model) -> Value;
    /// Sets the output limit of a body from [`ChatProvider::body`] (to the
    /// reserved one, which may be lower than the request's).
    fn set_max_tokens(&self, body: &mut Value, max_tokens: u64);
    /// The POST of `body` to the provider's chat endpoint. `client_headers`
    /// carry what a provider forwards from its own clients (API versions).
    fn post(
        &self,
        http: &reqwest::Client,
        model: &Model,
        client_headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder, GatewayError>;
    /// A whole (non-streamed) answer decoded.
    fn completion(&self, answer: &Value) -> Completion;
    /// A decoder for one streamed answer.
    fn decoder(&self) -> StreamDecoder;
}

/// The provider behind `kind` for translated calls; `None` for the offline
/// `echo` model, which answers internal requests in-process
/// ([`echo::reply`]).
pub fn chat(kind: ProviderKind) -> Option<&'static dyn ChatProvider> {
    match kind {
        ProviderKind::Anthropic => Some(&anthropic::Anthropic),
        ProviderKind::Openai => Some(&openai::OPENAI),
        ProviderKind::OpenaiCompatible => Some(&openai::COMPATIBLE),
        ProviderKind::Perplexity => Some(&perplexity::Perplexity),
        // Media-only providers serve no chat model (configuration refuses
        // one), so this arm is never reached for a chat call.
        ProviderKind::Echo
        | ProviderKind::Elevenlabs
        | ProviderKind::Deepgram
        | ProviderKind::Local => None,
    }
}

/// The pooled HTTP client for one provider. Connections are kept alive and
/// reused across requests; there is no total timeout (streams may run long),
/// only a bound on each wait for the provider.
pub fn http_client(provider: &Provider) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(provider.timeout)
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .expect("the TLS backend initialises")
}
