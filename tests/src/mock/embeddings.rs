//! OpenAI Embeddings API: `POST /v1/embeddings`.
//!
//! Input tokens: the words of each input string, or the length of each
//! token-id array. Each embedding has `dimensions` values (16 when not
//! asked), deterministic in the input's index; `encoding_format: "base64"`
//! packs them as little-endian 32-bit floats, as the official clients ask
//! for by default.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Api, Faults, Shared, json_response, openai, word_count};

pub(super) async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = (Api::OpenAi, "/v1/embeddings", "x-request-id");
    shared
        .serve(route, &headers, body, openai::stopping, |_, body| answer(&shared, &headers, body))
        .await
}

fn invalid(message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error",
                                "param": "input", "code": null}});
    json_response(StatusCode::BAD_REQUEST, &body)
}

async fn answer(shared: &Arc<Shared>, headers: &HeaderMap, body: Option<Value>) -> Response {
    if let Some(resp) = openai::auth_error(headers) {
        return resp;
    }
    let Some(body) = body else {
        return invalid("We could not parse the JSON body of your request.");
    };
    let model = body["model"].as_str().unwrap_or_default().to_string();
    if let Some(code) = Faults::from_model(&model).error {
        return openai::fault(code);
    }
    let inputs: Vec<u64> = match &body["input"] {
        Value::String(s) => vec![word_count(s)],
        Value::Array(items) if !items.is_empty() => {
            if items.iter().all(Value::is_u64) {
                vec![items.len() as u64]
            } else {
                let mut counts = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => counts.push(word_count(s)),
                        Value::Array(ids) => counts.push(ids.len() as u64),
                        _ => {
                            return invalid(
                                "'input' must be a string or an array of strings or tokens",
                            );
                        }
                    }
                }
                counts
            }
        }
        _ => return invalid("'input' must be a string or a non-empty array"),
    };
    let dims = body["dimensions"].as_u64().unwrap_or(16).clamp(1, 4096) as usize;
    let base64 = body["encoding_format"] == "base64";
    let data: Vec<Value> = (0..inputs.len())
        .map(|i| {
            let v: Vec<f32> = (0..dims).map(|d| ((i * 31 + d) % 17) as f32 / 17.0 - 0.5).collect();
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64_encode(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = inputs.iter().sum();
    shared.count(tokens, 0, 0);
    let nousage = model.contains("nousage");
    let mut answer = json!({"object": "list", "data": data, "model": model});
    if !nousage {
        answer["usage"] = json!({"prompt_tokens": tokens, "total_tokens": tokens});
    }
    json_response(StatusCode::OK, &answer)
}

fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
