//! The one way qlaud calls a URL a tenant gave it (spend alerts today; tool
//! and job webhooks next). Every call is
//!
//! - **fenced** ([`fence`]): https only, no userinfo, and no loopback,
//!   private, link-local, metadata or other special address, checked on the
//!   literal URL and again on every address its name resolves to when the
//!   connection is made; `--allow-private-webhooks` opens http and private
//!   targets for development and tests;
//! - **signed** ([`sign`]) with Standard Webhooks headers and the tenant's
//!   `whsec_…` secret;
//! - **never redirected** (a 3xx is a failure: following it would re-send
//!   the signed body to a host nobody checked);
//! - **bounded** in time (the whole call, body included) and in the size of
//!   the answer it reads.
//!
//! Whether to retry is the caller's choice: [`retry`] with a [`Backoff`] for
//! deliveries that are safe to repeat (alerts, job webhooks), a single
//! [`Outbound::post_signed`] for tool calls, which may have side effects.

pub mod fence;
pub mod sign;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use fence::{Lookup, Policy, Refused, SystemLookup};
pub use sign::{WebhookSecret, message_id};

/// Time and size bounds of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The whole call: resolving, connecting, sending and reading the answer.
    pub timeout: Duration,
    /// The most answer-body bytes read; a longer answer is [`OutboundError::TooLarge`].
    pub max_response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { timeout: Duration::from_secs(10), max_response_bytes: 64 * 1024 }
    }
}

/// A 2xx answer.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub status: u16,
    pub body: Bytes,
}

/// Why a call did not deliver. Callers decide what each means: an error
/// tool result for the tool loop, a retry or a log line for alerts and jobs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The fence refused the URL or the address its name resolved to.
    #[error("refused: {0}")]
    Refused(String),
    /// The call did not finish within its time limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection (DNS failure, refused connection, TLS failure).
    #[error("could not connect: {0}")]
    Connect(String),
    /// The receiver answered with a status outside 2xx (3xx included:
    /// redirects are not followed).
    #[error("the receiver answered HTTP {0}")]
    Status(u16),
    /// The answer's body is longer than the call's limit.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    /// Anything else that broke the exchange midway.
    #[error("the call failed: {0}")]
    Failed(String),
}

impl OutboundError {
    /// Whether trying again later may succeed: network trouble, timeouts,
    /// 408, 429 and 5xx. A refusal, a 3xx or 4xx, or an answer too large
    /// will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            OutboundError::Timeout(_) | OutboundError::Connect(_) | OutboundError::Failed(_) => {
                true
            }
            OutboundError::Status(s) => *s == 408 || *s == 429 || *s >= 500,
            OutboundError::Refused(_) | OutboundError::TooLarge(_) => false,
        }
    }
}

/// One message: its id stays the same across retries, so the receiver can
/// recognise a repeat; its timestamp and signature are made per attempt.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    pub body: Bytes,
}

impl Message {
    pub fn new(body: impl Into<Bytes>) -> Message {
        Message { id: message_id(), body: body.into() }
    }
}

/// The fenced, signing HTTP client. One per process; cheap to share.
pub struct Outbound {
    http: reqwest::Client,
    policy: Policy,
}

impl Outbound {
    /// A client that resolves names with the system resolver.
    pub fn new(policy: Policy) -> Outbound {
        Outbound::with_lookup(policy, Arc::new(SystemLookup))
    }

    /// A client that resolves names with `lookup` (tests use a fake one).
    pub fn with_lookup(policy: Policy, lookup: Arc<dyn Lookup>) -> Outbound {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the name itself, past the fence.
            .no_proxy()
            .dns_resolver(Arc::new(fence::FencedResolver { policy, lookup }))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("qlaud-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend initialises");
        Outbound { http, policy }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Checks a URL's form and literal address, as when a tenant saves one.
    /// A URL a tenant saves (`field` names it): refused with a 400 naming
    /// the field when the policy refuses it or it is too long. It is
    /// checked again, with the addresses it resolves to, on every call.
    pub fn validate(&self, field: &str, url: &str) -> crate::error::Result<()> {
        if url.len() > qlaud_api::MAX_WEBHOOK_URL_BYTES {
            return Err(crate::error::Error::invalid(format!(
                "{field} is longer than {} bytes",
                qlaud_api::MAX_WEBHOOK_URL_BYTES
            )));
        }
        self.check_url(url)
            .map(|_| ())
            .map_err(|why| crate::error::Error::invalid(format!("{field} is not allowed: {why}")))
    }

    pub fn check_url(&self, url: &str) -> Result<url::Url, Refused> {
        self.policy.check_url(url)
    }

    /// POSTs `body` (JSON) to `url` once, signed with `secret`.
    pub async fn post_signed(
        &self,
        secret: &WebhookSecret,
        url: &str,
        body: impl Into<Bytes>,
        limits: Limits,
    ) -> Result<Delivered, OutboundError> {
        self.send(secret, url, &Message::new(body), limits, &[]).await
    }

    /// POSTs `message` to `url` once, signed with `secret` at the current
    /// time, with `extra` headers besides the signature.
    pub async fn send(
        &self,
        secret: &WebhookSecret,
        url: &str,
        message: &Message,
        limits: Limits,
        extra: &[(&'static str, String)],
    ) -> Result<Delivered, OutboundError> {
        let url = self.policy.check_url(url).map_err(|Refused(why)| OutboundError::Refused(why))?;
        // The receiver checks the timestamp against its own clock: real
        // time, never the billing clock.
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", secret.sign(&message.id, timestamp, &message.body))
            .body(message.body.clone());
        for (name, value) in extra {
            request = request.header(*name, value);
        }
        let call = async {
            let mut response = request.send().await.map_err(failure)?;
            let status = response.status();
            if !status.is_success() {
                return Err(OutboundError::Status(status.as_u16()));
            }
            let max = limits.max_response_bytes;
            if response.content_length().is_some_and(|n| n > max as u64) {
                return Err(OutboundError::TooLarge(max));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(failure)? {
                if body.len() + chunk.len() > max {
                    return Err(OutboundError::TooLarge(max));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Delivered { status: status.as_u16(), body: body.into() })
        };
        tokio::time::timeout(limits.timeout, call)
            .await
            .unwrap_or(Err(OutboundError::Timeout(limits.timeout)))
    }
}

/// What a reqwest error means here. A refusal by the resolver arrives
/// wrapped in the connector's errors: find it in the chain.
fn failure(e: reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut chain = Vec::new();
    while let Some(err) = source {
        if let Some(Refused(why)) = err.downcast_ref::<Refused>() {
            return OutboundError::Refused(why.clone());
        }
        chain.push(err.to_string());
        source = err.source();
    }
    let detail = chain.join(": ");
    if e.is_connect() { OutboundError::Connect(detail) } else { OutboundError::Failed(detail) }
}

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait before the second attempt; it doubles each time.
    pub first_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
}

impl Backoff {
    /// Spend alerts: 5 attempts over about 8 to 12 seconds.
    pub const ALERTS: Backoff = Backoff {
        attempts: 5,
        first_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(30),
    };
}

/// Runs `attempt` (given the attempt number, from 1) until it delivers, it
/// fails in a way a retry cannot fix, or the attempts run out; waits with
/// exponential backoff and jitter in between, so receivers that come back
/// are not hit by every sender at once. Returns the last outcome.
pub async fn retry<F, Fut>(backoff: Backoff, mut attempt: F) -> Result<Delivered, OutboundError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Delivered, OutboundError>>,
{
    let mut delay = backoff.first_delay;
    let mut n = 1;
    loop {
        match attempt(n).await {
            Err(e) if n < backoff.attempts && e.is_retryable() => {
                tracing::debug!(error = %e, attempt = n, "webhook attempt failed; retrying");
            }
            outcome => return outcome,
        }
        tokio::time::sleep(jitter(delay)).await;
        delay = (delay * 2).min(backoff.max_delay);
        n += 1;
    }
}

/// `delay` plus up to half of it again, at random.
fn jitter(delay: Duration) -> Duration {
    let mut r = [0u8; 1];
    getrandom::fill(&mut r).expect("the OS random number generator works");
    delay + delay * u32::from(r[0]) / 512
}

#[cfg(test)]
mod tests;
