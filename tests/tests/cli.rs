//! The `qlaud` binary as a user runs it: bootstrap on first start, the
//! admin command, and several processes starting on one store at once.

use qlaud_tests::{Backend, QlaudProcess, TestDb, backend_tests, qlaud_bin};
use serde_json::{Value, json};

backend_tests!(
    first_start_prints_the_master_key_once,
    admin_create_tenant_prints_json,
    concurrent_first_starts_bootstrap_once,
);

fn master_key_of(stdout: &str) -> Option<(String, String)> {
    let line = stdout.lines().find(|l| l.starts_with('{'))?;
    let v: Value = serde_json::from_str(line).ok()?;
    Some((v["tenant_id"].as_str()?.to_string(), v["master_key"].as_str()?.to_string()))
}

async fn mint(base: &str, key: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{base}/v1/keys"))
        .bearer_auth(key)
        .json(&json!({"name": "user_42", "max_spend_usd": 5}))
        .send()
        .await
        .unwrap()
        .status()
}

async fn first_start_prints_the_master_key_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let first = QlaudProcess::spawn(&["--database-url", &db.url]).await;
    let (tenant, master) = master_key_of(&first.stdout).expect("first start prints the master key");
    assert!(tenant.starts_with("ten_"));
    assert!(master.starts_with("qlk_live_"));
    assert_eq!(mint(&first.base_url(), &master).await, 201);
    first.kill().await;
    let second = QlaudProcess::spawn(&["--database-url", &db.url]).await;
    assert!(master_key_of(&second.stdout).is_none(), "printed again: {}", second.stdout);
    assert_eq!(mint(&second.base_url(), &master).await, 201, "the key survives a restart");
    second.kill().await;
}

async fn admin_create_tenant_prints_json(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let out = tokio::process::Command::new(qlaud_bin())
        .args(["admin", "create-tenant", "--name", "acme", "--database-url", &db.url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON object on stdout");
    let key = v["master_key"].as_str().unwrap();
    assert!(v["tenant_id"].as_str().unwrap().starts_with("ten_"));
    // The store already has a tenant, so serve does not bootstrap another,
    // and the new tenant's key works.
    let server = QlaudProcess::spawn(&["--database-url", &db.url]).await;
    assert!(master_key_of(&server.stdout).is_none());
    assert_eq!(mint(&server.base_url(), key).await, 201);
    server.kill().await;
    // An empty name is refused.
    let out = tokio::process::Command::new(qlaud_bin())
        .args(["admin", "create-tenant", "--name", " ", "--database-url", &db.url])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
}

async fn concurrent_first_starts_bootstrap_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let args = ["--database-url", db.url.as_str()];
    let (a, b, c) = tokio::join!(
        QlaudProcess::spawn(&args),
        QlaudProcess::spawn(&args),
        QlaudProcess::spawn(&args)
    );
    let printed: Vec<_> = [&a, &b, &c].iter().filter_map(|p| master_key_of(&p.stdout)).collect();
    assert_eq!(printed.len(), 1, "exactly one process bootstraps");
    let master = &printed[0].1;
    for p in [&a, &b, &c] {
        assert_eq!(mint(&p.base_url(), master).await, 201);
    }
    for p in [a, b, c] {
        p.kill().await;
    }
}
