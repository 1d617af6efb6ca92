//! The drop-in endpoints the official clients call besides messages and
//! chat completions: `POST /v1/messages/count_tokens` (forwarded for Claude,
//! counted locally otherwise, free) and `GET /v1/models/{model_id}`, raw and
//! through the Rust SDK; and the input count Anthropic-shaped streams from a
//! GPT model carry in `message_start`.

use qlaud::types;
use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, TestServer, backend_tests, mock_toml, sse_events, store_pool};
use serde_json::{Value, json};

backend_tests!(
    claude_counts_are_forwarded,
    gpt_counts_are_local_estimates,
    counting_is_free_but_needs_a_usable_key,
    count_errors_are_anthropic_shaped,
    models_are_fetched_one_by_one,
    sdk_counts_and_fetches,
    gpt_stream_reports_input_at_message_start,
);

async fn start(backend: Backend) -> Option<(TestServer, MockUpstream)> {
    let mock = MockUpstream::start().await;
    Some((TestServer::start_with(backend, Some(&mock_toml(&mock))).await?, mock))
}

/// POSTs `body` to `path` with `key` in `x-api-key` (as Anthropic's clients
/// send it) and any extra headers.
async fn post(
    t: &TestServer,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, Value) {
    let mut req = t.http.post(format!("{}{path}", t.base_url)).header("x-api-key", key);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A count request as Claude Code sends it: structured system blocks with
/// `cache_control`, tools, a tool round trip.
fn claude_code_request(model: &str) -> Value {
    json!({
        "model": model,
        "system": [{"type": "text", "text": "You are a coding agent.",
                    "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "bash", "description": "Run a command",
                   "input_schema": {"type": "object", "properties": {"cmd": {"type": "string"}}}}],
        "messages": [
            {"role": "user", "content": "list the files please"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"cmd": "ls"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.rs b.rs"}]},
        ],
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "context_management": {"edits": []},
    })
}

async fn claude_counts_are_forwarded(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let beta =
        [("anthropic-version", "2023-06-01"), ("anthropic-beta", "token-counting-2024-11-01")];
    let path = "/v1/messages/count_tokens?beta=true";
    let (status, body) =
        post(&t, path, &t.master_key, &beta, claude_code_request("claude-test")).await;
    assert_eq!(status, 200, "{body}");
    // The mock's rule: 5 system words + 4 + 2 message words + 10 for the tool.
    assert_eq!(body, json!({"input_tokens": 21}));
    let seen = mock.stats();
    assert_eq!(seen.last_path.as_deref(), Some("/v1/messages/count_tokens"));
    let forwarded = seen.last_body.clone().unwrap();
    assert_eq!(forwarded["model"], "claude-upstream");
    // Everything else passes through unchanged, unknown fields included.
    assert_eq!(forwarded["context_management"], json!({"edits": []}));
    assert_eq!(forwarded["system"][0]["cache_control"]["type"], "ephemeral");
    assert!(forwarded.get("max_tokens").is_none());
    assert_eq!(seen.header("anthropic-beta"), Some("token-counting-2024-11-01"));
    assert_eq!(seen.header("x-api-key"), Some("mock-anthropic-key"));
    assert_eq!(seen.input_tokens + seen.output_tokens, 0);
    t.stop().await;
}

async fn gpt_counts_are_local_estimates(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let count =
        |text: &str| json!({"model": "gpt-test", "messages": [{"role": "user", "content": text}]});
    let (status, short) =
        post(&t, "/v1/messages/count_tokens", &t.master_key, &[], count("hello there")).await;
    assert_eq!(status, 200, "{short}");
    let short = short["input_tokens"].as_u64().unwrap();
    // o200k_base: "hello there" is 2 tokens, + 3 framing + "user" + 3 priming.
    assert_eq!(short, 9);
    let long_text = "hello there, this is a much longer message with many more words in it";
    let (_, long) =
        post(&t, "/v1/messages/count_tokens", &t.master_key, &[], count(long_text)).await;
    assert!(long["input_tokens"].as_u64().unwrap() > short + 5, "{long}");
    let (status, full) =
        post(&t, "/v1/messages/count_tokens", &t.master_key, &[], claude_code_request("gpt-test"))
            .await;
    assert_eq!(status, 200, "{full}");
    assert!(full["input_tokens"].as_u64().unwrap() > 40, "tools and tool calls count: {full}");
    // An image counts its fixed figure.
    let image = json!({"model": "gpt-test", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hello there"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]});
    let (_, with_image) = post(&t, "/v1/messages/count_tokens", &t.master_key, &[], image).await;
    assert_eq!(with_image["input_tokens"], short + 765);
    // The offline model counts by the rule it bills by.
    let (_, echo) = post(&t, "/v1/messages/count_tokens", &t.master_key, &[], {
        json!({"model": "echo", "messages": [{"role": "user", "content": "hello sdk"}]})
    })
    .await;
    assert_eq!(echo, json!({"input_tokens": 6}));
    assert_eq!(mock.stats().requests, 0, "nothing reached a provider");
    t.stop().await;
}

async fn counting_is_free_but_needs_a_usable_key(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    // A key whose cap cannot pay for any answer still counts.
    let broke = t.mint(json!({"name": "broke", "max_spend_usd": 0.000001})).await;
    let secret = broke["secret"].as_str().unwrap();
    let message = json!({"model": "claude-test", "max_tokens": 10,
                         "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&t, "/v1/messages", secret, &[], message).await.0, 402);
    let usage_path = format!("/v1/usage?key_id={}", broke["id"].as_str().unwrap());
    let usage = || t.request(reqwest::Method::GET, &usage_path, Some(&t.master_key), None);
    let (_, before) = usage().await;
    for model in ["claude-test", "gpt-test", "echo"] {
        let (status, body) =
            post(&t, "/v1/messages/count_tokens", secret, &[], claude_code_request(model)).await;
        assert_eq!(status, 200, "{model}: {body}");
    }
    let (_, after) = usage().await;
    assert_eq!(before["totals"], after["totals"], "counting is not billed");

    // Suspended for a failed payment: refused, as for messages.
    let pool = store_pool(&t.db.url).await;
    sqlx::query("UPDATE api_keys SET suspended_ms = 1 WHERE id = $1")
        .bind(broke["id"].as_str().unwrap())
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) =
        post(&t, "/v1/messages/count_tokens", secret, &[], claude_code_request("gpt-test")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("payment_failed")), "{body}");
    assert_eq!(body["error"]["type"], "billing_error");

    // Disabled and revoked keys: 401.
    let key = t.mint(json!({"name": "gone"})).await;
    let (secret, id) = (key["secret"].as_str().unwrap(), key["id"].as_str().unwrap());
    let path = format!("/v1/keys/{id}");
    let disable = qlaud_tests::RawBody::Json(json!({"disabled": true}));
    t.request(reqwest::Method::PATCH, &path, Some(&t.master_key), Some(disable)).await;
    let (status, body) =
        post(&t, "/v1/messages/count_tokens", secret, &[], claude_code_request("claude-test"))
            .await;
    assert_eq!((status, body["error"]["type"].as_str()), (401, Some("authentication_error")));
    t.request(reqwest::Method::DELETE, &path, Some(&t.master_key), None).await;
    let (status, _) =
        post(&t, "/v1/messages/count_tokens", secret, &[], claude_code_request("claude-test"))
            .await;
    assert_eq!(status, 401);
    assert_eq!(mock.stats().input_tokens, 0);
    t.stop().await;
}

async fn count_errors_are_anthropic_shaped(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else { return };
    let path = "/v1/messages/count_tokens";
    let (status, body) =
        post(&t, path, "qlk_live_nope", &[], claude_code_request("claude-test")).await;
    assert_eq!((status, body["type"].as_str()), (401, Some("error")), "{body}");
    let (status, body) = post(&t, path, &t.master_key, &[], claude_code_request("nope")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "not_found_error");
    assert_eq!(body["error"]["code"], "model_not_found");
    let (status, body) = post(&t, path, &t.master_key, &[], json!({"messages": []})).await;
    assert_eq!((status, body["error"]["type"].as_str()), (400, Some("invalid_request_error")));
    // The provider's own errors come back as they were.
    let (status, body) =
        post(&t, path, &t.master_key, &[], claude_code_request("claude-error-529")).await;
    assert_eq!((status, body["error"]["type"].as_str()), (529, Some("overloaded_error")));
    t.stop().await;
}

async fn models_are_fetched_one_by_one(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else { return };
    let key = Some(t.master_key.as_str());
    let (_, list) = t.request(reqwest::Method::GET, "/v1/models", key, None).await;
    for listed in list["data"].as_array().unwrap() {
        let path = format!("/v1/models/{}", listed["id"].as_str().unwrap());
        let (status, one) = t.request(reqwest::Method::GET, &path, key, None).await;
        assert_eq!((status, &one), (200, listed));
    }
    let (status, body) = t.request(reqwest::Method::GET, "/v1/models/nope", key, None).await;
    assert_eq!(status, 404);
    // Anthropic's shape, with OpenAI's `code` in the same object.
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");
    assert_eq!(body["error"]["code"], "model_not_found");
    let (status, body) = t.request(reqwest::Method::GET, "/v1/models/echo", None, None).await;
    assert_eq!((status, body["error"]["type"].as_str()), (401, Some("authentication_error")));
    t.stop().await;
}

async fn sdk_counts_and_fetches(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let client = t.client(&t.master_key);
    let request = |model: &str| {
        types::MessageTokensRequest::builder()
            .model(model)
            .system(Some(json!("be brief")))
            .tools(Some(vec![json!({"name": "t", "input_schema": {"type": "object"}})]))
            .messages(vec![json!({"role": "user", "content": "one two three"})])
    };
    let claude = client.count_message_tokens().body(request("claude-test")).send().await.unwrap();
    assert_eq!(claude.input_tokens, 2 + 3 + 10);
    assert_eq!(mock.stats().last_body.unwrap()["tools"][0]["name"], "t");
    let gpt = client.count_message_tokens().body(request("gpt-test")).send().await.unwrap();
    assert!(gpt.input_tokens > 10);
    let model = client.get_model().model_id("gpt-test").send().await.unwrap().into_inner();
    assert_eq!(
        (model.id.as_str(), model.object.as_str(), model.type_.as_str()),
        ("gpt-test", "model", "model")
    );
    match client.get_model().model_id("nope").send().await.unwrap_err() {
        qlaud::Error::ErrorResponse(e) => {
            assert_eq!(e.status().as_u16(), 404);
            assert_eq!(e.error.code.as_deref(), Some("model_not_found"));
        }
        other => panic!("unexpected {other:?}"),
    }
    t.stop().await;
}

/// What LangChain JS's `ChatAnthropic` reads: input tokens from
/// `message_start`, output from the final `message_delta`.
async fn gpt_stream_reports_input_at_message_start(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let key = t.mint(json!({"name": "langchain"})).await;
    let secret = key["secret"].as_str().unwrap();
    let body = json!({"model": "gpt-test", "max_tokens": 100, "stream": true,
                      "system": "be brief",
                      "messages": [{"role": "user", "content": "hi there from langchain"}]});
    let resp = t
        .http
        .post(format!("{}/v1/messages", t.base_url))
        .header("x-api-key", secret)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(&resp.text().await.unwrap());
    let data = |name: &str| -> Value {
        let (_, d) = events.iter().find(|(n, _)| n.as_deref() == Some(name)).unwrap();
        serde_json::from_str(d).unwrap()
    };
    let start = data("message_start");
    let estimate = start["message"]["usage"]["input_tokens"].as_u64().unwrap();
    assert!(estimate > 0, "{start}");
    // The final event carries the provider's own count (the mock's: 2 + 4 words).
    let delta = data("message_delta");
    assert_eq!(delta["usage"]["input_tokens"], 6, "{delta}");
    assert_eq!(mock.stats().input_tokens, 6);
    // And the ledger settles from the provider's figures, not the estimate.
    let path = format!("/v1/usage?key_id={}", key["id"].as_str().unwrap());
    let (_, usage) = t.request(reqwest::Method::GET, &path, Some(&t.master_key), None).await;
    assert_eq!(usage["totals"]["input_tokens"], 6, "{usage}");
    t.stop().await;
}
