//! A job's model call streams from the provider, on SQLite and PostgreSQL:
//! a job cancelled while in progress stops the provider's stream (the mock
//! sees it dropped before its end) and is billed what it produced, by the
//! rule for a stream its client left; the cancellation reaches a worker in
//! another process on one PostgreSQL; a job that completes answers exactly
//! the body of the synchronous call.

use std::time::Duration;

use qlaud_tests::mock::{MockStats, MockUpstream};
use qlaud_tests::{
    Backend, QlaudProcess, RawBody, TestDb, TestServer, backend_tests, ledger_state, mock_toml,
};
use reqwest::Method;
use serde_json::{Value, json};

backend_tests!(
    cancelling_a_running_job_stops_its_stream_and_bills_what_came,
    a_streamed_job_answers_the_synchronous_body,
);

// PostgreSQL only (two processes on one store), named like the PostgreSQL
// half of the other tests so a run without a database skips it.
mod cross_process {
    mod postgres {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_cancel_sent_to_another_process_stops_the_job() {
            super::super::a_cancel_sent_to_another_process_stops_the_job().await
        }
    }
}

async fn submit(base: &str, key: &str, endpoint: &str, body: &Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(key)
        .json(&json!({"endpoint": endpoint, "body": body}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    resp.json().await.unwrap()
}

async fn cancel(base: &str, key: &str, id: &str) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/jobs/{id}/cancel"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Polls until the job is final.
async fn wait(base: &str, key: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job: Value = reqwest::Client::new()
            .get(format!("{base}/v1/jobs/{id}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["poll_after_ms"].is_null() {
            return job;
        }
        assert!(tokio::time::Instant::now() < deadline, "job never ended: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the mock has streamed at least `tokens` output tokens.
async fn streamed(mock: &MockUpstream, tokens: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while mock.stats().output_tokens < tokens {
        assert!(tokio::time::Instant::now() < deadline, "the provider never streamed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the mock has seen `n` streams dropped by their client (it
/// notices at its next event); its stats then.
async fn dropped(mock: &MockUpstream, n: u64) -> MockStats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = mock.stats();
        if stats.streams_dropped >= n {
            assert_eq!(stats.streams_dropped, n, "{stats:?}");
            return stats;
        }
        assert!(tokio::time::Instant::now() < deadline, "no stream was dropped: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn standard_key(t: &TestServer) -> (String, String) {
    let key = t.mint(json!({"name": "u", "max_spend_usd": 5})).await;
    (key["id"].as_str().unwrap().into(), key["secret"].as_str().unwrap().into())
}

/// `n` one-letter words: the mock's reply echoes them after "Hello from
/// mock:", one streamed event (and output token) per word, 100 ms apart
/// on the `slow` models.
fn words(n: usize) -> String {
    vec!["w"; n].join(" ")
}

/// The bytes of the mock's first `events` text deltas for a reply to
/// `words(n)`: the content a cut stream is billed for, a token a byte.
fn reply_bytes(events: u64) -> u64 {
    let lead = ["Hello ", "from ", "mock: "];
    (0..events).map(|i| lead.get(i as usize).map_or(2, |w| w.len() as u64)).sum()
}

/// Micro-dollars of `tokens` at `per_mtok_centi` hundredths of a dollar
/// per million tokens, exact in hundredths of a micro-dollar.
fn centi_micros(tokens: u64, per_mtok_centi: u64) -> u64 {
    tokens * per_mtok_centi
}

/// A job that streams until it is cancelled through `cancel_at`, checked
/// against what the mock saw.
struct Case {
    endpoint: &'static str,
    body: Value,
    /// Reply words in all (the lead's three included).
    reply_words: u64,
    /// Prices in hundredths of a dollar per million input / output tokens.
    prices: (u64, u64),
}

fn cases(thread: &str) -> Vec<Case> {
    let text = words(200);
    let user = json!([{"role": "user", "content": text}]);
    vec![
        Case {
            endpoint: "/v1/messages",
            body: json!({"model": "claude-slow", "max_tokens": 1000, "messages": user}),
            reply_words: 203,
            prices: (300, 1500),
        },
        Case {
            endpoint: "/v1/chat/completions",
            body: json!({"model": "gpt-slow", "max_tokens": 1000, "messages": user}),
            reply_words: 203,
            prices: (125, 1000),
        },
        Case {
            endpoint: "/v1/responses",
            body: json!({"model": "gpt-slow", "max_output_tokens": 1000, "input": text}),
            reply_words: 203,
            prices: (125, 1000),
        },
        Case {
            endpoint: Box::leak(format!("/v1/threads/{thread}/messages").into_boxed_str()),
            body: json!({"content": text, "model": "claude-slow", "max_tokens": 1000}),
            reply_words: 203,
            prices: (300, 1500),
        },
    ]
}

/// Submits `case` to `submit_base`, cancels it through `cancel_base` once
/// the provider is streaming, and checks the job, the mock and the bill.
/// Returns the job.
async fn run_and_cancel(
    mock: &MockUpstream,
    submit_base: &str,
    cancel_base: &str,
    key: &str,
    case: &Case,
) -> Value {
    let before = mock.stats();
    let job = submit(submit_base, key, case.endpoint, &case.body).await;
    let id = job["id"].as_str().unwrap().to_string();
    streamed(mock, before.output_tokens + 5).await;
    let asked = cancel(cancel_base, key, &id).await;
    assert_eq!(asked["cancel_requested"], true, "{asked}");
    let done = wait(submit_base, key, &id).await;
    let label = case.endpoint;
    assert_eq!(done["status"], "cancelled", "{label}: {done}");
    // The provider's stream was dropped before its end, and stays stopped.
    let after = dropped(mock, before.streams_dropped + 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.stats().output_tokens, after.output_tokens, "{label}: the provider went on");
    assert_eq!(after.streams_dropped, before.streams_dropped + 1, "{label}: {after:?}");
    assert_eq!(after.streams_finished, before.streams_finished, "{label}");
    assert_eq!(after.requests, before.requests + 1, "{label}: one call");
    assert_eq!(after.last_body.as_ref().unwrap()["stream"], true, "{label}: streamed");
    let emitted = after.output_tokens - before.output_tokens;
    assert!(emitted < case.reply_words, "{label}: {emitted} of {} words", case.reply_words);
    // Billed what came through, at the prices: the input as the provider
    // reported it (OpenAI reports none before its last chunk: the reserved
    // prompt bound), the output a token per byte of the content seen (the
    // provider may have handed over one more event than was read).
    let input = after.input_tokens - before.input_tokens;
    let cost = done["cost_micros"].as_u64().unwrap();
    let (billed_in, billed_out) = billed(&done, label);
    check_output(&done, label, billed_out, emitted);
    if matches!(label, "/v1/chat/completions" | "/v1/responses") {
        assert!(billed_in >= input, "{label}: input {billed_in} < {input}");
    } else {
        assert_eq!(billed_in, input, "{label}");
    }
    let at_prices =
        centi_micros(billed_in, case.prices.0) + centi_micros(billed_out, case.prices.1);
    assert_eq!(cost, at_prices.div_ceil(100), "{label}: {done}");
    let full = centi_micros(input, case.prices.0) + centi_micros(case.reply_words, case.prices.1);
    assert!(cost > 0 && cost < full / 100, "{label}: {cost} of the full {}", full / 100);
    done
}

/// The output billed is the text that came through, a token a byte, and
/// that text is what the provider streamed (the provider may have handed
/// over more than was read before the stream was dropped).
fn check_output(done: &Value, label: &str, billed_out: u64, emitted: u64) {
    let body = &done["result"]["body"];
    let text = match label {
        "/v1/chat/completions" => &body["choices"][0]["message"]["content"],
        "/v1/responses" => &body["output"][0]["content"][0]["text"],
        _ => &body["content"][0]["text"],
    };
    let text = text.as_str().unwrap_or_else(|| panic!("{label}: no text in {done}"));
    assert_eq!(billed_out, text.len() as u64, "{label}: billed output for {text:?}");
    assert!(text.starts_with("Hello from mock: w"), "{label}: {text}");
    assert!(
        billed_out <= reply_bytes(emitted),
        "{label}: billed {billed_out} output tokens for {emitted} events streamed"
    );
}

/// The input and output tokens a job's result reports.
fn billed(done: &Value, label: &str) -> (u64, u64) {
    let u = &done["usage"];
    match label {
        "/v1/chat/completions" => {
            (u["prompt_tokens"].as_u64().unwrap(), u["completion_tokens"].as_u64().unwrap())
        }
        _ => (u["input_tokens"].as_u64().unwrap(), u["output_tokens"].as_u64().unwrap()),
    }
}

async fn cancelling_a_running_job_stops_its_stream_and_bills_what_came(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let (key_id, key) = standard_key(&t).await;
    let (_, thread) =
        t.request(Method::POST, "/v1/threads", Some(&key), Some(RawBody::Json(json!({})))).await;
    let thread = thread["id"].as_str().unwrap();
    let mut total = 0;
    for case in cases(thread) {
        let done = run_and_cancel(&mock, &t.base_url, &t.base_url, &key, &case).await;
        let label = case.endpoint;
        assert_eq!(done["cancel_requested"], true);
        total += done["cost_micros"].as_i64().unwrap();
        let body = &done["result"]["body"];
        match label {
            "/v1/messages" => {
                assert_eq!(done["error"]["code"], "job_cancelled", "{done}");
                assert_eq!(body["type"], "message");
                assert_eq!(body["stop_reason"], Value::Null, "stopped short");
            }
            "/v1/chat/completions" => {
                assert_eq!(done["error"]["code"], "job_cancelled", "{done}");
                assert_eq!(body["object"], "chat.completion");
                assert_eq!(body["choices"][0]["finish_reason"], Value::Null);
            }
            "/v1/responses" => {
                assert_eq!(done["error"]["code"], "job_cancelled", "{done}");
                assert_eq!(body["object"], "response");
                assert_eq!(body["status"], "cancelled", "{done}");
            }
            _ => {
                // A thread turn keeps what it did, in the thread too.
                assert_eq!(done["error"]["code"], "job_cancelled", "{done}");
                assert_eq!(body["object"], "thread.message", "{done}");
                assert_eq!(body["stop_reason"], Value::Null, "stopped short");
                let (_, messages) = t.request(Method::GET, label, Some(&key), None).await;
                let items = messages["items"].as_array().unwrap();
                assert_eq!(items.len(), 2, "{messages}");
            }
        }
        assert_eq!(body["usage"]["cost_micros"], done["cost_micros"], "{label}: {done}");
    }
    // The usage report bills each call once, at what the job shows.
    assert_eq!(t.settled(&key_id, 4).await, total);
    let (_, reserved, open) = ledger_state(&t.db.url, &key_id).await;
    assert_eq!((reserved, open), (0, 0), "every reservation closed");
}

async fn a_cancel_sent_to_another_process_stops_the_job() {
    let Some(db) = TestDb::new(Backend::Postgres).await else { return };
    let mock = MockUpstream::start().await;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), mock_toml(&mock)).unwrap();
    let args = ["--database-url", db.url.as_str(), "--config", config.path().to_str().unwrap()];
    // The first process runs the job; the second is asked to cancel it.
    let first = QlaudProcess::spawn(&args).await;
    let master = first.boot()["master_key"].as_str().unwrap().to_string();
    let key: Value = first.mint(&master, json!({"name": "u", "max_spend_usd": 5})).await;
    let (key_id, key) = (key["id"].as_str().unwrap(), key["secret"].as_str().unwrap());
    let case = cases("unused").remove(0);
    let before = mock.stats();
    let job = submit(&first.base_url(), key, case.endpoint, &case.body).await;
    let id = job["id"].as_str().unwrap().to_string();
    streamed(&mock, before.output_tokens + 1).await;
    // Started once the job runs in the first process, so only it works it.
    let second = QlaudProcess::spawn(&args).await;
    let stats = mock.stats();
    assert!(stats.output_tokens < 150, "the job ended before the second process started");
    let asked = cancel(&second.base_url(), key, &id).await;
    assert_eq!(asked["status"], "in_progress", "{asked}");
    let done = wait(&second.base_url(), key, &id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["error"]["code"], "job_cancelled", "{done}");
    let after = dropped(&mock, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.stats().output_tokens, after.output_tokens, "the provider went on");
    assert_eq!(after.streams_finished, 0);
    let emitted = after.output_tokens;
    let (input, output) = billed(&done, case.endpoint);
    assert_eq!(input, after.input_tokens);
    check_output(&done, case.endpoint, output, emitted);
    let cost = done["cost_micros"].as_u64().unwrap();
    assert_eq!(cost, (centi_micros(input, 300) + centi_micros(output, 1500)).div_ceil(100));
    // The usage report agrees, and nothing is left reserved.
    let usage: Value = reqwest::Client::new()
        .get(format!("{}/v1/usage?key_id={key_id}", first.base_url()))
        .bearer_auth(&master)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["totals"]["cost_micros"].as_u64(), Some(cost), "{usage}");
    assert_eq!(usage["totals"]["requests"], 1);
    let (_, reserved, open) = ledger_state(&db.url, key_id).await;
    assert_eq!((reserved, open), (0, 0), "every reservation closed");
    first.kill().await;
    second.kill().await;
}

/// What differs between two answers to the same request: ids and times.
fn comparable(v: Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "id" | "created" | "created_at"))
                .map(|(k, v)| (k, comparable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(comparable).collect()),
        v => v,
    }
}

async fn a_streamed_job_answers_the_synchronous_body(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let (key_id, key) = standard_key(&t).await;
    let hello = json!([{"role": "user", "content": "hello there jobs"}]);
    let weather = json!([{"role": "user", "content": "what is the weather"}]);
    let anthropic_tool = json!([{"name": "get_weather", "description": "w",
                                 "input_schema": {"type": "object"}}]);
    let openai_tool = json!([{"type": "function", "function": {"name": "get_weather",
                              "parameters": {"type": "object"}}}]);
    let cases = [
        ("/v1/messages", json!({"model": "claude-test", "max_tokens": 50, "messages": hello})),
        ("/v1/messages", json!({"model": "gpt-test", "max_tokens": 50, "messages": hello})),
        (
            "/v1/messages",
            json!({"model": "claude-test", "max_tokens": 50, "messages": weather,
                   "tools": anthropic_tool}),
        ),
        ("/v1/messages", json!({"model": "claude-test", "max_tokens": 3, "messages": hello})),
        ("/v1/chat/completions", json!({"model": "gpt-test", "messages": hello})),
        ("/v1/chat/completions", json!({"model": "claude-test", "messages": hello})),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": weather, "tools": openai_tool}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "claude-test", "messages": weather, "tools": openai_tool}),
        ),
        ("/v1/chat/completions", json!({"model": "gpt-test", "max_tokens": 2, "messages": hello})),
    ];
    for (i, (endpoint, body)) in cases.iter().enumerate() {
        let (status, direct) =
            t.request(Method::POST, endpoint, Some(&key), Some(RawBody::Json(body.clone()))).await;
        assert_eq!(status, 200, "{endpoint}: {direct}");
        assert_ne!(mock.stats().last_body.unwrap()["stream"], true);
        let job = submit(&t.base_url, &key, endpoint, body).await;
        let done = wait(&t.base_url, &key, job["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(mock.stats().last_body.unwrap()["stream"], true, "case {i}: streamed");
        let result = &done["result"]["body"];
        assert_eq!(done["result"]["status_code"], 200);
        assert_eq!(comparable(result.clone()), comparable(direct.clone()), "case {i}");
        assert_eq!(done["cost_micros"], direct["usage"]["cost_micros"], "case {i}: {done}");
        assert_eq!(done["error"], Value::Null);
    }
    assert_eq!(mock.stats().streams_finished, cases.len() as u64);
    assert_eq!(mock.stats().streams_dropped, 0);
    let (spent, requests) = t.key_spend(&key_id).await;
    assert_eq!(requests, 2 * cases.len() as u64);
    assert!(spent > 0);
}
