//! The Rust SDK's hand-written parts: retries (against a flaky server),
//! pagination, JSON calls that keep every field, and the README example.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use qlaud::{RetryPolicy, types};
use qlaud_tests::{Backend, TestServer, backend_tests};

backend_tests!(list_keys_stream_walks_every_page, request_json_keeps_every_field);

const QUICK: RetryPolicy = RetryPolicy {
    max_retries: 2,
    initial_backoff: Duration::from_millis(5),
    max_backoff: Duration::from_millis(20),
};

/// A server that fails the first `failures` requests with `status`, then
/// answers billing settings; it counts every request.
async fn flaky(failures: usize, status: u16) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let code = axum::http::StatusCode::from_u16(status).unwrap();
            if n < failures {
                let headers = [("retry-after", "0")];
                return (code, headers, r#"{"message":"try later","request_id":"r"}"#.to_string());
            }
            let ok = r#"{"meter_event_name":"m","stripe_secret_key_set":false,
                "webhook_path":"/p","webhook_secret_set":false,
                "stripe_push":{"events_pushed":0,"micros_pushed":0,"last_pushed_at":null,"last_run":null}}"#;
            (axum::http::StatusCode::OK, [("retry-after", "0")], ok.to_string())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

#[tokio::test]
async fn idempotent_calls_are_retried_after_transient_failures() {
    for status in [429, 502, 503] {
        let (url, hits) = flaky(2, status).await;
        let client = qlaud::Client::new(&url, "k").unwrap().with_retry_policy(QUICK);
        let settings = client.get_billing_settings().send().await.unwrap();
        assert_eq!(settings.meter_event_name, "m");
        assert_eq!(hits.load(Ordering::SeqCst), 3, "{status}: two failures, then success");
    }
    // Out of retries: the last failure is the answer.
    let (url, hits) = flaky(5, 503).await;
    let client = qlaud::Client::new(&url, "k").unwrap().with_retry_policy(QUICK);
    let err = client.get_billing_settings().send().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn calls_that_are_not_idempotent_or_not_transient_are_sent_once() {
    // A POST that reached the server could mint twice: never repeated.
    let (url, hits) = flaky(1, 503).await;
    let client = qlaud::Client::new(&url, "k").unwrap().with_retry_policy(QUICK);
    let body = types::MintKeyRequest::builder().name("x");
    assert!(client.mint_key().body(body).send().await.is_err());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // 4xx other than 408/429 is final.
    let (url, hits) = flaky(1, 404).await;
    let client = qlaud::Client::new(&url, "k").unwrap().with_retry_policy(QUICK);
    assert!(client.get_billing_settings().send().await.is_err());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Retrying can be turned off.
    let (url, hits) = flaky(1, 503).await;
    let off = RetryPolicy { max_retries: 0, ..QUICK };
    let client = qlaud::Client::new(&url, "k").unwrap().with_retry_policy(off);
    assert!(client.get_billing_settings().send().await.is_err());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(client.retry_policy(), off);
}

async fn list_keys_stream_walks_every_page(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let admin = t.client(&t.master_key);
    for i in 0..5 {
        let body = types::MintKeyRequest::builder().name(format!("page{i}"));
        admin.mint_key().body(body).send().await.unwrap();
    }
    let keys: Vec<types::Key> = admin
        .list_keys()
        .limit(std::num::NonZeroU32::new(2).unwrap())
        .stream()
        .try_collect()
        .await
        .unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["master", "page0", "page1", "page2", "page3", "page4"]);
}

async fn request_json_keeps_every_field(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let admin = t.client(&t.master_key);
    let body = types::MintKeyRequest::builder().name("uncapped");
    let key = admin.mint_key().body(body).send().await.unwrap();
    let path = format!("/v1/keys/{}", qlaud::encode_path(&key.id));
    let raw = admin.request_json(reqwest::Method::GET, &path, &[], None).await.unwrap();
    // The typed answer has `None`; the JSON keeps the explicit null.
    assert!(raw.as_object().unwrap().contains_key("max_spend_micros"));
    assert!(raw["max_spend_micros"].is_null());
    let gone = admin.request_json(reqwest::Method::DELETE, &path, &[], None).await.unwrap();
    assert!(gone.is_null());
    let query = [("key_id", key.id.clone())];
    let usage = admin.request_json(reqwest::Method::GET, "/v1/usage", &query, None).await.unwrap();
    assert_eq!(usage["totals"]["requests"], 0);
    match admin.request_json(reqwest::Method::GET, "/v1/keys/nope", &[], None).await {
        Err(qlaud::RawError::Status { status: 404, body }) => {
            assert!(body["message"].as_str().unwrap().contains("not found"))
        }
        other => panic!("{other:?}"),
    }
}

/// `sdk-rust/examples/quickstart.rs`, which the README prints, runs as
/// printed (`cargo test --workspace` builds the examples).
#[tokio::test]
async fn readme_rust_example_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let source = std::fs::read_to_string(root.join("sdk-rust/examples/quickstart.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains(&source), "the README must show sdk-rust/examples/quickstart.rs as is");

    let exe = std::env::current_exe().unwrap();
    let example = exe.parent().unwrap().parent().unwrap().join("examples/quickstart");
    assert!(example.exists(), "{} is missing: run `cargo test --workspace`", example.display());
    let t = TestServer::start(Backend::Sqlite).await.unwrap();
    let out = tokio::process::Command::new(&example)
        .env("QLAUD_API_KEY", &t.master_key)
        .env("QLAUD_BASE_URL", &t.base_url)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "echo: Hello!");
    assert!(lines[1].starts_with("user_42 spent ") && lines[1].ends_with(" micro-dollars"));
    assert_ne!(lines[1], "user_42 spent 0 micro-dollars");
}
