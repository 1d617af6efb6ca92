//! Retries with backoff, for every request the client sends (generated
//! operations through progenitor's `exec` hook, streams and JSON calls
//! directly).
//!
//! Only requests that cannot do anything twice are sent again: idempotent
//! methods (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`) after a transient
//! failure, and any request whose connection was refused before a byte went
//! out. A `POST` that reached qlaud (minting a key, calling a model) is never
//! repeated: it could mint twice or bill twice.

use std::time::Duration;

use progenitor_client::{ClientHooks, ClientInfo, OperationInfo};

use crate::generated;

/// How often and how patiently a client retries. The defaults match the
/// official OpenAI and Anthropic SDKs: two retries, backoff from 0.5 s up to
/// 8 s with jitter, and a server's `Retry-After` honoured up to 60 s.
///
/// ```no_run
/// # fn demo() -> Result<(), qlaud::BuildError> {
/// let patient = qlaud::Client::new("http://127.0.0.1:8080", "qlk_live_…")?
///     .with_retry_policy(qlaud::RetryPolicy { max_retries: 5, ..Default::default() });
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 turns retrying off.
    pub max_retries: u32,
    /// The wait before the first retry; it doubles for each one after.
    pub initial_backoff: Duration,
    /// The longest wait between attempts when the server names none.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// A server's `Retry-After` beyond this is not waited for: the error is
/// returned instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl RetryPolicy {
    /// Sends `request`, retrying as described in the module docs.
    pub(crate) async fn execute(
        &self,
        http: &reqwest::Client,
        mut request: reqwest::Request,
    ) -> reqwest::Result<reqwest::Response> {
        let idempotent = request.method().is_idempotent();
        let mut attempt = 0;
        loop {
            // Bodies that are streams cannot be cloned, and are sent once.
            let spare = (attempt < self.max_retries).then(|| request.try_clone()).flatten();
            let result = http.execute(request).await;
            let Some(next) = spare else { return result };
            let wait = match &result {
                Ok(resp) if idempotent && retryable_status(resp.status()) => {
                    match retry_after(resp) {
                        Some(wait) if wait > MAX_RETRY_AFTER => return result,
                        Some(wait) => wait,
                        None => self.backoff(attempt),
                    }
                }
                // Refused before anything was sent: safe for any method.
                Err(e) if e.is_connect() => self.backoff(attempt),
                Err(e) if idempotent && (e.is_timeout() || e.is_request()) => self.backoff(attempt),
                _ => return result,
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
            request = next;
        }
    }

    /// Exponential backoff with up to 25 % jitter taken off, so that many
    /// clients failing together do not retry together.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.initial_backoff.saturating_mul(1 << attempt.min(16)).min(self.max_backoff);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        base - base.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

/// Statuses that say "try again": timeouts, rate limits, and a server or
/// gateway that is down or overloaded.
fn retryable_status(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let value = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

// Auto-ref specialisation: this impl for `Client` (not `&Client`) replaces
// progenitor's default `exec`, so generated operations retry too.
impl ClientHooks<RetryPolicy> for generated::Client {
    async fn exec(
        &self,
        request: reqwest::Request,
        _info: &OperationInfo,
    ) -> reqwest::Result<reqwest::Response> {
        self.inner().execute(self.client(), request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let policy = RetryPolicy::default();
        for (attempt, full) in [(0, 500), (1, 1000), (2, 2000), (3, 4000), (4, 8000), (9, 8000)] {
            let wait = policy.backoff(attempt).as_millis();
            assert!(wait <= full && wait >= full * 3 / 4, "attempt {attempt}: {wait} ms");
        }
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for s in [408, 429, 500, 502, 503, 504, 529] {
            assert!(retryable_status(reqwest::StatusCode::from_u16(s).unwrap()));
        }
        for s in [200, 400, 401, 402, 403, 404, 409, 501] {
            assert!(!retryable_status(reqwest::StatusCode::from_u16(s).unwrap()));
        }
    }
}
