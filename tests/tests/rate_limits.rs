//! Per-key rate limits, on SQLite and PostgreSQL: the 61st request of a
//! minute on a 60 RPM key is refused with 429 across two servers sharing one
//! store, in each endpoint's own shape with the headers the official clients
//! read; tokens per minute count reservations and give back what went
//! unused; tenant defaults from qlaud.toml; keys without limits unaffected.
//! Successful answers carry the key's budget as the official APIs send it
//! (Anthropic's headers on /v1/messages, OpenAI's on chat completions,
//! responses and embeddings, streams on their head), remaining counting
//! down, and none for a key without limits.

use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, TestServer, backend_tests, mock_toml};
use serde_json::{Value, json};

backend_tests!(
    sixty_first_request_is_refused_across_two_servers,
    tokens_per_minute_count_reservations_and_give_back,
    tenant_defaults_apply_to_keys_without_their_own,
    limits_are_set_shown_and_removed,
    successful_answers_carry_the_budget_in_each_shape,
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
    // The tenant's default is the budget a success reports too.
    t.clock.advance_ms(60_000);
    let (status, h, _) = post(&t, &t.base_url, "/v1/messages", plain, message()).await;
    assert_eq!(status, 200);
    assert_eq!(h["anthropic-ratelimit-requests-limit"], "3");
    assert_eq!(h["anthropic-ratelimit-requests-remaining"], "2");
    assert!(!h.contains_key("anthropic-ratelimit-tokens-limit"));
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

/// A header's value as text, or `None`.
fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

fn number(h: &reqwest::header::HeaderMap, name: &str) -> i64 {
    header(h, name).unwrap_or_else(|| panic!("no {name} in {h:?}")).parse().unwrap()
}

/// POSTs a streamed request and returns its head's headers (the body read
/// whole, so the call is settled like any other).
async fn post_stream(
    t: &TestServer,
    path: &str,
    key: &str,
    mut body: Value,
) -> reqwest::header::HeaderMap {
    body["stream"] = json!(true);
    let resp = t
        .http
        .post(format!("{}{path}", t.base_url))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert!(resp.text().await.unwrap().contains("data:"));
    headers
}

/// Checks one Anthropic-shaped success: its budget headers, remaining
/// `requests_left` requests and fewer tokens than `tokens_before`, and no
/// OpenAI ones; returns the tokens left.
fn anthropic_budget(h: &reqwest::header::HeaderMap, requests_left: i64, tokens_before: i64) -> i64 {
    assert_eq!(number(h, "anthropic-ratelimit-requests-limit"), 20);
    assert_eq!(number(h, "anthropic-ratelimit-requests-remaining"), requests_left);
    assert_eq!(number(h, "anthropic-ratelimit-tokens-limit"), 100_000);
    let tokens = number(h, "anthropic-ratelimit-tokens-remaining");
    assert!(tokens < tokens_before, "{tokens} !< {tokens_before}");
    for name in ["anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset"] {
        let reset = chrono::DateTime::parse_from_rfc3339(header(h, name).unwrap()).unwrap();
        assert_eq!(reset.timestamp() % 60, 0, "the window ends on a minute: {reset}");
    }
    assert!(h.keys().all(|k| !k.as_str().starts_with("x-ratelimit")), "{h:?}");
    assert!(!h.contains_key("retry-after"));
    tokens
}

/// Milliseconds of a duration in OpenAI's form (`20ms`, `59.95s`, `1m0s`).
fn duration_ms(text: &str) -> Option<i64> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().ok();
    }
    let rest = text.strip_suffix('s')?;
    let (minutes, seconds) = match rest.split_once('m') {
        Some((m, s)) => (m.parse::<i64>().ok()?, s),
        None => (0, rest),
    };
    let seconds: f64 = seconds.parse().ok()?;
    Some(minutes * 60_000 + (seconds * 1000.0).round() as i64)
}

/// The same for an OpenAI-shaped success.
fn openai_budget(h: &reqwest::header::HeaderMap, requests_left: i64, tokens_before: i64) -> i64 {
    assert_eq!(number(h, "x-ratelimit-limit-requests"), 20);
    assert_eq!(number(h, "x-ratelimit-remaining-requests"), requests_left);
    assert_eq!(number(h, "x-ratelimit-limit-tokens"), 100_000);
    let tokens = number(h, "x-ratelimit-remaining-tokens");
    assert!(tokens < tokens_before, "{tokens} !< {tokens_before}");
    for name in ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"] {
        // OpenAI's duration form, within the minute.
        let reset = header(h, name).unwrap();
        let ms = duration_ms(reset).unwrap_or_else(|| panic!("{name}: {reset}"));
        assert!((1..=60_000).contains(&ms), "{name}: {reset}");
    }
    assert!(h.keys().all(|k| !k.as_str().starts_with("anthropic-ratelimit")), "{h:?}");
    tokens
}

async fn successful_answers_carry_the_budget_in_each_shape(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let limited = t
        .mint(json!({"name": "budget", "max_requests_per_minute": 20,
                     "max_tokens_per_minute": 100_000}))
        .await;
    let free = t.mint(json!({"name": "free"})).await;
    let (key, free) = (limited["secret"].as_str().unwrap(), free["secret"].as_str().unwrap());
    to_minute_start(&t);
    let claude = json!({"model": "claude-test", "max_tokens": 50,
                        "messages": [{"role": "user", "content": "one two three"}]});
    let gpt = json!({"model": "gpt-test", "max_tokens": 50,
                     "messages": [{"role": "user", "content": "one two three"}]});
    // Anthropic's shape: JSON (a provider's and the offline model's), then
    // a stream, whose head carries them. The same request again leaves
    // fewer tokens: the first one's use stays counted in the window.
    const FULL: i64 = 100_001;
    let (status, h, v) = post(&t, &t.base_url, "/v1/messages", key, claude.clone()).await;
    assert_eq!(status, 200, "{v}");
    let tokens = anthropic_budget(&h, 19, FULL);
    let (status, h, v) = post(&t, &t.base_url, "/v1/messages", key, claude.clone()).await;
    assert_eq!(status, 200, "{v}");
    anthropic_budget(&h, 18, tokens);
    let (status, h, v) = post(&t, &t.base_url, "/v1/messages", key, message()).await;
    assert_eq!(status, 200, "{v}");
    anthropic_budget(&h, 17, FULL);
    let h = post_stream(&t, "/v1/messages", key, claude.clone()).await;
    anthropic_budget(&h, 16, FULL);
    // A GPT model through Anthropic's shape still answers in its headers.
    let (status, h, v) = post(&t, &t.base_url, "/v1/messages", key, gpt.clone()).await;
    assert_eq!(status, 200, "{v}");
    anthropic_budget(&h, 15, FULL);
    // OpenAI's shape: chat completions (JSON, streamed), responses (passed
    // through, streamed and translated), embeddings. The calls above are
    // settled first (a usage report waits for that): a settlement landing
    // between the next two would give back more tokens than one reserves.
    let (status, _) = t.request(reqwest::Method::GET, "/v1/usage", Some(&t.master_key), None).await;
    assert_eq!(status, 200);
    let (status, h, v) = post(&t, &t.base_url, "/v1/chat/completions", key, gpt.clone()).await;
    assert_eq!(status, 200, "{v}");
    let tokens = openai_budget(&h, 14, FULL);
    let (status, h, v) = post(&t, &t.base_url, "/v1/chat/completions", key, gpt.clone()).await;
    assert_eq!(status, 200, "{v}");
    openai_budget(&h, 13, tokens);
    let h = post_stream(&t, "/v1/chat/completions", key, gpt.clone()).await;
    openai_budget(&h, 12, FULL);
    let response = json!({"model": "gpt-test", "input": "one two three", "max_output_tokens": 50});
    let (status, h, v) = post(&t, &t.base_url, "/v1/responses", key, response.clone()).await;
    assert_eq!(status, 200, "{v}");
    openai_budget(&h, 11, FULL);
    let h = post_stream(&t, "/v1/responses", key, response).await;
    openai_budget(&h, 10, FULL);
    let translated = json!({"model": "claude-test", "input": "one two", "max_output_tokens": 50});
    let (status, h, v) = post(&t, &t.base_url, "/v1/responses", key, translated).await;
    assert_eq!(status, 200, "{v}");
    openai_budget(&h, 9, FULL);
    let embed = json!({"model": "embed-test", "input": "one two three"});
    let (status, h, v) = post(&t, &t.base_url, "/v1/embeddings", key, embed.clone()).await;
    assert_eq!(status, 200, "{v}");
    openai_budget(&h, 8, FULL);
    // A key without limits gets none of them, in either shape.
    let none = |h: &reqwest::header::HeaderMap| {
        h.keys().all(|k| {
            !k.as_str().starts_with("x-ratelimit") && !k.as_str().starts_with("anthropic-ratelimit")
        })
    };
    for (path, body) in
        [("/v1/messages", claude.clone()), ("/v1/chat/completions", gpt), ("/v1/embeddings", embed)]
    {
        let (status, h, v) = post(&t, &t.base_url, path, free, body).await;
        assert_eq!(status, 200, "{v}");
        assert!(none(&h), "{path}: {h:?}");
    }
    assert!(none(&post_stream(&t, "/v1/messages", free, claude).await));
}
