//! JSON request bodies read by qlaud's rules instead of `TypedBody`'s.
//!
//! Both extractors document exactly what `TypedBody<T>` documents (their
//! metadata is its metadata), so the OpenAPI document and the SDKs do not
//! change. What differs is how the body is read:
//!
//! - [`ModelBody`] does not read anything when the request arrives. The
//!   handler authenticates from the headers first and only then calls
//!   [`ModelBody::read`]: a request with no key or a wrong one is refused
//!   without a byte of its (possibly huge) body read or parsed.
//! - [`JsonBody`] (qlaud's own endpoints) reads at once, and accepts only a
//!   JSON object: serde would otherwise take `[]` for a struct whose fields
//!   are all optional.
//!
//! Both refuse a declared `Content-Length` over the endpoint's limit with 413
//! before reading, stop reading at the limit (413) when no length was
//! declared, and give up with 408 on a body that does not arrive within the
//! read timeout (a client that declares 1,000,000 bytes and sends 9).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dropshot::{
    ApiEndpointBodyContentType, ClientErrorStatusCode, ExclusiveExtractor, ExtractorMetadata,
    HttpError, RequestContext, ServerContext, TypedBody,
};
use http_body_util::BodyExt;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

/// How long a request body may take to arrive, in milliseconds.
static READ_TIMEOUT_MS: AtomicU64 = AtomicU64::new(30_000);

/// Sets how long a request body may take to arrive (process-wide; the
/// server sets it from `--body-timeout-secs` at start).
pub fn set_read_timeout(timeout: Duration) {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
    READ_TIMEOUT_MS.store(ms, Ordering::Relaxed);
}

pub fn read_timeout() -> Duration {
    Duration::from_millis(READ_TIMEOUT_MS.load(Ordering::Relaxed))
}

fn client_error(status: ClientErrorStatusCode, message: String) -> HttpError {
    HttpError::for_client_error(None, status, message)
}

/// Reads a body of at most `max_bytes` within the read timeout: 413 for a
/// declared or actual size over the limit, 408 when it does not arrive.
async fn read_bytes(
    headers: &http::HeaderMap,
    body: dropshot::Body,
    max_bytes: usize,
) -> Result<bytes::Bytes, HttpError> {
    let too_large = |n: &str| {
        client_error(
            ClientErrorStatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is {n} bytes, over this endpoint's maximum size: it takes at \
                 most {max_bytes}"
            ),
        )
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared
        && n > max_bytes as u64
    {
        return Err(too_large(&n.to_string()));
    }
    let timeout = read_timeout();
    let read = http_body_util::Limited::new(body, max_bytes).collect();
    let bytes = match tokio::time::timeout(timeout, read).await {
        Err(_) => {
            return Err(client_error(
                ClientErrorStatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {} s", timeout.as_secs_f32()),
            ));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(too_large("more than the limit's"));
        }
        Ok(Err(e)) => {
            return Err(HttpError::for_bad_request(None, format!("reading the request body: {e}")));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    Ok(bytes)
}

/// Reads and parses a JSON body under the rules above.
async fn read_json<T: DeserializeOwned>(
    request: http::Request<dropshot::Body>,
    max_bytes: usize,
    object_only: bool,
    exact_numbers: bool,
) -> Result<T, HttpError> {
    let (parts, body) = request.into_parts();
    if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
        let ct = ct
            .to_str()
            .map_err(|e| HttpError::for_bad_request(None, format!("invalid content type: {e}")))?;
        let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if mime != "application/json" {
            return Err(HttpError::for_bad_request(
                None,
                format!("unsupported content-type: expected application/json, got {mime:?}"),
            ));
        }
    }
    let bytes = read_bytes(&parts.headers, body, max_bytes).await?;
    // serde reads `[]` as a struct whose fields are all optional: any JSON
    // that is not an object is refused here (malformed JSON gets the
    // parser's message below).
    if object_only
        && bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
    {
        return Err(HttpError::for_bad_request(
            None,
            "the request body must be a JSON object".to_string(),
        ));
    }
    if exact_numbers && let Some(n) = inexact_number(&bytes) {
        return Err(HttpError::for_bad_request(
            None,
            format!(
                "the number {n} has more precision than qlaud keeps; it would be rounded, so it \
                 is refused (send at most 6 decimal places for dollar amounts)"
            ),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de)
        .map_err(|e| HttpError::for_bad_request(None, format!("unable to parse JSON body: {e}")))
}

/// A raw body (signed webhooks, the console's form), read when the request
/// arrives under the same limits and timeout; documented as `UntypedBody`.
pub struct BytesBody {
    content: bytes::Bytes,
}

impl BytesBody {
    pub fn as_bytes(&self) -> &[u8] {
        &self.content
    }
}

#[async_trait::async_trait]
impl ExclusiveExtractor for BytesBody {
    async fn from_request<Context: ServerContext>(
        rqctx: &RequestContext<Context>,
        request: http::Request<dropshot::Body>,
    ) -> Result<BytesBody, HttpError> {
        let (parts, body) = request.into_parts();
        let content = read_bytes(&parts.headers, body, rqctx.request_body_max_bytes()).await?;
        Ok(BytesBody { content })
    }

    fn metadata(content_type: ApiEndpointBodyContentType) -> ExtractorMetadata {
        <dropshot::UntypedBody as ExclusiveExtractor>::metadata(content_type)
    }
}

/// A JSON object body, read when the request arrives (qlaud's own
/// endpoints).
pub struct JsonBody<T> {
    inner: T,
}

impl<T> JsonBody<T> {
    pub fn into_inner(self) -> T {
        self.inner
    }
}

#[async_trait::async_trait]
impl<T> ExclusiveExtractor for JsonBody<T>
where
    T: JsonSchema + DeserializeOwned + Send + Sync + 'static,
{
    async fn from_request<Context: ServerContext>(
        rqctx: &RequestContext<Context>,
        request: http::Request<dropshot::Body>,
    ) -> Result<JsonBody<T>, HttpError> {
        let inner = read_json(request, rqctx.request_body_max_bytes(), true, true).await?;
        Ok(JsonBody { inner })
    }

    fn metadata(content_type: ApiEndpointBodyContentType) -> ExtractorMetadata {
        <TypedBody<T> as ExclusiveExtractor>::metadata(content_type)
    }
}

/// A model request's body, read only when the handler asks, after it has
/// checked the key.
pub struct ModelBody<T> {
    request: http::Request<dropshot::Body>,
    max_bytes: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> ModelBody<T> {
    /// Reads and parses the body (call it once the caller is known).
    pub async fn read(self) -> Result<T, HttpError> {
        read_json(self.request, self.max_bytes, true, false).await
    }
}

#[async_trait::async_trait]
impl<T> ExclusiveExtractor for ModelBody<T>
where
    T: JsonSchema + DeserializeOwned + Send + Sync + 'static,
{
    async fn from_request<Context: ServerContext>(
        rqctx: &RequestContext<Context>,
        request: http::Request<dropshot::Body>,
    ) -> Result<ModelBody<T>, HttpError> {
        Ok(ModelBody { request, max_bytes: rqctx.request_body_max_bytes(), _type: PhantomData })
    }

    fn metadata(content_type: ApiEndpointBodyContentType) -> ExtractorMetadata {
        <TypedBody<T> as ExclusiveExtractor>::metadata(content_type)
    }
}

/// The first number in a JSON text that parsing would round: one with a
/// fraction or exponent (or too large for a 64-bit integer), read as the
/// nearest double, whose decimal value differs from what was written
/// (`5.0000000000000000001`). qlaud's own fields are money, limits and
/// counts: silently changing what a client wrote is never right there.
fn inexact_number(json: &[u8]) -> Option<&str> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < json.len()
                    && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = std::str::from_utf8(&json[start..i]).ok()?;
                if !exact(token) {
                    return Some(token);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Whether a JSON number reads as exactly what it spells.
fn exact(token: &str) -> bool {
    let integer = !token.contains(['.', 'e', 'E']);
    if integer && (token.parse::<i64>().is_ok() || token.parse::<u64>().is_ok()) {
        return true;
    }
    // What does not read as a finite number is the parser's to report.
    let Ok(v) = token.parse::<f64>() else { return true };
    if !v.is_finite() {
        return true;
    }
    // Rust's `{:e}` is the shortest spelling that reads back as `v`.
    normalized(token) == normalized(&format!("{v:e}"))
}

/// A decimal as (negative, significant digits, power of ten), zeros trimmed.
fn normalized(s: &str) -> (bool, String, i64) {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mantissa, exp) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.trim_start_matches('+').parse::<i64>().unwrap_or(0)),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits = format!("{int}{frac}");
    let mut power = exp - frac.len() as i64;
    let trimmed = digits.trim_start_matches('0').len();
    digits = digits[digits.len() - trimmed..].to_string();
    while digits.ends_with('0') {
        digits.pop();
        power += 1;
    }
    if digits.is_empty() {
        return (false, String::new(), 0);
    }
    (neg, digits, power)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_that_would_be_rounded_are_found() {
        for ok in ["5", "5.0", "5.10", "0.000001", "1e3", "-2.5E-3", "0.1", "18446744073709551615"]
        {
            assert!(exact(ok), "{ok}");
        }
        for bad in ["5.0000000000000000001", "0.30000000000000000001", "123456789012345678901"] {
            assert!(!exact(bad), "{bad}");
        }
        let json = br#"{"name":"5.0000000000000000001","a":[1,2.5],"max_spend_usd":5.0000000000000000001}"#;
        assert_eq!(inexact_number(json), Some("5.0000000000000000001"));
        assert_eq!(inexact_number(br#"{"s":"\"1.00000000000000000001"}"#), None);
    }
}
