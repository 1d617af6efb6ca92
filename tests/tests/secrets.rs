//! Secrets at rest, on SQLite and PostgreSQL: the tenants' Stripe keys and
//! signing secrets are stored sealed (no plain text in the database) and
//! read back whole; plain-text rows an older version left are sealed on
//! start; a store with sealed secrets refuses to start without its key or
//! with another; `qlaud admin rotate-secret-key` re-seals everything and the
//! old key opens nothing after; the SQLite data directory, database and key
//! file are readable by their owner only. A rolling rotation on
//! PostgreSQL: two `qlaud serve` processes given the new key and the
//! previous one keep serving (Stripe webhooks verified, settings read and
//! written) before, during and after `rotate-secret-key`, and the old key
//! alone opens nothing after it.

use std::os::unix::fs::PermissionsExt as _;

use qlaud_server::secrets::{KeySource, SecretKey};
use qlaud_server::store::Store;
use qlaud_server::{ServeConfig, Server};
use qlaud_tests::{Backend, QlaudProcess, TestServer, backend_tests, qlaud_bin, store_pool};
use serde_json::{Value, json};
use sqlx::Row;

backend_tests!(
    secrets_are_sealed_at_rest_and_read_back,
    plain_text_secrets_are_sealed_on_start,
    a_store_with_sealed_secrets_needs_its_key,
    rotation_reseals_everything_and_the_old_key_stops_working,
    the_data_directory_is_private,
    a_rolling_rotation_keeps_running_processes_serving,
);

const STRIPE_KEY: &str = "sk_test_51Hplaintextneverstored";
const STRIPE_WHSEC: &str = "whsec_plaintextneverstored0123456789";

/// The key a PostgreSQL test gives (SQLite makes its own in the data dir).
fn key_for(backend: Backend) -> Option<SecretKey> {
    (backend == Backend::Postgres).then(SecretKey::generate)
}

fn source(key: Option<&SecretKey>) -> KeySource {
    KeySource { value: key.map(SecretKey::encode), ..KeySource::default() }
}

async fn start(backend: Backend, key: Option<&SecretKey>) -> Option<TestServer> {
    let key = key.cloned();
    TestServer::start_configured(backend, None, move |c| c.secret_key = source(key.as_ref())).await
}

/// Every secret column's raw values.
async fn raw_secrets(url: &str) -> Vec<String> {
    let pool = store_pool(url).await;
    let mut out = Vec::new();
    for sql in [
        "SELECT stripe_secret_key AS v FROM billing_settings WHERE stripe_secret_key IS NOT NULL",
        "SELECT webhook_secret AS v FROM billing_settings WHERE webhook_secret IS NOT NULL",
        "SELECT alert_signing_secret AS v FROM billing_settings \
         WHERE alert_signing_secret IS NOT NULL",
        "SELECT secret AS v FROM webhook_secrets",
    ] {
        for r in sqlx::query(sql).fetch_all(&pool).await.unwrap() {
            out.push(r.try_get::<String, _>("v").unwrap());
        }
    }
    pool.close().await;
    out
}

async fn set_billing(t: &TestServer) -> String {
    let resp = t
        .http
        .patch(format!("{}/v1/billing/settings", t.base_url))
        .bearer_auth(&t.master_key)
        .json(&json!({"stripe_secret_key": STRIPE_KEY, "webhook_secret": STRIPE_WHSEC,
                      "alert_webhook_url": "http://127.0.0.1:9/alerts"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let resp = t
        .http
        .post(format!("{}/v1/webhooks/secret/rotate", t.base_url))
        .bearer_auth(&t.master_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(v["alert_signing_secret"].is_string(), "{v}");
    let rotated: Value = resp.json().await.unwrap();
    rotated["secret"].as_str().unwrap().to_string()
}

/// What the store reads back for the first tenant: (Stripe key, Stripe
/// webhook secret, signing secret).
async fn read_back(store: &Store, tenant_id: &str) -> (String, String, String) {
    let s = store.billing_settings(tenant_id).await.unwrap().unwrap();
    let whsec = store.webhook_secret(tenant_id).await.unwrap().secret;
    (s.stripe_secret_key.unwrap(), s.webhook_secret.unwrap(), whsec)
}

async fn secrets_are_sealed_at_rest_and_read_back(backend: Backend) {
    let key = key_for(backend);
    let Some(t) = start(backend, key.as_ref()).await else { return };
    let whsec = set_billing(&t).await;
    let raw = raw_secrets(&t.db.url).await;
    assert_eq!(raw.len(), 4, "{raw:?}");
    for v in &raw {
        assert!(v.starts_with("qlaud-sealed:v1:"), "{v}");
        assert!(!v.contains("plaintextneverstored") && !v.contains(&whsec[6..]), "{v}");
    }
    let got = read_back(t.server().store(), &t.tenant_id).await;
    assert_eq!(got, (STRIPE_KEY.into(), STRIPE_WHSEC.into(), whsec));
    if backend == Backend::Sqlite {
        let file = t.db.url.trim_start_matches("sqlite://").split('?').next().unwrap().to_string();
        let dir = std::path::Path::new(&file).parent().unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("secret.key")), 0o600);
    }
    t.stop().await;
}

async fn plain_text_secrets_are_sealed_on_start(backend: Backend) {
    let key = key_for(backend);
    let Some(t) = start(backend, key.as_ref()).await else { return };
    let (url, tenant_id) = (t.db.url.clone(), t.tenant_id.clone());
    // What a version that did not seal left behind.
    let pool = store_pool(&url).await;
    sqlx::query(
        "INSERT INTO billing_settings (tenant_id, stripe_secret_key, webhook_secret, \
         meter_event_name, updated_ms) VALUES ($1, $2, $3, 'qlaud_spend', 0)",
    )
    .bind(&tenant_id)
    .bind(STRIPE_KEY)
    .bind(STRIPE_WHSEC)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE webhook_secrets SET secret = $1 WHERE tenant_id = $2")
        .bind("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .bind(&tenant_id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let store = Store::open(&url, &source(key.as_ref())).await.unwrap();
    let raw = raw_secrets(&url).await;
    assert_eq!(raw.len(), 3);
    assert!(raw.iter().all(|v| v.starts_with("qlaud-sealed:v1:")), "{raw:?}");
    let got = read_back(&store, &tenant_id).await;
    assert_eq!(
        got,
        (STRIPE_KEY.into(), STRIPE_WHSEC.into(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into())
    );
    store.close().await;
    t.stop().await;
}

async fn a_store_with_sealed_secrets_needs_its_key(backend: Backend) {
    let key = key_for(backend);
    let Some(t) = start(backend, key.as_ref()).await else { return };
    set_billing(&t).await;
    let url = t.db.url.clone();
    // Another key is refused by name, on either store.
    let other = SecretKey::generate();
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), url.clone());
    config.secret_key = source(Some(&other));
    let err = format!("{:#}", Server::start(&config).await.err().expect("refused"));
    assert!(err.contains("does not open"), "{err}");
    if backend == Backend::Postgres {
        // No key at all: PostgreSQL never makes one, so it refuses clearly.
        config.secret_key = KeySource::default();
        let err = format!("{:#}", Server::start(&config).await.err().expect("refused"));
        assert!(err.contains("QLAUD_SECRET_KEY") && err.contains("--secret-key-file"), "{err}");
        // The right key starts.
        config.secret_key = source(key.as_ref());
    } else {
        // SQLite finds its own key in the data directory.
        config.secret_key = KeySource::default();
    }
    let second = Server::start(&config).await.expect("the right key starts");
    second.close().await.unwrap();
    t.stop().await;
}

async fn rotation_reseals_everything_and_the_old_key_stops_working(backend: Backend) {
    let key = key_for(backend);
    let Some(t) = start(backend, key.as_ref()).await else { return };
    let whsec = set_billing(&t).await;
    let (url, tenant_id) = (t.db.url.clone(), t.tenant_id.clone());
    let before = raw_secrets(&url).await;
    // (The running server writes no secret meanwhile; operators stop theirs.)
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(qlaud_bin());
    cmd.args(["admin", "rotate-secret-key", "--database-url", &url]).env_remove("QLAUD_SECRET_KEY");
    // The key that opens the store now, as a process gets it.
    let old = match &key {
        Some(k) => {
            let new_file = dir.path().join("new.key");
            cmd.env("QLAUD_SECRET_KEY", k.encode())
                .args(["--new-key-file", new_file.to_str().unwrap()]);
            k.clone()
        }
        None => {
            let file = url.trim_start_matches("sqlite://").split('?').next().unwrap().to_string();
            let key_file = std::path::Path::new(&file).parent().unwrap().join("secret.key");
            SecretKey::parse(&std::fs::read_to_string(key_file).unwrap()).unwrap()
        }
    };
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["rotated"], 4, "{v}");
    assert_eq!(v["old_key_id"], old.id());
    let new_id = v["new_key_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old.id());
    let after = raw_secrets(&url).await;
    assert_eq!(after.len(), 4);
    for v in &after {
        assert!(v.starts_with(&format!("qlaud-sealed:v1:{new_id}:")), "{v}");
        assert!(!before.contains(v));
    }
    // The old key opens nothing.
    let err = Store::open(&url, &source(Some(&old))).await.expect_err("old key refused");
    assert!(format!("{err:#}").contains("does not open"), "{err:#}");
    // The new one (the data directory's, replaced, on SQLite) opens all.
    let new_source = match &key {
        Some(_) => KeySource { file: Some(dir.path().join("new.key")), ..KeySource::default() },
        None => KeySource::default(),
    };
    let store = Store::open(&url, &new_source).await.unwrap();
    assert_eq!(store.secret_key_id(), Some(new_id.as_str()));
    let got = read_back(&store, &tenant_id).await;
    assert_eq!(got, (STRIPE_KEY.into(), STRIPE_WHSEC.into(), whsec));
    store.close().await;
    if key.is_some() {
        let mode = std::fs::metadata(dir.path().join("new.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    t.stop().await;
}

async fn the_data_directory_is_private(backend: Backend) {
    if backend == Backend::Postgres {
        return;
    }
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let out = tokio::process::Command::new(qlaud_bin())
        .args(["admin", "create-tenant", "--name", "acme", "--data-dir", dir.to_str().unwrap()])
        .env_remove("QLAUD_DATABASE_URL")
        .env_remove("QLAUD_SECRET_KEY")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |name: &str| {
        let p = if name.is_empty() { dir.clone() } else { dir.join(name) };
        std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).ok()
    };
    assert_eq!(mode(""), Some(0o700));
    assert_eq!(mode("qlaud.db"), Some(0o600));
    assert_eq!(mode("secret.key"), Some(0o600));
    for name in ["qlaud.db-wal", "qlaud.db-shm"] {
        assert!(matches!(mode(name), None | Some(0o600)), "{name}: {:o}", mode(name).unwrap());
    }
    // A directory an older version made readable to others is tightened.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("qlaud.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tokio::process::Command::new(qlaud_bin())
        .args(["admin", "create-tenant", "--name", "two", "--data-dir", dir.to_str().unwrap()])
        .env_remove("QLAUD_DATABASE_URL")
        .env_remove("QLAUD_SECRET_KEY")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((mode(""), mode("qlaud.db")), (Some(0o700), Some(0o600)));
}

fn stripe_v1(secret: &str, t: i64, body: &[u8]) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Delivers a Stripe event signed with `whsec` to `base`; its status.
async fn stripe_event(
    http: &reqwest::Client,
    base: &str,
    tenant_id: &str,
    whsec: &str,
    id: &str,
) -> u16 {
    let event = json!({"id": id, "object": "event", "type": "customer.created",
                       "created": chrono::Utc::now().timestamp(),
                       "data": {"object": {"object": "customer", "id": "cus_rotation"}}});
    let body = event.to_string();
    let ts = chrono::Utc::now().timestamp();
    let resp = http
        .post(format!("{base}/v1/billing/stripe/webhook/{tenant_id}"))
        .header("content-type", "application/json")
        .header("stripe-signature", format!("t={ts},v1={}", stripe_v1(whsec, ts, body.as_bytes())))
        .body(body)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

/// `GET /v1/billing/settings` on `base`, which opens every secret of the
/// tenant; its status.
async fn read_settings(t: &TestServer, base: &str) -> u16 {
    let resp = t
        .http
        .get(format!("{base}/v1/billing/settings"))
        .bearer_auth(&t.master_key)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

/// Both processes verify a Stripe event signed with `whsec` and read the
/// settings.
async fn both_serve(t: &TestServer, procs: &[&QlaudProcess], whsec: &str, step: &str) {
    for (i, p) in procs.iter().enumerate() {
        let id = format!("evt_{step}_{i}");
        assert_eq!(
            stripe_event(&t.http, &p.base_url(), &t.tenant_id, whsec, &id).await,
            200,
            "{step}"
        );
        assert_eq!(read_settings(t, &p.base_url()).await, 200, "{step}");
    }
}

async fn a_rolling_rotation_keeps_running_processes_serving(backend: Backend) {
    if backend == Backend::Sqlite {
        // One process per data directory: the stop-and-rotate path above.
        return;
    }
    let old = SecretKey::generate();
    let new = SecretKey::generate();
    // The deployment before the rotation, on the old key.
    let Some(t) = start(backend, Some(&old)).await else { return };
    set_billing(&t).await;
    let url = t.db.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let (old_file, new_file) = (dir.path().join("old.key"), dir.path().join("new.key"));
    qlaud_server::secrets::write_key_file(&old_file, &old).unwrap();
    qlaud_server::secrets::write_key_file(&new_file, &new).unwrap();
    // Step 1: every process restarts with the new key and the old one as
    // the previous.
    let args = [
        "--database-url",
        url.as_str(),
        "--secret-key-file",
        new_file.to_str().unwrap(),
        "--previous-secret-key-file",
        old_file.to_str().unwrap(),
    ];
    let one = QlaudProcess::spawn(&args).await;
    let two = QlaudProcess::spawn(&args).await;
    both_serve(&t, &[&one, &two], STRIPE_WHSEC, "deployed").await;
    // A secret written now is sealed with the new key (the settings row's
    // three are written together), and the other process reads it.
    let whsec2 = "whsec_writtenduringtherotation0123456";
    let resp = t
        .http
        .patch(format!("{}/v1/billing/settings", one.base_url()))
        .bearer_auth(&t.master_key)
        .json(&json!({"webhook_secret": whsec2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    both_serve(&t, &[&two, &one], whsec2, "written").await;
    let by_key = |raw: &[String], key: &SecretKey| {
        raw.iter().filter(|v| v.starts_with(&format!("qlaud-sealed:v1:{}:", key.id()))).count()
    };
    let raw = raw_secrets(&url).await;
    // Left on the old key: the outgoing webhooks' signing secret.
    assert_eq!((by_key(&raw, &old), by_key(&raw, &new)), (1, 3), "{raw:?}");
    // Step 2: re-seal, with the processes running.
    let out = tokio::process::Command::new(qlaud_bin())
        .args(["admin", "rotate-secret-key", "--database-url", &url])
        .arg("--secret-key-file")
        .arg(&new_file)
        .arg("--previous-secret-key-file")
        .arg(&old_file)
        .env_remove("QLAUD_SECRET_KEY")
        .env_remove("QLAUD_SECRET_KEY_PREVIOUS")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["rotated"], 1, "{v}");
    assert_eq!(
        (v["old_key_id"].as_str(), v["new_key_id"].as_str()),
        (Some(old.id()), Some(new.id()))
    );
    let raw = raw_secrets(&url).await;
    assert_eq!((by_key(&raw, &old), by_key(&raw, &new)), (0, 4), "{raw:?}");
    both_serve(&t, &[&one, &two], whsec2, "rotated").await;
    // The old key alone opens nothing any more: neither a process still
    // running on it nor one starting with it.
    assert_eq!(read_settings(&t, &t.base_url).await, 500);
    let err = Store::open(&url, &source(Some(&old))).await.expect_err("old key refused");
    assert!(format!("{err:#}").contains("does not open"), "{err:#}");
    // Step 3: the previous key goes; the new one alone opens everything.
    let store = Store::open(&url, &source(Some(&new))).await.unwrap();
    assert_eq!(store.secret_key_id(), Some(new.id()));
    let (stripe_key, webhook_secret, _) = read_back(&store, &t.tenant_id).await;
    assert_eq!((stripe_key.as_str(), webhook_secret.as_str()), (STRIPE_KEY, whsec2));
    store.close().await;
    let three = QlaudProcess::spawn(&args[..4]).await;
    both_serve(&t, &[&three, &one], whsec2, "previous removed").await;
    // A previous key without a current one is refused clearly.
    let only_previous = KeySource { previous_value: Some(old.encode()), ..KeySource::default() };
    let err = Store::open(&url, &only_previous).await.expect_err("refused");
    assert!(format!("{err:#}").contains("without a current one"), "{err:#}");
    for p in [one, two, three] {
        p.kill().await;
    }
    t.stop().await;
}
