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
    /// When the window ends (Unix ms).
    pub reset_ms: i64,
    /// The requests limit and what is left of it in the window, if any.
    pub requests: Option<(i64, i64)>,
    /// The tokens limit and what is left of it, if any.
    pub tokens: Option<(i64, i64)>,
}

impl RateLimit {
    /// `retry-after` (whole seconds, rounded up) and `retry-after-ms`, which
    /// `openai` and `anthropic` honour; OpenAI's `x-ratelimit-*` and
    /// Anthropic's `anthropic-ratelimit-*` headers.
    pub fn headers(&self) -> Vec<(String, String)> {
        let wait = self.retry_after_ms.max(1);
        let mut h = vec![
            ("retry-after".to_string(), ((wait + 999) / 1000).to_string()),
            ("retry-after-ms".to_string(), wait.to_string()),
        ];
        let reset = chrono::DateTime::from_timestamp_millis(self.reset_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        // OpenAI's duration form: "1s", "6m0s", "250ms".
        let openai_reset = if wait < 1000 {
            format!("{wait}ms")
        } else if wait < 60_000 {
            format!("{}s", (wait + 999) / 1000)
        } else {
            let s = (wait + 999) / 1000;
            format!("{}m{}s", s / 60, s % 60)
        };
        for (kind, limit) in [("requests", self.requests), ("tokens", self.tokens)] {
            let Some((limit, remaining)) = limit else { continue };
            h.push((format!("x-ratelimit-limit-{kind}"), limit.to_string()));
            h.push((format!("x-ratelimit-remaining-{kind}"), remaining.to_string()));
            h.push((format!("x-ratelimit-reset-{kind}"), openai_reset.clone()));
            h.push((format!("anthropic-ratelimit-{kind}-limit"), limit.to_string()));
            h.push((format!("anthropic-ratelimit-{kind}-remaining"), remaining.to_string()));
            h.push((format!("anthropic-ratelimit-{kind}-reset"), reset.clone()));
        }
        h
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
