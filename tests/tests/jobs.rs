//! Jobs end to end against the mock providers, on SQLite and PostgreSQL:
//! each endpoint's job answers and bills as its synchronous call; signed
//! webhooks, retried; Idempotency-Key; cancel; isolation; bad input; two
//! servers on one store never running a job twice; the crash rule.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qlaud_server::store::NewJob;
use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, RawBody, TestServer, backend_tests, mock_toml};
use reqwest::Method;
use serde_json::{Value, json};

backend_tests!(
    each_endpoint_answers_and_bills_as_its_synchronous_call,
    webhooks_are_signed_and_retried,
    an_idempotency_key_makes_one_job,
    cancel_queued_and_in_progress,
    jobs_are_their_owners,
    bad_input_is_refused_at_submission,
    two_servers_never_run_a_job_twice,
    the_crash_rule_requeues_unsent_and_fails_sent_jobs,
    retention_deletes_results_and_keeps_usage,
);

async fn start(backend: Backend) -> Option<(TestServer, MockUpstream)> {
    let mock = MockUpstream::start().await;
    Some((TestServer::start_with(backend, Some(&mock_toml(&mock))).await?, mock))
}

async fn submit(t: &TestServer, key: &str, body: Value, idem: Option<&str>) -> (u16, Value) {
    let mut req = t.http.post(format!("{}/v1/jobs", t.base_url)).bearer_auth(key).json(&body);
    if let Some(k) = idem {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls until the job is final, honouring `poll_after_ms` (capped, so
/// tests stay quick); checks the header on the way.
async fn wait(t: &TestServer, key: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let resp = t
            .http
            .get(format!("{}/v1/jobs/{id}", t.base_url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        if resp.status() != 200 {
            panic!("{}", resp.text().await.unwrap());
        }
        let header = resp
            .headers()
            .get("qlaud-poll-after-ms")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        let job: Value = resp.json().await.unwrap();
        let Some(after) = job["poll_after_ms"].as_u64() else {
            assert_eq!(header, None, "no poll header on a final job");
            return job;
        };
        assert_eq!(header, Some(after));
        assert!(tokio::time::Instant::now() < deadline, "job never ended: {job}");
        tokio::time::sleep(Duration::from_millis(after.min(100))).await;
    }
}

async fn standard_key(t: &TestServer, cap: Option<f64>) -> (String, String) {
    let mut body = json!({"name": "u"});
    if let Some(cap) = cap {
        body["max_spend_usd"] = json!(cap);
    }
    let key = t.mint(body).await;
    (key["id"].as_str().unwrap().into(), key["secret"].as_str().unwrap().into())
}

/// The answer without what differs between two calls (ids, times), at
/// any depth.
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

async fn each_endpoint_answers_and_bills_as_its_synchronous_call(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else { return };
    let (key_id, key) = standard_key(&t, Some(5.0)).await;
    let thread =
        t.request(Method::POST, "/v1/threads", Some(&key), Some(RawBody::Json(json!({})))).await.1
            ["id"]
            .as_str()
            .unwrap()
            .to_string();
    let hello = json!([{"role": "user", "content": "hello there jobs"}]);
    let cases = [
        ("/v1/messages", json!({"model": "claude-test", "max_tokens": 50, "messages": hello})),
        ("/v1/messages", json!({"model": "gpt-test", "max_tokens": 50, "messages": hello})),
        ("/v1/chat/completions", json!({"model": "gpt-test", "messages": hello})),
        ("/v1/chat/completions", json!({"model": "claude-test", "messages": hello})),
        ("/v1/responses", json!({"model": "gpt-test", "input": "hello there jobs"})),
        ("/v1/responses", json!({"model": "claude-test", "input": "hello there jobs"})),
        ("/v1/embeddings", json!({"model": "embed-test", "input": "hello there jobs"})),
    ];
    let mut requests = 0;
    for (endpoint, body) in cases {
        let (status, direct) =
            t.request(Method::POST, endpoint, Some(&key), Some(RawBody::Json(body.clone()))).await;
        assert_eq!(status, 200, "{endpoint}: {direct}");
        let (status, job) =
            submit(&t, &key, json!({"endpoint": endpoint, "body": body}), None).await;
        assert_eq!(status, 202, "{job}");
        assert_eq!(job["object"], "job");
        assert_eq!(job["status"], "queued");
        assert_eq!(job["key_id"], key_id.as_str());
        let done = wait(&t, &key, job["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["result"]["status_code"], 200);
        let result = done["result"]["body"].clone();
        assert_eq!(comparable(result.clone()), comparable(direct.clone()), "{endpoint}");
        assert_eq!(done["usage"], direct["usage"]);
        assert_eq!(done["cost_micros"], direct["usage"]["cost_micros"], "{done}");
        assert!(done["cost_micros"].as_i64().unwrap() > 0);
        assert!(done["started_at"].is_string() && done["completed_at"].is_string());
        requests += 2;
    }
    // A thread turn as a job: answered like the turn, stored in the thread.
    let turn = json!({"content": "hello thread job", "model": "claude-test"});
    let path = format!("/v1/threads/{thread}/messages");
    let (_, job) = submit(&t, &key, json!({"endpoint": path, "body": turn}), None).await;
    let done = wait(&t, &key, job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["body"]["object"], "thread.message");
    assert_eq!(done["result"]["body"]["thread_id"], thread.as_str());
    let (_, messages) = t.request(Method::GET, &path, Some(&key), None).await;
    assert_eq!(messages["items"].as_array().unwrap().len(), 2, "{messages}");
    requests += 1;
    // Billed as the synchronous calls were: once per call.
    let spent = t.settled(&key_id, requests as u64).await;
    let (_, usage) =
        t.request(Method::GET, &format!("/v1/usage?key_id={key_id}"), Some(&key), None).await;
    assert_eq!(usage["totals"]["cost_micros"].as_i64().unwrap(), spent);
}

/// Receives job webhooks; answers 500 to the first `fail` of them.
type Got = Arc<Mutex<Vec<(BTreeMap<String, String>, String)>>>;

async fn receiver(fail: usize) -> (String, Got) {
    use axum::routing::post;
    let got = Got::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let mut h = BTreeMap::new();
                for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
                    let v = headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
                    h.insert(name.to_string(), v.to_string());
                }
                let mut got = sink.lock().unwrap();
                got.push((h, body));
                if got.len() <= fail {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, got)
}

/// Standard Webhooks' `v1`, with the HMAC and base64 crates rather than
/// qlaud's own signing code.
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

async fn webhooks_are_signed_and_retried(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else { return };
    let (_, key) = standard_key(&t, None).await;
    let (status, secret) =
        t.request(Method::POST, "/v1/webhooks/secret/rotate", Some(&t.master_key), None).await;
    assert_eq!(status, 200);
    let secret = secret["secret"].as_str().unwrap().to_string();
    let (url, got) = receiver(2).await;
    let body = json!({"model": "claude-test", "max_tokens": 20,
                      "messages": [{"role": "user", "content": "hi"}]});
    let (status, job) = submit(
        &t,
        &key,
        json!({"endpoint": "/v1/messages", "body": body, "webhook_url": url,
               "metadata": {"batch": "7"}}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    wait(&t, &key, id).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "webhook not retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "two failures, then one delivery");
    for (h, body) in &got {
        assert_eq!(h["webhook-id"], got[0].0["webhook-id"], "one message id across retries");
        let expected =
            standard_v1(&secret, &h["webhook-id"], &h["webhook-timestamp"], body.as_bytes());
        assert!(h["webhook-signature"].split(' ').any(|s| s == expected), "{h:?}");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["type"], "job.completed");
        assert_eq!(v["job"]["id"], id);
        assert_eq!(v["job"]["status"], "completed");
        assert_eq!(v["job"]["metadata"]["batch"], "7");
        assert_eq!(v["job"]["result"]["status_code"], 200);
    }
    // A failed job announces job.failed.
    let (url, got) = receiver(0).await;
    let body = json!({"model": "claude-error-400", "max_tokens": 20,
                      "messages": [{"role": "user", "content": "hi"}]});
    let (_, job) = submit(
        &t,
        &key,
        json!({"endpoint": "/v1/messages", "body": body, "webhook_url": url}),
        None,
    )
    .await;
    let done = wait(&t, &key, job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["result"]["status_code"], 400);
    assert_eq!(done["result"]["body"]["type"], "error", "Anthropic's error shape");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no job.failed webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v: Value = serde_json::from_str(&got.lock().unwrap()[0].1).unwrap();
    assert_eq!(v["type"], "job.failed");
}

async fn an_idempotency_key_makes_one_job(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (key_id, key) = standard_key(&t, None).await;
    let job = json!({"endpoint": "/v1/chat/completions",
                     "body": {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}});
    let submissions =
        futures::future::join_all((0..5).map(|_| submit(&t, &key, job.clone(), Some("batch-1"))))
            .await;
    let first = submissions[0].1["id"].as_str().unwrap().to_string();
    for (status, j) in &submissions {
        assert_eq!(*status, 202, "{j}");
        assert_eq!(j["id"], first.as_str());
    }
    wait(&t, &key, &first).await;
    let (status, again) = submit(&t, &key, job.clone(), Some("batch-1")).await;
    assert_eq!(status, 202);
    assert_eq!(again["id"], first.as_str());
    assert_eq!(again["status"], "completed", "the retry answers the job as it stands");
    // The same key for another request is refused.
    let mut other = job.clone();
    other["body"]["messages"][0]["content"] = json!("y");
    let (status, err) = submit(&t, &key, other, Some("batch-1")).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(mock.stats().requests, 1, "one job, one call");
    t.settled(&key_id, 1).await;
    let (_, list) = t.request(Method::GET, "/v1/jobs", Some(&key), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

async fn cancel_queued_and_in_progress(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_configured(backend, Some(&mock_toml(&mock)), |c| {
        c.job_workers = 1;
    })
    .await
    else {
        return;
    };
    let (key_id, key) = standard_key(&t, None).await;
    // `hang` answers nothing: the provider times out after 2 s (504).
    let slow = json!({"endpoint": "/v1/messages", "body": {"model": "claude-hang",
                      "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}});
    let (_, running) = submit(&t, &key, slow, None).await;
    let running = running["id"].as_str().unwrap().to_string();
    let quick = json!({"endpoint": "/v1/messages", "body": {"model": "claude-test",
                       "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}});
    let (_, queued) = submit(&t, &key, quick, None).await;
    let queued = queued["id"].as_str().unwrap().to_string();
    // Wait until the first has reached the provider (the only worker is busy).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mock.stats().requests < 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, c) =
        t.request(Method::POST, &format!("/v1/jobs/{queued}/cancel"), Some(&key), None).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["status"], "cancelled", "a queued job is cancelled at once");
    assert_eq!(c["poll_after_ms"], Value::Null);
    let (status, c) =
        t.request(Method::POST, &format!("/v1/jobs/{running}/cancel"), Some(&key), None).await;
    assert_eq!(status, 200);
    assert_eq!(c["status"], "in_progress");
    assert_eq!(c["cancel_requested"], true);
    let done = wait(&t, &key, &running).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["result"]["status_code"], 504, "its call's answer is kept");
    let done = wait(&t, &key, &queued).await;
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["result"], Value::Null);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.stats().requests, 1, "the cancelled queued job was never sent");
    assert_eq!(t.settled(&key_id, 1).await, 0, "a provider timeout bills nothing");
    // Cancelling a final job changes nothing.
    let (status, c) =
        t.request(Method::POST, &format!("/v1/jobs/{queued}/cancel"), Some(&key), None).await;
    assert_eq!((status, c["status"].as_str()), (200, Some("cancelled")));
}

async fn jobs_are_their_owners(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else { return };
    let (a_id, a) = standard_key(&t, None).await;
    let (_, b) = standard_key(&t, None).await;
    let job = json!({"endpoint": "/v1/messages", "body": {"model": "claude-test",
                     "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}});
    let (_, j) = submit(&t, &a, job.clone(), None).await;
    let id = j["id"].as_str().unwrap().to_string();
    wait(&t, &a, &id).await;
    let (_, other) = t.create_tenant("other").await;
    for key in [&b, &other] {
        let (status, body) =
            t.request(Method::GET, &format!("/v1/jobs/{id}"), Some(key), None).await;
        assert_eq!(status, 404, "{body}");
        let (missing, _) =
            t.request(Method::GET, "/v1/jobs/job_doesnotexist", Some(key), None).await;
        assert_eq!(missing, 404, "the same answer as a missing id");
        let (status, _) =
            t.request(Method::POST, &format!("/v1/jobs/{id}/cancel"), Some(key), None).await;
        assert_eq!(status, 404);
        let (_, list) = t.request(Method::GET, "/v1/jobs", Some(key), None).await;
        assert!(list["items"].as_array().unwrap().is_empty(), "{list}");
    }
    let (status, _) = t.request(Method::GET, &format!("/v1/jobs/{id}"), None, None).await;
    assert_eq!(status, 401);
    // The admin sees the tenant's jobs, and one key's with key_id.
    let (status, _) =
        t.request(Method::GET, &format!("/v1/jobs/{id}"), Some(&t.master_key), None).await;
    assert_eq!(status, 200);
    submit(&t, &t.master_key, job, None).await;
    let (_, all) = t.request(Method::GET, "/v1/jobs", Some(&t.master_key), None).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let (_, mine) =
        t.request(Method::GET, &format!("/v1/jobs?key_id={a_id}"), Some(&t.master_key), None).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    let (status, _) =
        t.request(Method::GET, &format!("/v1/jobs?key_id={a_id}"), Some(&b), None).await;
    assert_eq!(status, 403, "a standard key cannot name another key");
    // Pages and the status filter.
    for _ in 0..3 {
        submit(
            &t,
            &a,
            json!({"endpoint": "/v1/embeddings",
                              "body": {"model": "embed-test", "input": "x"}}),
            None,
        )
        .await;
    }
    let (_, page) = t.request(Method::GET, "/v1/jobs?limit=2", Some(&a), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let token = page["next_page"].as_str().unwrap();
    let (_, rest) =
        t.request(Method::GET, &format!("/v1/jobs?page_token={token}"), Some(&a), None).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert_eq!(rest["next_page"], Value::Null);
    let mut ids: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    let (_, completed) =
        t.request(Method::GET, "/v1/jobs?status=completed&limit=100", Some(&a), None).await;
    assert!(completed["items"].as_array().unwrap().iter().all(|j| j["status"] == "completed"));
}

async fn bad_input_is_refused_at_submission(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (_, key) = standard_key(&t, None).await;
    let (_, other) = standard_key(&t, None).await;
    let theirs = t
        .request(Method::POST, "/v1/threads", Some(&other), Some(RawBody::Json(json!({}))))
        .await
        .1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let msg = json!({"model": "claude-test", "max_tokens": 20,
                     "messages": [{"role": "user", "content": "hi"}]});
    let mut streamed = msg.clone();
    streamed["stream"] = json!(true);
    let cases = [
        json!({"endpoint": "/v1/keys", "body": {"name": "x"}}),
        json!({"endpoint": "/v1/audio/transcriptions", "body": {}}),
        json!({"endpoint": "/v1/messages", "body": streamed}),
        json!({"endpoint": "/v1/messages", "body": {"max_tokens": 20}}),
        json!({"endpoint": "/v1/messages", "body": "not an object"}),
        json!({"endpoint": "/v1/messages", "body": {"model": "no-such-model", "messages": []}}),
        json!({"endpoint": "/v1/embeddings", "body": {"model": "claude-test", "input": "x"}}),
        json!({"endpoint": "/v1/messages", "body": msg, "webhook_url": "ftp://example.com/x"}),
        json!({"endpoint": "/v1/messages", "body": msg, "webhook_url": "http://u:p@127.0.0.1/"}),
        json!({"endpoint": "/v1/messages", "body": msg, "surprise": 1}),
        json!({"endpoint": format!("/v1/threads/{theirs}/messages"), "body": {"content": "hi"}}),
        json!({"endpoint": "/v1/threads/thr_nope/messages", "body": {"content": "hi"}}),
        json!({"body": msg}),
    ];
    for case in cases {
        let (status, err) = submit(&t, &key, case.clone(), None).await;
        assert_eq!(status, 400, "{case} → {err}");
        assert!(err["message"].is_string(), "{err}");
    }
    let (status, _) =
        submit(&t, &key, json!({"endpoint": "/v1/messages", "body": msg}), Some("bad key")).await;
    assert_eq!(status, 400, "an Idempotency-Key with spaces");
    let (_, list) = t.request(Method::GET, "/v1/jobs", Some(&key), None).await;
    assert!(list["items"].as_array().unwrap().is_empty(), "nothing was created");
    assert_eq!(mock.stats().requests, 0);
}

async fn two_servers_never_run_a_job_twice(backend: Backend) {
    let mock = MockUpstream::start().await;
    let toml = mock_toml(&mock);
    let Some(t) = TestServer::start_with(backend, Some(&toml)).await else { return };
    let path = std::env::temp_dir().join(format!("qlaud-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, &toml).unwrap();
    let mut config =
        qlaud_server::ServeConfig::new("127.0.0.1:0".parse().unwrap(), t.db.url.clone());
    config.config_file = Some(path);
    let second = qlaud_server::Server::start(&config).await.unwrap();
    let second_url = format!("http://{}", second.local_addr());
    let (key_id, key) = standard_key(&t, None).await;
    let n = 40;
    let mut ids = Vec::new();
    for i in 0..n {
        // Submitted to both servers; `slow` keeps many in flight at once.
        let base = if i % 2 == 0 { &t.base_url } else { &second_url };
        let resp = t
            .http
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(&key)
            .json(&json!({"endpoint": "/v1/messages", "body": {"model": "claude-slow",
                          "max_tokens": 20, "messages": [{"role": "user", "content": format!("job {i}")}]}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        ids.push(resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let done = wait(&t, &key, id).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["attempts"], 1);
    }
    assert_eq!(mock.stats().requests, n, "each job reached the provider exactly once");
    t.settled(&key_id, n).await;
    second.close().await.unwrap();
}

async fn the_crash_rule_requeues_unsent_and_fails_sent_jobs(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_configured(backend, Some(&mock_toml(&mock)), |c| {
        // The runner finds work only when woken (or by recovery), so the
        // test's own "dead process" claims first.
        c.job_poll = Duration::from_secs(600);
        c.instance_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let (key_id, key) = standard_key(&t, None).await;
    // Let the runner's first look at the empty queue pass.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let store = t.server().store().clone();
    let new = |content: &str| NewJob {
        tenant_id: t.tenant_id.clone(),
        key_id: key_id.clone(),
        endpoint: "/v1/messages".into(),
        body: json!({"model": "claude-test", "max_tokens": 20,
                     "messages": [{"role": "user", "content": content}]})
        .to_string(),
        webhook_url: None,
        metadata: BTreeMap::new(),
        idempotency_key: None,
        fingerprint: content.into(),
        reservation_id: None,
        reservation_clamped: false,
    };
    let now = qlaud_server::store::now_ms();
    let insert = async |content: &str| match store.insert_job(&new(content), now).await.unwrap() {
        qlaud_server::store::JobInsert::Created(row) => row.id,
        other => panic!("{other:?}"),
    };
    let unsent = insert("never sent").await;
    let claimed = store.claim_job("inst_dead", now, 16).await.unwrap().unwrap();
    assert_eq!(claimed.id, unsent);
    let sent = insert("maybe sent").await;
    let claimed = store.claim_job("inst_dead", now, 16).await.unwrap().unwrap();
    assert_eq!(claimed.id, sent);
    assert!(store.dispatch_job(&sent, "inst_dead", now).await.unwrap());
    // The dead process never heartbeats: recovery takes both over.
    let done = wait(&t, &key, &unsent).await;
    assert_eq!(done["status"], "completed", "an unsent job runs again: {done}");
    assert_eq!(done["attempts"], 2);
    let done = wait(&t, &key, &sent).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "job_interrupted");
    assert_eq!(done["result"], Value::Null);
    assert_eq!(mock.stats().requests, 1, "the possibly sent job is never sent again");
}

async fn retention_deletes_results_and_keeps_usage(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_configured(backend, Some(&mock_toml(&mock)), |c| {
        c.job_retention = Duration::from_secs(1);
        c.instance_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let (key_id, key) = standard_key(&t, None).await;
    let (_, j) = submit(
        &t,
        &key,
        json!({"endpoint": "/v1/embeddings",
                                         "body": {"model": "embed-test", "input": "x y"}}),
        None,
    )
    .await;
    let id = j["id"].as_str().unwrap().to_string();
    let done = wait(&t, &key, &id).await;
    let cost = done["cost_micros"].as_i64().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = t.request(Method::GET, &format!("/v1/jobs/{id}"), Some(&key), None).await;
        if status == 404 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the job was never deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(t.key_spend(&key_id).await, (cost, 1), "usage stays");
}
