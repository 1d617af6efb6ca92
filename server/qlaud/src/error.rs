//! The one domain error of the server and its mapping onto HTTP.

use dropshot::{ClientErrorStatusCode, HttpError};

/// What can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No key, or a key that is unknown, revoked or disabled.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid key without the rights for this operation.
    #[error("{0}")]
    Forbidden(String),
    /// The object does not exist for this tenant. Another tenant's objects
    /// answer the same, so ids leak nothing.
    #[error("{kind} not found: {id}")]
    NotFound { kind: &'static str, id: String },
    /// The request is well-formed JSON but its values are not acceptable.
    #[error("{0}")]
    InvalidRequest(String),
    /// The object's state does not allow the operation.
    #[error("{0}")]
    Conflict(String),
    /// The key's spend cap leaves no room for the request (or requests in
    /// flight hold what is left).
    #[error("{0}")]
    SpendCapReached(String),
    /// The key's customer failed to pay; the key works again once paid.
    #[error("{0}")]
    KeySuspended(String),
    /// The model has no price, and qlaud never serves a model at $0 by
    /// accident.
    #[error("{0}")]
    Unpriced(String),
    /// The key's rate limit leaves no room in the current window.
    #[error("{}", .0.message)]
    RateLimited(RateLimit),
    /// A part of the server is not ready or not configured (the embedding
    /// model loading, no vector index); the message says which.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed; the details go to the log, not to the client.
    #[error("store error: {0}")]
    Store(#[from] sqlx::Error),
    /// Any other failure that is qlaud's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Error {
        Error::NotFound { kind, id: id.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::InvalidRequest(message.into())
    }

    /// A key whose customer failed to pay.
    pub fn key_suspended() -> Error {
        Error::KeySuspended(
            "this key is suspended because its customer's payment failed; it works again once \
             the invoice is paid"
                .into(),
        )
    }

    /// A key that was revoked or disabled since it was last seen.
    pub fn key_unusable() -> Error {
        Error::Unauthenticated("this API key is revoked or disabled".into())
    }
}

/// A refusal by a key's rate limit, with what the official clients read to
/// wait and retry.
#[derive(Clone, Debug)]
pub struct RateLimit {
    pub message: String,
    pub retry_after_ms: i64,
    /// The limits and what is left of them in the window.
    pub budget: RateBudget,
}

impl RateLimit {
    /// `retry-after` (whole seconds, rounded up) and `retry-after-ms`, which
    /// `openai` and `anthropic` honour, then the budget in both APIs'
    /// headers (a 429 is read by whichever client sent the request).
    pub fn headers(&self) -> Vec<(String, String)> {
        let wait = self.retry_after_ms.max(1);
        let mut h = vec![
            ("retry-after".to_string(), ((wait + 999) / 1000).to_string()),
            ("retry-after-ms".to_string(), wait.to_string()),
        ];
        for dialect in [RateDialect::OpenAi, RateDialect::Anthropic] {
            self.budget.headers(dialect, |name, value| h.push((name.to_string(), value)));
        }
        h
    }
}

/// Which API's rate-limit headers an answer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDialect {
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the reset
    /// as a duration (`6m0s`, `1s`, `20ms`).
    OpenAi,
    /// `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`, the
    /// reset as an RFC 3339 time.
    Anthropic,
}

/// A key's rate limits in its current window and what is left of them, as
/// admission counted them: the one source of every rate-limit header, on a
/// 429 and on a success alike. Only limits set on the key or as the
/// tenant's default appear.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateBudget {
    /// When the window ends (Unix ms).
    pub reset_ms: i64,
    /// How long until then, from when it was counted (ms).
    pub reset_in_ms: i64,
    /// The requests limit and what is left of it in the window.
    pub requests: Option<(i64, i64)>,
    /// The tokens limit (input and output together) and what is left of it.
    pub tokens: Option<(i64, i64)>,
}

impl RateBudget {
    /// Whether any limit applies (else no header is sent).
    pub fn is_set(&self) -> bool {
        self.requests.is_some() || self.tokens.is_some()
    }

    /// Hands each header of `dialect` to `push`. Anthropic's separate
    /// input- and output-token limits have no counterpart in qlaud, whose
    /// tokens limit counts both: only its `tokens` headers are sent.
    pub fn headers(&self, dialect: RateDialect, mut push: impl FnMut(&'static str, String)) {
        if !self.is_set() {
            return;
        }
        let reset = match dialect {
            RateDialect::OpenAi => openai_duration(self.reset_in_ms.max(1)),
            RateDialect::Anthropic => chrono::DateTime::from_timestamp_millis(self.reset_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
        };
        let names: [[&'static str; 3]; 2] = match dialect {
            RateDialect::OpenAi => [
                [
                    "x-ratelimit-limit-requests",
                    "x-ratelimit-remaining-requests",
                    "x-ratelimit-reset-requests",
                ],
                [
                    "x-ratelimit-limit-tokens",
                    "x-ratelimit-remaining-tokens",
                    "x-ratelimit-reset-tokens",
                ],
            ],
            RateDialect::Anthropic => [
                [
                    "anthropic-ratelimit-requests-limit",
                    "anthropic-ratelimit-requests-remaining",
                    "anthropic-ratelimit-requests-reset",
                ],
                [
                    "anthropic-ratelimit-tokens-limit",
                    "anthropic-ratelimit-tokens-remaining",
                    "anthropic-ratelimit-tokens-reset",
                ],
            ],
        };
        for ([limit_name, remaining_name, reset_name], limit) in
            names.into_iter().zip([self.requests, self.tokens])
        {
            let Some((limit, remaining)) = limit else { continue };
            push(limit_name, limit.to_string());
            push(remaining_name, remaining.max(0).to_string());
            push(reset_name, reset.clone());
        }
    }
}

/// OpenAI's duration form (Go's): `20ms` under a second, else seconds
/// with up to three decimals, after whole minutes and hours (`1s`,
/// `59.95s`, `6m0s`, `1h0m0s`).
fn openai_duration(ms: i64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    let (s, frac) = (ms / 1000 % 60, ms % 1000);
    let mut seconds = s.to_string();
    if frac > 0 {
        seconds.push_str(format!(".{frac:03}").trim_end_matches('0'));
    }
    match (h, m) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for HttpError {
    fn from(error: Error) -> HttpError {
        let client = |code: &str, status, message: String| {
            HttpError::for_client_error(Some(code.to_string()), status, message)
        };
        match error {
            Error::Unauthenticated(m) => {
                client("Unauthorized", ClientErrorStatusCode::UNAUTHORIZED, m)
            }
            Error::Forbidden(m) => client("Forbidden", ClientErrorStatusCode::FORBIDDEN, m),
            e @ Error::NotFound { .. } => {
                client("NotFound", ClientErrorStatusCode::NOT_FOUND, e.to_string())
            }
            Error::InvalidRequest(m) => {
                client("InvalidRequest", ClientErrorStatusCode::BAD_REQUEST, m)
            }
            Error::Conflict(m) => client("Conflict", ClientErrorStatusCode::CONFLICT, m),
            Error::SpendCapReached(m) => {
                client("spend_cap_reached", ClientErrorStatusCode::PAYMENT_REQUIRED, m)
            }
            Error::KeySuspended(m) => {
                client("payment_failed", ClientErrorStatusCode::PAYMENT_REQUIRED, m)
            }
            Error::Unpriced(m) => client("model_not_priced", ClientErrorStatusCode::BAD_REQUEST, m),
            Error::RateLimited(r) => {
                let mut e = client(
                    "rate_limit_exceeded",
                    ClientErrorStatusCode::TOO_MANY_REQUESTS,
                    r.message.clone(),
                );
                for (name, value) in r.headers() {
                    let _ = e.add_header(name, value);
                }
                e
            }
            // dropshot's own 503 hides its message; this one says what
            // is missing.
            Error::Unavailable(m) => HttpError {
                status_code: dropshot::ErrorStatusCode::SERVICE_UNAVAILABLE,
                error_code: Some("ServiceUnavailable".to_string()),
                external_message: m.clone(),
                internal_message: m,
                headers: None,
            },
            e @ (Error::Store(_) | Error::Internal(_)) => {
                tracing::error!(error = %e, "request failed");
                HttpError::for_internal_error(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_headers_follow_each_api() {
        let budget = RateBudget {
            reset_ms: 1_767_225_660_000,
            reset_in_ms: 360_000,
            requests: Some((60, 59)),
            tokens: None,
        };
        let mut openai = Vec::new();
        budget.headers(RateDialect::OpenAi, |n, v| openai.push((n, v)));
        assert_eq!(
            openai,
            [
                ("x-ratelimit-limit-requests", "60".to_string()),
                ("x-ratelimit-remaining-requests", "59".to_string()),
                ("x-ratelimit-reset-requests", "6m0s".to_string()),
            ]
        );
        let mut anthropic = Vec::new();
        budget.headers(RateDialect::Anthropic, |n, v| anthropic.push((n, v)));
        assert_eq!(
            anthropic[2],
            ("anthropic-ratelimit-requests-reset", "2026-01-01T00:01:00Z".into())
        );
        let mut none = 0;
        RateBudget::default().headers(RateDialect::OpenAi, |_, _| none += 1);
        assert_eq!(none, 0);
        assert_eq!(openai_duration(20), "20ms");
        assert_eq!(openai_duration(1000), "1s");
        assert_eq!(openai_duration(59_950), "59.95s");
        assert_eq!(openai_duration(60_000), "1m0s");
        assert_eq!(openai_duration(61_500), "1m1.5s");
        assert_eq!(openai_duration(3_600_000), "1h0m0s");
    }
}
