//! Strict input on qlaud's own endpoints, on SQLite and PostgreSQL: object
//! bodies only, exact decimals, no control characters in identifiers and
//! metadata, every query parameter checked. Each bad request is a 400 that
//! changes nothing.

use qlaud_tests::{Backend, RawBody, TestServer, backend_tests};
use reqwest::Method;
use serde_json::{Value, json};

backend_tests!(
    bodies_must_be_objects,
    decimals_are_exact_or_refused,
    control_characters_are_refused,
    query_parameters_are_validated,
);

async fn key_count(t: &TestServer) -> usize {
    let (status, v) = t.request(Method::GET, "/v1/keys?limit=100", Some(&t.master_key), None).await;
    assert_eq!(status, 200, "{v}");
    v["items"].as_array().unwrap().len()
}

/// The error's message, in qlaud's shape or (`/v1/models`) Anthropic's.
fn message(v: &Value) -> String {
    v["message"].as_str().or(v["error"]["message"].as_str()).unwrap_or_default().to_lowercase()
}

async fn bodies_must_be_objects(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else { return };
    let before = key_count(&t).await;
    let master = Some(t.master_key.as_str());
    for (method, path, body) in [
        (Method::POST, "/v1/keys", r#"["x"]"#),
        (Method::POST, "/v1/keys", r#""x""#),
        (Method::POST, "/v1/keys", "5"),
        (Method::PATCH, "/v1/billing/settings", "[]"),
        (Method::PATCH, "/v1/billing/settings", "null"),
        (Method::POST, "/v1/threads", "[]"),
        (Method::POST, "/v1/tools", "[]"),
    ] {
        let (status, v) =
            t.request(method.clone(), path, master, Some(RawBody::Text(body.into()))).await;
        assert_eq!(status, 400, "{method} {path} {body}: {v}");
        assert!(message(&v).contains("json object"), "{v}");
    }
    // Malformed JSON still gets the parser's message.
    let (status, v) =
        t.request(Method::POST, "/v1/keys", master, Some(RawBody::Text("[x".into()))).await;
    assert_eq!(status, 400);
    assert!(message(&v).contains("parse"), "{v}");
    assert_eq!(key_count(&t).await, before, "nothing was created");
    // Billing settings are unchanged (the empty update was not applied).
    let (status, _) = t.request(Method::GET, "/v1/billing/settings", master, None).await;
    assert_eq!(status, 200);
    t.stop().await;
}

async fn decimals_are_exact_or_refused(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else { return };
    let before = key_count(&t).await;
    let master = Some(t.master_key.as_str());
    let body = r#"{"name":"x","max_spend_usd":5.0000000000000000001}"#;
    let (status, v) =
        t.request(Method::POST, "/v1/keys", master, Some(RawBody::Text(body.into()))).await;
    assert_eq!(status, 400, "{v}");
    assert!(message(&v).contains("5.0000000000000000001"), "{v}");
    assert_eq!(key_count(&t).await, before);
    // The same on an update: the cap stays as it was.
    let key = t.mint(json!({"name": "capped", "max_spend_usd": 5})).await;
    let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    let body = r#"{"max_spend_usd":7.0000000000000000001}"#;
    let (status, v) =
        t.request(Method::PATCH, &path, master, Some(RawBody::Text(body.into()))).await;
    assert_eq!(status, 400, "{v}");
    let (_, got) = t.request(Method::GET, &path, master, None).await;
    assert_eq!(got["max_spend_usd"], 5);
    // Exact spellings of the same amounts are fine.
    for body in [r#"{"max_spend_usd":7.000000}"#, r#"{"max_spend_usd":7.5e0}"#] {
        let (status, v) =
            t.request(Method::PATCH, &path, master, Some(RawBody::Text(body.into()))).await;
        assert_eq!(status, 200, "{body}: {v}");
    }
    t.stop().await;
}

async fn control_characters_are_refused(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else { return };
    let before = key_count(&t).await;
    let master = Some(t.master_key.as_str());
    for metadata in [json!({"a\u{0}b": "v"}), json!({"k": "v\u{7}"}), json!({"k\u{85}": "v"})] {
        let body = json!({"name": "x", "metadata": metadata});
        let (status, v) =
            t.request(Method::POST, "/v1/keys", master, Some(RawBody::Json(body))).await;
        assert_eq!(status, 400, "{metadata}: {v}");
        assert!(message(&v).contains("control characters"), "{v}");
    }
    let (status, _) = t
        .request(Method::POST, "/v1/keys", master, Some(RawBody::Json(json!({"name": "a\u{0}"}))))
        .await;
    assert_eq!(status, 400);
    assert_eq!(key_count(&t).await, before);
    // Threads' metadata too.
    let body = json!({"metadata": {"k\u{1b}": "v"}});
    let (status, v) =
        t.request(Method::POST, "/v1/threads", master, Some(RawBody::Json(body))).await;
    assert_eq!(status, 400, "{v}");
    // Secrets that end up in headers.
    for body in
        [json!({"stripe_secret_key": "sk_test_\u{0}x"}), json!({"webhook_secret": "whsec_\r\nx"})]
    {
        let (status, v) = t
            .request(Method::PATCH, "/v1/billing/settings", master, Some(RawBody::Json(body)))
            .await;
        assert_eq!(status, 400, "{v}");
        assert!(message(&v).contains("control characters"), "{v}");
    }
    // Identifiers in paths and filters.
    for path in [
        "/v1/keys/key_%00x",
        "/v1/threads/thr_%07x",
        "/v1/tools/tool_%0Ax",
        "/v1/models/claude%00",
        "/v1/requests?key_id=key_%00",
        "/v1/usage?key_id=%1B",
        "/v1/keys?search=a%00",
        "/v1/billing/invoice_preview?key_id=key_%00",
    ] {
        let (status, v) = t.request(Method::GET, path, master, None).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert!(message(&v).contains("control characters"), "{path}: {v}");
    }
    t.stop().await;
}

async fn query_parameters_are_validated(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else { return };
    let master = Some(t.master_key.as_str());
    for path in [
        "/v1/billing/meter_events?period=-2026-11",
        "/v1/billing/meter_events?period=+2026-11",
        "/v1/billing/meter_events?period=12026-11",
        "/v1/billing/meter_events?period=2026-1",
        "/v1/billing/meter_events?period=2026-13",
        "/v1/usage?from=-2026-01-01",
        "/v1/usage?to=%2B12026-01-01",
        "/v1/requests?from=-2026-01-01T00:00:00Z",
    ] {
        let (status, v) = t.request(Method::GET, path, master, None).await;
        assert_eq!(status, 400, "{path}: {v}");
    }
    for path in ["/v1/billing/meter_events?period=2026-11", "/v1/usage?from=2026-01-01"] {
        let (status, v) = t.request(Method::GET, path, master, None).await;
        assert_eq!(status, 200, "{path}: {v}");
    }
    t.stop().await;
}
