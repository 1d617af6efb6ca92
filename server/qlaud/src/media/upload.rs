//! Reading an upload: at most the configured size (413 beyond it, before
//! the rest is read), and its multipart parts.

use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use dropshot::Body;
use http::HeaderMap;
use http_body_util::BodyExt;

use crate::gateway::error::GatewayError;

fn too_large(limit: u64) -> GatewayError {
    GatewayError::new(413, format!("the upload is larger than the {limit} bytes accepted"))
}

/// The whole body, refused with 413 as soon as it passes `limit` bytes
/// (at once when its `content-length` says it will).
pub async fn read(body: Body, headers: &HeaderMap, limit: u64) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut body = body;
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| GatewayError::bad_request(format!("reading the upload: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() as u64 + data.len() as u64 > limit {
                return Err(too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// One part of a multipart form.
pub struct Part {
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

impl Part {
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }
}

/// The parts of a `multipart/form-data` body, in order.
pub async fn multipart(headers: &HeaderMap, body: Bytes) -> Result<Vec<Part>, GatewayError> {
    let content_type =
        headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        GatewayError::bad_request(format!(
            "the body must be multipart/form-data with a file part, not {content_type:?}"
        ))
    })?;
    let stream = futures::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    let bad =
        |e: multer::Error| GatewayError::bad_request(format!("malformed multipart body: {e}"));
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let content_type = field.content_type().map(|m| m.to_string());
        let data = field.bytes().await.map_err(bad)?;
        parts.push(Part { name, file_name, content_type, data });
    }
    Ok(parts)
}
