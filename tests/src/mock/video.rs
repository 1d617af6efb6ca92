//! OpenAI's Videos API (the Sora 2 shape) in its real wire format:
//!
//! - `POST /v1/videos` (multipart: `prompt`, `model`, `seconds` as text,
//!   `size`, an optional `input_reference` file) answers the video object
//!   `{id, object: "video", model, status: "queued", progress, created_at,
//!   seconds, size, …}`.
//! - `GET /v1/videos/{id}`: each poll moves it on, `queued` →
//!   `in_progress` → `completed` (`completed_at` set), or `failed` (with
//!   `error: {code, message}`) when the model's name contains `fail`; one
//!   whose model's name contains `stuck` stays `in_progress` forever.
//! - `GET /v1/videos/{id}/content`: `video/mp4` bytes (1,000 a second of
//!   video) once completed; 404 before, as OpenAI answers.
//!
//! Every video request counts in `requests` and `media_requests`.

use std::sync::Arc;

use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Api, Shared, json_response, openai};

/// A video the mock is "rendering".
#[derive(Clone)]
pub(super) struct MockVideo {
    object: Value,
    polls: u32,
    fails: bool,
    stuck: bool,
}

fn record(shared: &Shared, path: &str, headers: &HeaderMap, body: Option<Value>) {
    shared.record(Api::OpenAi, path, headers, body);
    shared.stats().media_requests += 1;
}

fn not_found(id: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": {"message": format!("Video '{id}' not found"),
                          "type": "invalid_request_error", "param": null, "code": null}}),
    )
}

pub(super) async fn create(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let mut fields = serde_json::Map::new();
    while let Ok(Some(field)) = multipart.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        let is_file = field.file_name().is_some();
        let data = field.bytes().await.unwrap_or_default();
        let value = if is_file {
            json!({"bytes": data.len()})
        } else {
            Value::String(String::from_utf8_lossy(&data).into_owned())
        };
        fields.insert(name, value);
    }
    record(&shared, "/v1/videos", &headers, Some(Value::Object(fields.clone())));
    if let Some(resp) = openai::auth_error(&headers) {
        return resp;
    }
    let text = |k: &str, default: &str| {
        fields.get(k).and_then(Value::as_str).unwrap_or(default).to_string()
    };
    let model = text("model", "sora-2");
    let n = shared.next_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let id = format!("video_mock{n}");
    let object = json!({
        "id": id, "object": "video", "model": model, "status": "queued", "progress": 0,
        "created_at": 1_764_000_000 + n, "completed_at": null, "expires_at": null,
        "prompt": text("prompt", ""), "seconds": text("seconds", "4"),
        "size": text("size", "720x1280"), "remixed_from_video_id": null, "error": null,
    });
    let video = MockVideo {
        object: object.clone(),
        polls: 0,
        fails: model.contains("fail"),
        stuck: model.contains("stuck"),
    };
    shared.videos().insert(id, video);
    json_response(StatusCode::OK, &object)
}

pub(super) async fn get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(&shared, &format!("/v1/videos/{id}"), &headers, None);
    if let Some(resp) = openai::auth_error(&headers) {
        return resp;
    }
    let mut videos = shared.videos();
    let Some(v) = videos.get_mut(&id) else { return not_found(&id) };
    v.polls += 1;
    let o = &mut v.object;
    match (v.polls, v.fails) {
        _ if v.stuck => {
            o["status"] = "in_progress".into();
            o["progress"] = 50.into();
        }
        (1, _) => {
            o["status"] = "in_progress".into();
            o["progress"] = 50.into();
        }
        (_, false) => {
            o["status"] = "completed".into();
            o["progress"] = 100.into();
            o["completed_at"] = (o["created_at"].as_u64().unwrap_or(0) + 60).into();
        }
        (_, true) => {
            o["status"] = "failed".into();
            o["error"] = json!({"code": "video_generation_failed",
                                "message": "The video could not be generated."});
        }
    }
    json_response(StatusCode::OK, o)
}

pub(super) async fn content(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(&shared, &format!("/v1/videos/{id}/content"), &headers, None);
    if let Some(resp) = openai::auth_error(&headers) {
        return resp;
    }
    let videos = shared.videos();
    let Some(v) = videos.get(&id).filter(|v| v.object["status"] == "completed") else {
        return not_found(&id);
    };
    let seconds: usize = v.object["seconds"].as_str().and_then(|s| s.parse().ok()).unwrap_or(4);
    super::audio::binary(seconds * 1000, "video/mp4")
}
