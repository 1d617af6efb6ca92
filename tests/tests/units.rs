//! Priced units are data: a unit no built-in model uses, configured only in
//! a test qlaud.toml, is reserved, settled, reported by key, model and
//! unit, priced on the invoice and exported to Stripe with no code change;
//! and a store written before units existed reads the same after the
//! upgrade. On SQLite and PostgreSQL.

use qlaud_server::{ServeConfig, Server};
use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, TestDb, TestServer, backend_tests, mock_toml};
use serde_json::{Value, json};
use sqlx::Executor;

backend_tests!(
    a_unit_priced_only_in_config_is_metered_end_to_end,
    a_unit_of_its_own_is_stored_reported_and_invoiced,
    a_store_from_before_units_reads_the_same
);

/// `claude-fee`: Claude-test's token prices plus $0.01 a request.
fn fee_toml(mock: &MockUpstream) -> String {
    mock_toml(mock)
        + r#"
[models."claude-fee"]
provider = "anthropic"
upstream = "claude-upstream"
max_output_tokens = 1000
prices = { input = "3", output = "15", requests = "10000" }

[models."speechy"]
provider = "openai"
kind = "embedding"
prices = { input = "1", audio_seconds = "100" }
"#
}

/// A unit no call measures yet (media will: `audio_seconds`), settled
/// through the ledger as a media endpoint will settle it: stored in its own
/// rows, reported by key, model, day and unit, and invoiced at its price.
async fn a_unit_of_its_own_is_stored_reported_and_invoiced(backend: Backend) {
    use qlaud_server::meter::{Endpoint, RequestRecord};
    use qlaud_server::store::NewReservation;
    use qlaud_server::units::{Quantities, Unit};
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&fee_toml(&mock))).await else { return };
    let key = t.mint(json!({"name": "listener"})).await;
    let id = key["id"].as_str().unwrap();
    let store = t.server().store();
    let now = t.clock_now_ms();
    let start = {
        use chrono::Datelike;
        let d = chrono::DateTime::from_timestamp_millis(now).unwrap().date_naive();
        d.with_day(1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis()
    };
    let reservation = NewReservation {
        id: "req_audio_1",
        tenant_id: &t.tenant_id,
        key_id: id,
        period: "monthly",
        period_start_ms: start,
        model: "speechy",
        provider: "openai",
        endpoint: "transcriptions",
        micros: 5000,
        instance_id: "inst_test",
        now_ms: now,
        rate: Default::default(),
    };
    assert!(store.reserve(&reservation).await.unwrap().is_some());
    let mut quantities = Quantities::default();
    quantities.set(Unit::named("audio_seconds"), 42).unwrap();
    quantities.set(Unit::REQUESTS, 1).unwrap();
    let record = RequestRecord {
        reservation_id: "req_audio_1".into(),
        lease_id: None,
        tenant_id: t.tenant_id.clone(),
        key_id: id.into(),
        model: "speechy".into(),
        provider: "openai".into(),
        endpoint: Endpoint::parse("transcriptions"),
        streamed: false,
        status: 200,
        usage: Default::default(),
        quantities,
        // 42 s × $100 per million seconds = 4200 µ$.
        cost_micros: 4200,
        reserved_micros: 5000,
        period_start_ms: start,
        rate_window_ms: 0,
        reserved_tokens: 0,
        latency_ms: 1,
        created_ms: now,
        recovered: false,
    };
    assert_eq!(store.settle(&[record]).await.unwrap(), 1);
    let usage = get(&t, &format!("/v1/usage?key_id={id}")).await;
    assert_eq!(usage["totals"]["units"], json!({"audio_seconds": 42, "requests": 1}));
    assert_eq!(usage["by_model"][0]["units"]["audio_seconds"], 42);
    assert_eq!(usage["by_day"][0]["units"]["audio_seconds"], 42);
    assert_eq!(usage["by_key"][0]["cost_micros"], 4200);
    let period = chrono::DateTime::from_timestamp_millis(now).unwrap().format("%Y-%m");
    let invoice =
        get(&t, &format!("/v1/billing/invoice_preview?key_id={id}&period={period}")).await;
    let lines = invoice["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{invoice}");
    assert_eq!(lines[0]["unit"], "audio_seconds");
    assert_eq!(
        (lines[0]["quantity"].clone(), lines[0]["amount_micros"].clone()),
        (json!(42), json!(4200))
    );
    assert_eq!(invoice["total_micros"], 4200);
    t.stop().await;
}

async fn get(t: &TestServer, path: &str) -> Value {
    let (status, v) = t.request(reqwest::Method::GET, path, Some(&t.master_key), None).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

async fn a_unit_priced_only_in_config_is_metered_end_to_end(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&fee_toml(&mock))).await else { return };
    // Room for three requests' fees and tokens, not a fourth fee.
    let key = t
        .mint(json!({"name": "fee", "max_spend_usd": 0.035,
                     "metadata": {"stripe_customer_id": "cus_fee"}}))
        .await;
    let (id, secret) = (key["id"].as_str().unwrap(), key["secret"].as_str().unwrap());
    let body = json!({"model": "claude-fee", "max_tokens": 20,
                      "messages": [{"role": "user", "content": "one two three"}]});
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, v) = t
            .request(
                reqwest::Method::POST,
                "/v1/messages",
                Some(secret),
                Some(qlaud_tests::RawBody::Json(body.clone())),
            )
            .await;
        statuses.push(status);
        if status == 402 {
            assert_eq!(v["error"]["code"], "spend_cap_reached", "{v}");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 402], "the fee is reserved: the fourth cannot pay it");
    let stats = mock.stats();
    assert_eq!(stats.requests, 3, "the refused request never reached the provider");
    // Mock: 3 input tokens, "Hello from mock: one two three" = 6 output.
    assert_eq!((stats.input_tokens, stats.output_tokens), (9, 18));
    let per_request = 10_000 + 3 * 3 + 6 * 15;
    let usage = get(&t, &format!("/v1/usage?key_id={id}")).await;
    let totals = &usage["totals"];
    assert_eq!(totals["cost_micros"], 3 * per_request);
    assert_eq!(totals["units"], json!({"input_tokens": 9, "output_tokens": 18, "requests": 3}));
    assert_eq!(usage["by_key"][0]["units"]["requests"], 3);
    assert_eq!(usage["by_model"][0]["model"], "claude-fee");
    assert_eq!(usage["by_model"][0]["units"]["requests"], 3);
    assert_eq!(usage["by_day"][0]["units"]["requests"], 3);
    // The catalog shows the unit's price.
    let models = get(&t, "/v1/models").await;
    let fee = models["data"].as_array().unwrap().iter().find(|m| m["id"] == "claude-fee").unwrap();
    assert_eq!(fee["pricing"]["units"]["requests"], 10000);
    assert_eq!(fee["pricing"]["units"]["input_tokens"], 3);
    // The invoice prices it as a line of its own.
    let period = chrono::DateTime::from_timestamp_millis(t.clock_now_ms()).unwrap().format("%Y-%m");
    let invoice =
        get(&t, &format!("/v1/billing/invoice_preview?key_id={id}&period={period}")).await;
    let line = |unit: &str| {
        invoice["lines"].as_array().unwrap().iter().find(|l| l["unit"] == unit).cloned().unwrap()
    };
    assert_eq!(line("requests")["quantity"], 3);
    assert_eq!(line("requests")["amount_micros"], 30_000);
    assert_eq!(line("input_tokens")["amount_micros"], 27);
    assert_eq!(line("output_tokens")["amount_micros"], 270);
    assert_eq!(invoice["total_micros"], 3 * per_request);
    // Stripe gets the cost in micro-dollars, fees included.
    let export = get(&t, &format!("/v1/billing/meter_events?period={period}")).await;
    let event = export["events"].as_array().unwrap().iter().find(|e| e["key_id"] == id).cloned();
    let event = event.unwrap_or_else(|| panic!("no event for the key: {export}"));
    assert_eq!(event["payload"]["value"], (3 * per_request).to_string());
    assert_eq!(event["payload"]["stripe_customer_id"], "cus_fee");
    t.stop().await;
}

/// The migrations as they were before units: applied by their own
/// migrator, so the server's sees them as done and runs only the new ones.
async fn old_schema(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/qlaud/migrations");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.as_str() < "0006" {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::migrate::Migrator::new(dir.path()).await.unwrap().run(&pool).await.unwrap();
    // What the previous release wrote: a tenant, its admin key, a user's
    // key with a Stripe customer, settled requests on two models and two
    // days, the ledger row, a suspension and its reinstatement.
    let admin_hash = qlaud_server::keys::secret::hash_hex(ADMIN_SECRET);
    let t0 = 1_764_547_200_000i64; // 2025-12-01T00:00:00Z
    let script = format!(
        "INSERT INTO tenants (id, name, created_ms) VALUES ('ten_old', 'old', {t0});
         INSERT INTO api_keys (id, tenant_id, name, scope, secret_hash, secret_hint, max_spend_micros,
           period, metadata, disabled, created_ms, updated_ms, stripe_customer_id)
           VALUES ('key_admin', 'ten_old', 'master', 'admin', '{admin_hash}', 'qlk_live_…', NULL,
           'monthly', '{{}}', 0, {t0}, {t0}, NULL);
         INSERT INTO api_keys (id, tenant_id, name, scope, secret_hash, secret_hint, max_spend_micros,
           period, metadata, disabled, created_ms, updated_ms, stripe_customer_id)
           VALUES ('key_user', 'ten_old', 'user_42', 'standard', 'h2', 'qlk_live_…', 5000000,
           'monthly', '{{\"stripe_customer_id\":\"cus_42\"}}', 0, {t0}, {t0}, 'cus_42');
         INSERT INTO requests (id, tenant_id, key_id, model, provider, endpoint, streamed, status,
           input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_micros,
           latency_ms, created_ms, period_start_ms, recovered) VALUES
           ('req_1', 'ten_old', 'key_user', 'claude-test', 'anthropic', 'messages', 0, 200,
            1000, 500, 10, 20, 10579, 12, {d1}, {t0}, 0),
           ('req_2', 'ten_old', 'key_user', 'gpt-test', 'openai', 'chat_completions', 1, 200,
            400, 100, 50, 0, 1507, 9, {d2}, {t0}, 0),
           ('req_3', 'ten_old', 'key_user', 'claude-test', 'anthropic', 'messages', 0, 0,
            0, 0, 0, 0, 900, 0, {d2}, {t0}, 1);
         INSERT INTO key_spend (key_id, period_start_ms, settled_micros, reserved_micros)
           VALUES ('key_user', {t0}, 12986, 0);
         INSERT INTO key_billing_events (id, tenant_id, key_id, stripe_event_id, stripe_event_type,
           old_status, new_status, created_ms) VALUES
           ('kbe_1', 'ten_old', 'key_user', 'evt_1', 'invoice.payment_failed', 'active', 'suspended', {d1}),
           ('kbe_2', 'ten_old', 'key_user', 'evt_2', 'invoice.paid', 'suspended', 'active', {d2});",
        d1 = t0 + 3_600_000,
        d2 = t0 + 86_400_000 + 3_600_000,
    );
    let mut conn = pool.acquire().await.unwrap();
    for statement in script.split(";\n") {
        if !statement.trim().is_empty() {
            conn.execute(sqlx::AssertSqlSafe(statement.to_string())).await.unwrap();
        }
    }
    drop(conn);
    pool.close().await;
}

const ADMIN_SECRET: &str = "qlk_live_0123456789abcdefghijklmnopqrstuvwxyzABCD";

async fn a_store_from_before_units_reads_the_same(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    old_schema(&db.url).await;
    let mock = MockUpstream::start().await;
    let toml = std::env::temp_dir().join(format!("qlaud-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&toml, mock_toml(&mock)).unwrap();
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), db.url.clone());
    config.config_file = Some(toml);
    let server = Server::start(&config).await.expect("the old store upgrades in place");
    assert!(server.bootstrap.is_none(), "an existing store is not bootstrapped again");
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let resp = http.get(url).bearer_auth(ADMIN_SECRET).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    let usage = get("/v1/usage?from=2025-12-01&to=2026-01-01".into()).await;
    let totals = &usage["totals"];
    // The flat figures exactly as the old release reported them…
    assert_eq!(totals["cost_micros"], 10579 + 1507 + 900);
    assert_eq!(totals["requests"], 3);
    assert_eq!(
        (
            &totals["input_tokens"],
            &totals["output_tokens"],
            &totals["cache_read_tokens"],
            &totals["cache_write_tokens"]
        ),
        (&json!(1400), &json!(600), &json!(60), &json!(20))
    );
    // …and the same tokens by unit, with the requests counted.
    assert_eq!(
        totals["units"],
        json!({"input_tokens": 1400, "output_tokens": 600, "cache_read_tokens": 60,
               "cache_write_tokens": 20, "requests": 3})
    );
    assert_eq!(usage["by_key"][0]["key_name"], "user_42");
    assert_eq!(usage["by_key"][0]["cost_micros"], 12986);
    let days: Vec<i64> = usage["by_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["cost_micros"].as_i64().unwrap())
        .collect();
    assert_eq!(days, [10579, 1507 + 900]);
    let invoice = get("/v1/billing/invoice_preview?key_id=key_user&period=2025-12".into()).await;
    assert_eq!(invoice["total_micros"], 12986);
    let claude_input = invoice["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["model"] == "claude-test" && l["unit"] == "input_tokens")
        .cloned()
        .unwrap();
    assert_eq!(claude_input["quantity"], 1000);
    assert_eq!(claude_input["amount_micros"], 3000);
    let events = get("/v1/keys/key_user/billing_events".into()).await;
    assert_eq!(
        events.as_array().map(Vec::len).or(events["items"].as_array().map(Vec::len)),
        Some(2),
        "{events}"
    );
    let export = get("/v1/billing/meter_events?period=2025-12".into()).await;
    assert_eq!(export["events"][0]["payload"]["value"], "12986");
    server.close().await.unwrap();
}
