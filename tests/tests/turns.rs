//! Thread turns end to end against the mock providers: only the new turn is
//! sent and the provider sees the whole history, for Claude and GPT and
//! across a switch between them; the owner's key pays; an Idempotency-Key
//! runs and bills a retried turn once; client-side tools return to the
//! caller; streaming; truncation; the cap; and a provider that cuts its
//! stream or never reports usage still bills at least what it billed. On
//! SQLite and PostgreSQL.

use qlaud_tests::mock::{MockStats, MockUpstream};
use qlaud_tests::{Backend, TestServer, backend_tests, mock_toml, sse_events};
use serde_json::{Value, json};

backend_tests!(
    turns_carry_the_history_across_providers,
    an_admin_posting_bills_the_threads_owner,
    a_retried_turn_runs_and_bills_once,
    client_tools_return_to_the_caller,
    a_streamed_turn_is_stored_under_the_ids_it_showed,
    truncation_drops_the_oldest_turns_or_refuses,
    the_cap_refuses_a_turn_and_stores_nothing,
    other_keys_threads_are_not_found,
    cut_turns_bill_at_least_what_the_provider_billed,
);

async fn start(backend: Backend) -> Option<(TestServer, MockUpstream)> {
    let mock = MockUpstream::start().await;
    Some((TestServer::start_with(backend, Some(&mock_toml(&mock))).await?, mock))
}

/// A thread of `key`, with `body` as its settings.
async fn thread(t: &TestServer, key: &str, body: Value) -> String {
    let resp = t
        .http
        .post(format!("{}/v1/threads", t.base_url))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// Posts a turn; the status, the body, and the turn's cost header.
async fn turn(
    t: &TestServer,
    key: &str,
    thread: &str,
    body: Value,
    idempotency_key: Option<&str>,
) -> (u16, Value, i64) {
    let mut req = t
        .http
        .post(format!("{}/v1/threads/{thread}/messages", t.base_url))
        .bearer_auth(key)
        .json(&body);
    if let Some(k) = idempotency_key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let cost = resp
        .headers()
        .get("qlaud-cost-micros")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(-1);
    (status, resp.json().await.unwrap_or(Value::Null), cost)
}

async fn messages(t: &TestServer, key: &str, thread: &str) -> Vec<Value> {
    let (status, v) = t
        .request(
            reqwest::Method::GET,
            &format!("/v1/threads/{thread}/messages?order=asc&limit=100"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["items"].as_array().unwrap().clone()
}

fn text(message: &Value) -> String {
    message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect::<Vec<_>>()
        .join("")
}

/// The texts of the messages a provider got, whatever its shape.
fn sent_texts(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => {
                parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("")
            }
            _ => String::new(),
        })
        .collect()
}

async fn turns_carry_the_history_across_providers(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let (key, key_id) = user(&t, "alice").await;
    let id = thread(&t, &key, json!({"model": "claude-test", "system": "be brief"})).await;

    let (status, first, cost1) = turn(&t, &key, &id, json!({"content": "hello one"}), None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["role"], "assistant");
    assert_eq!(text(&first), "Hello from mock: hello one");
    assert_eq!(first["model"], "claude-test");
    assert_eq!(first["stop_reason"], "end_turn");
    assert_eq!(first["usage"]["cost_micros"], cost1);
    assert!(cost1 > 0);

    // Turn 2 sends only the new message; Claude gets the whole history.
    let (status, second, cost2) = turn(&t, &key, &id, json!({"content": "second"}), None).await;
    assert_eq!(status, 200, "{second}");
    let body = mock.stats().last_body.unwrap();
    assert_eq!(body["system"], "be brief");
    assert_eq!(sent_texts(&body), ["hello one", "Hello from mock: hello one", "second"]);

    // Turn 3 on a GPT model: the same history, in OpenAI's shape.
    let (status, third, cost3) =
        turn(&t, &key, &id, json!({"content": "third", "model": "gpt-test"}), None).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["model"], "gpt-test");
    let body = mock.stats().last_body.unwrap();
    assert_eq!(body["messages"][0], json!({"role": "system", "content": "be brief"}));
    assert_eq!(
        sent_texts(&body)[1..],
        ["hello one", "Hello from mock: hello one", "second", "Hello from mock: second", "third"]
    );

    let stored = messages(&t, &key, &id).await;
    assert_eq!(stored.len(), 6);
    assert_eq!(stored[5]["id"], third["id"]);
    assert_eq!(stored[4]["role"], "user");
    // Every round is billed to the key, once.
    assert_eq!(t.settled(&key_id, 3).await, cost1 + cost2 + cost3);
}

async fn user(t: &TestServer, name: &str) -> (String, String) {
    let key = t.mint(json!({"name": name})).await;
    (key["secret"].as_str().unwrap().to_string(), key["id"].as_str().unwrap().to_string())
}

async fn an_admin_posting_bills_the_threads_owner(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else {
        return;
    };
    let (_key, key_id) = user(&t, "bob").await;
    let admin = t.master_key.clone();
    let id = thread(&t, &admin, json!({"model": "claude-test", "key_id": key_id})).await;
    let (status, answer, cost) = turn(&t, &admin, &id, json!({"content": "on behalf"}), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(t.settled(&key_id, 1).await, cost);
    // The whole tenant spent exactly what the owner's key did.
    let (status, usage) = t.request(reqwest::Method::GET, "/v1/usage", Some(&admin), None).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["totals"]["cost_micros"], cost, "only the owner pays: {usage}");
}

async fn a_retried_turn_runs_and_bills_once(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let (key, key_id) = user(&t, "carol").await;
    let id = thread(&t, &key, json!({"model": "gpt-test"})).await;
    let body = json!({"content": "only once"});
    let (s1, a1, cost) = turn(&t, &key, &id, body.clone(), Some("turn-1")).await;
    assert_eq!(s1, 200, "{a1}");
    let (s2, a2, cost2) = turn(&t, &key, &id, body.clone(), Some("turn-1")).await;
    assert_eq!(s2, 200, "{a2}");
    assert_eq!(a1["id"], a2["id"]);
    assert_eq!(cost, cost2);
    assert_eq!(mock.stats().requests, 1, "the retry reached no provider");
    assert_eq!(messages(&t, &key, &id).await.len(), 2);
    assert_eq!(t.settled(&key_id, 1).await, cost);
    // The same key for another request is refused.
    let (s3, err, _) = turn(&t, &key, &id, json!({"content": "other"}), Some("turn-1")).await;
    assert_eq!(s3, 400, "{err}");
    assert_eq!(err["error_code"], "idempotency_mismatch");
}

async fn client_tools_return_to_the_caller(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else {
        return;
    };
    let (key, _) = user(&t, "dave").await;
    for model in ["claude-test", "gpt-test"] {
        let id = thread(&t, &key, json!({"model": model})).await;
        let tools = json!([{"name": "get_weather", "description": "Weather",
                            "input_schema": {"type": "object",
                                             "properties": {"city": {"type": "string"}}}}]);
        let (status, call, _) =
            turn(&t, &key, &id, json!({"content": "weather in Paris?", "tools": tools}), None)
                .await;
        assert_eq!(status, 200, "{call}");
        assert_eq!(call["stop_reason"], "tool_use", "{model}: {call}");
        let tool_use = call["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .cloned()
            .unwrap();
        assert_eq!(tool_use["input"], json!({"city": "Paris"}));
        // The caller answers in the next turn; the model reads the result.
        let result = json!([{"type": "tool_result", "tool_use_id": tool_use["id"],
                             "content": "sunny"}]);
        let (status, answer, _) =
            turn(&t, &key, &id, json!({"content": result, "tools": tools}), None).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(text(&answer), "The tool said: sunny", "{model}");
        assert_eq!(messages(&t, &key, &id).await.len(), 4);
    }
}

async fn a_streamed_turn_is_stored_under_the_ids_it_showed(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else {
        return;
    };
    let (key, key_id) = user(&t, "erin").await;
    for model in ["claude-test", "gpt-test", "echo"] {
        let id = thread(&t, &key, json!({"model": model})).await;
        let resp = t
            .http
            .post(format!("{}/v1/threads/{id}/messages", t.base_url))
            .bearer_auth(&key)
            .json(&json!({"content": "stream me", "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let events = sse_events(&resp.text().await.unwrap());
        let names: Vec<_> = events.iter().map(|(n, _)| n.clone().unwrap_or_default()).collect();
        assert_eq!(names.first().map(String::as_str), Some("message_start"), "{names:?}");
        assert_eq!(names.last().map(String::as_str), Some("message_stop"), "{names:?}");
        let start: Value = serde_json::from_str(&events[0].1).unwrap();
        let text: String = events
            .iter()
            .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
            .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap()["delta"]["text"].clone())
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        let stored = messages(&t, &key, &id).await;
        assert_eq!(stored.len(), 2, "{model}");
        assert_eq!(stored[1]["id"], start["message"]["id"], "{model}");
        assert_eq!(self::text(&stored[1]), text, "{model}");
        let delta: Value = events
            .iter()
            .find(|(n, _)| n.as_deref() == Some("message_delta"))
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .unwrap();
        assert_eq!(delta["usage"]["cost_micros"], stored[1]["usage"]["cost_micros"], "{model}");
    }
    assert!(t.key_spend(&key_id).await.0 > 0);
}

async fn truncation_drops_the_oldest_turns_or_refuses(backend: Backend) {
    let mock = MockUpstream::start().await;
    // A model with a small window: room for about two of the turns below.
    let toml = format!(
        "{}\n[models.\"claude-small\"]\nprovider = \"anthropic\"\nupstream = \"claude-small\"\n\
         max_output_tokens = 100\ncontext_window = 700\n\
         prices = {{ input = \"3\", output = \"15\" }}\n",
        mock_toml(&mock)
    );
    let Some(t) = TestServer::start_with(backend, Some(&toml)).await else {
        return;
    };
    let (key, _) = user(&t, "frank").await;
    let words = |tag: &str| format!("{tag} {}", "word ".repeat(300));
    let strict = thread(&t, &key, json!({"model": "claude-small"})).await;
    let auto = thread(&t, &key, json!({"model": "claude-small", "truncation": "auto"})).await;
    for id in [&strict, &auto] {
        let (s, v, _) = turn(&t, &key, id, json!({"content": words("first")}), None).await;
        assert_eq!(s, 200, "{v}");
    }
    // The history no longer fits: refused, and nothing stored.
    let (s, err, _) = turn(&t, &key, &strict, json!({"content": words("second")}), None).await;
    assert_eq!(s, 400, "{err}");
    assert_eq!(err["error_code"], "context_length_exceeded");
    assert_eq!(messages(&t, &key, &strict).await.len(), 2);
    // `auto` on the turn overrides the thread's default.
    let (s, v, _) =
        turn(&t, &key, &strict, json!({"content": words("second"), "truncation": "auto"}), None)
            .await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = turn(&t, &key, &auto, json!({"content": words("second")}), None).await;
    assert_eq!(s, 200, "{v}");
    let sent = sent_texts(&mock.stats().last_body.unwrap());
    assert!(sent.iter().all(|m| !m.starts_with("first")), "the oldest turn was dropped");
    assert!(sent.last().unwrap().starts_with("second"));
    // The thread still holds everything.
    assert_eq!(messages(&t, &key, &auto).await.len(), 4);
    // A message that alone outgrows the window is refused even with auto.
    let (s, err, _) = turn(&t, &key, &auto, json!({"content": "word ".repeat(2000)}), None).await;
    assert_eq!(s, 400, "{err}");
}

async fn the_cap_refuses_a_turn_and_stores_nothing(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let key = t.mint(json!({"name": "gina", "max_spend_usd": 0.000001})).await;
    let secret = key["secret"].as_str().unwrap();
    let id = thread(&t, secret, json!({"model": "claude-test"})).await;
    let (s, err, _) = turn(&t, secret, &id, json!({"content": "hello"}), Some("k1")).await;
    assert_eq!(s, 402, "{err}");
    assert_eq!(err["error_code"], "spend_cap_reached");
    assert_eq!(mock.stats().requests, 0);
    assert!(messages(&t, secret, &id).await.is_empty());
    // A refused turn releases its Idempotency-Key: the retry runs again.
    let (s, _, _) = turn(&t, secret, &id, json!({"content": "hello"}), Some("k1")).await;
    assert_eq!(s, 402);
}

async fn other_keys_threads_are_not_found(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let (a, _) = user(&t, "a").await;
    let (b, _) = user(&t, "b").await;
    let id = thread(&t, &a, json!({"model": "claude-test"})).await;
    let (s, err, _) = turn(&t, &b, &id, json!({"content": "mine now"}), None).await;
    assert_eq!(s, 404, "{err}");
    let (s, missing, _) = turn(&t, &b, "thr_nope", json!({"content": "x"}), None).await;
    assert_eq!(s, 404);
    assert_eq!(
        err["message"].as_str().unwrap().replace(&id, "ID"),
        missing["message"].as_str().unwrap().replace("thr_nope", "ID")
    );
    // Bad input changes nothing.
    for bad in [
        json!({"content": ""}),
        json!({"content": 3}),
        json!({"content": [{"type": "tool_use", "id": "x", "name": "y", "input": {}}]}),
        json!({"content": "x", "model": "no-such-model"}),
        json!({"content": "x", "max_tool_rounds": 0}),
        json!({"content": "x", "tools": "some"}),
        json!({"content": "x", "surprise": true}),
    ] {
        let (s, v, _) = turn(&t, &a, &id, bad.clone(), None).await;
        assert!((400..500).contains(&s), "{bad} → {s} {v}");
    }
    // No model anywhere.
    let bare = thread(&t, &a, json!({})).await;
    let (s, _, _) = turn(&t, &a, &bare, json!({"content": "x"}), None).await;
    assert_eq!(s, 400);
    assert_eq!(mock.stats().requests, 0);
    assert!(messages(&t, &a, &id).await.is_empty());
}

/// What the provider billed by the mock's counts at `prices` (µ$ per
/// million input and output tokens), rounded down.
fn billed(stats: &MockStats, prices: (i64, i64)) -> i64 {
    let pico = stats.input_tokens as i128 * prices.0 as i128
        + stats.output_tokens as i128 * prices.1 as i128;
    (pico / 1_000_000) as i64
}

/// The hostile end user's cut streams, on a thread turn: a provider whose
/// stream breaks off before its usage event, or that never reports usage,
/// streamed and not. Each turn is settled once, at no less than what the
/// provider billed (the reserved prompt bound and what came through), and
/// within the cap.
async fn cut_turns_bill_at_least_what_the_provider_billed(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    const CLAUDE: (i64, i64) = (3_000_000, 15_000_000);
    const GPT: (i64, i64) = (1_250_000, 10_000_000);
    for (model, prices) in [
        ("claude-greedy-cut", CLAUDE),
        ("gpt-greedy-cut", GPT),
        ("claude-nousage", CLAUDE),
        ("gpt-nousage", GPT),
    ] {
        for stream in [false, true] {
            mock.reset_stats();
            let key = t.mint(json!({"name": "cutter", "max_spend_usd": 1})).await;
            let (secret, key_id) = (key["secret"].as_str().unwrap(), key["id"].as_str().unwrap());
            let id = thread(&t, secret, json!({"model": model})).await;
            let body = json!({"content": "tell me about the sea", "stream": stream});
            let (status, v, _) = turn(&t, secret, &id, body, None).await;
            assert!(status == 200 || status == 502, "{model} {stream}: {status} {v}");
            let cost = t.settled(key_id, 1).await;
            let stats = mock.stats();
            assert_eq!(stats.requests, 1, "{model} {stream}");
            assert!(stats.output_tokens > 0, "{model} {stream}");
            assert!(
                cost >= billed(&stats, prices),
                "{model} {stream}: billed {cost} < the provider's {}",
                billed(&stats, prices)
            );
            assert!(cost <= 1_000_000, "{model} {stream}: {cost}");
        }
    }
}
