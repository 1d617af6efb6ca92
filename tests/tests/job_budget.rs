//! Jobs and the budget, on SQLite and PostgreSQL: a job holds its worst
//! case from submission (402 past the cap, every accepted job runs),
//! cancelling a queued job gives its hold back, crash recovery never
//! settles a queued job's hold while a call in flight in a killed process
//! is settled at its reservation; the per-tenant concurrency limit across
//! two processes; a provider's 429 retried.

use std::time::Duration;

use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{
    Backend, QlaudProcess, TestDb, TestServer, backend_tests, ledger_state, mock_toml, store_pool,
};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

backend_tests!(
    submissions_past_the_cap_are_refused_and_accepted_jobs_all_run,
    cancelling_a_queued_job_gives_its_hold_back,
    a_killed_process_leaves_queued_holds_alone,
    the_tenant_limit_holds_across_two_processes,
    a_provider_429_is_retried,
    the_rust_sdk_submits_and_waits,
);

async fn submit_to(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    endpoint: &str,
    body: Value,
) -> (u16, Value) {
    let resp = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(key)
        .json(&json!({"endpoint": endpoint, "body": body}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn submit(t: &TestServer, key: &str, body: Value) -> (u16, Value) {
    submit_to(&t.http, &t.base_url, key, "/v1/messages", body).await
}

fn message(model: &str, max_tokens: u64, text: &str) -> Value {
    json!({"model": model, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": text}]})
}

/// Polls until the job is final.
async fn wait_at(http: &reqwest::Client, base: &str, key: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let resp = http.get(format!("{base}/v1/jobs/{id}")).bearer_auth(key).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let job: Value = resp.json().await.unwrap();
        if job["poll_after_ms"].is_null() {
            return job;
        }
        assert!(tokio::time::Instant::now() < deadline, "job never ended: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait(t: &TestServer, key: &str, id: &str) -> Value {
    wait_at(&t.http, &t.base_url, key, id).await
}

async fn standard_key(t: &TestServer, cap: f64) -> (String, String) {
    let key = t.mint(json!({"name": "batch", "max_spend_usd": cap})).await;
    (key["id"].as_str().unwrap().into(), key["secret"].as_str().unwrap().into())
}

/// Open reservations: (id, reserved micro-dollars, holder instance).
async fn reservations(url: &str) -> Vec<(String, i64, String)> {
    let pool = store_pool(url).await;
    let rows = sqlx::query("SELECT id, reserved_micros, instance_id FROM reservations")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.iter().map(|r| (r.get("id"), r.get("reserved_micros"), r.get("instance_id"))).collect()
}

async fn submissions_past_the_cap_are_refused_and_accepted_jobs_all_run(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_configured(backend, Some(&mock_toml(&mock)), |c| {
        // One at a time, so most of the queue waits while holding budget.
        c.job_tenant_concurrency = 1;
    })
    .await
    else {
        return;
    };
    // $0.01; each job's worst case (50 output tokens at $15/M plus its
    // prompt bound) is a little under a tenth of it.
    let (key_id, key) = standard_key(&t, 0.01).await;
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for i in 0..20 {
        // `greedy` bills every output token allowed; `slow` lets the queue
        // grow, each queued job holding its worst case.
        let (status, j) =
            submit(&t, &key, message("claude-greedy-slow", 50, &format!("job {i}"))).await;
        match status {
            202 => accepted.push(j["id"].as_str().unwrap().to_string()),
            402 => {
                assert_eq!(j["error_code"], "spend_cap_reached", "{j}");
                refused += 1;
            }
            other => panic!("{other}: {j}"),
        }
    }
    assert!((5..=15).contains(&accepted.len()), "{} accepted", accepted.len());
    assert!(refused >= 5, "{refused} refused");
    let (_, list) = t.request(Method::GET, "/v1/jobs?limit=100", Some(&key), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), accepted.len(), "a 402 creates nothing");
    let mut costs = 0;
    for id in &accepted {
        let done = wait(&t, &key, id).await;
        // The budget was held for it: no accepted job meets the cap later.
        assert_eq!(done["status"], "completed", "{done}");
        costs += done["cost_micros"].as_i64().unwrap();
    }
    assert_eq!(mock.stats().requests, accepted.len() as u64);
    let spent = t.settled(&key_id, accepted.len() as u64).await;
    assert_eq!(spent, costs, "billed once each, at what each job reports");
    assert!(spent <= 10_000, "spent {spent} of a 10000 cap");
    let (_, reserved, open) = ledger_state(&t.db.url, &key_id).await;
    assert_eq!((reserved, open), (0, 0), "every hold settled");
}

async fn cancelling_a_queued_job_gives_its_hold_back(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_configured(backend, Some(&mock_toml(&mock)), |c| {
        c.job_tenant_concurrency = 1;
    })
    .await
    else {
        return;
    };
    let (key_id, key) = standard_key(&t, 1.0).await;
    // `hang` answers nothing (the provider times out after 2 s): it keeps
    // the tenant's one slot while the second job waits.
    let (_, running) = submit(&t, &key, message("claude-hang", 20, "hi")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mock.stats().requests < 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, before, _) = ledger_state(&t.db.url, &key_id).await;
    let (status, queued) = submit(&t, &key, message("claude-test", 500, "wait")).await;
    assert_eq!(status, 202);
    let queued = queued["id"].as_str().unwrap().to_string();
    let (_, held, _) = ledger_state(&t.db.url, &key_id).await;
    assert!(held > before, "the queued job holds its worst case: {before} -> {held}");
    let (status, c) =
        t.request(Method::POST, &format!("/v1/jobs/{queued}/cancel"), Some(&key), None).await;
    assert_eq!((status, c["status"].as_str()), (200, Some("cancelled")), "{c}");
    let (settled, after, _) = ledger_state(&t.db.url, &key_id).await;
    assert_eq!(after, before, "cancelling gave the hold back");
    assert_eq!(settled, 0);
    let done = wait(&t, &key, running["id"].as_str().unwrap()).await;
    assert_eq!(done["result"]["status_code"], 504, "{done}");
    assert_eq!(
        t.settled(&key_id, 1).await,
        0,
        "a timeout bills nothing; the cancelled job nothing"
    );
    assert_eq!(mock.stats().requests, 1, "the cancelled job was never sent");
    let (_, reserved, open) = ledger_state(&t.db.url, &key_id).await;
    assert_eq!((reserved, open), (0, 0));
}

async fn a_killed_process_leaves_queued_holds_alone(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(db) = TestDb::new(backend).await else { return };
    let config = tempfile::NamedTempFile::new().unwrap();
    // Long enough that the call is still in flight when its process dies.
    let toml = mock_toml(&mock).replace("timeout_secs = 2", "timeout_secs = 60");
    std::fs::write(config.path(), toml).unwrap();
    let args = [
        "--database-url",
        db.url.as_str(),
        "--config",
        config.path().to_str().unwrap(),
        "--job-tenant-concurrency",
        "1",
        "--instance-timeout-secs",
        "1",
    ];
    let first = QlaudProcess::spawn(&args).await;
    let boot: Value = first.boot();
    let master = boot["master_key"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let key: Value = first.mint(&master, json!({"name": "batch", "max_spend_usd": 5})).await;
    let (key_id, secret) = (key["id"].as_str().unwrap(), key["secret"].as_str().unwrap());
    let base = first.base_url();
    // In flight when the process dies: `hang` never answers.
    let (_, sent) =
        submit_to(&http, &base, secret, "/v1/messages", message("claude-hang", 20, "x")).await;
    let sent = sent["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mock.stats().requests < 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Queued behind it (the tenant may run one at a time).
    let mut queued = Vec::new();
    for i in 0..3 {
        let (status, j) = submit_to(
            &http,
            &base,
            secret,
            "/v1/messages",
            message("claude-test", 20, &format!("queued {i}")),
        )
        .await;
        assert_eq!(status, 202, "{j}");
        queued.push(j["id"].as_str().unwrap().to_string());
    }
    let open = reservations(&db.url).await;
    let held: Vec<_> = open.iter().filter(|r| r.2 == "job").collect();
    let in_flight: Vec<_> = open.iter().filter(|r| r.2 != "job").collect();
    assert_eq!((held.len(), in_flight.len()), (3, 1), "{open:?}");
    let in_flight_reserved = in_flight[0].1;
    first.kill().await;
    // Long past the instance timeout, the restarted process recovers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = QlaudProcess::spawn(&args).await;
    let base = second.base_url();
    let done = wait_at(&http, &base, secret, &sent).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "job_interrupted");
    let mut costs = 0;
    for id in &queued {
        let done = wait_at(&http, &base, secret, id).await;
        assert_eq!(done["status"], "completed", "an unsent job runs: {done}");
        costs += done["cost_micros"].as_i64().unwrap();
        assert!(costs > 0);
    }
    assert_eq!(mock.stats().requests, 4, "the call in flight was never sent again");
    // Usage: the queued jobs at their tokens, the lost call at its hold.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let usage: Value = http
            .get(format!("{base}/v1/usage?key_id={key_id}"))
            .bearer_auth(&master)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (cost, requests) = (
            usage["totals"]["cost_micros"].as_i64().unwrap(),
            usage["totals"]["requests"].as_u64().unwrap(),
        );
        if requests == 4 {
            assert_eq!(cost, costs + in_flight_reserved, "{usage}");
            break;
        }
        assert!(requests < 4 && tokio::time::Instant::now() < deadline, "{usage}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = store_pool(&db.url).await;
    let recovered: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM requests WHERE key_id = $1 AND recovered = 1")
            .bind(key_id)
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("n");
    pool.close().await;
    assert_eq!(recovered, 1, "crash recovery settled only the call in flight");
    let (_, reserved, open) = ledger_state(&db.url, key_id).await;
    assert_eq!((reserved, open), (0, 0));
    second.kill().await;
}

async fn the_tenant_limit_holds_across_two_processes(backend: Backend) {
    let mock = MockUpstream::start().await;
    let toml = mock_toml(&mock);
    let Some(t) = TestServer::start_configured(backend, Some(&toml), |c| {
        c.job_tenant_concurrency = 2;
        c.job_poll = Duration::from_millis(50);
    })
    .await
    else {
        return;
    };
    let path = std::env::temp_dir().join(format!("qlaud-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, &toml).unwrap();
    let mut config =
        qlaud_server::ServeConfig::new("127.0.0.1:0".parse().unwrap(), t.db.url.clone());
    config.config_file = Some(path);
    config.job_tenant_concurrency = 2;
    config.job_poll = Duration::from_millis(50);
    let second = qlaud_server::Server::start(&config).await.unwrap();
    let second_url = format!("http://{}", second.local_addr());
    let (key_id, key) = standard_key(&t, 5.0).await;
    let n = 16;
    let mut ids = Vec::new();
    for i in 0..n {
        // Both processes have 8 workers: only the tenant limit keeps the
        // slow calls from overlapping more.
        let base = if i % 2 == 0 { &t.base_url } else { &second_url };
        let (status, j) = submit_to(
            &t.http,
            base,
            &key,
            "/v1/messages",
            message("claude-slow", 20, &format!("job {i}")),
        )
        .await;
        assert_eq!(status, 202, "{j}");
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(wait(&t, &key, id).await["status"], "completed");
    }
    let stats = mock.stats();
    assert_eq!(stats.requests, n);
    assert!(stats.max_in_flight <= 2, "{} in flight at once", stats.max_in_flight);
    t.settled(&key_id, n).await;
    second.close().await.unwrap();
}

async fn a_provider_429_is_retried(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let (key_id, key) = standard_key(&t, 1.0).await;
    let (status, j) = submit(&t, &key, message("claude-flaky", 20, "try again")).await;
    assert_eq!(status, 202);
    let done = wait(&t, &key, j["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["result"]["body"]["content"][0]["text"], "Hello from mock: try again");
    assert_eq!(mock.stats().requests, 2, "refused once, answered once");
    // The refused attempt is logged at nothing; the answer at its tokens.
    assert_eq!(t.settled(&key_id, 2).await, done["cost_micros"].as_i64().unwrap());
    let (_, reserved, open) = ledger_state(&t.db.url, &key_id).await;
    assert_eq!((reserved, open), (0, 0));
}

async fn the_rust_sdk_submits_and_waits(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let (_, key) = standard_key(&t, 1.0).await;
    let client = t.client(&key);
    let submit = |body: Value| {
        let req = qlaud::types::CreateJobRequest::builder().endpoint("/v1/messages").body(body);
        client.create_job().body(req).send()
    };
    let job = submit(message("claude-test", 20, "rust job")).await.unwrap().into_inner();
    assert!(matches!(job.status, qlaud::types::JobStatus::Queued));
    let done = client.wait_job(&job.id, Some(Duration::from_secs(30))).await.unwrap();
    assert!(matches!(done.status, qlaud::types::JobStatus::Completed), "{done:?}");
    assert_eq!(done.poll_after_ms, None);
    assert_eq!(done.result.unwrap().body["content"][0]["text"], "Hello from mock: rust job");
    // A budget that cannot hold even a short answer ($0.0001; 16 output
    // tokens at $15/M are $0.00024) refuses at submission.
    let (_, poor) = standard_key(&t, 0.0001).await;
    let req = qlaud::types::CreateJobRequest::builder().endpoint("/v1/messages").body(message(
        "claude-test",
        20,
        "too dear",
    ));
    let err = t.client(&poor).create_job().body(req).send().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(402), "{err:?}");
}
