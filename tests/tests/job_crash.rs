//! 100 jobs across two qlaud processes on one PostgreSQL; one is SIGKILLed
//! mid-way and restarted. Every job ends; none reaches the provider twice;
//! every job whose call was not sent completes; those in flight in the
//! killed process fail `job_interrupted`, billed at their reservation by
//! crash recovery (which charges no queued job); get_usage is the
//! provider's tokens at the prices plus those reservations.

use std::collections::HashMap;
use std::time::Duration;

use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, QlaudProcess, TestDb, ledger_state, mock_toml, store_pool};
use serde_json::{Value, json};
use sqlx::Row;

const JOBS: usize = 100;

async fn wait_final(http: &reqwest::Client, base: &str, key: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let resp = http.get(format!("{base}/v1/jobs/{id}")).bearer_auth(key).send().await;
        if let Ok(resp) = resp
            && resp.status() == 200
        {
            let job: Value = resp.json().await.unwrap();
            if job["poll_after_ms"].is_null() {
                return job;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "job {id} never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// PostgreSQL only (several processes on one store), named like the
// PostgreSQL half of the other tests so a run without a database skips it.
mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_mid_batch() {
        super::sigkill_mid_batch().await
    }
}

async fn sigkill_mid_batch() {
    let Some(db) = TestDb::new(Backend::Postgres).await else { return };
    let mock = MockUpstream::start().await;
    let config = tempfile::NamedTempFile::new().unwrap();
    // The killed process's calls stay in flight (no provider timeout).
    let toml = mock_toml(&mock).replace("timeout_secs = 2", "timeout_secs = 120");
    std::fs::write(config.path(), toml).unwrap();
    let args = [
        "--database-url",
        db.url.as_str(),
        "--config",
        config.path().to_str().unwrap(),
        "--instance-timeout-secs",
        "1",
        // Three calls at a time in each process: slow enough that the batch
        // is still running when the kill comes. (A tenant limit would not
        // do: the first process to fill it keeps it, the other polls.)
        "--job-workers",
        "3",
    ];
    let a = QlaudProcess::spawn(&args).await;
    let boot: Value = a.boot();
    let master = boot["master_key"].as_str().unwrap().to_string();
    let b = QlaudProcess::spawn(&args).await;
    let http = reqwest::Client::new();
    let key: Value = b.mint(&master, json!({"name": "batch", "max_spend_usd": 50})).await;
    let (key_id, secret) = (key["id"].as_str().unwrap(), key["secret"].as_str().unwrap());
    // Submitted all at once, half to each process, so the queue is deep
    // when the batch starts on a slow machine too (submitted one by one,
    // the workers kept up and the two were never busy together).
    let submissions = (0..JOBS).map(|i| {
        let base = if i % 2 == 0 { a.base_url() } else { b.base_url() };
        let http = http.clone();
        // `slow` takes 100 ms a call.
        let body = json!({"endpoint": "/v1/messages", "body": {"model": "claude-slow",
            "max_tokens": 20, "messages": [{"role": "user", "content": format!("job {i}")}]}});
        async move {
            let resp =
                http.post(format!("{base}/v1/jobs")).bearer_auth(secret).json(&body).send().await;
            let j: Value = resp.unwrap().json().await.unwrap();
            j["id"].as_str().unwrap().to_string()
        }
    });
    let ids: Vec<String> = futures::future::join_all(submissions).await;
    // Mid-way, at a moment both processes have calls in flight.
    let pool = store_pool(&db.url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let owners: i64 = sqlx::query(
            "SELECT COUNT(DISTINCT lease_owner) AS n FROM jobs \
             WHERE status = 'in_progress' AND dispatched_ms IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
        if owners == 2 && mock.stats().requests >= 20 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let by: Vec<(String, Option<String>, i64)> = sqlx::query(
                "SELECT status, lease_owner, COUNT(*) AS n FROM jobs GROUP BY status, lease_owner",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("status"), r.get("lease_owner"), r.get("n")))
            .collect();
            panic!("never both busy: {} provider calls; jobs {by:?}", mock.stats().requests);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pool.close().await;
    a.kill().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a = QlaudProcess::spawn(&args).await;
    let mut jobs = Vec::new();
    for id in &ids {
        jobs.push(wait_final(&http, &b.base_url(), secret, id).await);
    }
    let stats = mock.stats();
    assert!(stats.by_messages.values().all(|&n| n == 1), "a conversation sent twice");
    let sent: HashMap<String, u64> = stats
        .by_messages
        .iter()
        .map(|(m, n)| (serde_json::from_str::<Value>(m).unwrap()[0]["content"].to_string(), *n))
        .collect();
    let (mut completed_cost, mut interrupted) = (0, Vec::new());
    for (i, job) in jobs.iter().enumerate() {
        let content = json!(format!("job {i}")).to_string();
        match job["status"].as_str().unwrap() {
            "completed" => {
                assert_eq!(sent.get(&content), Some(&1), "{job}");
                // The provider's tokens at the prices ($3/M in, $15/M out:
                // 3 and 15 micro-dollars a token).
                let usage = &job["result"]["body"]["usage"];
                let priced = usage["input_tokens"].as_i64().unwrap() * 3
                    + usage["output_tokens"].as_i64().unwrap() * 15;
                assert_eq!(job["cost_micros"].as_i64().unwrap(), priced, "{job}");
                completed_cost += priced;
            }
            "failed" => {
                assert_eq!(job["error"]["code"], "job_interrupted", "{job}");
                interrupted.push(job["id"].as_str().unwrap().to_string());
            }
            other => panic!("job {i} ended {other}: {job}"),
        }
    }
    assert!(!interrupted.is_empty(), "no call was in flight in the killed process");
    assert!(interrupted.len() <= 8, "{} interrupted", interrupted.len());
    // Crash recovery settled only interrupted jobs' calls, each at its
    // reservation (the job's hold): never a completed job's, whose
    // settlement is written before its result. An interrupted call may
    // have been settled by its process just before the kill (between its
    // settlement and its result); either way each is settled once.
    let pool = store_pool(&db.url).await;
    let mut interrupted_cost = 0;
    let mut recovered_count = 0;
    for id in &interrupted {
        let row = sqlx::query(
            "SELECT r.cost_micros, r.recovered FROM jobs j \
             JOIN requests r ON r.id = j.reservation_id WHERE j.id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        let (cost, recovered): (i64, i64) = (row.get("cost_micros"), row.get("recovered"));
        recovered_count += recovered;
        assert!(cost > 0);
        interrupted_cost += cost;
    }
    let all_recovered: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM requests WHERE key_id = $1 AND recovered = 1")
            .bind(key_id)
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("n");
    assert_eq!(all_recovered, recovered_count, "a completed job's call billed at its hold");
    pool.close().await;
    // get_usage: the provider's tokens at the prices, plus the interrupted
    // calls.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let usage: Value = http
            .get(format!("{}/v1/usage?key_id={key_id}", b.base_url()))
            .bearer_auth(&master)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let cost = usage["totals"]["cost_micros"].as_i64().unwrap();
        let requests = usage["totals"]["requests"].as_u64().unwrap();
        if requests == JOBS as u64 {
            assert_eq!(cost, completed_cost + interrupted_cost, "{usage}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{usage}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, reserved, open) = ledger_state(&db.url, key_id).await;
    assert_eq!((reserved, open), (0, 0));
    a.kill().await;
    b.kill().await;
}
