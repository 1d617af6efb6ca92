//! Retries and fallbacks: which model a failed call tries next, and when.
//!
//! Only failures before the provider answered are tried again ([`send`]
//! marks them retryable); once an answer's first byte is in, it is the
//! answer, whatever happens after. Every attempt is admitted and settled on
//! its own, so the cap holds across attempts (a dearer fallback that does
//! not fit is refused with 402 before it is sent) and each attempt is
//! billed for what its provider billed: a 429 or 5xx nothing.
//!
//! [`send`]: super::send

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::Gateway;
use super::error::GatewayError;
use crate::config::{Model, ModelKind, Retries};

/// The attempts of one request: its model, that model's retries, then each
/// of its fallbacks (a fallback's own fallbacks are not followed, so the
/// chain is as long as configured and cannot loop).
pub(super) struct Attempts<'a> {
    gateway: &'a Gateway,
    primary: Arc<Model>,
    model: Arc<Model>,
    /// The next of `primary`'s fallbacks to try.
    next_fallback: usize,
    /// Retries of `model` so far.
    retried: u32,
    policy: Retries,
}

impl<'a> Attempts<'a> {
    pub(super) fn new(gateway: &'a Gateway, primary: Arc<Model>) -> Attempts<'a> {
        Attempts {
            gateway,
            model: primary.clone(),
            primary,
            next_fallback: 0,
            retried: 0,
            policy: gateway.catalog.retries,
        }
    }

    /// The model the next attempt calls.
    pub(super) fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Whether an attempt may follow the current one (so a request is kept
    /// for it).
    pub(super) fn more(&self) -> bool {
        self.model.retries > self.retried || self.next_fallback < self.primary.fallbacks.len()
    }

    /// After a failed attempt: waits before the next one, or gives `err`
    /// back when it is the answer.
    pub(super) async fn next(&mut self, err: GatewayError) -> Result<(), GatewayError> {
        match self.after(&err) {
            Some(wait) => {
                tokio::time::sleep(wait).await;
                Ok(())
            }
            None => Err(err),
        }
    }

    /// What follows a failed attempt: the wait before the next one (whose
    /// model [`Attempts::model`] then names), or `None` when `err` is the
    /// answer.
    fn after(&mut self, err: &GatewayError) -> Option<Duration> {
        let hint = err.retryable?;
        let max = Duration::from_millis(self.policy.max_backoff_ms);
        if self.retried < self.model.retries {
            let shift = self.retried.min(16);
            let backoff = Duration::from_millis(self.policy.initial_backoff_ms << shift).min(max);
            let wait = hint.after().map_or(backoff, |asked| asked.max(backoff));
            // A provider asking for a longer pause than qlaud waits is
            // better left to a fallback or the client's own retry.
            if wait <= max {
                self.retried += 1;
                tracing::info!(
                    model = %self.model.name,
                    status = err.status,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "provider failed before answering; retrying"
                );
                return Some(wait);
            }
        }
        while let Some(name) = self.primary.fallbacks.get(self.next_fallback) {
            self.next_fallback += 1;
            // Configuration checked the name; an unpriced model is skipped.
            let Ok(next) = self.gateway.model(name, ModelKind::Chat) else { continue };
            tracing::info!(
                model = %self.model.name,
                status = err.status,
                fallback = %next.name,
                "provider failed before answering; falling back"
            );
            self.model = next;
            self.retried = 0;
            return Some(Duration::ZERO);
        }
        None
    }
}

/// The wait a provider's failure asks for: `retry-after-ms` (OpenAI's),
/// else `retry-after` in seconds (an HTTP date is not waited for).
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let ms = value("retry-after-ms").or_else(|| value("retry-after").map(|s| s * 1000.0))?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_millis(ms.min(3_600_000.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_both_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        h.remove("retry-after-ms");
        h.insert("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "-1".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
