//! Registered tools in thread turns: qlaud calls the tool's webhook (signed
//! with Standard Webhooks, checked here with an independent HMAC), feeds the
//! result back and calls the model again, for Claude and GPT, streamed and
//! not; a webhook that fails, times out or answers garbage becomes an error
//! result; `max_tool_rounds`; the cap running out mid-loop. On SQLite and
//! PostgreSQL, against the mock providers.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, TestServer, backend_tests, mock_toml, sse_events};
use serde_json::{Value, json};

backend_tests!(
    a_registered_tool_runs_in_the_loop,
    parallel_calls_run_at_once_and_answer_in_one_turn,
    a_streamed_loop_shows_each_round_and_tool,
    failing_webhooks_become_error_results,
    max_tool_rounds_ends_the_loop,
    the_cap_ends_the_loop_with_what_was_spent,
    another_tenants_tool_cannot_be_named,
);

/// One call a webhook received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// What a receiver got, and how many `/together` calls overlapped.
#[derive(Default)]
struct Log {
    calls: Mutex<Vec<Received>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl Log {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Received>> {
        self.calls.lock().unwrap()
    }
}

type Calls = Arc<Log>;

/// A tool webhook receiver. `/ok` answers `{"content": "sunny"}`; `/again`
/// asks about the weather again (so the model calls once more) on its first
/// `again` calls; `/slow` answers after 3 s; `/fail` answers 500;
/// `/garbage` answers text that is not JSON; `/together` waits until a
/// second call is in flight (at most 2 s) and answers with its city.
async fn receiver(again: usize) -> (String, Calls) {
    use axum::routing::post;
    let calls = Calls::default();
    let sink = calls.clone();
    let handler = move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
        let sink = sink.clone();
        async move {
            let h =
                |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let path = uri.path().to_string();
            let n = {
                let mut calls = sink.lock();
                calls.push(Received {
                    path: path.clone(),
                    id: h("webhook-id"),
                    timestamp: h("webhook-timestamp"),
                    signature: h("webhook-signature"),
                    body: body.clone(),
                });
                calls.iter().filter(|c| c.path == path).count()
            };
            use axum::response::IntoResponse;
            match path.as_str() {
                "/again" if n <= again => {
                    axum::Json(json!({"content": "ask about the weather again"})).into_response()
                }
                // Long answers: each round's history, and so its worst case,
                // grows by 100 words.
                "/again-long" => {
                    let padding = "cloudy ".repeat(100);
                    let content = format!("ask about the weather again {padding}");
                    axum::Json(json!({"content": content})).into_response()
                }
                "/ok" | "/again" => axum::Json(json!({"content": "sunny"})).into_response(),
                "/together" => {
                    let now = sink.in_flight.fetch_add(1, SeqCst) + 1;
                    sink.most_in_flight.fetch_max(now, SeqCst);
                    for _ in 0..40 {
                        if sink.most_in_flight.load(SeqCst) >= 2 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    sink.in_flight.fetch_sub(1, SeqCst);
                    let body: Value = serde_json::from_str(&body).unwrap();
                    let city = body["input"]["city"].as_str().unwrap_or("?").to_string();
                    axum::Json(json!({"content": format!("{city} is sunny")})).into_response()
                }
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    axum::Json(json!({"content": "late"})).into_response()
                }
                "/fail" => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
                _ => "this is not json".into_response(),
            }
        }
    };
    let app = axum::Router::new().route("/{*path}", post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, calls)
}

/// Standard Webhooks' `v1`, computed with the HMAC and base64 crates rather
/// than with qlaud's own signing code.
fn standard_v1(whsec: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let key = engine.decode(whsec.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", engine.encode(mac.finalize().into_bytes()))
}

async fn start(backend: Backend) -> Option<(TestServer, MockUpstream)> {
    let mock = MockUpstream::start().await;
    Some((TestServer::start_with(backend, Some(&mock_toml(&mock))).await?, mock))
}

async fn post(t: &TestServer, key: &str, path: &str, body: Value) -> (u16, Value) {
    t.request(reqwest::Method::POST, path, Some(key), Some(qlaud_tests::RawBody::Json(body))).await
}

/// Registers `get_weather` calling `{base}{path}`, with `timeout_secs`.
async fn register(t: &TestServer, name: &str, url: &str, timeout_secs: u64) {
    let (s, v) = post(
        t,
        &t.master_key,
        "/v1/tools",
        json!({"name": name, "description": "The weather in a city",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]},
               "webhook_url": url, "timeout_secs": timeout_secs}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

async fn rotate(t: &TestServer) -> String {
    let (s, v) = post(t, &t.master_key, "/v1/webhooks/secret/rotate", json!({})).await;
    assert_eq!(s, 200, "{v}");
    v["secret"].as_str().unwrap().to_string()
}

async fn new_thread(t: &TestServer, key: &str, model: &str) -> String {
    let (s, v) = post(t, key, "/v1/threads", json!({"model": model})).await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().unwrap().to_string()
}

async fn user(t: &TestServer, body: Value) -> (String, String) {
    let key = t.mint(body).await;
    (key["secret"].as_str().unwrap().to_string(), key["id"].as_str().unwrap().to_string())
}

async fn stored(t: &TestServer, key: &str, thread: &str) -> Vec<Value> {
    let path = format!("/v1/threads/{thread}/messages?order=asc&limit=100");
    let (s, v) = t.request(reqwest::Method::GET, &path, Some(key), None).await;
    assert_eq!(s, 200, "{v}");
    v["items"].as_array().unwrap().clone()
}

fn text(m: &Value) -> String {
    m["content"].as_array().unwrap().iter().filter_map(|b| b["text"].as_str()).collect()
}

async fn a_registered_tool_runs_in_the_loop(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let (base, calls) = receiver(0).await;
    register(&t, "get_weather", &format!("{base}/ok"), 5).await;
    let whsec = rotate(&t).await;
    let (key, key_id) = user(&t, json!({"name": "u"})).await;
    let mut spent = 0;
    for model in ["claude-test", "gpt-test"] {
        let thread = new_thread(&t, &key, model).await;
        let (s, answer) = post(
            &t,
            &key,
            &format!("/v1/threads/{thread}/messages"),
            json!({"content": "what is the weather in Paris?", "tools": ["get_weather"]}),
        )
        .await;
        assert_eq!(s, 200, "{answer}");
        assert_eq!(text(&answer), "The tool said: sunny", "{model}");
        assert_eq!(answer["stop_reason"], "end_turn");
        // user, assistant (call), user (result), assistant (answer)
        let messages = stored(&t, &key, &thread).await;
        assert_eq!(messages.len(), 4, "{model}: {messages:?}");
        let call = messages[1]["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .cloned()
            .unwrap();
        assert_eq!(messages[2]["content"][0]["tool_use_id"], call["id"], "the call id is kept");
        assert_eq!(messages[2]["content"][0]["content"], "sunny");
        for m in [&messages[1], &messages[3]] {
            spent += m["usage"]["cost_micros"].as_i64().unwrap();
        }
        // The webhook got the call, signed for the tenant's secret.
        let got = calls.lock().last().cloned().unwrap();
        let body: Value = serde_json::from_str(&got.body).unwrap();
        assert_eq!(body["type"], "tool.call");
        assert_eq!(body["tool"], "get_weather");
        assert_eq!(body["input"], json!({"city": "Paris"}));
        assert_eq!(body["id"], call["id"]);
        assert_eq!(body["thread_id"], thread.as_str());
        assert_eq!(
            got.signature,
            standard_v1(&whsec, &got.id, &got.timestamp, got.body.as_bytes())
        );
    }
    // Each model round billed once: two per turn.
    assert_eq!(t.settled(&key_id, 4).await, spent);
    assert_eq!(mock.stats().requests, 4);
}

async fn parallel_calls_run_at_once_and_answer_in_one_turn(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let (base, calls) = receiver(0).await;
    register(&t, "get_weather", &format!("{base}/together"), 5).await;
    let (key, _) = user(&t, json!({"name": "p"})).await;
    // The mock's Claude calls the tool twice at once for "everywhere".
    let thread = new_thread(&t, &key, "claude-test").await;
    let (s, answer) = post(
        &t,
        &key,
        &format!("/v1/threads/{thread}/messages"),
        json!({"content": "the weather everywhere?", "tools": ["get_weather"]}),
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(calls.lock().len(), 2);
    assert!(calls.most_in_flight.load(SeqCst) >= 2, "the calls overlapped");
    // Both results go back in one message, each with its call's id.
    let messages = stored(&t, &key, &thread).await;
    assert_eq!(messages.len(), 4);
    let results = messages[2]["content"].as_array().unwrap();
    let mut got: Vec<(String, String)> = results
        .iter()
        .map(|r| (r["tool_use_id"].as_str().unwrap().into(), r["content"].as_str().unwrap().into()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("toolu_mock1".into(), "Paris is sunny".into()),
            ("toolu_mock2".into(), "Rome is sunny".into())
        ]
    );
    assert_eq!(mock.stats().requests, 2);
}

async fn a_streamed_loop_shows_each_round_and_tool(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else {
        return;
    };
    let (base, _calls) = receiver(0).await;
    register(&t, "get_weather", &format!("{base}/ok"), 5).await;
    let (key, _) = user(&t, json!({"name": "s"})).await;
    for model in ["claude-test", "gpt-test"] {
        let thread = new_thread(&t, &key, model).await;
        let resp = t
            .http
            .post(format!("{}/v1/threads/{thread}/messages", t.base_url))
            .bearer_auth(&key)
            .json(&json!({"content": "weather?", "tools": "all", "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let events = sse_events(&resp.text().await.unwrap());
        let names: Vec<String> =
            events.iter().map(|(n, _)| n.clone().unwrap_or_default()).collect();
        let count = |n: &str| names.iter().filter(|x| *x == n).count();
        assert_eq!(count("message_start"), 2, "{model}: {names:?}");
        assert_eq!(count("message_stop"), 2, "{model}: {names:?}");
        let started = names.iter().position(|n| n == "tool_execution.started").unwrap();
        let completed = names.iter().position(|n| n == "tool_execution.completed").unwrap();
        let stops: Vec<usize> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| *n == "message_stop")
            .map(|(i, _)| i)
            .collect();
        assert!(stops[0] < started && started < completed && completed < stops[1], "{names:?}");
        let done: Value = serde_json::from_str(&events[completed].1).unwrap();
        assert_eq!(done["name"], "get_weather");
        assert_eq!(done["is_error"], false);
        assert!(done["duration_ms"].is_u64());
        let messages = stored(&t, &key, &thread).await;
        assert_eq!(messages.len(), 4);
        assert_eq!(text(&messages[3]), "The tool said: sunny");
    }
}

async fn failing_webhooks_become_error_results(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else {
        return;
    };
    let (base, calls) = receiver(0).await;
    register(&t, "slow_weather", &format!("{base}/slow"), 1).await;
    register(&t, "failing_weather", &format!("{base}/fail"), 5).await;
    register(&t, "garbage_weather", &format!("{base}/garbage"), 5).await;
    let (key, _) = user(&t, json!({"name": "f"})).await;
    for tool in ["slow_weather", "failing_weather", "garbage_weather"] {
        let thread = new_thread(&t, &key, "claude-test").await;
        let (s, answer) = post(
            &t,
            &key,
            &format!("/v1/threads/{thread}/messages"),
            json!({"content": "weather?", "tools": [tool]}),
        )
        .await;
        assert_eq!(s, 200, "{tool}: {answer}");
        let messages = stored(&t, &key, &thread).await;
        let result = &messages[2]["content"][0];
        assert_eq!(result["is_error"], true, "{tool}: {result}");
        assert!(text(&answer).starts_with("The tool said:"), "the model read the error: {answer}");
    }
    // Tool calls are never retried.
    let per_path = |p: &str| calls.lock().iter().filter(|c| c.path == p).count();
    assert_eq!((per_path("/slow"), per_path("/fail"), per_path("/garbage")), (1, 1, 1));
}

async fn max_tool_rounds_ends_the_loop(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let (base, calls) = receiver(100).await;
    register(&t, "get_weather", &format!("{base}/again"), 5).await;
    let (key, _) = user(&t, json!({"name": "m"})).await;
    let thread = new_thread(&t, &key, "gpt-test").await;
    let (s, answer) = post(
        &t,
        &key,
        &format!("/v1/threads/{thread}/messages"),
        json!({"content": "weather?", "tools": ["get_weather"], "max_tool_rounds": 3}),
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(answer["stop_reason"], "max_tool_rounds");
    assert_eq!(mock.stats().requests, 3, "three model rounds");
    assert_eq!(calls.lock().len(), 2, "the last round's call is not run");
    // The thread stays usable: the next turn answers the open call.
    let (s, next) =
        post(&t, &key, &format!("/v1/threads/{thread}/messages"), json!({"content": "never mind"}))
            .await;
    assert_eq!(s, 200, "{next}");
}

async fn the_cap_ends_the_loop_with_what_was_spent(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let (base, _calls) = receiver(100).await;
    register(&t, "get_weather", &format!("{base}/again-long"), 5).await;
    // Every round's history grows by the tool's 100 words, and its worst
    // case (the prompt's bytes) with it, without end: the cap, not the
    // round limit, ends the loop.
    let (key, key_id) = user(&t, json!({"name": "c", "max_spend_usd": 0.05})).await;
    let thread = new_thread(&t, &key, "claude-test").await;
    let (s, answer) = post(
        &t,
        &key,
        &format!("/v1/threads/{thread}/messages"),
        json!({"content": "weather?", "tools": ["get_weather"], "max_tool_rounds": 32}),
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(answer["stop_reason"], "spend_cap_reached");
    let rounds = mock.stats().requests;
    assert!(rounds >= 3, "{rounds} rounds ran");
    let messages = stored(&t, &key, &thread).await;
    let billed: i64 = messages.iter().filter_map(|m| m["usage"]["cost_micros"].as_i64()).sum();
    let spent = t.settled(&key_id, rounds).await;
    assert_eq!(spent, billed, "the rounds that ran are billed exactly");
    assert!(spent <= 50_000, "spent {spent} µ$ of a 50000 µ$ cap");
    // The turn is stored as far as it ran, the last call answered.
    assert_eq!(messages.last().unwrap()["stop_reason"], "spend_cap_reached");
    assert_eq!(messages.len() as u64, 1 + 2 * rounds + 1);
}

async fn another_tenants_tool_cannot_be_named(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else {
        return;
    };
    let (base, calls) = receiver(0).await;
    register(&t, "get_weather", &format!("{base}/ok"), 5).await;
    let (_, other_admin) = t.create_tenant("other").await;
    let (s, v) = post(&t, &other_admin, "/v1/threads", json!({"model": "claude-test"})).await;
    assert_eq!(s, 201, "{v}");
    let thread = v["id"].as_str().unwrap();
    let (s, err) = post(
        &t,
        &other_admin,
        &format!("/v1/threads/{thread}/messages"),
        json!({"content": "weather?", "tools": ["get_weather"]}),
    )
    .await;
    assert_eq!(s, 400, "{err}");
    assert!(calls.lock().is_empty());
    // "all" offers only the tenant's own tools: none here.
    let (s, answer) = post(
        &t,
        &other_admin,
        &format!("/v1/threads/{thread}/messages"),
        json!({"content": "weather?", "tools": "all"}),
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    assert!(calls.lock().is_empty());
}
