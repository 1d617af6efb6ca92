//! The model gateway end to end: the real server in front of the mock
//! upstream, over raw HTTP, on SQLite and PostgreSQL.

use futures::StreamExt;
use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, RawBody, TestServer, backend_tests, mock_toml, sse_events};
use reqwest::Method;
use serde_json::{Value, json};

backend_tests!(
    messages_pass_through_with_cost,
    messages_stream_events_in_order,
    chat_completions_pass_through_with_cost,
    chat_stream_asks_upstream_for_usage,
    echo_answers_offline_in_both_shapes,
    errors_use_each_endpoints_shape,
    upstream_failures_map_faithfully,
    client_disconnect_stops_the_upstream,
    list_models_has_prices,
);

/// A server whose providers point at a fresh mock.
async fn start(backend: Backend) -> Option<(TestServer, MockUpstream)> {
    let mock = MockUpstream::start().await;
    let toml = mock_toml(&mock)
        + r#"
[providers.down]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "x"

[models."unpriced"]
provider = "openai"
max_output_tokens = 10

[models."down"]
provider = "down"
max_output_tokens = 10
prices = { input = "1", output = "1" }
"#;
    let t = TestServer::start_with(backend, Some(&toml)).await?;
    Some((t, mock))
}

async fn post(t: &TestServer, path: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let resp = t
        .http
        .post(format!("{}{path}", t.base_url))
        .bearer_auth(&t.master_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

/// The events of an SSE answer: `(event name, data)`.
async fn sse(t: &TestServer, path: &str, body: Value) -> Vec<(Option<String>, String)> {
    let resp = t
        .http
        .post(format!("{}{path}", t.base_url))
        .header("x-api-key", &t.master_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    sse_events(&resp.text().await.unwrap())
}

async fn messages_pass_through_with_cost(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let (status, body, headers) = post(
        &t,
        "/v1/messages",
        json!({
            "model": "claude-test", "max_tokens": 100,
            "system": "be brief",
            "messages": [{"role": "user", "content": "hi there friend"}],
            "temperature": 0.5, "top_k": 3, "metadata": {"user_id": "u1"},
            "some_future_field": {"nested": [1, 2]},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "claude-test");
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Hello from mock: hi there friend");
    // 2 system + 3 message words in; 6 words out.
    assert_eq!(body["usage"]["input_tokens"], 5);
    assert_eq!(body["usage"]["output_tokens"], 6);
    // 5 × $3 + 6 × $15 per Mtok = 105 µ$.
    assert_eq!(body["usage"]["cost_micros"], 105);
    assert_eq!(headers["qlaud-cost-micros"], "105");
    let seen = mock.stats();
    let sent = seen.last_body.clone().unwrap();
    assert_eq!(sent["model"], "claude-upstream");
    assert_eq!(sent["top_k"], 3);
    assert_eq!(sent["some_future_field"], json!({"nested": [1, 2]}));
    assert_eq!(sent["metadata"], json!({"user_id": "u1"}));
    assert_eq!(seen.header("x-api-key"), Some("mock-anthropic-key"));
    assert!(seen.header("authorization").is_none(), "the client's key never goes upstream");
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.requests, 1);
    // max_tokens is filled in when missing and capped at the model's limit.
    // Each request must be answered and reach the mock: otherwise
    // `last_body` would still be the previous request's.
    let (status, body, _) = post(
        &t,
        "/v1/messages",
        json!({"model": "claude-test", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = mock.stats();
    assert_eq!(seen.requests, 2, "forwarded to the provider");
    assert_eq!(seen.last_body.unwrap()["max_tokens"], 1000);
    let (status, body, _) = post(
        &t,
        "/v1/messages",
        json!({"model": "claude-test", "max_tokens": 128000,
               "messages": [{"role": "user", "content": "y"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], "Hello from mock: y");
    let seen = mock.stats();
    assert_eq!(seen.requests, 3, "forwarded to the provider");
    let sent = seen.last_body.unwrap();
    assert_eq!(sent["messages"][0]["content"], "y", "the body is this request's");
    assert_eq!(sent["max_tokens"], 1000);
    t.stop().await;
}

async fn messages_stream_events_in_order(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let events = sse(
        &t,
        "/v1/messages",
        json!({"model": "claude-test", "max_tokens": 100, "stream": true,
               "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap_or("")).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert_eq!(names.iter().filter(|n| **n == "content_block_delta").count(), 6);
    let start: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(start["message"]["model"], "claude-test");
    let delta = events.iter().find(|(n, _)| n.as_deref() == Some("message_delta")).unwrap();
    let delta: Value = serde_json::from_str(&delta.1).unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 6);
    // 3 in × 3 + 6 out × 15 = 99 µ$.
    assert_eq!(delta["usage"]["cost_micros"], 99);
    let text: String = events
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "Hello from mock: one two three");
    assert_eq!(mock.stats().anthropic_requests, 1);
    t.stop().await;
}

async fn chat_completions_pass_through_with_cost(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let (status, body, headers) = post(
        &t,
        "/v1/chat/completions",
        json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hello world"}],
               "user": "cached", "logit_bias": {"50256": -100}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from mock: hello world");
    // 2 prompt tokens, all cached; 5 completion tokens:
    // 2 × $0.125 + 5 × $10 per Mtok = 50.25 → 51 µ$.
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    assert_eq!(body["usage"]["cost_micros"], 51);
    assert_eq!(headers["qlaud-cost-micros"], "51");
    let seen = mock.stats();
    assert_eq!(seen.header("authorization"), Some("Bearer mock-openai-key"));
    let sent = seen.last_body.clone().unwrap();
    assert_eq!(sent["model"], "gpt-upstream");
    assert_eq!(sent["logit_bias"], json!({"50256": -100}));
    t.stop().await;
}

async fn chat_stream_asks_upstream_for_usage(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let body = json!({"model": "gpt-test", "stream": true,
                      "messages": [{"role": "user", "content": "a b c"}]});
    // Without include_usage the client gets no usage chunk, but qlaud asked.
    let events = sse(&t, "/v1/chat/completions", body.clone()).await;
    assert_eq!(mock.stats().last_body.unwrap()["stream_options"]["include_usage"], true);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["usage"].is_null()), "{chunks:?}");
    assert!(chunks.iter().all(|c| !c["choices"].as_array().unwrap().is_empty()));
    assert!(chunks.iter().all(|c| c["model"] == "gpt-test"));
    // With it, the usage chunk carries the cost.
    let mut with_usage = body;
    with_usage["stream_options"] = json!({"include_usage": true});
    let events = sse(&t, "/v1/chat/completions", with_usage).await;
    let usage: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    // 3 × 1.25 + 6 × 10 = 63.75 → 64 µ$.
    assert_eq!(usage["usage"]["cost_micros"], 64);
    t.stop().await;
}

async fn echo_answers_offline_in_both_shapes(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let (status, body, headers) = post(
        &t,
        "/v1/messages",
        json!({"model": "echo", "max_tokens": 50, "messages": [{"role": "user", "content": "ping pong"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], "echo: ping pong");
    assert_eq!(body["usage"]["output_tokens"], 3);
    assert_eq!(headers["qlaud-cost-micros"], body["usage"]["cost_micros"].to_string().as_str());
    let (status, body, _) = post(
        &t,
        "/v1/chat/completions",
        json!({"model": "echo", "messages": [{"role": "user", "content": "ping pong"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: ping pong");
    let events = sse(
        &t,
        "/v1/messages",
        json!({"model": "echo", "max_tokens": 2, "stream": true, "messages": [{"role": "user", "content": "a b c"}]}),
    )
    .await;
    let delta = events.iter().find(|(n, _)| n.as_deref() == Some("message_delta")).unwrap();
    let delta: Value = serde_json::from_str(&delta.1).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    let events = sse(
        &t,
        "/v1/chat/completions",
        json!({"model": "echo", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "a b c"}]}),
    )
    .await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert_eq!(mock.stats().requests, 0, "echo never calls a provider");
    t.stop().await;
}

async fn errors_use_each_endpoints_shape(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let msg = json!({"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    // Missing and wrong keys.
    for key in [None, Some("qlk_live_nope")] {
        let mut req = t.http.post(format!("{}/v1/messages", t.base_url)).json(&msg);
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "authentication_error");
        let mut req = t.http.post(format!("{}/v1/chat/completions", t.base_url)).json(&msg);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
        assert!(body["error"]["message"].is_string());
    }
    // Unknown and unpriced models.
    let (status, body, _) =
        post(&t, "/v1/messages", json!({"model": "nope", "messages": []})).await;
    assert_eq!((status, body["error"]["type"].as_str()), (404, Some("not_found_error")), "{body}");
    let (status, body, _) =
        post(&t, "/v1/chat/completions", json!({"model": "nope", "messages": []})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("model_not_found")), "{body}");
    let (status, body, _) =
        post(&t, "/v1/chat/completions", json!({"model": "unpriced", "messages": []})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("no price"));
    // Malformed bodies, in the endpoint's shape.
    let (status, body) = t
        .request(
            Method::POST,
            "/v1/messages",
            Some(&t.master_key),
            Some(RawBody::Text("{\"model\":".into())),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = t
        .request(
            Method::POST,
            "/v1/chat/completions",
            Some(&t.master_key),
            Some(RawBody::Text("[]".into())),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    let (status, body) = t
        .request(
            Method::POST,
            "/v1/messages",
            Some(&t.master_key),
            Some(RawBody::Json(json!({"messages": []}))),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("model"), "{body}");
    assert_eq!(mock.stats().requests, 0, "no bad request reached the provider");
    t.stop().await;
}

async fn upstream_failures_map_faithfully(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let cases = [
        ("error-500", 500, "api_error", "server_error"),
        // OpenAI's own type for rate limits is `requests` (or `tokens`).
        ("error-429", 429, "rate_limit_error", "requests"),
        ("error-400", 400, "invalid_request_error", "invalid_request_error"),
        ("hang", 504, "timeout_error", "server_error"),
    ];
    for (fault, status, anthropic_type, openai_type) in cases {
        let (s, body, _) = post(
            &t,
            "/v1/messages",
            json!({"model": format!("claude-{fault}"), "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
        assert_eq!(s, status, "{fault}: {body}");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], anthropic_type, "{fault}: {body}");
        let (s, body, _) = post(
            &t,
            "/v1/chat/completions",
            json!({"model": format!("gpt-{fault}"), "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
        assert_eq!(s, status, "{fault}: {body}");
        assert_eq!(body["error"]["type"], openai_type, "{fault}: {body}");
    }
    let (s, body, _) = post(
        &t,
        "/v1/messages",
        json!({"model": "claude-error-529", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!((s, body["error"]["type"].as_str()), (529, Some("overloaded_error")), "{body}");
    // A provider that refuses connections.
    let (s, body, _) =
        post(&t, "/v1/chat/completions", json!({"model": "down", "messages": []})).await;
    assert_eq!(s, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("could not reach provider down"));
    // A stream cut off by the provider ends with an error event.
    let events = sse(
        &t,
        "/v1/messages",
        json!({"model": "claude-cut", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "a b c d e f"}]}),
    )
    .await;
    assert_eq!(events.last().unwrap().0.as_deref(), Some("error"), "{events:?}");
    // Eight fault cases, the 529 and the cut stream reached the provider,
    // each exactly once: qlaud never retries a model call (a retry could
    // bill the user twice). The refused connection never reached it.
    assert_eq!(mock.stats().requests, 10);
    t.stop().await;
}

async fn client_disconnect_stops_the_upstream(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let words = "w ".repeat(40);
    let resp = t
        .http
        .post(format!("{}/v1/messages", t.base_url))
        .header("x-api-key", &t.master_key)
        .json(&json!({"model": "claude-slow", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": words}]}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    // At 100 ms an event the whole answer takes over 4 s; the provider must
    // stop well before that.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let emitted = mock.stats().output_tokens;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(mock.stats().output_tokens, emitted, "the provider kept generating");
    assert!(emitted < 43, "emitted {emitted}");
    t.stop().await;
}

async fn list_models_has_prices(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else {
        return;
    };
    let (status, body) = t.request(Method::GET, "/v1/models", Some(&t.master_key), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().unwrap();
    let claude = data.iter().find(|m| m["id"] == "claude-test").unwrap();
    assert_eq!(claude["object"], "model");
    assert_eq!(claude["type"], "model");
    assert_eq!(claude["pricing"]["output_per_mtok_usd"], 15);
    assert!(data.iter().any(|m| m["id"] == "echo"));
    assert!(data.iter().all(|m| m["id"] != "unpriced"), "unpriced models are not offered");
    let (status, _) = t.request(Method::GET, "/v1/models", None, None).await;
    assert_eq!(status, 401);
    t.stop().await;
}
