//! Outgoing webhooks end to end: the tenant's signing secret (rotated
//! through the API and the Rust SDK, made for new tenants and lazily for
//! old ones) and the outbound policy as a production operator runs it, on
//! SQLite and PostgreSQL. Delivery of signed spend alerts is in billing.rs;
//! the fence itself is unit-tested in server/qlaud/src/outbound.

use base64::Engine as _;
use qlaud_tests::{Backend, RawBody, TestServer, backend_tests, store_pool};
use serde_json::json;
use sqlx::Row;

backend_tests!(
    rotation_is_admin_only_and_shows_each_secret_once,
    a_strict_server_refuses_private_and_disguised_alert_urls,
    old_tenants_get_one_secret_on_first_use,
);

const ROTATE: &str = "/v1/webhooks/secret/rotate";

fn decoded_len(secret: &str) -> usize {
    let b64 = secret.strip_prefix("whsec_").expect("whsec_ prefix");
    base64::engine::general_purpose::STANDARD.decode(b64).expect("base64").len()
}

async fn rotation_is_admin_only_and_shows_each_secret_once(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else { return };
    let first = t.client(&t.master_key).rotate_webhook_secret().send().await.unwrap().into_inner();
    assert_eq!(decoded_len(&first.secret), 32);
    assert!((chrono::Utc::now() - first.created_at).num_seconds().abs() < 60);
    let (status, second) =
        t.request(reqwest::Method::POST, ROTATE, Some(&t.master_key), None).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["secret"], first.secret.as_str(), "a new secret each time");
    // What the store signs with is the last one shown.
    let stored = t.server().store().webhook_secret(&t.tenant_id).await.unwrap();
    assert_eq!(second["secret"], stored.secret.as_str());
    // Nothing else ever shows it.
    let (_, settings) =
        t.request(reqwest::Method::GET, "/v1/billing/settings", Some(&t.master_key), None).await;
    assert!(!settings.to_string().contains(&stored.secret));
    // A standard key is refused in qlaud's error shape; no key is 401.
    let user = t.mint(json!({"name": "end_user"})).await;
    let user_key = user["secret"].as_str().unwrap();
    let (status, body) = t.request(reqwest::Method::POST, ROTATE, Some(user_key), None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error_code"], "Forbidden");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()) && body["request_id"].is_string()
    );
    let (status, body) = t.request(reqwest::Method::POST, ROTATE, None, None).await;
    assert_eq!(status, 401, "{body}");
    let unchanged = t.server().store().webhook_secret(&t.tenant_id).await.unwrap();
    assert_eq!(unchanged.secret, stored.secret, "refused calls change nothing");
    t.stop().await;
}

async fn a_strict_server_refuses_private_and_disguised_alert_urls(backend: Backend) {
    let Some(t) = TestServer::start_strict(backend).await else { return };
    let patch = |url: &str| {
        let body = RawBody::Json(json!({"alert_webhook_url": url}));
        t.request(reqwest::Method::PATCH, "/v1/billing/settings", Some(&t.master_key), Some(body))
    };
    for url in [
        "http://127.0.0.1:9/alerts",
        "http://localhost/alerts",
        "https://localhost/alerts",
        "https://127.0.0.1/alerts",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/",
        "https://[::1]/",
        "https://[fd00:ec2::254]/",
        "http://127.0.0.1@169.254.169.254/latest/meta-data/",
        "http://localhost@attacker.example/",
        "https://user:pw@hooks.example.com/",
        "http://hooks.example.com/alerts",
        "ftp://hooks.example.com/",
    ] {
        let (status, body) = patch(url).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error_code"], "InvalidRequest", "{url}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with("alert_webhook_url is not allowed: "), "{message}");
    }
    let (status, body) = patch("http://127.0.0.1:9/alerts").await;
    assert!(body["message"].as_str().unwrap().contains("https"), "{status} {body}");
    let (_, settings) =
        t.request(reqwest::Method::GET, "/v1/billing/settings", Some(&t.master_key), None).await;
    assert!(settings["alert_webhook_url"].is_null(), "refused URLs change nothing: {settings}");
    // A public https URL is fine (its addresses are checked when sending).
    let (status, body) = patch("https://hooks.example.com/alerts").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alert_webhook_url"], "https://hooks.example.com/alerts");
    t.stop().await;

    // The tests' servers allow private targets; userinfo stays refused.
    let Some(open) = TestServer::start(backend).await else { return };
    let patch = |url: &str| {
        let body = RawBody::Json(json!({"alert_webhook_url": url}));
        open.request(
            reqwest::Method::PATCH,
            "/v1/billing/settings",
            Some(&open.master_key),
            Some(body),
        )
    };
    assert_eq!(patch("http://127.0.0.1:9/alerts").await.0, 200);
    assert_eq!(patch("http://127.0.0.1@169.254.169.254/").await.0, 400);
    assert_eq!(patch("https://169.254.169.254/").await.0, 400, "metadata: never");
    open.stop().await;
}

async fn old_tenants_get_one_secret_on_first_use(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else { return };
    let pool = store_pool(&t.db.url).await;
    let count = |tenant: String| {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT COUNT(*) AS n FROM webhook_secrets WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&pool)
                .await
                .unwrap()
                .try_get::<i64, _>("n")
                .unwrap()
        }
    };
    // New tenants get theirs with the tenant.
    assert_eq!(count(t.tenant_id.clone()).await, 1);
    let (other, _) = t.create_tenant("other").await;
    assert_eq!(count(other.clone()).await, 1);
    // A tenant from before migration 0008 has none; many first uses at once
    // agree on one.
    sqlx::query("DELETE FROM webhook_secrets WHERE tenant_id = $1")
        .bind(&other)
        .execute(&pool)
        .await
        .unwrap();
    let store = t.server().store().clone();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, other) = (store.clone(), other.clone());
            tokio::spawn(async move { store.webhook_secret(&other).await.unwrap().secret })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "one secret: {seen:?}");
    assert_eq!(decoded_len(&seen[0]), 32);
    assert_eq!(count(other.clone()).await, 1);
    // Tenants do not share secrets.
    assert_ne!(store.webhook_secret(&t.tenant_id).await.unwrap().secret, seen[0]);
    pool.close().await;
    t.stop().await;
}
