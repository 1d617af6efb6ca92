//! Rust client for [qlaud](https://github.com/qlaud), the billing gateway for
//! AI apps.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = qlaud::Client::new("http://127.0.0.1:8080", "qlk_live_…")?;
//! let key = client
//!     .mint_key()
//!     .body(qlaud::types::MintKeyRequest::builder().name("user_42").max_spend_usd(qlaud::types::Usd(5.0)))
//!     .send()
//!     .await?;
//! println!("{} {}", key.id, key.secret);
//! # Ok(()) }
//! ```
//!
//! Listings come a page at a time; `.stream()` walks every page:
//!
//! ```no_run
//! # async fn demo(client: qlaud::Client) -> Result<(), qlaud::Error<qlaud::types::Error>> {
//! use futures::TryStreamExt;
//! let keys: Vec<qlaud::types::Key> = client.list_keys().stream().try_collect().await?;
//! # Ok(()) }
//! ```
//!
//! The operations are generated from qlaud's OpenAPI document by progenitor
//! (`generated.rs`, never edited by hand); this file adds the client set-up
//! the spec cannot express.

#[allow(clippy::all, unused_imports, missing_docs)]
#[rustfmt::skip]
mod generated;

mod events;
mod jobs;
mod media;
mod raw;
mod retry;

// The README's examples compile as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

pub use events::{
    ChatChunk, ChunkChoice, ChunkDelta, ContentDelta, DeltaUsage, MessageDeltaBody, MessageEvent,
    ResponseEvent,
};
pub use generated::{ByteStream, ClientInfo, Error, ResponseValue, builder, types};
pub use media::{AudioFile, AudioStream};
/// Percent-encodes one path segment (an id) for [`Client::request_json`].
pub use progenitor_client::encode_path;
pub use raw::{EventStream, RawError, SseEvent};
/// The HTTP method of a [`Client::request_json`] call.
pub use reqwest::Method;
pub use retry::RetryPolicy;

/// The address `qlaud serve` listens on by default.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080";

/// A qlaud client. Every operation of the API is a method (through `Deref`
/// to the generated client): `client.mint_key().body(…).send().await`.
#[derive(Clone, Debug)]
pub struct Client {
    inner: generated::Client,
}

/// Why a client could not be built.
#[derive(Debug)]
pub struct BuildError(String);

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

impl Client {
    /// A client for the qlaud at `base_url` (such as `http://127.0.0.1:8080`)
    /// that authenticates with `api_key`.
    ///
    /// Unlike progenitor's default client it sets no total request timeout,
    /// so long model streams are not cut off; connecting times out after 10 s.
    pub fn new(base_url: impl AsRef<str>, api_key: impl AsRef<str>) -> Result<Client, BuildError> {
        let mut auth =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", api_key.as_ref()))
                .map_err(|_| {
                    BuildError("the API key contains characters not allowed in a header".into())
                })?;
        auth.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("qlaud-rust/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError(format!("building the HTTP client: {e}")))?;
        Ok(Client::with_http_client(base_url, http))
    }

    /// A client from `QLAUD_API_KEY` and `QLAUD_BASE_URL` (default
    /// [`DEFAULT_BASE_URL`]).
    pub fn from_env() -> Result<Client, BuildError> {
        let key = std::env::var("QLAUD_API_KEY")
            .map_err(|_| BuildError("QLAUD_API_KEY is not set".into()))?;
        let base = std::env::var("QLAUD_BASE_URL").unwrap_or_else(|_| DEFAULT_BASE_URL.into());
        Client::new(base, key)
    }

    /// A client over your own `reqwest::Client`, which must add the
    /// `Authorization: Bearer <key>` header itself.
    pub fn with_http_client(base_url: impl AsRef<str>, http: reqwest::Client) -> Client {
        let base = base_url.as_ref().trim_end_matches('/');
        Client { inner: generated::Client::new_with_client(base, http, RetryPolicy::default()) }
    }

    /// This client with another retry policy (see [`RetryPolicy`]; the
    /// default retries twice). `RetryPolicy { max_retries: 0, .. }` turns
    /// retrying off.
    pub fn with_retry_policy(self, policy: RetryPolicy) -> Client {
        let http = self.inner.client().clone();
        Client { inner: generated::Client::new_with_client(self.base_url(), http, policy) }
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> RetryPolicy {
        *self.inner.inner()
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.inner.baseurl()
    }
}

impl Deref for Client {
    type Target = generated::Client;

    fn deref(&self) -> &generated::Client {
        &self.inner
    }
}
