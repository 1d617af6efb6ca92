//! Perplexity's Agent API behind one key, on SQLite and PostgreSQL: a
//! Perplexity model answers through `/v1/chat/completions` and
//! `/v1/messages` (translated to the Responses shape it speaks) and through
//! `/v1/responses` (passed through), streamed and not; its built-in tools
//! are billed per invocation from the provider's `usage`; and the hostile
//! end user's ways past the cap (the provider's own multi-step loop,
//! fields that pick other models or run unseen, unpriced tools) are
//! reserved for or refused before the provider is called.

use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, TestServer, backend_tests, mock_toml, sse_events};
use serde_json::{Value, json};

backend_tests!(
    chat_and_messages_clients_reach_perplexity_through_its_responses_api,
    responses_pass_through_and_web_searches_are_billed_per_invocation,
    the_provider_loop_is_reserved_for_and_the_cap_holds,
    what_cannot_be_bounded_is_refused_before_the_provider,
);

/// $1 per million tokens either way; $0.005 a search, as `mock_toml` prices
/// `sonar-test`.
const SEARCH_MICROS: i64 = 5_000;

/// At $1 per million, a token costs one micro-dollar.
fn tokens_cost(input: u64, output: u64) -> i64 {
    (input + output) as i64
}

async fn user(t: &TestServer, cap_usd: f64) -> (String, String) {
    let key = t.mint(json!({"name": "searcher", "max_spend_usd": cap_usd})).await;
    (key["id"].as_str().unwrap().to_string(), key["secret"].as_str().unwrap().to_string())
}

async fn post(t: &TestServer, key: &str, path: &str, body: &Value) -> (u16, String) {
    let resp = t
        .http
        .post(format!("{}{path}", t.base_url))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn chat_and_messages_clients_reach_perplexity_through_its_responses_api(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let (id, key) = user(&t, 5.0).await;

    let body = json!({"model": "sonar-test", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]});
    let (status, text) = post(&t, &key, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "sonar-test");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock: hi there");
    let stats = mock.stats();
    assert_eq!(stats.last_path.as_deref(), Some("/v1/responses"), "the Agent API, not chat");
    assert_eq!(stats.header("authorization"), Some("Bearer mock-openai-key"));
    let sent = stats.last_body.unwrap();
    assert_eq!(sent["model"], "sonar-upstream");
    assert_eq!(sent["instructions"], "be brief");
    assert_eq!(sent["store"], false);
    assert_eq!(sent["input"][0]["content"][0], json!({"type": "input_text", "text": "hi there"}));
    // "be brief" + "hi there" in, five words out, at $1 per million each.
    let (input, output) = (4, 5);
    assert_eq!(v["usage"]["prompt_tokens"], input);
    assert_eq!(v["usage"]["completion_tokens"], output);
    let first = tokens_cost(input, output);
    assert_eq!(v["usage"]["cost_micros"], first);
    assert_eq!(t.key_spend(&id).await, (first, 1));

    // Streamed, with the usage chunk the client asked for.
    let body = json!({"model": "sonar-test", "stream": true,
                      "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "stream me"}]});
    let (status, text) = post(&t, &key, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{text}");
    let chunks: Vec<Value> = sse_events(&text)
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(&d).unwrap())
        .collect();
    let said: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(said, "Hello from mock: stream me");
    let usage = &chunks.last().unwrap()["usage"];
    let second = tokens_cost(2, 5);
    assert_eq!(usage["cost_micros"], second, "{usage}");

    // Anthropic's clients too.
    let body = json!({"model": "sonar-test", "max_tokens": 100,
                      "messages": [{"role": "user", "content": "from claude code"}]});
    let (status, text) = post(&t, &key, "/v1/messages", &body).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["content"][0]["text"], "Hello from mock: from claude code");
    assert_eq!(mock.stats().last_body.unwrap()["max_output_tokens"], 100);
    let third = v["usage"]["cost_micros"].as_i64().unwrap();
    assert_eq!(third, tokens_cost(3, 6));
    assert_eq!(t.key_spend(&id).await, (first + second + third, 3));
    t.stop().await;
}

async fn responses_pass_through_and_web_searches_are_billed_per_invocation(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let (id, key) = user(&t, 5.0).await;
    let body = json!({"model": "sonar-test", "input": "latest news",
                      "tools": [{"type": "web_search", "search_context_size": "high"}],
                      "x_new_param": 1});
    let (status, text) = post(&t, &key, "/v1/responses", &body).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["model"], "sonar-test");
    assert_eq!(v["output"][0]["type"], "search_results");
    let sent = mock.stats().last_body.unwrap();
    assert_eq!(sent["model"], "sonar-upstream");
    assert_eq!(sent["max_steps"], 5, "qlaud bounds the provider's loop itself");
    assert_eq!(sent["x_new_param"], 1, "unknown fields pass through");
    assert_eq!(sent["tools"][0]["search_context_size"], "high");
    // The mock searched twice; its own cost figure passes through.
    let usage = &v["usage"];
    assert_eq!(usage["tool_calls_details"]["web_search"]["invocation"], 2);
    assert!(usage["cost"]["total_cost"].is_number(), "{usage}");
    let (input, output) =
        (usage["input_tokens"].as_u64().unwrap(), usage["output_tokens"].as_u64().unwrap());
    let expected = tokens_cost(input, output) + 2 * SEARCH_MICROS;
    assert_eq!(usage["cost_micros"], expected);
    assert_eq!(t.key_spend(&id).await, (expected, 1));

    // Streamed: the same bill, read off `response.completed`.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["max_steps"] = json!(1);
    let (status, text) = post(&t, &key, "/v1/responses", &streamed).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(mock.stats().last_body.unwrap()["max_steps"], 1);
    let done = sse_events(&text)
        .into_iter()
        .map(|(_, d)| serde_json::from_str::<Value>(&d).unwrap())
        .find(|e| e["type"] == "response.completed")
        .expect("the stream completes");
    let usage = &done["response"]["usage"];
    // One step allows the mock one search.
    assert_eq!(usage["tool_calls_details"]["web_search"]["invocation"], 1);
    let (input, output) =
        (usage["input_tokens"].as_u64().unwrap(), usage["output_tokens"].as_u64().unwrap());
    let second = tokens_cost(input, output) + SEARCH_MICROS;
    assert_eq!(usage["cost_micros"], second);
    assert_eq!(t.key_spend(&id).await, (expected + second, 2));

    // The searches are a unit of their own in the usage report.
    let report = t
        .http
        .get(format!("{}/v1/usage?group_by=key", t.base_url))
        .bearer_auth(&t.master_key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(report["totals"]["units"]["web_search_calls"], 3, "{report}");
    t.stop().await;
}

async fn the_provider_loop_is_reserved_for_and_the_cap_holds(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    // A search request's worst case: five steps of the whole 1,000-token
    // window in and the 1,000-token limit out ($0.01), and fifteen
    // searches ($0.075). Each settles near $0.01 (two searches).
    let (id, key) = user(&t, 0.1).await;
    let body = json!({"model": "sonar-test", "input": "search for me",
                      "tools": [{"type": "web_search"}]});
    let mut answered = 0;
    let mut refused = 0;
    for _ in 0..4 {
        let (status, text) = post(&t, &key, "/v1/responses", &body).await;
        match status {
            200 => answered += 1,
            402 => {
                refused += 1;
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["error"]["code"], "spend_cap_reached", "{v}");
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    // $0.1 holds the worst case twice ($0.1 - 2 × ~$0.0100 < $0.085).
    assert_eq!((answered, refused), (2, 2));
    assert_eq!(mock.stats().requests, 2, "refusals never reach the provider");
    let (spent, requests) = t.key_spend(&id).await;
    assert_eq!(requests, 2);
    assert!(spent <= 100_000);
    assert!(spent >= 2 * 2 * SEARCH_MICROS, "the searches were billed: {spent}");

    // Without tools the same key still has room: one step, tokens only.
    let (status, text) =
        post(&t, &key, "/v1/responses", &json!({"model": "sonar-test", "input": "plain"})).await;
    assert_eq!(status, 200, "{text}");
    assert!(mock.stats().last_body.unwrap().get("max_steps").is_none());
    t.stop().await;
}

async fn what_cannot_be_bounded_is_refused_before_the_provider(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let (id, key) = user(&t, 5.0).await;
    for (bad, says) in [
        (json!({"tools": [{"type": "sandbox"}]}), "sandbox_calls"),
        (
            json!({"tools": [{"type": "mcp", "server_label": "x", "server_url": "https://x"}]}),
            "mcp",
        ),
        (json!({"models": ["openai/gpt-5.2", "anthropic/claude-opus-4-7"]}), "models"),
        (json!({"preset": "deep-research"}), "preset"),
        (json!({"background": true}), "background"),
        (json!({"tools": [{"type": "web_search"}], "max_steps": 0}), "max_steps"),
        (json!({"tools": [{"type": "web_search"}], "max_steps": "many"}), "max_steps"),
    ] {
        let mut body = json!({"model": "sonar-test", "input": "hi"});
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, text) = post(&t, &key, "/v1/responses", &body).await;
        assert_eq!(status, 400, "{bad}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(says), "{v}");
    }
    // An absurd step count is bounded, not refused.
    let body = json!({"model": "sonar-test", "input": "hi", "max_steps": 100,
                      "tools": [{"type": "fetch_url"}]});
    let (status, text) = post(&t, &key, "/v1/responses", &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(mock.stats().last_body.unwrap()["max_steps"], 10);
    assert_eq!(mock.stats().requests, 1, "only the bounded request reached the provider");
    assert_eq!(t.key_spend(&id).await.1, 1);
    t.stop().await;
}
