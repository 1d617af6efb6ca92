//! Who may read `/metrics` (spend across every tenant), on SQLite and
//! PostgreSQL: a bearer token, a separate address, or loopback only.

use qlaud_server::{ServeConfig, Server};
use qlaud_tests::{Backend, QlaudProcess, TestDb, backend_tests};

backend_tests!(
    metrics_token_is_required_when_set,
    metrics_bind_moves_metrics_off_the_api_address,
    metrics_are_off_beyond_loopback_by_default,
);

async fn get(url: &str, token: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn metrics_token_is_required_when_set(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let p = QlaudProcess::spawn(&[
        "--database-url",
        db.url.as_str(),
        "--metrics-token",
        "scrape-me-0123456789",
    ])
    .await;
    let url = format!("{}/metrics", p.base_url());
    assert_eq!(get(&url, None).await, 401);
    assert_eq!(get(&url, Some("scrape-me")).await, 401);
    // A qlaud key is not the metrics token, even the master key.
    let master: serde_json::Value =
        serde_json::from_str(p.stdout.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(get(&url, master["master_key"].as_str()).await, 401);
    assert_eq!(get(&url, Some("scrape-me-0123456789")).await, 200);
    p.kill().await;
}

async fn metrics_bind_moves_metrics_off_the_api_address(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_bind = format!("127.0.0.1:{port}");
    let p =
        QlaudProcess::spawn(&["--database-url", db.url.as_str(), "--metrics-bind", &metrics_bind])
            .await;
    assert_eq!(get(&format!("{}/metrics", p.base_url()), None).await, 404);
    assert_eq!(get(&format!("http://{metrics_bind}/metrics"), None).await, 200);
    // Only /metrics is there: the API is not.
    assert_eq!(get(&format!("http://{metrics_bind}/v1/keys"), None).await, 404);
    p.kill().await;
}

/// Listening on every address with neither a token nor a separate address,
/// `/metrics` is not served (the API still is).
async fn metrics_are_off_beyond_loopback_by_default(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let config = ServeConfig::new("0.0.0.0:0".parse().unwrap(), db.url.clone());
    let server = Server::start(&config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", server.local_addr().port());
    assert_eq!(get(&format!("{base}/metrics"), None).await, 404);
    assert_eq!(get(&format!("{base}/health"), None).await, 200);
    server.close().await.unwrap();
    // On loopback it is open, as before.
    let config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), db.url.clone());
    let server = Server::start(&config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    assert_eq!(get(&format!("{base}/metrics"), None).await, 200);
    server.close().await.unwrap();
}
