//! Graceful shutdown of the real binary, on SQLite and PostgreSQL: SIGTERM
//! with 20 streams in flight, drained to the end or cut at the deadline;
//! either way every reservation is settled at what was seen and the
//! process exits 0.

use std::time::{Duration, Instant};

use futures::StreamExt;
use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{
    Backend, QlaudProcess, TestDb, TestServer, backend_tests, ledger_state, mock_toml, sse_events,
    store_pool,
};
use serde_json::{Value, json};
use sqlx::Row;

backend_tests!(
    sigterm_drains_streams_to_the_end,
    sigterm_cuts_streams_at_the_deadline,
    health_is_unready_while_draining,
    a_second_signal_exits_at_once,
);

const STREAMS: usize = 20;

/// A qlaud process on a fresh store, its master key, and a capped key.
struct Running {
    process: QlaudProcess,
    db: TestDb,
    master: String,
    key_id: String,
    secret: String,
    _config: tempfile::NamedTempFile,
}

async fn start(backend: Backend, mock: &MockUpstream, drain_secs: &str) -> Option<Running> {
    let db = TestDb::new(backend).await?;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), mock_toml(mock)).unwrap();
    let args = [
        "--database-url",
        db.url.as_str(),
        "--config",
        config.path().to_str().unwrap(),
        "--drain-secs",
        drain_secs,
    ];
    let process = QlaudProcess::spawn(&args).await;
    let boot: Value =
        serde_json::from_str(process.stdout.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let master = boot["master_key"].as_str().unwrap().to_string();
    let key: Value = reqwest::Client::new()
        .post(format!("{}/v1/keys", process.base_url()))
        .header("x-api-key", &master)
        .json(&json!({"name": "streamer", "max_spend_usd": 50}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Some(Running {
        key_id: key["id"].as_str().unwrap().to_string(),
        secret: key["secret"].as_str().unwrap().to_string(),
        process,
        db,
        master,
        _config: config,
    })
}

/// How a stream ended, as its client saw it.
#[derive(Debug, PartialEq)]
enum Ending {
    /// The answer's own last event.
    Finished,
    /// A final error event in the client's shape; its message.
    Error(String),
}

/// Opens 20 slow streams (about 5 s each): 12 through `/v1/messages`, 6
/// through `/v1/chat/completions` and 2 thread turns; returns once each has
/// sent its first bytes, with the tasks that read them to the end.
async fn open_streams(r: &Running) -> Vec<tokio::task::JoinHandle<Ending>> {
    let http = reqwest::Client::new();
    let words = "w ".repeat(40);
    let mut threads = Vec::new();
    for _ in 0..2 {
        let thread: Value = http
            .post(format!("{}/v1/threads", r.process.base_url()))
            .header("x-api-key", &r.secret)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        threads.push(thread["id"].as_str().expect("a thread").to_string());
    }
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(STREAMS);
    let tasks = (0..STREAMS)
        .map(|i| {
            let (http, base, secret) = (http.clone(), r.process.base_url(), r.secret.clone());
            let first_tx = first_tx.clone();
            let anthropic = !(12..18).contains(&i);
            let ask = json!({"max_tokens": 100, "stream": true,
                             "messages": [{"role": "user", "content": words}]});
            let (path, body) = match i {
                0..12 => ("/v1/messages".to_string(), json!({"model": "claude-slow"})),
                12..18 => ("/v1/chat/completions".to_string(), json!({"model": "gpt-slow"})),
                _ => (
                    format!("/v1/threads/{}/messages", threads[i - 18]),
                    json!({"model": "claude-slow", "content": words, "max_tokens": 100,
                           "stream": true}),
                ),
            };
            let body = if i < 18 {
                let mut b = ask.clone();
                b["model"] = body["model"].clone();
                b
            } else {
                body
            };
            tokio::spawn(async move {
                let resp = http
                    .post(format!("{base}{path}"))
                    .header("x-api-key", secret)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let mut body = resp.bytes_stream();
                let mut text = String::new();
                let mut first = Some(first_tx);
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.expect("the stream ends cleanly, never mid-chunk");
                    text.push_str(&String::from_utf8_lossy(&chunk));
                    if let Some(tx) = first.take() {
                        tx.send(()).await.unwrap();
                    }
                }
                ending(anthropic, &text)
            })
        })
        .collect();
    drop(first_tx);
    for _ in 0..STREAMS {
        tokio::time::timeout(Duration::from_secs(30), first_rx.recv())
            .await
            .expect("every stream starts")
            .expect("a stream's first bytes");
    }
    tasks
}

fn ending(anthropic: bool, text: &str) -> Ending {
    let events = sse_events(text);
    let (name, data) = events.last().expect("at least one event");
    if anthropic {
        match name.as_deref() {
            Some("message_stop") => Ending::Finished,
            Some("error") => {
                let v: Value = serde_json::from_str(data).unwrap();
                assert_eq!(v["type"], "error", "{data}");
                Ending::Error(v["error"]["message"].as_str().unwrap().to_string())
            }
            other => panic!("the stream ended on {other:?}: {text}"),
        }
    } else if data == "[DONE]" {
        Ending::Finished
    } else {
        let v: Value = serde_json::from_str(data).unwrap();
        Ending::Error(v["error"]["message"].as_str().expect(data).to_string())
    }
}

/// After the exit: nothing is left open or reserved, and the request log
/// sums to the ledger. Returns the log's rows as (status, cost, output).
async fn check_ledger(r: &Running) -> Vec<(i64, i64, i64, i64)> {
    let (settled, reserved, open) = ledger_state(&r.db.url, &r.key_id).await;
    assert_eq!(open, 0, "reservations left open");
    assert_eq!(reserved, 0, "budget still reserved");
    let pool = store_pool(&r.db.url).await;
    let rows = sqlx::query(
        "SELECT status, cost_micros, output_tokens, recovered FROM requests WHERE key_id = $1",
    )
    .bind(&r.key_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    let rows: Vec<(i64, i64, i64, i64)> = rows
        .iter()
        .map(|r| {
            (r.get("status"), r.get("cost_micros"), r.get("output_tokens"), r.get("recovered"))
        })
        .collect();
    assert_eq!(rows.len(), STREAMS, "one settled request per stream");
    assert!(rows.iter().all(|r| r.3 == 0), "settled by this process, not by crash recovery");
    assert_eq!(rows.iter().map(|r| r.1).sum::<i64>(), settled, "log == ledger");
    rows
}

async fn sigterm_drains_streams_to_the_end(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(mut r) = start(backend, &mock, "30").await else { return };
    let tasks = open_streams(&r).await;
    let signalled = Instant::now();
    r.process.signal("TERM");
    // New connections are refused at once during the drain.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = reqwest::Client::new()
        .get(format!("{}/health", r.process.base_url()))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "a new connection was served during the drain: {refused:?}");
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ending::Finished);
    }
    let status = r.process.exited_within(Duration::from_secs(30)).await.expect("qlaud exits");
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(30), "within the drain deadline");
    let rows = check_ledger(&r).await;
    assert!(rows.iter().all(|r| r.0 == 200), "every stream finished: {rows:?}");
    // Billed exactly what the provider produced, all of it.
    let stats = mock.stats();
    assert_eq!(rows.iter().map(|r| r.2).sum::<i64>() as u64, stats.output_tokens);
    assert!(!r.master.is_empty());
}

async fn sigterm_cuts_streams_at_the_deadline(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(mut r) = start(backend, &mock, "1").await else { return };
    let tasks = open_streams(&r).await;
    let signalled = Instant::now();
    r.process.signal("TERM");
    for t in tasks {
        match t.await.unwrap() {
            Ending::Error(message) => assert!(message.contains("restarting"), "{message}"),
            Ending::Finished => panic!("a 5 s stream finished within a 1 s drain"),
        }
    }
    let status = r.process.exited_within(Duration::from_secs(15)).await.expect("qlaud exits");
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(1 + 5 + 3), "deadline and grace");
    let rows = check_ledger(&r).await;
    assert!(rows.iter().all(|r| r.0 == 503), "every stream was cut: {rows:?}");
    // Settled at what was seen, not at the worst case: 100 output tokens
    // were allowed, far fewer were produced in about a second.
    let stats = mock.stats();
    let billed_output = rows.iter().map(|r| r.2).sum::<i64>() as u64;
    assert!(billed_output < (STREAMS as u64) * 100 / 2, "{billed_output} output tokens billed");
    assert!(billed_output >= stats.output_tokens, "{billed_output} < {}", stats.output_tokens);
    for (_, cost, output, _) in &rows {
        assert!(*output < 100, "settled at the worst case: {output} tokens, {cost} µ$");
    }
}

/// A request that reaches `/health` once the drain has begun (one already
/// on its way on an open connection) is told 503, so a load balancer takes
/// the process out of rotation.
async fn health_is_unready_while_draining(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else { return };
    let health = || async {
        let resp = t.http.get(format!("{}/health", t.base_url)).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    assert_eq!(health().await.0, 200);
    t.server().begin_drain();
    assert_eq!(health().await, (503, r#"{"status":"draining"}"#.to_string()));
    t.stop().await;
}

/// SIGTERM starts a 30 s drain; a second signal (here SIGINT) ends the
/// process at once, with a non-zero status (what is open is left to crash
/// recovery).
async fn a_second_signal_exits_at_once(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(mut r) = start(backend, &mock, "30").await else { return };
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/messages", r.process.base_url()))
        .header("x-api-key", &r.secret)
        .json(&json!({"model": "claude-slow", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": "w ".repeat(40)}]}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    r.process.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(r.process.exited_within(Duration::from_millis(10)).await.is_none(), "draining");
    let signalled = Instant::now();
    r.process.signal("INT");
    let status = r.process.exited_within(Duration::from_secs(3)).await.expect("exits at once");
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(3));
}
