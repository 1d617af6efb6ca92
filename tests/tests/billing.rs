//! Billing out end to end: settings, Stripe webhooks suspending and
//! reinstating keys, meter events pushed to a mock Stripe exactly once, and
//! invoice previews that add up, on SQLite and PostgreSQL.

use qlaud_tests::mock::stripe::MockStripe;
use qlaud_tests::mock::{MockStats, MockUpstream};
use qlaud_tests::{Backend, TestServer, backend_tests, mock_toml, qlaud_bin};
use serde_json::{Value, json};

backend_tests!(
    settings_are_write_only_and_validated,
    failed_payment_suspends_and_paid_invoice_reinstates,
    webhook_signatures_are_enforced,
    meter_events_are_pushed_once,
    invoice_preview_adds_up_to_usage,
    spend_alerts_fire_once_per_threshold,
);

/// Receives alerts: (signature header, body) of each POST.
/// Stripe's `v1` signature scheme, HMAC-SHA256 of `"{t}.{body}"` in hex,
/// computed here with the HMAC crates rather than with qlaud's own signing
/// code, so that a mistake there cannot hide on both sides of a check.
fn stripe_v1(secret: &str, t: i64, body: &[u8]) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A Stripe event, byte for byte, and its signature at t = 1700000000 with
/// [`WHSEC`], computed outside Rust:
/// `printf '%s' "1700000000.$BODY" | openssl dgst -sha256 -hmac whsec_test_secret`
/// (Python's `hmac` gives the same).
const KAT_BODY: &str = r#"{"id":"evt_kat","object":"event","type":"invoice.payment_failed","created":1700000000,"data":{"object":{"object":"invoice","customer":"cus_KAT","status":"open"}}}"#;
const KAT_T: i64 = 1_700_000_000;
const KAT_V1: &str = "0613679021d6001d1e96b4def5ca3aca2b6a636582e177fbbf5abd6557a5855c";

#[test]
fn test_signer_matches_the_known_answer() {
    assert_eq!(stripe_v1(WHSEC, KAT_T, KAT_BODY.as_bytes()), KAT_V1);
    // And a second vector, for a one-line body.
    assert_eq!(
        stripe_v1(WHSEC, KAT_T, br#"{"id":"evt_kat"}"#),
        "94a72b7d6bd6656f8eb4526dfbefe5453e5c64c7f320ed905e0ff9f590245e31"
    );
}

/// One alert as received: its signature headers and body.
#[derive(Clone, Debug)]
struct Alert {
    /// `qlaud-signature` (deprecated, still sent).
    legacy: String,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

type Alerts = std::sync::Arc<std::sync::Mutex<Vec<Alert>>>;

async fn alert_receiver() -> (String, Alerts) {
    use axum::routing::post;
    let got = Alerts::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/alerts",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let h = |name: &str| {
                    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
                };
                sink.lock().unwrap().push(Alert {
                    legacy: h("qlaud-signature"),
                    id: h("webhook-id"),
                    timestamp: h("webhook-timestamp"),
                    signature: h("webhook-signature"),
                    body,
                });
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, got)
}

/// Standard Webhooks' `v1`, computed here with the HMAC and base64 crates
/// rather than with qlaud's own signing code.
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

#[test]
fn standard_signer_matches_the_reference_example() {
    // The example of the Standard Webhooks reference libraries' tests.
    assert_eq!(
        standard_v1(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

async fn spend_alerts_fire_once_per_threshold(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else { return };
    let (url, got) = alert_receiver().await;
    let (status, settings) = call(
        &t,
        reqwest::Method::PATCH,
        "/v1/billing/settings",
        &t.master_key,
        Some(json!({"alert_webhook_url": url})),
    )
    .await;
    assert_eq!(status, 200, "{settings}");
    let secret = settings["alert_signing_secret"].as_str().expect("shown once").to_string();
    let (_, again) =
        call(&t, reqwest::Method::GET, "/v1/billing/settings", &t.master_key, None).await;
    assert!(again.get("alert_signing_secret").is_none(), "never shown again");
    let (status, rotated) =
        call(&t, reqwest::Method::POST, "/v1/webhooks/secret/rotate", &t.master_key, None).await;
    assert_eq!(status, 200, "{rotated}");
    let whsec = rotated["secret"].as_str().unwrap().to_string();
    let k = t.mint(json!({"name": "alerted", "max_spend_usd": 0.01})).await;
    let key = k["secret"].as_str().unwrap().to_string();
    // Four clients at once, each calling until the cap refuses it.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (http, base, key) = (t.http.clone(), t.base_url.clone(), key.clone());
            tokio::spawn(async move {
                let mut refusals = 0;
                while refusals < 3 {
                    let status = http
                        .post(format!("{base}/v1/messages"))
                        .header("x-api-key", &key)
                        .json(&json!({"model": "claude-test", "max_tokens": 100,
                                      "messages": [{"role": "user", "content": "please answer briefly"}]}))
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16();
                    if status == 402 {
                        refusals += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while got.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let alerts = got.lock().unwrap().clone();
    let mut thresholds: Vec<i64> = alerts
        .iter()
        .map(|a| {
            serde_json::from_str::<Value>(&a.body).unwrap()["threshold_percent"].as_i64().unwrap()
        })
        .collect();
    thresholds.sort();
    assert_eq!(thresholds, vec![50, 80, 100], "each threshold once: {alerts:?}");
    let mut ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one message id per alert: {alerts:?}");
    for a in &alerts {
        assert_eq!(
            a.signature,
            standard_v1(&whsec, &a.id, &a.timestamp, a.body.as_bytes()),
            "Standard Webhooks signature with the tenant's whsec_ secret"
        );
        let sent: i64 = a.timestamp.parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - sent).abs() < 60);
        // The deprecated header, unchanged, during its window.
        let (t_part, v1) = a.legacy.split_once(",v1=").unwrap();
        let ts: i64 = t_part.trim_start_matches("t=").parse().unwrap();
        assert_eq!(
            v1,
            stripe_v1(&secret, ts, a.body.as_bytes()),
            "signed with the tenant's alert secret"
        );
        let v: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["key_id"], k["id"]);
        assert_eq!(v["cap_micros"], 10_000);
    }
    t.stop().await;
}

const WHSEC: &str = "whsec_test_secret";

async fn start(backend: Backend) -> Option<(TestServer, MockUpstream)> {
    let mock = MockUpstream::start().await;
    Some((TestServer::start_with(backend, Some(&mock_toml(&mock))).await?, mock))
}

async fn call(
    t: &TestServer,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = t.http.request(method, format!("{}{path}", t.base_url)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn configure(t: &TestServer) {
    let (status, body) = call(
        t,
        reqwest::Method::PATCH,
        "/v1/billing/settings",
        &t.master_key,
        Some(json!({"stripe_secret_key": "sk_test_123", "webhook_secret": WHSEC})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Posts a Stripe event signed with `secret` at `t` (Unix seconds).
async fn deliver(t: &TestServer, event: &Value, header: Option<String>) -> (u16, Value) {
    let body = event.to_string();
    let mut req = t
        .http
        .post(format!("{}/v1/billing/stripe/webhook/{}", t.base_url, t.tenant_id))
        .header("content-type", "application/json")
        .body(body.clone());
    if let Some(h) = header {
        req = req.header("stripe-signature", h);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn signed(event: &Value) -> Option<String> {
    let ts = chrono::Utc::now().timestamp();
    Some(format!("t={ts},v1={}", stripe_v1(WHSEC, ts, event.to_string().as_bytes())))
}

fn event(id: &str, kind: &str, customer: &str, created: i64) -> Value {
    json!({"id": id, "object": "event", "type": kind, "created": created,
           "data": {"object": {"object": "invoice", "customer": customer, "status": "open"}}})
}

async fn model_call(t: &TestServer, key: &str) -> (u16, Value) {
    call(
        t,
        reqwest::Method::POST,
        "/v1/chat/completions",
        key,
        Some(json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await
}

async fn settings_are_write_only_and_validated(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else { return };
    configure(&t).await;
    let (status, body) =
        call(&t, reqwest::Method::GET, "/v1/billing/settings", &t.master_key, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["stripe_secret_key_set"], true);
    assert_eq!(body["webhook_secret_set"], true);
    assert_eq!(body["meter_event_name"], "qlaud_spend");
    assert!(!body.to_string().contains("sk_test_123") && !body.to_string().contains(WHSEC));
    assert_eq!(body["webhook_path"], format!("/v1/billing/stripe/webhook/{}", t.tenant_id));
    for bad in [
        json!({"stripe_secret_key": "pk_live_x"}),
        json!({"webhook_secret": "secret"}),
        json!({"meter_event_name": "has spaces"}),
        json!({"alert_webhook_url": "ftp://x"}),
        json!({"stripe_secret_kee": "sk_x"}),
    ] {
        let (status, body) = call(
            &t,
            reqwest::Method::PATCH,
            "/v1/billing/settings",
            &t.master_key,
            Some(bad.clone()),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (_, user) =
        call(&t, reqwest::Method::POST, "/v1/keys", &t.master_key, Some(json!({"name": "u"})))
            .await;
    let (status, _) = call(
        &t,
        reqwest::Method::GET,
        "/v1/billing/settings",
        user["secret"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(status, 403);
    // Clearing a secret.
    let (_, body) = call(
        &t,
        reqwest::Method::PATCH,
        "/v1/billing/settings",
        &t.master_key,
        Some(json!({"stripe_secret_key": ""})),
    )
    .await;
    assert_eq!(body["stripe_secret_key_set"], false);
    assert_eq!(body["webhook_secret_set"], true);
    t.stop().await;
}

async fn failed_payment_suspends_and_paid_invoice_reinstates(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else { return };
    configure(&t).await;
    let k1 = t.mint(json!({"name": "a", "metadata": {"stripe_customer_id": "cus_A"}})).await;
    let k2 = t.mint(json!({"name": "a2", "metadata": {"stripe_customer_id": "cus_A"}})).await;
    let other = t.mint(json!({"name": "b", "metadata": {"stripe_customer_id": "cus_B"}})).await;
    let s1 = k1["secret"].as_str().unwrap();
    assert_eq!(model_call(&t, s1).await.0, 200);

    let failed = event("evt_1", "invoice.payment_failed", "cus_A", 1000);
    let (status, body) = deliver(&t, &failed, signed(&failed)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["keys_changed"], 2);
    // Locked out within one webhook, in each shape, with a message that says why.
    let (status, body) = model_call(&t, s1).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "payment_failed");
    assert!(body["error"]["message"].as_str().unwrap().contains("payment failed"));
    let (status, body) = call(&t, reqwest::Method::POST, "/v1/messages", k2["secret"].as_str().unwrap(),
        Some(json!({"model": "claude-test", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}))).await;
    assert_eq!((status, body["error"]["type"].as_str()), (402, Some("billing_error")), "{body}");
    assert_eq!(body["error"]["code"], "payment_failed", "{body}");
    assert_eq!(
        model_call(&t, other["secret"].as_str().unwrap()).await.0,
        200,
        "other customers are untouched"
    );
    let (_, key) = call(
        &t,
        reqwest::Method::GET,
        &format!("/v1/keys/{}", k1["id"].as_str().unwrap()),
        &t.master_key,
        None,
    )
    .await;
    assert_eq!(key["status"], "suspended");
    assert!(key["suspended_at"].is_string());

    // The same event again changes nothing.
    let (_, body) = deliver(&t, &failed, signed(&failed)).await;
    assert_eq!(body["duplicate"], true);
    // An older event delivered late never undoes a newer one.
    let stale_paid = event("evt_0", "invoice.paid", "cus_A", 500);
    let (_, body) = deliver(&t, &stale_paid, signed(&stale_paid)).await;
    assert_eq!(body["keys_changed"], 0);
    assert_eq!(model_call(&t, s1).await.0, 402);

    let paid = event("evt_2", "invoice.paid", "cus_A", 2000);
    let (_, body) = deliver(&t, &paid, signed(&paid)).await;
    assert_eq!(body["keys_changed"], 2);
    assert_eq!(model_call(&t, s1).await.0, 200);
    let (_, history) = call(
        &t,
        reqwest::Method::GET,
        &format!("/v1/keys/{}/billing_events", k1["id"].as_str().unwrap()),
        &t.master_key,
        None,
    )
    .await;
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (history[0]["old_status"].as_str(), history[0]["new_status"].as_str()),
        (Some("active"), Some("suspended"))
    );
    assert_eq!(history[0]["stripe_event_id"], "evt_1");
    assert_eq!(history[1]["new_status"], "active");

    // Subscriptions that turn unpaid or are deleted suspend too.
    let mut unpaid = event("evt_3", "customer.subscription.updated", "cus_B", 3000);
    unpaid["data"]["object"]["status"] = json!("unpaid");
    assert_eq!(deliver(&t, &unpaid, signed(&unpaid)).await.1["keys_changed"], 1);
    assert_eq!(model_call(&t, other["secret"].as_str().unwrap()).await.0, 402);
    t.stop().await;
}

async fn webhook_signatures_are_enforced(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else { return };
    let e = event("evt_x", "invoice.payment_failed", "cus_A", 1000);
    // No secret configured yet.
    assert_eq!(deliver(&t, &e, signed(&e)).await.0, 400);
    configure(&t).await;
    let k = t.mint(json!({"name": "a", "metadata": {"stripe_customer_id": "cus_A"}})).await;
    let ts = chrono::Utc::now().timestamp();
    let good = stripe_v1(WHSEC, ts, e.to_string().as_bytes());
    let cases = [
        None,
        Some("garbage".to_string()),
        Some(format!("t={ts}")),
        Some(format!("t={ts},v1={}", stripe_v1("whsec_wrong", ts, e.to_string().as_bytes()))),
        Some(format!("t={},v1={}", ts - 301, stripe_v1(WHSEC, ts - 301, e.to_string().as_bytes()))),
        Some(format!("t={},v1={good}", ts + 1)),
    ];
    for header in cases {
        let (status, body) = deliver(&t, &e, header.clone()).await;
        assert_eq!(status, 400, "{header:?}: {body}");
    }
    // A tampered body with a valid header for the original.
    let mut tampered = e.clone();
    tampered["data"]["object"]["customer"] = json!("cus_B");
    assert_eq!(deliver(&t, &tampered, signed(&e)).await.0, 400);
    assert_eq!(model_call(&t, k["secret"].as_str().unwrap()).await.0, 200, "nothing changed");
    // Several v1 values (a secret being rolled): one match is enough.
    let header = format!("t={ts},v1=00ff,v1={good}");
    assert_eq!(deliver(&t, &e, Some(header)).await.0, 200);
    // The known-answer event, its bytes and signature fixed: accepted when
    // the server's clock is within tolerance of its timestamp.
    let kat = t.mint(json!({"name": "kat", "metadata": {"stripe_customer_id": "cus_KAT"}})).await;
    t.clock.advance_ms((KAT_T + 10) * 1000 - t.clock_now_ms());
    let resp = t
        .http
        .post(format!("{}/v1/billing/stripe/webhook/{}", t.base_url, t.tenant_id))
        .header("content-type", "application/json")
        .header("stripe-signature", format!("t={KAT_T},v1={KAT_V1}"))
        .body(KAT_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["keys_changed"], 1, "{body}");
    assert_eq!(model_call(&t, kat["secret"].as_str().unwrap()).await.0, 402);
    t.stop().await;
}

/// What one gpt-test request costs, from the tokens the mock reported for
/// it: $1.25 per million input tokens not read from the cache, $0.125 per
/// million cached ones, $10 per million output tokens, rounded up to the
/// micro-dollar per request.
fn gpt_cost(before: &MockStats, after: &MockStats) -> i64 {
    let cached = after.cached_tokens - before.cached_tokens;
    let input = after.input_tokens - before.input_tokens - cached;
    let output = after.output_tokens - before.output_tokens;
    let pico = 1_250_000 * input + 125_000 * cached + 10_000_000 * output;
    pico.div_ceil(1_000_000) as i64
}

/// The last second of the calendar month `period` (`YYYY-MM`), Unix seconds.
fn month_last_second(period: &str) -> i64 {
    let first = chrono::NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d").unwrap();
    let next = first.checked_add_months(chrono::Months::new(1)).unwrap();
    next.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp() - 1
}

async fn meter_events_are_pushed_once(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    configure(&t).await;
    let a = t.mint(json!({"name": "a", "metadata": {"stripe_customer_id": "cus_A"}})).await;
    let b = t.mint(json!({"name": "no customer"})).await;
    // Spend in a month that is over: move the billing clock back.
    t.clock.advance_ms(-70 * 86_400_000);
    let period = chrono::DateTime::from_timestamp_millis(t.clock_now_ms())
        .unwrap()
        .format("%Y-%m")
        .to_string();
    // The value Stripe must get, from the provider's counts: each "hi" is
    // 1 input and 4 output tokens, 1.25 + 40 → 42 µ$, three times: 126.
    let mut expected = 0;
    for _ in 0..3 {
        let before = mock.stats();
        assert_eq!(model_call(&t, a["secret"].as_str().unwrap()).await.0, 200);
        expected += gpt_cost(&before, &mock.stats());
    }
    assert_eq!(mock.stats().requests, 3);
    assert_eq!(model_call(&t, b["secret"].as_str().unwrap()).await.0, 200);
    let (status, export) = call(
        &t,
        reqwest::Method::GET,
        &format!("/v1/billing/meter_events?period={period}"),
        &t.master_key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{export}");
    let events = export["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "only keys with a Stripe customer: {export}");
    let e = &events[0];
    assert_eq!(e["event_name"], "qlaud_spend");
    assert_eq!(e["payload"]["stripe_customer_id"], "cus_A");
    assert_eq!(e["payload"]["value"], expected.to_string(), "a's spend only, in micro-dollars");
    assert_eq!(e["timestamp"], month_last_second(&period), "{e}");
    let identifier = e["identifier"].as_str().unwrap().to_string();
    let (_, again) = call(
        &t,
        reqwest::Method::GET,
        &format!("/v1/billing/meter_events?period={period}"),
        &t.master_key,
        None,
    )
    .await;
    assert_eq!(
        again["events"][0]["identifier"],
        identifier.as_str(),
        "identifiers are deterministic"
    );

    let (_, settings) =
        call(&t, reqwest::Method::GET, "/v1/billing/settings", &t.master_key, None).await;
    assert_eq!(settings["stripe_push"]["events_pushed"], 0, "{settings}");
    assert!(settings["stripe_push"]["last_run"].is_null(), "{settings}");

    let stripe = MockStripe::start().await;
    stripe.fail_next(2);
    let push = || async {
        let out = tokio::process::Command::new(qlaud_bin())
            .args([
                "billing",
                "push-stripe",
                "--period",
                &period,
                "--database-url",
                &t.db.url,
                "--stripe-api-base",
                &stripe.base_url(),
            ])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = push().await;
    assert_eq!(first["sent"], 1, "{first}");
    assert_eq!(stripe.attempts(), 3, "two 429s retried");
    let second = push().await;
    assert_eq!((second["sent"].as_i64(), second["already_sent"].as_i64()), (Some(0), Some(1)));
    // The settings answer says where the push stands.
    let (_, settings) =
        call(&t, reqwest::Method::GET, "/v1/billing/settings", &t.master_key, None).await;
    let state = &settings["stripe_push"];
    assert_eq!(state["events_pushed"], 1, "{settings}");
    assert_eq!(state["micros_pushed"].to_string(), e["payload"]["value"].as_str().unwrap());
    assert!(state["last_pushed_at"].is_string(), "{settings}");
    assert_eq!(state["last_run"]["period"], period.as_str());
    assert_eq!(
        (state["last_run"]["sent"].as_i64(), state["last_run"]["already_sent"].as_i64()),
        (Some(0), Some(1))
    );
    let recorded = stripe.events();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].identifier, identifier);
    assert_eq!(recorded[0].secret_key, "sk_test_123");
    assert_eq!(recorded[0].customer, "cus_A");
    assert_eq!(recorded[0].event_name, "qlaud_spend");
    assert_eq!(recorded[0].value, expected.to_string(), "the value Stripe got");
    assert_eq!(recorded[0].timestamp, month_last_second(&period));
    // Daily slices: one event per day with spend.
    let (_, daily) = call(
        &t,
        reqwest::Method::GET,
        &format!("/v1/billing/meter_events?period={period}&slice=day"),
        &t.master_key,
        None,
    )
    .await;
    assert_eq!(daily["events"].as_array().unwrap().len(), 1);
    assert_ne!(daily["events"][0]["identifier"], identifier.as_str());
    assert_eq!(daily["events"][0]["payload"]["value"], expected.to_string());
    t.stop().await;
}

async fn invoice_preview_adds_up_to_usage(backend: Backend) {
    let Some((t, mock)) = start(backend).await else { return };
    let (_, k) =
        call(&t, reqwest::Method::POST, "/v1/keys", &t.master_key, Some(json!({"name": "inv"})))
            .await;
    let secret = k["secret"].as_str().unwrap();
    // Two GPT calls, one with cached tokens, then one Claude call; the mock's
    // counts of each, priced by hand, are what the invoice must say.
    let mut total = 0;
    for body in [
        json!({"model": "gpt-test", "user": "cached", "messages": [{"role": "user", "content": "one two three four five six"}]}),
        json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}),
    ] {
        let before = mock.stats();
        assert_eq!(
            call(&t, reqwest::Method::POST, "/v1/chat/completions", secret, Some(body)).await.0,
            200
        );
        total += gpt_cost(&before, &mock.stats());
    }
    let gpt = mock.stats();
    assert_eq!(call(&t, reqwest::Method::POST, "/v1/messages", secret,
        Some(json!({"model": "claude-test", "max_tokens": 20, "messages": [{"role": "user", "content": "a b c"}]}))).await.0, 200);
    let all = mock.stats();
    let (claude_in, claude_out) =
        (all.input_tokens - gpt.input_tokens, all.output_tokens - gpt.output_tokens);
    // $3 and $15 per million: whole micro-dollars, nothing to round.
    total += (3 * claude_in + 15 * claude_out) as i64;
    // 6 + 1 prompt tokens (5 of them cached) and 9 + 4 output tokens on
    // GPT: 91.875 → 92 and 41.25 → 42 µ$; 3 in and 6 out on Claude: 99 µ$.
    assert_eq!((gpt.input_tokens, gpt.cached_tokens, gpt.output_tokens), (7, 5, 13));
    assert_eq!(total, 92 + 42 + 99);
    // Lines: quantity × price, rounded down; the per-request rounding up is
    // a line of its own.
    let gpt_input = gpt.input_tokens - gpt.cached_tokens;
    let mut expected = vec![
        ("gpt-test", "input_tokens", gpt_input, "1.25", gpt_input * 125 / 100),
        ("gpt-test", "output_tokens", gpt.output_tokens, "10", gpt.output_tokens * 10),
        ("gpt-test", "cache_read_tokens", gpt.cached_tokens, "0.125", gpt.cached_tokens / 8),
        ("claude-test", "input_tokens", claude_in, "3", claude_in * 3),
        ("claude-test", "output_tokens", claude_out, "15", claude_out * 15),
    ];
    let lines_sum: u64 = expected.iter().map(|l| l.4).sum();
    let rounding = total as u64 - lines_sum;
    expected.push(("rounding", "micro_dollars", rounding, "0", rounding));
    expected.sort();
    let id = k["id"].as_str().unwrap();
    let (status, inv) = call(
        &t,
        reqwest::Method::GET,
        &format!("/v1/billing/invoice_preview?key_id={id}"),
        &t.master_key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{inv}");
    assert_eq!(inv["total_micros"].as_i64(), Some(total), "{inv}");
    let mut lines: Vec<(&str, &str, u64, &str, u64)> = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["model"].as_str().unwrap(),
                l["unit"].as_str().unwrap(),
                l["quantity"].as_u64().unwrap(),
                l["unit_price_per_million_usd"].as_str().unwrap(),
                l["amount_micros"].as_u64().unwrap(),
            )
        })
        .collect();
    lines.sort();
    assert_eq!(lines, expected, "{inv}");
    let (_, usage) =
        call(&t, reqwest::Method::GET, &format!("/v1/usage?key_id={id}"), &t.master_key, None)
            .await;
    assert_eq!(usage["totals"]["cost_micros"].as_i64(), Some(total));
    let (status, _) = call(
        &t,
        reqwest::Method::GET,
        "/v1/billing/invoice_preview?key_id=key_nope",
        &t.master_key,
        None,
    )
    .await;
    assert_eq!(status, 404);
    t.stop().await;
}
