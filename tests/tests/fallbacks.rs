//! Provider retries and fallbacks, on SQLite and PostgreSQL, against the
//! mock upstream: a primary answering 529, 500 or 429 before its first byte
//! is retried or falls back (to a model of the same or the other dialect,
//! JSON and streamed); each attempt is admitted and settled on its own, so a
//! failed attempt is billed nothing, the answer once, and a dearer fallback
//! that does not fit the cap is refused with 402 before it is sent; nothing
//! is retried once the answer has started, nor after a 400. Thread turns
//! fall back the same way, and so do `/v1/responses` requests (passed
//! through to a GPT model or translated for a Claude one), their state
//! kept from the answer that came.

use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, TestServer, backend_tests, mock_toml, sse_events};
use serde_json::{Value, json};

backend_tests!(
    overloaded_primary_falls_back_and_bills_once,
    stream_falls_back_across_dialects,
    chat_completions_fall_back_to_claude,
    transient_failure_is_retried_on_the_same_model,
    rate_limited_retry_waits_for_retry_after,
    dearer_fallback_that_does_not_fit_is_refused_unsent,
    every_attempt_failing_answers_the_last_error_billed_nothing,
    nothing_is_retried_after_the_first_byte_or_a_bad_request,
    thread_turn_falls_back,
    a_failed_attempt_pays_no_request_fee,
    responses_fall_back_across_dialects_and_bill_once,
    responses_retry_and_hold_the_cap_across_attempts,
);

/// The mock's models plus primaries that fail and their fallbacks.
fn config(mock: &MockUpstream) -> String {
    let claude = r#"prices = { input = "3", output = "15" }"#;
    let gpt = r#"prices = { input = "1.25", output = "10" }"#;
    // $10 a token: no fallback of a capped key fits.
    let dear = r#"prices = { input = "10000000", output = "10000000" }"#;
    let mut toml = mock_toml(mock);
    toml.push_str("\n[retries]\ninitial_backoff_ms = 10\nmax_backoff_ms = 2000\n");
    let mut model = |name: &str, provider: &str, upstream: &str, prices: &str, extra: &str| {
        toml.push_str(&format!(
            "\n[models.\"{name}\"]\nprovider = \"{provider}\"\nupstream = \"{upstream}\"\n\
             max_output_tokens = 1000\n{prices}\n{extra}\n"
        ));
    };
    model("backup-claude", "anthropic", "claude-upstream", claude, "");
    model("backup-gpt", "openai", "gpt-upstream", gpt, "");
    model("backup-dear", "anthropic", "claude-upstream", dear, "");
    model("backup-broken", "anthropic", "claude-error-500", claude, "");
    let fb = |names: &[&str]| format!("fallbacks = {names:?}");
    model("overloaded", "anthropic", "claude-error-529", claude, &fb(&["backup-claude"]));
    model("broken-claude", "anthropic", "claude-error-500", claude, &fb(&["backup-gpt"]));
    model("broken-gpt", "openai", "gpt-error-500", gpt, &fb(&["backup-claude"]));
    model("flaky", "anthropic", "claude-error-529-once", claude, "retries = 1");
    model("limited-gpt", "openai", "gpt-error-429-once", gpt, "retries = 2");
    model("to-dear", "anthropic", "claude-error-529", claude, &fb(&["backup-dear"]));
    model("to-dear-gpt", "openai", "gpt-error-500", gpt, &fb(&["backup-dear"]));
    // OpenAI has no 529: the mock's overloaded GPT answers 503.
    model("overloaded-gpt", "openai", "gpt-error-529", gpt, &fb(&["backup-gpt"]));
    model(
        "all-broken",
        "anthropic",
        "claude-error-500",
        claude,
        &format!("{}\nretries = 1", fb(&["backup-broken"])),
    );
    model("cut-primary", "anthropic", "claude-cut", claude, &fb(&["backup-claude"]));
    model("bad-primary", "anthropic", "claude-error-400", claude, &fb(&["backup-claude"]));
    // $0.005 a request on top of its tokens.
    let fee = r#"prices = { input = "3", output = "15", requests = "5000" }"#;
    model("fee-overloaded", "anthropic", "claude-error-529", fee, &fb(&["backup-claude"]));
    toml
}

async fn start(backend: Backend) -> Option<(TestServer, MockUpstream)> {
    let mock = MockUpstream::start().await;
    let t = TestServer::start_with(backend, Some(&config(&mock))).await?;
    Some((t, mock))
}

async fn post(t: &TestServer, key: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = t
        .http
        .post(format!("{}{path}", t.base_url))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn events(
    t: &TestServer,
    key: &str,
    path: &str,
    body: Value,
) -> Vec<(Option<String>, Value)> {
    let resp = t
        .http
        .post(format!("{}{path}", t.base_url))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sse_events(&resp.text().await.unwrap())
        .into_iter()
        .map(|(name, data)| (name, serde_json::from_str(&data).unwrap_or(Value::String(data))))
        .collect()
}

fn message(model: &str) -> Value {
    json!({"model": model, "max_tokens": 40,
           "messages": [{"role": "user", "content": "one two three"}]})
}

/// A fresh standard key: (id, secret).
async fn key(t: &TestServer, body: Value) -> (String, String) {
    let k = t.mint(body).await;
    (k["id"].as_str().unwrap().to_string(), k["secret"].as_str().unwrap().to_string())
}

async fn overloaded_primary_falls_back_and_bills_once(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (id, secret) = key(&t, json!({"name": "u", "max_spend_usd": 5})).await;
    let (status, v) = post(&t, &secret, "/v1/messages", message("overloaded")).await;
    assert_eq!(status, 200, "{v}");
    // The answer names the model that answered.
    assert_eq!(v["model"], "backup-claude");
    assert_eq!(v["content"][0]["text"], "Hello from mock: one two three");
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.errors), (2, 1));
    assert_eq!(stats.last_body.unwrap()["model"], "claude-upstream");
    // 3 × $3 + 6 × $15 per million = 99 µ$, billed once; the 529 attempt
    // is its own request, billed nothing.
    let cost = v["usage"]["cost_micros"].as_i64().unwrap();
    assert_eq!(cost, 99);
    assert_eq!(t.settled(&id, 2).await, cost);
    let (status, log) =
        t.request(reqwest::Method::GET, "/v1/requests", Some(&t.master_key), None).await;
    assert_eq!(status, 200, "{log}");
    let mut rows: Vec<(String, i64, i64)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap().to_string(),
                r["status"].as_i64().unwrap(),
                r["cost_micros"].as_i64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(rows, [("backup-claude".into(), 200, 99), ("overloaded".into(), 529, 0)]);
    let (_, reserved, open) = qlaud_tests::ledger_state(&t.db.url, &id).await;
    assert_eq!((reserved, open), (0, 0));
}

async fn stream_falls_back_across_dialects(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (id, secret) = key(&t, json!({"name": "u", "max_spend_usd": 5})).await;
    let mut body = message("broken-claude");
    body["stream"] = json!(true);
    // Claude (500) → GPT, through the translation, streamed in Anthropic's shape.
    let evs = events(&t, &secret, "/v1/messages", body).await;
    let names: Vec<&str> = evs.iter().filter_map(|(n, _)| n.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert_eq!(evs[0].1["message"]["model"], "backup-gpt");
    let text: String = evs
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
        .map(|(_, v)| v["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "Hello from mock: one two three");
    let delta = &evs.iter().find(|(n, _)| n.as_deref() == Some("message_delta")).unwrap().1;
    // 3 × $1.25 + 6 × $10 per million = 63.75 → 64 µ$.
    assert_eq!(delta["usage"]["cost_micros"], 64);
    let stats = mock.stats();
    assert_eq!((stats.anthropic_requests, stats.openai_requests), (1, 1));
    assert_eq!(t.settled(&id, 2).await, 64);
    // The same, not streamed.
    let (status, v) = post(&t, &secret, "/v1/messages", message("broken-claude")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["model"].as_str(), v["usage"]["cost_micros"].as_i64()),
        (Some("backup-gpt"), Some(64))
    );
    assert_eq!(t.settled(&id, 4).await, 128);
}

async fn chat_completions_fall_back_to_claude(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (id, secret) = key(&t, json!({"name": "u"})).await;
    let body = json!({"model": "broken-gpt", "max_completion_tokens": 40,
                      "messages": [{"role": "user", "content": "one two three"}]});
    let (status, v) = post(&t, &secret, "/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "backup-claude");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock: one two three");
    assert_eq!(v["usage"]["cost_micros"], 99);
    // The fallback got the client's limit, in its own dialect.
    assert_eq!(mock.stats().last_body.unwrap()["max_tokens"], 40);
    let mut streamed = body;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let evs = events(&t, &secret, "/v1/chat/completions", streamed).await;
    let chunks: Vec<&Value> = evs.iter().map(|(_, v)| v).filter(|v| v.is_object()).collect();
    assert!(chunks.iter().all(|c| c["model"] == "backup-claude"), "{chunks:?}");
    let last = chunks.iter().rev().find(|c| c["usage"].is_object()).unwrap();
    assert_eq!(last["usage"]["cost_micros"], 99);
    assert_eq!(mock.stats().requests, 4);
    assert_eq!(t.settled(&id, 4).await, 198);
}

async fn transient_failure_is_retried_on_the_same_model(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (id, secret) = key(&t, json!({"name": "u", "max_spend_usd": 5})).await;
    let mut body = message("flaky");
    body["stream"] = json!(true);
    let evs = events(&t, &secret, "/v1/messages", body).await;
    assert_eq!(evs[0].1["message"]["model"], "flaky");
    let delta = &evs.iter().find(|(n, _)| n.as_deref() == Some("message_delta")).unwrap().1;
    assert_eq!(delta["usage"]["cost_micros"], 99);
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.errors), (2, 1));
    assert_eq!(t.settled(&id, 2).await, 99);
}

async fn rate_limited_retry_waits_for_retry_after(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (id, secret) = key(&t, json!({"name": "u"})).await;
    let body = json!({"model": "limited-gpt", "max_tokens": 40,
                      "messages": [{"role": "user", "content": "one two three"}]});
    let started = std::time::Instant::now();
    let (status, v) = post(&t, &secret, "/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{v}");
    // The mock's 429 asks for a second: the retry waited for it.
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(v["model"], "limited-gpt");
    assert_eq!(mock.stats().requests, 2);
    assert_eq!(t.settled(&id, 2).await, 64);
}

async fn dearer_fallback_that_does_not_fit_is_refused_unsent(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (id, secret) = key(&t, json!({"name": "u", "max_spend_usd": 5})).await;
    let (status, v) = post(&t, &secret, "/v1/messages", message("to-dear")).await;
    assert_eq!(status, 402, "{v}");
    assert_eq!(v["type"], "error");
    assert!(v["error"]["message"].as_str().unwrap().contains("spend cap"), "{v}");
    // Only the primary was sent; the fallback never reached the provider.
    assert_eq!(mock.stats().requests, 1);
    assert_eq!(mock.stats().last_body.unwrap()["model"], "claude-error-529");
    let (spent, _) = t.key_spend(&id).await;
    assert_eq!(spent, 0);
    let (_, reserved, open) = qlaud_tests::ledger_state(&t.db.url, &id).await;
    assert_eq!((reserved, open), (0, 0));
    // An uncapped key may use it: within the cap means only the cap.
    let (_, free) = key(&t, json!({"name": "free"})).await;
    let (status, v) = post(&t, &free, "/v1/messages", message("to-dear")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "backup-dear");
}

async fn every_attempt_failing_answers_the_last_error_billed_nothing(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (id, secret) = key(&t, json!({"name": "u", "max_spend_usd": 5})).await;
    let (status, v) = post(&t, &secret, "/v1/messages", message("all-broken")).await;
    assert_eq!(status, 500, "{v}");
    assert_eq!(v["error"]["type"], "api_error");
    // The primary, its one retry, then the fallback (whose own retries
    // are the default: none).
    assert_eq!(mock.stats().requests, 3);
    assert_eq!(t.settled(&id, 3).await, 0);
    let (_, reserved, open) = qlaud_tests::ledger_state(&t.db.url, &id).await;
    assert_eq!((reserved, open), (0, 0));
}

async fn nothing_is_retried_after_the_first_byte_or_a_bad_request(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (id, secret) = key(&t, json!({"name": "u", "max_spend_usd": 5})).await;
    // A stream that breaks after it started ends with an error event; the
    // fallback is not called.
    let mut body = message("cut-primary");
    body["stream"] = json!(true);
    let evs = events(&t, &secret, "/v1/messages", body).await;
    assert_eq!(evs[0].1["message"]["model"], "cut-primary");
    assert_eq!(evs.last().unwrap().0.as_deref(), Some("error"), "{evs:?}");
    assert_eq!(mock.stats().requests, 1);
    // A JSON answer cut in half: the provider answered, so no retry.
    let (status, v) = post(&t, &secret, "/v1/messages", message("cut-primary")).await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(mock.stats().requests, 2);
    // The provider refused the request itself: the client's to fix.
    let (status, v) = post(&t, &secret, "/v1/messages", message("bad-primary")).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(mock.stats().requests, 3);
    let spent = t.settled(&id, 3).await;
    // The cut answers are billed for what came through, never the fallback.
    assert!(spent > 0);
}

async fn thread_turn_falls_back(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (id, secret) = key(&t, json!({"name": "u", "max_spend_usd": 5})).await;
    let (status, thread) =
        post(&t, &secret, "/v1/threads", json!({"model": "broken-claude"})).await;
    assert_eq!(status, 201, "{thread}");
    let path = format!("/v1/threads/{}/messages", thread["id"].as_str().unwrap());
    let (status, answer) = post(&t, &secret, &path, json!({"content": "one two three"})).await;
    assert_eq!(status, 200, "{answer}");
    // Claude failed with 500; GPT answered, and the turn says so.
    assert_eq!(answer["model"], "backup-gpt");
    assert_eq!(answer["content"][0]["text"], "Hello from mock: one two three");
    assert_eq!(answer["usage"]["cost_micros"], 64);
    let stats = mock.stats();
    assert_eq!((stats.anthropic_requests, stats.openai_requests), (1, 1));
    assert_eq!(t.settled(&id, 2).await, 64);
}

async fn a_failed_attempt_pays_no_request_fee(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else { return };
    let (id, secret) = key(&t, json!({"name": "u", "max_spend_usd": 5})).await;
    let (status, v) = post(&t, &secret, "/v1/messages", message("fee-overloaded")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "backup-claude");
    // The 529 attempt of the model with a per-request fee costs nothing;
    // only the fallback's answer is billed.
    assert_eq!(t.settled(&id, 2).await, 99);
}

/// `(model, status, cost)` of every request in the log, sorted.
async fn log_rows(t: &TestServer) -> Vec<(String, i64, i64)> {
    let (status, log) =
        t.request(reqwest::Method::GET, "/v1/requests", Some(&t.master_key), None).await;
    assert_eq!(status, 200, "{log}");
    let mut rows: Vec<(String, i64, i64)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap().to_string(),
                r["status"].as_i64().unwrap(),
                r["cost_micros"].as_i64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn response_request(model: &str) -> Value {
    json!({"model": model, "max_output_tokens": 40, "input": "one two three"})
}

async fn responses_fall_back_across_dialects_and_bill_once(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (id, secret) = key(&t, json!({"name": "u", "max_spend_usd": 5})).await;
    // GPT (500) → Claude, translated into the Responses shape.
    let (status, v) = post(&t, &secret, "/v1/responses", response_request("broken-gpt")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "backup-claude");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello from mock: one two three");
    // 3 × $3 + 6 × $15 per million, billed once; the 500 nothing.
    assert_eq!(v["usage"]["cost_micros"], 99);
    let stats = mock.stats();
    assert_eq!((stats.openai_requests, stats.anthropic_requests, stats.errors), (1, 1, 1));
    assert_eq!(t.settled(&id, 2).await, 99);
    assert_eq!(
        log_rows(&t).await,
        [("backup-claude".into(), 200, 99), ("broken-gpt".into(), 500, 0)]
    );
    // The answer that came is the one kept, and a chain goes on from it.
    let resp_id = v["id"].as_str().unwrap();
    let (status, kept) = t
        .request(reqwest::Method::GET, &format!("/v1/responses/{resp_id}"), Some(&secret), None)
        .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["model"], "backup-claude");
    let mut next = response_request("broken-gpt");
    next["previous_response_id"] = json!(resp_id);
    next["input"] = json!("four");
    let (status, v) = post(&t, &secret, "/v1/responses", next).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["previous_response_id"], resp_id);
    // The history and "four" in: 10 × $3; "Hello from mock: four" out: 4 × $15.
    assert_eq!(v["usage"]["cost_micros"], 90);
    let last = mock.stats().last_body.unwrap();
    assert_eq!(last["messages"].as_array().unwrap().len(), 3, "{last}");
    // GPT (503: OpenAI's overloaded) → GPT, passed through, streamed.
    let mut streamed = response_request("overloaded-gpt");
    streamed["stream"] = json!(true);
    let evs = events(&t, &secret, "/v1/responses", streamed).await;
    let done = &evs.iter().find(|(n, _)| n.as_deref() == Some("response.completed")).unwrap().1;
    assert_eq!(done["response"]["model"], "backup-gpt");
    // 3 × $1.25 + 6 × $10 per million = 63.75 → 64 µ$.
    assert_eq!(done["response"]["usage"]["cost_micros"], 64);
    assert_eq!(t.settled(&id, 6).await, 99 + 90 + 64);
    let (_, reserved, open) = qlaud_tests::ledger_state(&t.db.url, &id).await;
    assert_eq!((reserved, open), (0, 0));
}

async fn responses_retry_and_hold_the_cap_across_attempts(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (id, secret) = key(&t, json!({"name": "u", "max_spend_usd": 5})).await;
    // The same model again after its 429's retry-after.
    let started = std::time::Instant::now();
    let (status, v) = post(&t, &secret, "/v1/responses", response_request("limited-gpt")).await;
    assert_eq!(status, 200, "{v}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(v["model"], "limited-gpt");
    assert_eq!(mock.stats().requests, 2);
    assert_eq!(t.settled(&id, 2).await, 64);
    // A dearer fallback that does not fit the cap is refused unsent, in
    // OpenAI's shape.
    let (status, v) = post(&t, &secret, "/v1/responses", response_request("to-dear-gpt")).await;
    assert_eq!(status, 402, "{v}");
    assert_eq!(v["error"]["code"], "spend_cap_reached", "{v}");
    assert_eq!(mock.stats().requests, 3);
    assert_eq!(t.settled(&id, 3).await, 64);
    let (_, reserved, open) = qlaud_tests::ledger_state(&t.db.url, &id).await;
    assert_eq!((reserved, open), (0, 0));
    // Nothing is retried after a bad request.
    let (status, v) = post(&t, &secret, "/v1/responses", response_request("bad-primary")).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(mock.stats().requests, 4);
}
