//! Error bodies of the model endpoints, each in its API's own shape, so the
//! official clients raise their usual exceptions.

use std::fmt;

use dropshot::{ErrorStatusCode, HttpError, HttpResponseError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The inside of an Anthropic error.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct AnthropicErrorDetail {
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `request_too_large`, `rate_limit_error`,
    /// `api_error`, `overloaded_error`, or qlaud's `billing_error` (402).
    #[serde(rename = "type")]
    pub kind: String,
    /// What went wrong.
    pub message: String,
    /// qlaud's finer reason, the same as OpenAI's `code`: `spend_cap_reached`
    /// and `payment_failed` (both 402), `invalid_api_key`, `model_not_found`,
    /// …; absent when there is none. Anthropic's own clients ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// An error of `POST /v1/messages`:
/// `{"type":"error","error":{"type":…,"message":…}}`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct AnthropicError {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error.
    pub error: AnthropicErrorDetail,
    /// The HTTP status (not part of the body).
    #[serde(skip)]
    pub status: u16,
}

impl AnthropicError {
    /// An error with this status, type and message.
    pub fn new(status: u16, kind: &str, message: impl Into<String>) -> AnthropicError {
        AnthropicError {
            kind: "error".to_string(),
            error: AnthropicErrorDetail {
                kind: kind.to_string(),
                message: message.into(),
                code: None,
            },
            status,
        }
    }

    /// This error with qlaud's finer reason.
    pub fn with_code(mut self, code: Option<String>) -> AnthropicError {
        self.error.code = code;
        self
    }
}

impl fmt::Display for AnthropicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.error.kind, self.error.message)
    }
}

impl From<HttpError> for AnthropicError {
    fn from(e: HttpError) -> AnthropicError {
        let status = e.status_code.as_u16();
        AnthropicError::new(status, anthropic_type(status), e.external_message)
    }
}

impl HttpResponseError for AnthropicError {
    fn status_code(&self) -> ErrorStatusCode {
        ErrorStatusCode::from_u16(self.status).unwrap_or(ErrorStatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Anthropic's error type for an HTTP status.
pub fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// The inside of an OpenAI error.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct OpenAiErrorDetail {
    /// What went wrong.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `insufficient_quota`,
    /// `rate_limit_error`, `server_error`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code (`invalid_api_key`, `model_not_found`,
    /// `spend_cap_reached`, …), if any.
    pub code: Option<String>,
}

/// An error of `POST /v1/chat/completions`:
/// `{"error":{"message","type","param","code"}}`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct OpenAiError {
    /// The error.
    pub error: OpenAiErrorDetail,
    /// The HTTP status (not part of the body).
    #[serde(skip)]
    pub status: u16,
}

impl OpenAiError {
    /// An error with this status, type, code and message.
    pub fn new(
        status: u16,
        kind: &str,
        code: Option<&str>,
        message: impl Into<String>,
    ) -> OpenAiError {
        OpenAiError {
            error: OpenAiErrorDetail {
                message: message.into(),
                kind: kind.to_string(),
                param: None,
                code: code.map(str::to_string),
            },
            status,
        }
    }
}

impl fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.error.kind, self.error.message)
    }
}

impl From<HttpError> for OpenAiError {
    fn from(e: HttpError) -> OpenAiError {
        let status = e.status_code.as_u16();
        OpenAiError::new(status, openai_type(status), None, e.external_message)
    }
}

impl HttpResponseError for OpenAiError {
    fn status_code(&self) -> ErrorStatusCode {
        ErrorStatusCode::from_u16(self.status).unwrap_or(ErrorStatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// OpenAI's error type for an HTTP status.
pub fn openai_type(status: u16) -> &'static str {
    match status {
        400 | 404 | 413 => "invalid_request_error",
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}
