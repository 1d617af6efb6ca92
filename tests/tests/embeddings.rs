//! `POST /v1/embeddings`: OpenAI's shape passed through to the provider,
//! metered in input tokens and capped like every model call, on SQLite and
//! PostgreSQL.

use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, RawBody, TestServer, backend_tests, mock_toml};
use serde_json::{Value, json};

backend_tests!(embeddings_are_billed_to_the_key, large_inputs_are_reserved_before_the_provider);

async fn embed(t: &TestServer, key: &str, body: Value) -> (u16, Value) {
    t.request(reqwest::Method::POST, "/v1/embeddings", Some(key), Some(RawBody::Json(body))).await
}

async fn spent(t: &TestServer, key_id: &str) -> Value {
    let path = format!("/v1/usage?key_id={key_id}");
    let (status, v) = t.request(reqwest::Method::GET, &path, Some(&t.master_key), None).await;
    assert_eq!(status, 200);
    v["totals"].clone()
}

async fn embeddings_are_billed_to_the_key(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = t.mint(json!({"name": "rag", "max_spend_usd": 1})).await;
    let (id, secret) = (key["id"].as_str().unwrap(), key["secret"].as_str().unwrap());
    let words = "word ".repeat(100_000);
    let (status, v) = embed(
        &t,
        secret,
        json!({"model": "embed-test", "input": [words, "a b c"],
                                                "dimensions": 8, "user": "u1"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "embed-test");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"]["prompt_tokens"], 100_003);
    // 100,003 tokens × $0.02 per million = 2000.06 µ$ → 2001.
    assert_eq!(v["usage"]["cost_micros"], 2001);
    let stats = mock.stats();
    assert_eq!(stats.requests, 1);
    let sent = stats.last_body.unwrap();
    assert_eq!(
        (sent["model"].clone(), sent["dimensions"].clone(), sent["user"].clone()),
        (json!("embed-upstream"), json!(8), json!("u1"))
    );
    let totals = spent(&t, id).await;
    assert_eq!(totals["cost_micros"], 2001);
    assert_eq!(totals["units"]["input_tokens"], 100_003);
    // Without a usage object the input is billed at its reserved bound.
    let (status, v) = embed(&t, secret, json!({"model": "embed-nousage", "input": "x y"})).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 2, "{v}");
    // Wrong kind, unknown model, no key.
    let (status, v) = embed(&t, secret, json!({"model": "gpt-test", "input": "hi"})).await;
    assert_eq!((status, v["error"]["code"].clone()), (400, json!("model_not_supported")), "{v}");
    let (status, v) = embed(&t, secret, json!({"model": "nope", "input": "hi"})).await;
    assert_eq!((status, v["error"]["code"].clone()), (404, json!("model_not_found")), "{v}");
    let (status, _) = t
        .request(
            reqwest::Method::POST,
            "/v1/embeddings",
            None,
            Some(RawBody::Json(json!({"model": "embed-test", "input": "hi"}))),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = embed(&t, secret, json!({"model": "embed-test", "input": []})).await;
    assert_eq!(status, 400);
    assert_eq!(mock.stats().requests, 2, "refused calls never reached the provider");
    let text =
        t.http.get(format!("{}/metrics", t.base_url)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("qlaud_model_requests_total{endpoint=\"embeddings\"} 2"), "{text}");
    t.stop().await;
}

async fn large_inputs_are_reserved_before_the_provider(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    // 2,048 inputs of 1 KB: about 2 MB, which the provider could bill up to
    // its 300,000-token window ($0.006); a $0.005 cap cannot hold it.
    let inputs: Vec<String> = (0..2048).map(|i| format!("{i} {}", "z".repeat(1000))).collect();
    let key = t.mint(json!({"name": "small", "max_spend_usd": 0.005})).await;
    let (status, v) =
        embed(&t, key["secret"].as_str().unwrap(), json!({"model": "embed-test", "input": inputs}))
            .await;
    assert_eq!(status, 402, "{}", v["error"]);
    assert_eq!(v["error"]["code"], "spend_cap_reached");
    assert_eq!(mock.stats().requests, 0);
    let key = t.mint(json!({"name": "big", "max_spend_usd": 0.007})).await;
    let (status, v) =
        embed(&t, key["secret"].as_str().unwrap(), json!({"model": "embed-test", "input": inputs}))
            .await;
    assert_eq!(status, 200, "{}", v["error"]);
    assert_eq!(v["usage"]["prompt_tokens"], 4096);
    let totals = spent(&t, key["id"].as_str().unwrap()).await;
    assert_eq!(totals["cost_micros"], 82, "4,096 tokens × $0.02 per million, rounded up");
    t.stop().await;
}
