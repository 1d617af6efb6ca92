//! The gateway's errors, shaped at the end into Anthropic's or OpenAI's
//! error body depending on the endpoint.

use dropshot::{ErrorStatusCode, HttpError};
use qlaud_api::errors::{anthropic_type, openai_type};
use qlaud_api::{AnthropicError, OpenAiError};
use serde_json::Value;

use crate::error::Error;

#[derive(Debug)]
pub struct GatewayError {
    pub status: u16,
    pub message: String,
    /// The error type the provider gave, and whether the provider speaks
    /// OpenAI's shape; the type is kept when the client speaks the same.
    pub upstream_type: Option<(String, bool)>,
    /// OpenAI's `code` (`model_not_found`, `invalid_api_key`, …).
    pub code: Option<String>,
    /// Headers the answer carries (a rate limit's `retry-after` and
    /// `x-ratelimit-*`).
    pub headers: Vec<(String, String)>,
    /// Set when the provider failed before answering (429, 5xx, a timeout,
    /// no connection), so trying again or a fallback may succeed.
    pub retryable: Option<Retryable>,
}

/// A failure worth another attempt.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retryable {
    /// The wait the provider asked for (`retry-after`, `retry-after-ms`),
    /// in ms (kept small: every gateway result carries this error type).
    pub after_ms: Option<u32>,
}

impl Retryable {
    pub fn after(&self) -> Option<std::time::Duration> {
        self.after_ms.map(|ms| std::time::Duration::from_millis(ms.into()))
    }
}

impl GatewayError {
    pub fn new(status: u16, message: impl Into<String>) -> GatewayError {
        GatewayError {
            status,
            message: message.into(),
            upstream_type: None,
            code: None,
            headers: Vec::new(),
            retryable: None,
        }
    }

    /// Marks a provider failure that another attempt may get past.
    pub fn retryable(mut self, after: Option<std::time::Duration>) -> GatewayError {
        let after_ms = after.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
        self.retryable = Some(Retryable { after_ms });
        self
    }

    pub fn with_code(mut self, code: &str) -> GatewayError {
        self.code = Some(code.to_string());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> GatewayError {
        GatewayError::new(400, message)
    }

    pub fn model_not_found(model: &str) -> GatewayError {
        GatewayError::new(
            404,
            format!("model {model:?} is not served by this qlaud; GET /v1/models lists the models"),
        )
        .with_code("model_not_found")
    }

    /// An error answer of a provider, read in whichever shape it came.
    pub fn from_upstream(
        provider: &str,
        openai_shaped: bool,
        status: u16,
        body: &[u8],
    ) -> GatewayError {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let err = &v["error"];
        let message = err["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned());
        let upstream_type = err["type"].as_str().map(|t| (t.to_string(), openai_shaped));
        let code = err["code"].as_str().map(str::to_string);
        match status {
            // The provider refused qlaud's own credentials: not the client's
            // fault, and a 401 would make the client doubt its qlaud key.
            401 | 403 => GatewayError::new(
                502,
                format!("provider {provider} refused qlaud's credentials ({status}): {message}"),
            ),
            _ => GatewayError {
                status,
                message,
                upstream_type,
                code,
                headers: Vec::new(),
                retryable: None,
            },
        }
    }

    pub fn into_anthropic(self) -> AnthropicError {
        let kind = match self.upstream_type {
            Some((t, false)) => t,
            _ => anthropic_type(self.status).to_string(),
        };
        AnthropicError::new(self.status, &kind, self.message).with_code(self.code)
    }

    /// The whole answer in Anthropic's shape, headers included: for errors
    /// that carry headers, which a typed error body cannot.
    pub fn anthropic_response(self) -> http::Response<dropshot::Body> {
        let headers = self.headers.clone();
        let status = self.status;
        respond(status, headers, &self.into_anthropic())
    }

    /// The whole answer in OpenAI's shape, headers included.
    pub fn openai_response(self) -> http::Response<dropshot::Body> {
        let headers = self.headers.clone();
        let status = self.status;
        respond(status, headers, &self.into_openai())
    }

    /// The error in qlaud's own shape, for qlaud's endpoints that call
    /// models (thread turns).
    pub fn into_http(self) -> HttpError {
        let code = self.code.clone().unwrap_or_else(|| anthropic_type(self.status).to_string());
        let headers = (!self.headers.is_empty()).then(|| {
            let mut map = http::HeaderMap::new();
            for (name, value) in &self.headers {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    http::HeaderValue::from_str(value),
                ) {
                    map.insert(n, v);
                }
            }
            Box::new(map)
        });
        match ErrorStatusCode::from_u16(self.status) {
            Ok(status) if status.is_client_error() || status.as_u16() != 500 => HttpError {
                status_code: status,
                error_code: Some(code),
                external_message: self.message.clone(),
                internal_message: self.message,
                headers,
            },
            _ => HttpError::for_internal_error(self.message),
        }
    }

    pub fn into_openai(self) -> OpenAiError {
        let kind = match self.upstream_type {
            Some((t, true)) => t,
            _ => openai_type(self.status).to_string(),
        };
        OpenAiError::new(self.status, &kind, self.code.as_deref(), self.message)
    }
}

fn respond(
    status: u16,
    headers: Vec<(String, String)>,
    body: &impl serde::Serialize,
) -> http::Response<dropshot::Body> {
    let mut b = http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        b = b.header(name, value);
    }
    b.body(dropshot::Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .expect("a valid response")
}

impl From<Error> for GatewayError {
    fn from(e: Error) -> GatewayError {
        match e {
            Error::Unauthenticated(m) => GatewayError::new(401, m).with_code("invalid_api_key"),
            Error::Forbidden(m) => GatewayError::new(403, m),
            e @ Error::NotFound { .. } => GatewayError::new(404, e.to_string()),
            Error::InvalidRequest(m) => GatewayError::new(400, m),
            Error::Conflict(m) => GatewayError::new(409, m),
            Error::SpendCapReached(m) => GatewayError::new(402, m).with_code("spend_cap_reached"),
            Error::KeySuspended(m) => GatewayError::new(402, m).with_code("payment_failed"),
            Error::Unpriced(m) => GatewayError::new(400, m).with_code("model_not_priced"),
            Error::RateLimited(r) => {
                let mut e =
                    GatewayError::new(429, r.message.clone()).with_code("rate_limit_exceeded");
                e.headers = r.headers();
                e
            }
            Error::Unavailable(m) => GatewayError::new(503, m),
            e @ (Error::Store(_) | Error::Internal(_)) => {
                tracing::error!(error = %e, "model request failed");
                GatewayError::new(500, "internal error")
            }
        }
    }
}

impl From<dropshot::HttpError> for GatewayError {
    /// A body that could not be read or parsed (400, 408, 413).
    fn from(e: dropshot::HttpError) -> GatewayError {
        GatewayError::new(e.status_code.as_u16(), e.external_message)
    }
}
