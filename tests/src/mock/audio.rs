//! Audio APIs in their real wire formats:
//!
//! - OpenAI `POST /v1/audio/transcriptions` and `/translations`
//!   (multipart: `file`, `model`, …): `whisper-*` models report
//!   `usage: {type: "duration", seconds}`, others token usage
//!   (`input_token_details.audio_tokens`, `output_tokens`);
//!   `response_format=text` answers plain text without usage. The mock
//!   takes the upload to be 8 kHz 16-bit mono PCM: a second per 16,000
//!   bytes, rounded up; audio tokens are 10 a second, output 5 tokens.
//! - OpenAI `POST /v1/audio/speech`: `audio/mpeg` bytes (10 per input
//!   character) in several chunks.
//! - ElevenLabs `POST /v1/text-to-speech/{voice_id}[/stream]` with
//!   `xi-api-key`: audio bytes and a `character-cost` header (the text's
//!   characters, half for `eleven_flash_*` and `eleven_turbo_*` models,
//!   rounded up).
//! - Deepgram `POST /v1/listen` with `Authorization: Token`: raw audio (or
//!   `{url}`, taken as 60 s) in, `metadata.duration` and `channels` out.
//!
//! Every audio request counts in `requests` and `media_requests`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Multipart, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Api, Shared, json_response, openai};

pub const ELEVENLABS_KEY: &str = "mock-elevenlabs-key";
pub const DEEPGRAM_KEY: &str = "mock-deepgram-key";
/// Bytes of 8 kHz 16-bit mono PCM per second.
const BYTES_PER_SECOND: u64 = 16_000;

fn record(shared: &Shared, path: &str, headers: &HeaderMap, body: Option<Value>, bytes: u64) {
    shared.record(Api::OpenAi, path, headers, body);
    let mut s = shared.stats();
    s.media_requests += 1;
    s.media_bytes += bytes;
}

fn seconds(bytes: u64) -> u64 {
    // A WAV header is 44 bytes.
    bytes.saturating_sub(44).div_ceil(BYTES_PER_SECOND)
}

async fn form(
    shared: Arc<Shared>,
    headers: HeaderMap,
    mut multipart: Multipart,
    path: &str,
) -> Response {
    let mut fields = serde_json::Map::new();
    let mut file_len = 0u64;
    while let Ok(Some(field)) = multipart.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        let is_file = field.file_name().is_some();
        let data = field.bytes().await.unwrap_or_default();
        if is_file {
            file_len = data.len() as u64;
            fields.insert(name, json!({"bytes": data.len()}));
        } else {
            fields.insert(name, Value::String(String::from_utf8_lossy(&data).into_owned()));
        }
    }
    record(&shared, path, &headers, Some(Value::Object(fields.clone())), file_len);
    if let Some(resp) = openai::auth_error(&headers) {
        return resp;
    }
    let model = fields.get("model").and_then(Value::as_str).unwrap_or_default();
    let secs = seconds(file_len);
    if fields.get("response_format").and_then(Value::as_str) == Some("text") {
        return Response::builder()
            .header("content-type", "text/plain; charset=utf-8")
            .body(Body::from("hello from the mock\n"))
            .unwrap();
    }
    let usage = if model.starts_with("whisper") {
        json!({"type": "duration", "seconds": secs})
    } else {
        json!({"type": "tokens", "input_tokens": secs * 10 + 3,
               "input_token_details": {"text_tokens": 3, "audio_tokens": secs * 10},
               "output_tokens": 5, "total_tokens": secs * 10 + 8})
    };
    json_response(StatusCode::OK, &json!({"text": "hello from the mock", "usage": usage}))
}

pub(super) async fn transcriptions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Response {
    form(shared, headers, multipart, "/v1/audio/transcriptions").await
}

pub(super) async fn translations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Response {
    form(shared, headers, multipart, "/v1/audio/translations").await
}

/// `n` bytes of "audio" (or video) in chunks of at most 1,000.
pub(super) fn binary(n: usize, content_type: &str) -> Response {
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> =
        (0..n).step_by(1000).map(|i| Ok(Bytes::from(vec![0xFFu8; (n - i).min(1000)]))).collect();
    Response::builder()
        .header("content-type", content_type)
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap()
}

pub(super) async fn speech(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v: Option<Value> = serde_json::from_slice(&body).ok();
    record(&shared, "/v1/audio/speech", &headers, v.clone(), 0);
    if let Some(resp) = openai::auth_error(&headers) {
        return resp;
    }
    let chars = v.as_ref().and_then(|v| v["input"].as_str()).map_or(0, |s| s.chars().count());
    binary(chars * 10, "audio/mpeg")
}

async fn elevenlabs(
    shared: Arc<Shared>,
    headers: HeaderMap,
    path: String,
    body: Bytes,
) -> Response {
    let v: Option<Value> = serde_json::from_slice(&body).ok();
    record(&shared, &path, &headers, v.clone(), 0);
    if headers.get("xi-api-key").map(|v| v.as_bytes()) != Some(ELEVENLABS_KEY.as_bytes()) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}),
        );
    }
    let text = v.as_ref().and_then(|v| v["text"].as_str()).unwrap_or_default();
    let model = v.as_ref().and_then(|v| v["model_id"].as_str()).unwrap_or_default();
    let chars = text.chars().count() as u64;
    let cost = if model.starts_with("eleven_flash") || model.starts_with("eleven_turbo") {
        chars.div_ceil(2)
    } else {
        chars
    };
    let mut resp = binary(chars as usize * 10, "audio/mpeg");
    resp.headers_mut().insert("character-cost", cost.into());
    resp
}

pub(super) async fn text_to_speech(
    State(shared): State<Arc<Shared>>,
    Path(voice): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    elevenlabs(shared, headers, format!("/v1/text-to-speech/{voice}"), body).await
}

pub(super) async fn text_to_speech_stream(
    State(shared): State<Arc<Shared>>,
    Path(voice): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    elevenlabs(shared, headers, format!("/v1/text-to-speech/{voice}/stream"), body).await
}

pub(super) async fn listen(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q: serde_json::Map<String, Value> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    record(&shared, "/v1/listen", &headers, Some(Value::Object(q)), body.len() as u64);
    let expected = format!("Token {DEEPGRAM_KEY}");
    if headers.get("authorization").map(|v| v.as_bytes()) != Some(expected.as_bytes()) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}),
        );
    }
    let json_body =
        headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let pcm = body.len().saturating_sub(44) as f64;
    let duration = if json_body { 60.0 } else { pcm / BYTES_PER_SECOND as f64 };
    json_response(
        StatusCode::OK,
        &json!({"metadata": {"request_id": "mock", "duration": duration, "channels": 1},
                "results": {"channels": [{"alternatives": [
                    {"transcript": "hello from the mock", "confidence": 0.99}]}]}}),
    )
}
