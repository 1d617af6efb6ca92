//! Per-key rate limits, on SQLite and PostgreSQL: the 61st request of a
//! minute on a 60 RPM key is refused with 429 across two servers sharing one
//! store, in each endpoint's own shape with the headers the official clients
//! read; tokens per minute count reservations and give back what went
//! unused; tenant defaults from qlaud.toml; keys without limits unaffected.

use qlaud_tests::{Backend, TestServer, backend_tests};
use serde_json::{Value, json};

backend_tests!(
    sixty_first_request_is_refused_across_two_servers,
    tokens_per_minute_count_reservations_and_give_back,
    tenant_defaults_apply_to_keys_without_their_own,
    limits_are_set_shown_and_removed,
);

/// Moves the test clock to just after the start of a minute, so the test's
/// requests all fall in one window.
fn to_minute_start(t: &TestServer) {
    let now = t.clock_now_ms();
    t.clock.advance_ms(60_000 - now.rem_euclid(60_000) + 50);
}

async fn post(
    t: &TestServer,
    base: &str,
    path: &str,
    key: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = t
        .http
        .post(format!("{base}{path}"))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let v = resp.json().await.unwrap_or(Value::Null);
    (status, headers, v)
}

fn message() -> Value {
    json!({"model": "echo", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
}

async fn sixty_first_request_is_refused_across_two_servers(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else { return };
    let mut config =
        qlaud_server::ServeConfig::new("127.0.0.1:0".parse().unwrap(), t.db.url.clone());
    config.clock = t.clock.clone();
    let second = qlaud_server::Server::start(&config).await.unwrap();
    let second_url = format!("http://{}", second.local_addr());
    let limited = t.mint(json!({"name": "rpm", "max_requests_per_minute": 60})).await;
    let free = t.mint(json!({"name": "free"})).await;
    let (limited, free) = (limited["secret"].as_str().unwrap(), free["secret"].as_str().unwrap());
    to_minute_start(&t);
    for i in 0..60 {
        let base = if i % 2 == 0 { &t.base_url } else { &second_url };
        let (status, _, v) = post(&t, base, "/v1/messages", limited, message()).await;
        assert_eq!(status, 200, "request {i}: {v}");
    }
    // The 61st, on either server, in Anthropic's shape …
    let (status, h, v) = post(&t, &second_url, "/v1/messages", limited, message()).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let retry: i64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(h["anthropic-ratelimit-requests-limit"], "60");
    assert_eq!(h["anthropic-ratelimit-requests-remaining"], "0");
    assert!(h.contains_key("anthropic-ratelimit-requests-reset"));
    assert_eq!(h["x-ratelimit-limit-requests"], "60");
    // … and in OpenAI's.
    let chat =
        json!({"model": "echo", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    let (status, h, v) = post(&t, &t.base_url, "/v1/chat/completions", limited, chat.clone()).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(h.contains_key("retry-after"));
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    assert!(h["x-ratelimit-reset-requests"].to_str().unwrap().ends_with('s'));
    // A key without limits is unaffected in the same minute.
    for _ in 0..70 {
        let (status, _, v) = post(&t, &second_url, "/v1/messages", free, message()).await;
        assert_eq!(status, 200, "{v}");
    }
    // The next minute admits again, as retry-after said.
    t.clock.advance_ms(retry * 1000);
    let (status, _, v) = post(&t, &t.base_url, "/v1/chat/completions", limited, chat).await;
    assert_eq!(status, 200, "{v}");
    second.close().await.unwrap();
}

async fn tokens_per_minute_count_reservations_and_give_back(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else { return };
    // Each echo request reserves its prompt bound plus 100 output tokens,
    // (464 tokens for this one) and uses far fewer: without the give-back
    // at settlement the fourth request would not fit 1500.
    let key = t.mint(json!({"name": "tpm", "max_tokens_per_minute": 1500})).await;
    let key = key["secret"].as_str().unwrap();
    let body = json!({"model": "echo", "max_tokens": 100,
                      "messages": [{"role": "user", "content": "hi"}]});
    to_minute_start(&t);
    for i in 0..10 {
        let (status, _, v) = post(&t, &t.base_url, "/v1/messages", key, body.clone()).await;
        assert_eq!(status, 200, "request {i}: {v}");
    }
    // A request whose own reservation is over the limit is refused whole.
    let big = json!({"model": "echo", "max_tokens": 2000,
                     "messages": [{"role": "user", "content": "hi"}]});
    let (status, h, v) = post(&t, &t.base_url, "/v1/messages", key, big).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(h["anthropic-ratelimit-tokens-limit"], "1500");
    assert!(v["error"]["message"].as_str().unwrap().contains("this request alone"), "{v}");
}

async fn tenant_defaults_apply_to_keys_without_their_own(backend: Backend) {
    let toml = "[rate_limits]\nmax_requests_per_minute = 3\n";
    let Some(t) = TestServer::start_with(backend, Some(toml)).await else { return };
    let plain = t.mint(json!({"name": "plain"})).await;
    let own = t.mint(json!({"name": "own", "max_requests_per_minute": 5})).await;
    let (plain, own) = (plain["secret"].as_str().unwrap(), own["secret"].as_str().unwrap());
    to_minute_start(&t);
    let mut admitted = (0, 0);
    for _ in 0..6 {
        if post(&t, &t.base_url, "/v1/messages", plain, message()).await.0 == 200 {
            admitted.0 += 1;
        }
        if post(&t, &t.base_url, "/v1/messages", own, message()).await.0 == 200 {
            admitted.1 += 1;
        }
    }
    assert_eq!(admitted, (3, 5));
}

async fn limits_are_set_shown_and_removed(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else { return };
    let key = t
        .mint(json!({"name": "k", "max_requests_per_minute": 10, "max_tokens_per_minute": 5000}))
        .await;
    assert_eq!(key["max_requests_per_minute"], 10);
    assert_eq!(key["max_tokens_per_minute"], 5000);
    let id = key["id"].as_str().unwrap();
    let path = format!("/v1/keys/{id}");
    let patch = |body: Value| {
        let t = &t;
        let path = path.clone();
        async move {
            let resp = t
                .http
                .patch(format!("{}{path}", t.base_url))
                .bearer_auth(&t.master_key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, v) = patch(json!({"max_requests_per_minute": 20})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["max_requests_per_minute"], 20);
    assert_eq!(v["max_tokens_per_minute"], 5000);
    let (status, v) = patch(json!({"max_requests_per_minute": 0})).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = patch(json!({"remove_rate_limits": true, "max_tokens_per_minute": 5})).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = patch(json!({"remove_rate_limits": true})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["max_requests_per_minute"], Value::Null);
    assert_eq!(v["max_tokens_per_minute"], Value::Null);
    let (status, _, _) = post(
        &t,
        &t.base_url,
        "/v1/keys",
        &t.master_key,
        json!({"name": "z", "max_requests_per_minute": 0}),
    )
    .await;
    assert_eq!(status, 400);
}
