//! The hard cap and the ledger, end to end against the mock upstream, on
//! SQLite and PostgreSQL: real concurrency, streams cut off, calendar
//! rollover, cap changes, cache pricing, several processes and crashes.

use std::sync::Arc;

use futures::StreamExt;
use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{
    Backend, QlaudProcess, ServeArgs, TestDb, TestServer, backend_tests, ledger_state, mock_toml,
    store_pool,
};
use serde_json::{Value, json};
use sqlx::Row;

backend_tests!(
    cap_holds_under_300_concurrent_requests,
    cap_holds_across_two_processes,
    dropped_stream_is_billed_for_what_was_produced,
    caps_reset_at_calendar_boundaries,
    raising_a_cap_admits_at_once,
    clamps_output_instead_of_refusing,
    cache_tokens_are_priced_in_both_shapes,
    usage_report_by_key_model_and_day,
    crash_mid_load_settles_every_request_once,
    health_and_metrics,
    leased_storm_holds_the_cap,
    leased_storm_survives_a_killed_process,
    key_changes_reach_a_leased_key_at_once,
    key_changes_reach_a_busy_leased_key_at_once,
    idle_leases_give_their_room_back,
);

async fn health_and_metrics(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let http = reqwest::Client::new();
    let resp = http.get(format!("{}/health", t.base_url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let key =
        mint(&t.base_url, &t.master_key, json!({"name": "m", "max_spend_usd": 0.000001})).await;
    message(&http, &t.base_url, &t.master_key, ask("claude-test", 10)).await;
    message(&http, &t.base_url, key["secret"].as_str().unwrap(), ask("claude-test", 10)).await;
    let text =
        http.get(format!("{}/metrics", t.base_url)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("qlaud_model_requests_total{endpoint=\"messages\"} 1"), "{text}");
    assert!(text.contains("qlaud_cap_refusals_total 1"), "{text}");
    assert!(text.contains("qlaud_reservations_open 0"), "{text}");
    assert!(text.contains("# TYPE qlaud_cost_micros_total counter"));
    t.stop().await;
}

/// Claude-test costs $3 per million input tokens: 3 µ$ a token; output 15 µ$.
fn claude_cost(input: u64, output: u64) -> i64 {
    (3 * input + 15 * output) as i64
}

async fn mint(base: &str, master: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/keys"))
        .bearer_auth(master)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

async fn message(http: &reqwest::Client, base: &str, key: &str, body: Value) -> (u16, Value) {
    let resp = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn ask(model: &str, max_tokens: u64) -> Value {
    json!({"model": model, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "please answer briefly"}]})
}

async fn usage(base: &str, key: &str, query: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("{base}/v1/usage{query}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// A request whose answer runs into `max_tokens` (the mock echoes the 100
/// words after three of its own), so each admitted request costs exactly
/// 100 input and 100 output tokens: 3 × 100 + 15 × 100 = 1800 µ$, close to
/// its reservation. A cap that let a few requests too many in would then
/// show in the settled spend, not only in the reservations. The `slow`
/// model (priced as claude-test) is answered after 100 ms, so the admitted
/// requests are in flight together while the rest are being admitted.
/// (qlaud does not forward a client's `x-mock-delay-ms` header.)
fn truncating() -> Value {
    json!({"model": "claude-slow", "max_tokens": 100,
           "messages": [{"role": "user", "content": "w ".repeat(100).trim_end()}]})
}

/// Fires `n` requests at once, spread over `bases`; returns the statuses
/// and the costs of the admitted ones.
async fn storm(bases: &[String], key: &str, n: usize) -> (Vec<u16>, i64) {
    let http = reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (http, base, key) = (http.clone(), bases[i % bases.len()].clone(), key.to_string());
            tokio::spawn(async move {
                let resp = http
                    .post(format!("{base}/v1/messages"))
                    .header("x-api-key", key)
                    .json(&truncating())
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut cost = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        if status == 200 {
            cost += body["usage"]["cost_micros"].as_i64().unwrap();
        } else {
            assert_eq!(status, 402, "{body}");
            assert_eq!(body["error"]["type"], "billing_error", "{body}");
            assert_eq!(body["error"]["code"], "spend_cap_reached", "{body}");
        }
        statuses.push(status);
    }
    (statuses, cost)
}

/// What [`watch_ledger`] saw at most: settled + reserved + leased in any
/// window, what reservations and leases held, what leases alone held, and
/// how many samples it took.
#[derive(Clone, Copy, Debug, Default)]
struct Watched {
    committed: i64,
    held: i64,
    leased: i64,
    samples: u64,
}

/// Watches the key's ledger rows until `stop` is set. The cap's invariant
/// holds at every instant, not only once the requests are settled, and
/// counts what leases hold as well as what reservations do.
fn watch_ledger(
    url: String,
    key_id: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Watched> {
    tokio::spawn(async move {
        let pool = store_pool(&url).await;
        let mut w = Watched::default();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let rows = sqlx::query(
                "SELECT CAST(settled_micros + reserved_micros + leased_micros AS BIGINT) AS c, \
                 CAST(reserved_micros + leased_micros AS BIGINT) AS h, \
                 CAST(leased_micros AS BIGINT) AS l FROM key_spend WHERE key_id = $1",
            )
            .bind(&key_id)
            .fetch_all(&pool)
            .await
            .unwrap();
            for row in rows {
                w.committed = w.committed.max(row.get::<i64, _>("c"));
                w.held = w.held.max(row.get::<i64, _>("h"));
                w.leased = w.leased.max(row.get::<i64, _>("l"));
            }
            w.samples += 1;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        pool.close().await;
        w
    })
}

/// What leases hold on a key (in every window) and how many there are.
async fn leased(url: &str, key_id: &str) -> (i64, i64) {
    let pool = store_pool(url).await;
    let micros: i64 = sqlx::query(
        "SELECT CAST(COALESCE(SUM(leased_micros), 0) AS BIGINT) AS l FROM key_spend \
         WHERE key_id = $1",
    )
    .bind(key_id)
    .fetch_one(&pool)
    .await
    .unwrap()
    .get("l");
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM leases WHERE key_id = $1")
        .bind(key_id)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    pool.close().await;
    (micros, n)
}

/// The cap of the storms below (`max_spend_usd: 0.05`): room for about
/// twenty reservations of a `truncating()` request at once, and for at most
/// 27 of them settled (27 × 1800 = 48600 µ$).
const STORM_CAP_MICROS: i64 = 50_000;

/// The shared checks of a storm against one key: the cap held at every
/// instant and in the end, the provider saw exactly the admitted requests
/// and many of them at once, and what was billed is what it reported.
fn check_storm(mock: &MockUpstream, statuses: &[u16], cost: i64, watched: Watched) {
    check_storm_under(STORM_CAP_MICROS, mock, statuses, cost, watched);
}

fn check_storm_under(
    cap: i64,
    mock: &MockUpstream,
    statuses: &[u16],
    cost: i64,
    Watched { committed, held, samples, .. }: Watched,
) {
    let admitted = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert!((2..statuses.len() as u64).contains(&admitted), "admitted {admitted}");
    let stats = mock.stats();
    assert_eq!(stats.requests, admitted, "the provider saw exactly the admitted requests");
    assert!(
        stats.max_in_flight >= 10,
        "only {} requests were in flight at once: the reservations never overlapped",
        stats.max_in_flight
    );
    assert!(cost <= cap, "spent {cost} µ$ of a {cap} µ$ cap");
    assert_eq!(
        cost,
        claude_cost(stats.input_tokens, stats.output_tokens),
        "ledger = provider's counts × prices"
    );
    assert!(samples > 0 && held > 0, "the ledger was never seen holding reservations");
    assert!(
        committed <= cap,
        "settled + reserved + leased reached {committed} µ$ of a {cap} µ$ cap"
    );
}

async fn cap_holds_under_300_concurrent_requests(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key =
        mint(&t.base_url, &t.master_key, json!({"name": "capped", "max_spend_usd": 0.05})).await;
    let secret = key["secret"].as_str().unwrap();
    let key_id = key["id"].as_str().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_ledger(t.db.url.clone(), key_id.to_string(), stop.clone());
    let (statuses, cost) = storm(std::slice::from_ref(&t.base_url), secret, 300).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    check_storm(&mock, &statuses, cost, watcher.await.unwrap());
    let admitted = statuses.iter().filter(|s| **s == 200).count() as u64;
    let report = usage(&t.base_url, &t.master_key, "").await;
    let row = report["by_key"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key["id"])
        .unwrap()
        .clone();
    assert_eq!(row["cost_micros"].as_i64().unwrap(), cost);
    assert_eq!(row["requests"].as_u64().unwrap(), admitted);
    let (settled, reserved, open) = ledger_state(&t.db.url, key_id).await;
    assert_eq!((settled, reserved, open), (cost, 0, 0));
    t.stop().await;
}

/// Two `qlaud serve` processes on one store: PostgreSQL, and the same
/// SQLite file (the store's own locking serialises their admissions).
async fn cap_holds_across_two_processes(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let mock = MockUpstream::start().await;
    let serve = ServeArgs::new(&db, &mock, &[]);
    let a = serve.spawn().await;
    let b = serve.spawn().await;
    let master = a
        .stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .or_else(|| b.stdout.lines().find(|l| l.starts_with('{')));
    let master: Value = serde_json::from_str(master.unwrap()).unwrap();
    let master = master["master_key"].as_str().unwrap();
    let key = mint(&a.base_url(), master, json!({"name": "shared", "max_spend_usd": 0.05})).await;
    let key_id = key["id"].as_str().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_ledger(db.url.clone(), key_id.to_string(), stop.clone());
    let (statuses, cost) =
        storm(&[a.base_url(), b.base_url()], key["secret"].as_str().unwrap(), 300).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    check_storm(&mock, &statuses, cost, watcher.await.unwrap());
    // Half the requests went to each process, each admitted or refused
    // on the shared ledger (which one admits more is up to timing). Both
    // report the same ledger once each has written what it still had
    // queued (a usage report does that).
    usage(&a.base_url(), master, "").await;
    usage(&b.base_url(), master, "").await;
    let ra = usage(&a.base_url(), master, "").await;
    let rb = usage(&b.base_url(), master, "").await;
    assert_eq!(ra["totals"]["cost_micros"].as_i64(), Some(cost));
    assert_eq!(rb["totals"]["cost_micros"].as_i64(), Some(cost));
    let (settled, reserved, open) = ledger_state(&db.url, key_id).await;
    assert_eq!((settled, reserved, open), (cost, 0, 0));
    a.kill().await;
    b.kill().await;
}

async fn dropped_stream_is_billed_for_what_was_produced(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = mint(&t.base_url, &t.master_key, json!({"name": "streamer"})).await;
    let query = format!("?key_id={}", key["id"].as_str().unwrap());
    let words = "w ".repeat(40);
    let started = std::time::Instant::now();
    let resp = t
        .http
        .post(format!("{}/v1/messages", t.base_url))
        .header("x-api-key", key["secret"].as_str().unwrap())
        .json(&json!({"model": "claude-slow", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": words}]}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    // The whole answer is 43 output tokens in some 50 events, 100 ms each:
    // about 5 s. Wait until qlaud has settled the request, then until well
    // past the time the full answer would have taken, so that a provider
    // call that was never stopped shows all 43 tokens.
    let full_answer = started + std::time::Duration::from_secs(7);
    let deadline = started + std::time::Duration::from_secs(30);
    loop {
        let report = usage(&t.base_url, &t.master_key, &query).await;
        if report["totals"]["requests"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the dropped stream was never settled");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let at_settle = mock.stats().output_tokens;
    tokio::time::sleep_until(full_answer.into()).await;
    let stats = mock.stats();
    assert_eq!(stats.output_tokens, at_settle, "the provider kept generating after the drop");
    assert!(stats.output_tokens < 43, "the provider stopped early: {}", stats.output_tokens);
    let report = usage(&t.base_url, &t.master_key, &query).await;
    let totals = &report["totals"];
    assert_eq!(totals["requests"], 1);
    assert_eq!(totals["input_tokens"].as_u64(), Some(stats.input_tokens));
    assert_eq!(totals["output_tokens"].as_u64(), Some(stats.output_tokens), "billed = produced");
    assert_eq!(
        totals["cost_micros"].as_i64(),
        Some(claude_cost(stats.input_tokens, stats.output_tokens))
    );
    t.stop().await;
}

/// Unix ms of `y-m-d` 00:00 UTC.
fn utc_midnight(y: i32, m: u32, d: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

/// Puts the server's billing clock at `at_ms` (it runs on from there).
fn set_clock(t: &TestServer, at_ms: i64) {
    t.clock.advance_ms(at_ms - t.clock_now_ms());
}

/// Calls until the cap refuses (at most 20 calls); the number admitted.
async fn spend_cap(http: &reqwest::Client, t: &TestServer, secret: &str) -> u32 {
    for admitted in 0..20 {
        let (status, body) = message(http, &t.base_url, secret, ask("claude-test", 100)).await;
        if status == 402 {
            assert_eq!(body["error"]["code"], "spend_cap_reached", "{body}");
            return admitted;
        }
        assert_eq!(status, 200, "{body}");
    }
    panic!("the cap never bit in 20 calls");
}

/// The key's next call is refused, saying the window ends at `ends_ms`.
async fn refused_until(http: &reqwest::Client, t: &TestServer, secret: &str, ends_ms: i64) {
    let (status, body) = message(http, &t.base_url, secret, ask("claude-test", 100)).await;
    assert_eq!(status, 402, "{body}");
    let ends = chrono::DateTime::from_timestamp_millis(ends_ms).unwrap();
    let ends = ends.format("%Y-%m-%dT%H:%M:%S").to_string();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("resets at {ends}")), "{message}");
}

async fn caps_reset_at_calendar_boundaries(backend: Backend) {
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let http = reqwest::Client::new();
    // For each period: a boundary of that period only (a Wednesday that is
    // not the 1st; a Monday that is not the 1st; a 1st that is a Friday),
    // and a later moment in the new window past boundaries of the shorter
    // periods (23 h on; six midnights and the 1st of February on; four
    // Mondays on). A rolling window (the last 24 h, 7 or 31 days) refuses
    // just after the boundary; a window that resets too often admits at the
    // later moment.
    let cases = [
        ("daily", utc_midnight(2030, 1, 16), 23 * HOUR, DAY),
        ("weekly", utc_midnight(2030, 1, 28), 6 * DAY + 23 * HOUR, 7 * DAY),
        ("monthly", utc_midnight(2030, 3, 1), 30 * DAY + 23 * HOUR, 31 * DAY),
    ];
    for (period, boundary, later, length) in cases {
        let key = mint(
            &t.base_url,
            &t.master_key,
            json!({"name": period, "max_spend_usd": 0.0015, "period": period}),
        )
        .await;
        let secret = key["secret"].as_str().unwrap();
        // Spend the window's budget in its last seconds.
        set_clock(&t, boundary - 3_000);
        assert!(spend_cap(&http, &t, secret).await >= 1, "{period}: nothing was admitted");
        assert!(t.clock_now_ms() < boundary - 1_000, "{period}: spending took too long");
        set_clock(&t, boundary - 300);
        refused_until(&http, &t, secret, boundary).await;
        // 100 ms into the next window: a budget of its own, no job involved.
        set_clock(&t, boundary + 100);
        let (status, body) = message(&http, &t.base_url, secret, ask("claude-test", 100)).await;
        assert_eq!(status, 200, "{period}: a new window admits again: {body}");
        spend_cap(&http, &t, secret).await;
        set_clock(&t, boundary + later);
        refused_until(&http, &t, secret, boundary + length).await;
    }
    // A lifetime cap never resets.
    let key = mint(
        &t.base_url,
        &t.master_key,
        json!({"name": "total", "max_spend_usd": 0.0015, "period": "total"}),
    )
    .await;
    let secret = key["secret"].as_str().unwrap();
    assert!(spend_cap(&http, &t, secret).await >= 1);
    t.clock.advance_ms(400 * DAY);
    let (status, body) = message(&http, &t.base_url, secret, ask("claude-test", 100)).await;
    assert_eq!(status, 402, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("never resets"), "{body}");
    t.stop().await;
}

async fn raising_a_cap_admits_at_once(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let http = reqwest::Client::new();
    let key =
        mint(&t.base_url, &t.master_key, json!({"name": "tiny", "max_spend_usd": 0.000001})).await;
    let secret = key["secret"].as_str().unwrap();
    let (status, body) = message(&http, &t.base_url, secret, ask("claude-test", 100)).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(mock.stats().requests, 0, "refused before the provider");
    // The same through the OpenAI shape: its own error body.
    let resp = http
        .post(format!("{}/v1/chat/completions", t.base_url))
        .bearer_auth(secret)
        .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "spend_cap_reached");
    let resp = http
        .patch(format!("{}/v1/keys/{}", t.base_url, key["id"].as_str().unwrap()))
        .bearer_auth(&t.master_key)
        .json(&json!({"max_spend_usd": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(message(&http, &t.base_url, secret, ask("claude-test", 100)).await.0, 200);
    // And lowering it refuses at once.
    http.patch(format!("{}/v1/keys/{}", t.base_url, key["id"].as_str().unwrap()))
        .bearer_auth(&t.master_key)
        .json(&json!({"max_spend_usd": 0.000001}))
        .send()
        .await
        .unwrap();
    assert_eq!(message(&http, &t.base_url, secret, ask("claude-test", 100)).await.0, 402);
    t.stop().await;
}

async fn clamps_output_instead_of_refusing(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let http = reqwest::Client::new();
    // Enough for the prompt and some output, far from 128000 tokens of it
    // (what the Vercel AI SDK asks for).
    let key =
        mint(&t.base_url, &t.master_key, json!({"name": "clamp", "max_spend_usd": 0.01})).await;
    let secret = key["secret"].as_str().unwrap();
    let resp = http
        .post(format!("{}/v1/messages", t.base_url))
        .header("x-api-key", secret)
        .json(&ask("claude-test", 128_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let clamped: u64 =
        resp.headers()["qlaud-max-tokens-clamped"].to_str().unwrap().parse().unwrap();
    let first: Value = resp.json().await.unwrap();
    let stats = mock.stats();
    assert_eq!(stats.requests, 1);
    let sent = stats.last_body.unwrap()["max_tokens"].as_u64().unwrap();
    assert_eq!(sent, clamped);
    assert!((16..1000).contains(&clamped), "clamped to {clamped}");
    let spent = first["usage"]["cost_micros"].as_i64().unwrap();
    // A clamped answer that runs into the limit says so the usual way. The
    // 600-word prompt fits the $0.01 left (600 × 3 µ$ billed, under 5000 µ$
    // reserved for it) but the 603-word answer does not, so the output is
    // clamped below it and the answer stops at the limit.
    let long = json!({"model": "claude-test", "max_tokens": 128_000,
                      "messages": [{"role": "user", "content": "w ".repeat(600).trim_end()}]});
    let resp = http
        .post(format!("{}/v1/messages", t.base_url))
        .header("x-api-key", secret)
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let clamped: u64 =
        resp.headers()["qlaud-max-tokens-clamped"].to_str().unwrap().parse().unwrap();
    let body: Value = resp.json().await.unwrap();
    let stats = mock.stats();
    assert_eq!(stats.requests, 2, "forwarded to the provider");
    assert_eq!(stats.last_body.unwrap()["max_tokens"].as_u64(), Some(clamped));
    assert!((16..603).contains(&clamped), "clamped to {clamped}");
    assert_eq!(body["stop_reason"], "max_tokens", "{body}");
    assert_eq!(body["usage"]["output_tokens"].as_u64(), Some(clamped));
    let cost = body["usage"]["cost_micros"].as_i64().unwrap();
    assert_eq!(cost, claude_cost(600, clamped));
    assert!(spent + cost <= 10_000, "spent {} µ$ of a 10000 µ$ cap", spent + cost);
    // What is left now pays for neither that prompt nor 16 tokens of output:
    // refused, before the provider.
    let (status, body) = message(&http, &t.base_url, secret, long).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "spend_cap_reached", "{body}");
    assert_eq!(mock.stats().requests, 2, "refused before the provider");
    t.stop().await;
}

async fn cache_tokens_are_priced_in_both_shapes(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let http = reqwest::Client::new();
    // Anthropic: cache reads are separate from input_tokens, at $0.30/Mtok.
    let (status, body) = message(
        &http,
        &t.base_url,
        &t.master_key,
        json!({"model": "claude-test", "max_tokens": 100, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "cached prefix", "cache_control": {"type": "ephemeral"}}]}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let u = &body["usage"];
    assert_eq!(u["cache_read_input_tokens"], 5);
    let (i, o) = (u["input_tokens"].as_i64().unwrap(), u["output_tokens"].as_i64().unwrap());
    // 5 × 0.3 = 1.5 µ$: the request is charged 2 (rounded up, never down).
    assert_eq!(u["cost_micros"].as_i64().unwrap(), 3 * i + 15 * o + 2);
    // OpenAI: cached tokens are inside prompt_tokens and billed at the
    // cache price instead of the input price.
    let resp = http
        .post(format!("{}/v1/chat/completions", t.base_url))
        .bearer_auth(&t.master_key)
        .json(&json!({"model": "gpt-test", "user": "cached",
                      "messages": [{"role": "user", "content": "one two three four five six"}]}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let u = &body["usage"];
    assert_eq!(u["prompt_tokens"], 6);
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 5);
    let out = u["completion_tokens"].as_i64().unwrap();
    // 1 × 1.25 + 5 × 0.125 + out × 10 = 1.875 + 10·out → rounded up.
    assert_eq!(u["cost_micros"].as_i64().unwrap(), 10 * out + 2);
    let report = usage(&t.base_url, &t.master_key, "").await;
    assert_eq!(report["totals"]["cache_read_tokens"], 10);
    t.stop().await;
}

async fn usage_report_by_key_model_and_day(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let http = reqwest::Client::new();
    let a = mint(&t.base_url, &t.master_key, json!({"name": "user_42", "max_spend_usd": 5})).await;
    let b = mint(&t.base_url, &t.master_key, json!({"name": "user_43"})).await;
    let (sa, sb) = (a["secret"].as_str().unwrap(), b["secret"].as_str().unwrap());
    message(&http, &t.base_url, sa, ask("claude-test", 50)).await;
    message(&http, &t.base_url, sa, ask("echo", 50)).await;
    t.clock.advance_ms(86_400_000);
    message(&http, &t.base_url, sb, ask("claude-test", 50)).await;
    let r = usage(&t.base_url, &t.master_key, "?from=2000-01-01&to=2100-01-01").await;
    assert_eq!(r["totals"]["requests"], 3);
    let by_key = r["by_key"].as_array().unwrap();
    assert_eq!(by_key.len(), 2);
    let ka = by_key.iter().find(|k| k["key_name"] == "user_42").unwrap();
    assert_eq!(ka["requests"], 2);
    assert_eq!(r["by_model"].as_array().unwrap().len(), 2);
    assert_eq!(r["by_day"].as_array().unwrap().len(), 2);
    let sum: i64 = by_key.iter().map(|k| k["cost_micros"].as_i64().unwrap()).sum();
    assert_eq!(sum, r["totals"]["cost_micros"].as_i64().unwrap());
    // A standard key sees only itself, and cannot ask for another key.
    let own = usage(&t.base_url, sb, "?from=2000-01-01&to=2100-01-01").await;
    assert_eq!(own["by_key"].as_array().unwrap().len(), 1);
    assert_eq!(own["by_key"][0]["key_name"], "user_43");
    let resp = http
        .get(format!("{}/v1/usage?key_id={}", t.base_url, a["id"].as_str().unwrap()))
        .bearer_auth(sb)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Another tenant sees nothing of this one.
    let (_, other) = t.create_tenant("other").await;
    let r = usage(&t.base_url, &other, "?from=2000-01-01&to=2100-01-01").await;
    assert_eq!(r["totals"]["requests"], 0);
    let resp = http
        .get(format!("{}/v1/usage?key_id={}", t.base_url, a["id"].as_str().unwrap()))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    for bad in ["?from=yesterday", "?from=2026-02-01&to=2026-01-01"] {
        let resp = http
            .get(format!("{}/v1/usage{bad}", t.base_url))
            .bearer_auth(&t.master_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    t.stop().await;
}

async fn crash_mid_load_settles_every_request_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let mock = Arc::new(MockUpstream::start().await);
    let serve = ServeArgs::new(&db, &mock, &["--instance-timeout-secs", "1"]);
    let first = serve.spawn().await;
    let master: Value =
        serde_json::from_str(first.stdout.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let master = master["master_key"].as_str().unwrap().to_string();
    let key =
        mint(&first.base_url(), &master, json!({"name": "crashy", "max_spend_usd": 10})).await;
    let secret = key["secret"].as_str().unwrap().to_string();
    let key_id = key["id"].as_str().unwrap();
    let http = reqwest::Client::new();
    let base = first.base_url();
    // Three requests finish and are written (a usage report writes what
    // the process still has queued) before the crash: settled exactly.
    for _ in 0..3 {
        assert_eq!(message(&http, &base, &secret, ask("claude-test", 100)).await.0, 200);
    }
    let before = usage(&base, &master, "?from=2000-01-01&to=2100-01-01").await;
    assert_eq!(before["totals"]["requests"], 3);
    // Slow answers (100 ms: the `slow` model; qlaud does not forward a
    // client's `x-mock-delay-ms`) keep requests in flight when the process
    // dies.
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (http, base, secret) = (http.clone(), base.clone(), secret.clone());
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(i * 10)).await;
                http.post(format!("{base}/v1/messages"))
                    .header("x-api-key", secret)
                    .json(&ask("claude-slow", 100))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    first.kill().await;
    let mut answered = 0u64;
    for t in tasks {
        if let Ok(Ok(status)) = t.await {
            assert_eq!(status, 200);
            answered += 1;
        }
    }
    // The restarted process settles what the dead one left open: its
    // reservations and its leases.
    let second = serve.spawn().await;
    let mut waited = 0;
    while ledger_state(&db.url, key_id).await.2 > 0 || leased(&db.url, key_id).await != (0, 0) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        waited += 1;
        assert!(waited < 100, "reservations and leases were never recovered");
    }
    let (settled, reserved, _) = ledger_state(&db.url, key_id).await;
    assert_eq!(reserved, 0);
    let report = usage(&second.base_url(), &master, "?from=2000-01-01&to=2100-01-01").await;
    assert_eq!(report["totals"]["cost_micros"].as_i64(), Some(settled), "ledger == usage report");
    // Usage the provider reported and qlaud wrote down is billed exactly,
    // each request once; the rest of what the provider saw is billed in
    // what crash recovery settled: a reservation at its worst case, a
    // lease at what it held (its requests in flight at their worst case,
    // plus at most 16 worst cases of room: `--lease-requests`).
    let pool = store_pool(&db.url).await;
    let rows = sqlx::query(
        "SELECT id, cost_micros, input_tokens, output_tokens, recovered FROM requests \
         WHERE key_id = $1",
    )
    .bind(key_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    let stats = mock.stats();
    let ids: std::collections::HashSet<String> = rows.iter().map(|r| r.get("id")).collect();
    assert_eq!(ids.len(), rows.len(), "a request was logged twice");
    assert!(rows.len() <= 3 + 60, "{} rows for 63 requests", rows.len());
    // What admission reserved for one of these requests: its prompt bound
    // (the body's bytes at the dearest input price) and all 100 output
    // tokens allowed; more than the provider can bill for it.
    let worst = claude_cost(3, 100);
    let (mut exact, mut reservations, mut leases) = (0u64, 0u64, 0u64);
    let (mut recovered_micros, mut lease_micros) = (0i64, 0i64);
    let (mut exact_input, mut exact_output) = (0u64, 0u64);
    let mut reserved_worst = 0;
    for r in &rows {
        let (id, cost, i, o, rec): (String, i64, i64, i64, i64) = (
            r.get("id"),
            r.get("cost_micros"),
            r.get("input_tokens"),
            r.get("output_tokens"),
            r.get("recovered"),
        );
        if rec == 0 {
            assert_eq!(cost, claude_cost(i as u64, o as u64));
            exact += 1;
            exact_input += i as u64;
            exact_output += o as u64;
        } else if id.starts_with("lease_") {
            leases += 1;
            lease_micros += cost;
            recovered_micros += cost;
        } else {
            // A reservation, settled at its worst case.
            reserved_worst = reserved_worst.max(cost);
            assert!(
                cost >= worst,
                "recovered at {cost} µ$, less than the {worst} µ$ it could cost"
            );
            reservations += 1;
            recovered_micros += cost;
        }
    }
    let worst = worst.max(reserved_worst);
    assert!(exact >= 3, "{exact} requests settled exactly");
    assert!(leases >= 1, "the crash left no lease: {reservations} reservations");
    assert!(exact <= stats.requests, "{exact} exact rows, {} provider requests", stats.requests);
    // Every request the provider saw and qlaud did not write down, and
    // every one answered to its client, is paid for by what recovery
    // settled, at no less than its worst case.
    let unwritten = stats.requests.max(3 + answered) - exact;
    assert!(
        recovered_micros >= unwritten as i64 * claude_cost(3, 100),
        "{unwritten} requests unwritten at the crash, {recovered_micros} µ$ recovered"
    );
    // A lease bills at most its room beyond the requests in flight.
    assert!(
        lease_micros <= (unwritten as i64 + 16 * leases as i64) * worst * 2,
        "{leases} leases recovered at {lease_micros} µ$ for {unwritten} requests"
    );
    // Usage billed exactly was reported by the provider: never more of it.
    assert!(exact_input <= stats.input_tokens, "{exact_input} > {}", stats.input_tokens);
    assert!(exact_output <= stats.output_tokens, "{exact_output} > {}", stats.output_tokens);
    let total: i64 = rows.iter().map(|r| r.get::<i64, _>("cost_micros")).sum();
    assert_eq!(total, settled, "none counted twice");
    assert!(
        total >= claude_cost(stats.input_tokens, stats.output_tokens),
        "none lost: {total} < provider's"
    );
    second.kill().await;
}

/// A cap with room for budget leases at first (16 worst cases of a
/// `truncating()` request and as much again) and for about 330 of them
/// settled: a storm spends it through leases, then near the cap through
/// per-request reservations.
const LEASED_CAP_MICROS: i64 = 600_000;

async fn leased_storm_holds_the_cap(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key =
        mint(&t.base_url, &t.master_key, json!({"name": "leased", "max_spend_usd": 0.6})).await;
    let key_id = key["id"].as_str().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_ledger(t.db.url.clone(), key_id.to_string(), stop.clone());
    let (statuses, cost) =
        storm(std::slice::from_ref(&t.base_url), key["secret"].as_str().unwrap(), 600).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let watched = watcher.await.unwrap();
    assert!(watched.leased > 0, "no lease was taken");
    check_storm_under(LEASED_CAP_MICROS, &mock, &statuses, cost, watched);
    assert!(statuses.contains(&402), "the storm never reached the cap");
    // Each admitted request is logged once, at the provider's usage.
    let report = usage(&t.base_url, &t.master_key, &format!("?key_id={key_id}")).await;
    assert_eq!(report["totals"]["cost_micros"].as_i64(), Some(cost));
    let admitted = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(report["totals"]["requests"].as_u64(), Some(admitted));
    let metrics =
        reqwest::get(format!("{}/metrics", t.base_url)).await.unwrap().text().await.unwrap();
    let leased_admissions: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("qlaud_lease_admissions_total "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        leased_admissions > 0 && leased_admissions < admitted,
        "{leased_admissions} of {admitted} admitted under a lease: leases first, then near the \
         cap reservations"
    );
    // A graceful stop gives every lease back.
    let db = t.stop_keeping_store().await;
    assert_eq!(ledger_state(&db.url, key_id).await, (cost, 0, 0));
    assert_eq!(leased(&db.url, key_id).await, (0, 0));
}

/// Two processes spend one key through their leases; one is SIGKILLed
/// mid-storm. The cap holds at every instant and after the survivor
/// settles the dead one's leases and reservations.
async fn leased_storm_survives_a_killed_process(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let mock = MockUpstream::start().await;
    let serve = ServeArgs::new(&db, &mock, &["--instance-timeout-secs", "1"]);
    let a = serve.spawn().await;
    let b = serve.spawn().await;
    let master = a.boot()["master_key"].as_str().unwrap().to_string();
    let key = a.mint(&master, json!({"name": "shared", "max_spend_usd": 0.6})).await;
    let key_id = key["id"].as_str().unwrap();
    let secret = key["secret"].as_str().unwrap().to_string();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_ledger(db.url.clone(), key_id.to_string(), stop.clone());
    let http = reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap();
    let bases = [a.base_url(), b.base_url()];
    let tasks: Vec<_> = (0..600)
        .map(|i| {
            let (http, base, secret) = (http.clone(), bases[i % 2].clone(), secret.clone());
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(i as u64)).await;
                let resp = http
                    .post(format!("{base}/v1/messages"))
                    .header("x-api-key", secret)
                    .json(&truncating())
                    .send()
                    .await
                    .ok()?;
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.ok()?;
                Some((status, body["usage"]["cost_micros"].as_i64().unwrap_or(0)))
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    a.kill().await;
    let mut answered_cost = 0;
    for t in tasks {
        if let Some((status, cost)) = t.await.unwrap() {
            assert!(status == 200 || status == 402, "{status}");
            answered_cost += cost;
        }
    }
    // The survivor settles the dead process's leases and reservations,
    // and gives its own idle leases back.
    let mut waited = 0;
    loop {
        let (_, reserved, open) = ledger_state(&db.url, key_id).await;
        if reserved == 0 && open == 0 && leased(&db.url, key_id).await == (0, 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        waited += 1;
        assert!(waited < 150, "leases and reservations were never settled");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let watched = watcher.await.unwrap();
    assert!(watched.leased > 0, "no lease was taken");
    assert!(
        watched.committed <= LEASED_CAP_MICROS,
        "settled + reserved + leased reached {} µ$",
        watched.committed
    );
    let (settled, _, _) = ledger_state(&db.url, key_id).await;
    assert!(settled <= LEASED_CAP_MICROS, "settled {settled} µ$");
    let stats = mock.stats();
    // Nothing the provider saw is lost, nothing answered is billed less
    // than it cost.
    assert!(settled >= claude_cost(stats.input_tokens, stats.output_tokens), "usage lost");
    assert!(settled >= answered_cost, "{settled} < {answered_cost} answered");
    let report = usage(&b.base_url(), &master, &format!("?key_id={key_id}")).await;
    assert_eq!(report["totals"]["cost_micros"].as_i64(), Some(settled), "ledger == usage report");
    let pool = store_pool(&db.url).await;
    let recovered: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM requests WHERE key_id = $1 AND recovered = 1 \
         AND id LIKE 'lease_%'",
    )
    .bind(key_id)
    .fetch_one(&pool)
    .await
    .unwrap()
    .get("n");
    pool.close().await;
    assert!(recovered >= 1, "the killed process's lease was not settled by the survivor");
    b.kill().await;
}

/// Two processes on one store (with the mock upstream) and the master key.
struct TwoProcesses {
    db: TestDb,
    _mock: MockUpstream,
    _serve: ServeArgs,
    a: QlaudProcess,
    b: QlaudProcess,
    master: String,
}

impl TwoProcesses {
    async fn start(backend: Backend) -> Option<TwoProcesses> {
        let db = TestDb::new(backend).await?;
        let mock = MockUpstream::start().await;
        let serve = ServeArgs::new(&db, &mock, &[]);
        let a = serve.spawn().await;
        let b = serve.spawn().await;
        let master = a.boot()["master_key"].as_str().unwrap().to_string();
        Some(TwoProcesses { db, _mock: mock, _serve: serve, a, b, master })
    }

    async fn kill(self) {
        self.a.kill().await;
        self.b.kill().await;
    }
}

/// A key's changes reach a process admitting it under a lease on its very
/// next request, whichever process made them: a cap lowered below what is
/// committed, a cap raised again, and revocation.
async fn key_changes_reach_a_leased_key_at_once(backend: Backend) {
    let Some(two) = TwoProcesses::start(backend).await else { return };
    let (a, b, master) = (&two.a, &two.b, two.master.clone());
    let key = a.mint(&master, json!({"name": "changing", "max_spend_usd": 10})).await;
    let (key_id, secret) = (key["id"].as_str().unwrap(), key["secret"].as_str().unwrap());
    let http = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(message(&http, &a.base_url(), secret, ask("claude-test", 100)).await.0, 200);
    }
    let (held, leases) = leased(&two.db.url, key_id).await;
    assert!(held > 0 && leases == 1, "one lease on the key: {held} µ$ in {leases}");
    let patch = |cap: f64| {
        http.patch(format!("{}/v1/keys/{key_id}", b.base_url()))
            .bearer_auth(&master)
            .json(&json!({"max_spend_usd": cap}))
            .send()
    };
    // Lowered to what is already spent: A's lease still has room, but the
    // next request through A is refused.
    let spent =
        usage(&a.base_url(), &master, &format!("?key_id={key_id}")).await["totals"]["cost_micros"]
            .as_i64()
            .unwrap();
    assert_eq!(patch((spent + 1) as f64 / 1e6).await.unwrap().status(), 200);
    let (status, body) = message(&http, &a.base_url(), secret, ask("claude-test", 100)).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "spend_cap_reached", "{body}");
    // Raised again: admitted at once.
    assert_eq!(patch(10.0).await.unwrap().status(), 200);
    assert_eq!(message(&http, &a.base_url(), secret, ask("claude-test", 100)).await.0, 200);
    assert_eq!(message(&http, &a.base_url(), secret, ask("claude-test", 100)).await.0, 200);
    // Revoked through B: A's next request is refused.
    let resp = http
        .delete(format!("{}/v1/keys/{key_id}", b.base_url()))
        .bearer_auth(&master)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(message(&http, &a.base_url(), secret, ask("claude-test", 100)).await.0, 401);
    // Nothing was billed past the first cap: five requests, exactly.
    let report = usage(&a.base_url(), &master, &format!("?key_id={key_id}")).await;
    assert_eq!(report["totals"]["requests"].as_u64(), Some(5));
    two.kill().await;
}

/// The same under load: while many requests on a leased key are in flight
/// together (their lease checks share reads), the key is disabled through
/// another process. No request sent after the change was answered is
/// admitted, and every one sent before it ended one way or the other.
async fn key_changes_reach_a_busy_leased_key_at_once(backend: Backend) {
    let Some(two) = TwoProcesses::start(backend).await else { return };
    let (a, b, master) = (&two.a, &two.b, two.master.clone());
    let key = a.mint(&master, json!({"name": "busy", "max_spend_usd": 100})).await;
    let (key_id, secret) = (key["id"].as_str().unwrap(), key["secret"].as_str().unwrap());
    let secret = secret.to_string();
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..24)
        .map(|_| {
            let (http, base, secret, stop) =
                (http.clone(), a.base_url(), secret.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let sent = std::time::Instant::now();
                    let (status, _) = message(&http, &base, &secret, ask("claude-test", 50)).await;
                    seen.push((sent, status));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let resp = http
        .patch(format!("{}/v1/keys/{key_id}", b.base_url()))
        .bearer_auth(&master)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let changed = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut before, mut after) = (0, 0);
    for w in workers {
        for (sent, status) in w.await.unwrap() {
            if sent > changed {
                assert_eq!(status, 401, "a request sent after the key was disabled");
                after += 1;
            } else if status == 200 {
                before += 1;
            }
        }
    }
    assert!(before >= 24 && after >= 24, "{before} admitted before, {after} refused after");
    two.kill().await;
}

/// An idle lease gives its room back by itself, and a lease is never
/// taken for a key near its cap.
async fn idle_leases_give_their_room_back(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let http = reqwest::Client::new();
    let roomy =
        mint(&t.base_url, &t.master_key, json!({"name": "roomy", "max_spend_usd": 10})).await;
    // Room for about twelve of these requests: less than a lease and as
    // much again.
    let tight =
        mint(&t.base_url, &t.master_key, json!({"name": "tight", "max_spend_usd": 0.02})).await;
    for key in [&roomy, &tight] {
        let secret = key["secret"].as_str().unwrap();
        assert_eq!(message(&http, &t.base_url, secret, ask("claude-test", 100)).await.0, 200);
    }
    let roomy_id = roomy["id"].as_str().unwrap();
    assert_eq!(leased(&t.db.url, roomy_id).await.1, 1);
    assert_eq!(leased(&t.db.url, tight["id"].as_str().unwrap()).await, (0, 0));
    let mut waited = 0;
    while leased(&t.db.url, roomy_id).await != (0, 0) {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        waited += 1;
        assert!(waited < 60, "an idle lease kept its room");
    }
    let spent = usage(&t.base_url, &t.master_key, &format!("?key_id={roomy_id}")).await["totals"]
        ["cost_micros"]
        .as_i64()
        .unwrap();
    assert_eq!(ledger_state(&t.db.url, roomy_id).await, (spent, 0, 0));
    t.stop().await;
}
