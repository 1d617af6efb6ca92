//! The hard cap against a hostile end user: a standard key, the official
//! wire formats, and a provider that bills the most it could for what it is
//! sent (the mock's `greedy` mode: every byte of the body as an input token,
//! every choice to its output limit, documents at 100,000 tokens) or that
//! reports no usage at all (`nousage`). Each of the holes first seen with
//! these requests is a test here, with the numbers it was seen with, on
//! SQLite and PostgreSQL.

use futures::StreamExt;
use qlaud_tests::mock::{MockStats, MockUpstream};
use qlaud_tests::{Backend, TestServer, backend_tests, ledger_state, mock_toml};
use serde_json::{Value, json};

backend_tests!(
    n_choices_are_reserved_for_every_choice,
    concurrent_n_choices_stay_within_the_cap,
    fields_outside_the_messages_count_toward_the_prompt,
    attachments_by_url_reserve_the_context_window,
    a_stream_cut_before_its_usage_bills_the_prompt_bound,
    replies_without_usage_are_billed,
    both_output_limits_are_reserved_by_the_larger,
    generated_requests_never_cost_more_than_reserved,
    mixed_hostile_load_on_one_key,
);

/// Real-sized models in front of the mock's greedy and no-usage modes,
/// priced like `gpt-test` ($1.25 / $10 per million) and `claude-test`
/// ($3 / $15, cache writes $3.75).
fn hostile_toml(mock: &MockUpstream) -> String {
    // Providers of their own with a generous timeout: hundreds of requests
    // in flight on two cores must not turn into provider timeouts.
    let mut toml = mock_toml(mock);
    toml.push_str(&format!(
        "\n[providers.hostile-openai]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         api_key = \"mock-openai-key\"\ntimeout_secs = 60\n\
         \n[providers.hostile-anthropic]\nkind = \"anthropic\"\nbase_url = \"{}\"\n\
         api_key = \"mock-anthropic-key\"\ntimeout_secs = 60\n",
        mock.openai_base_url(),
        mock.anthropic_base_url()
    ));
    let gpt = r#"prices = { input = "1.25", output = "10", cache_read = "0.125" }"#;
    let claude =
        r#"prices = { input = "3", output = "15", cache_read = "0.3", cache_write = "3.75" }"#;
    for mode in ["greedy", "greedy-slow", "greedy-cut", "nousage", "greedy-nousage"] {
        toml.push_str(&format!(
            "\n[models.\"gpt-5.4-{mode}\"]\nprovider = \"hostile-openai\"\n\
             upstream = \"gpt-{mode}\"\nmax_output_tokens = 128000\ncontext_window = 1000000\n\
             {gpt}\n\n[models.\"claude-{mode}-x\"]\nprovider = \"hostile-anthropic\"\n\
             upstream = \"claude-{mode}\"\nmax_output_tokens = 64000\n\
             context_window = 1000000\n{claude}\n"
        ));
    }
    toml
}

/// What the provider billed, by the mock's counts: `(input, output)` prices
/// in micro-dollars per million tokens; rounded down, since qlaud rounds
/// each request up.
fn billed(stats: &MockStats, prices: (i64, i64)) -> i64 {
    let pico = stats.input_tokens as i128 * prices.0 as i128
        + stats.output_tokens as i128 * prices.1 as i128;
    (pico / 1_000_000) as i64
}

const GPT: (i64, i64) = (1_250_000, 10_000_000);
const CLAUDE: (i64, i64) = (3_000_000, 15_000_000);

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn post(t: &TestServer, path: &str, key: &str, body: &Value) -> Answer {
    let resp = t
        .http
        .post(format!("{}{path}", t.base_url))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer { status, headers, body }
}

/// Opens a stream, reads `events` server-sent events, and drops it.
async fn cut_stream(t: &TestServer, path: &str, key: &str, body: &Value, events: usize) -> u16 {
    let resp = t
        .http
        .post(format!("{}{path}", t.base_url))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return status;
    }
    let mut body = resp.bytes_stream();
    let mut seen = 0;
    let mut text = Vec::new();
    while seen < events {
        let Some(Ok(chunk)) = body.next().await else { break };
        text.extend_from_slice(&chunk);
        seen = text.windows(2).filter(|w| w == b"\n\n").count();
    }
    status
}

/// Requests whose provider-reported cost exceeded their reservation.
async fn overruns(t: &TestServer) -> u64 {
    let text =
        t.http.get(format!("{}/metrics", t.base_url)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("qlaud_reservation_overruns_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the overrun counter is exported")
}

async fn user(t: &TestServer, cap_usd: f64) -> (String, String) {
    let key = t.mint(json!({"name": "hostile", "max_spend_usd": cap_usd})).await;
    (key["id"].as_str().unwrap().to_string(), key["secret"].as_str().unwrap().to_string())
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]})
}

fn with(mut body: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Seen: cap $0.05, `n: 128, max_tokens: 100` → settled 128,017 µ$.
async fn n_choices_are_reserved_for_every_choice(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&hostile_toml(&mock))).await else { return };
    let (id, secret) = user(&t, 0.05).await;
    let body = with(hello("gpt-5.4-greedy"), json!({"n": 128, "max_tokens": 100}));
    let a = post(&t, "/v1/chat/completions", &secret, &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["choices"].as_array().unwrap().len(), 128);
    // The limit was lowered so that all 128 choices fit the budget.
    let limit: u64 = a.headers["qlaud-max-tokens-clamped"].to_str().unwrap().parse().unwrap();
    assert!((16..100).contains(&limit), "{limit}");
    let stats = mock.stats();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.last_body.as_ref().unwrap()["max_tokens"], limit);
    assert_eq!(stats.output_tokens, 128 * limit, "the provider billed every choice to its limit");
    let (cost, _) = t.key_spend(&id).await;
    assert!(cost <= 50_000, "spent {cost} µ$ of a 50,000 µ$ cap");
    assert_eq!(a.body["usage"]["cost_micros"], cost);
    assert!(cost >= billed(&stats, GPT) && cost <= billed(&stats, GPT) + 1);
    // Past OpenAI's limit, or nonsense: refused before the provider.
    for n in [json!(129), json!(0), json!("8"), json!(1.5)] {
        let a = post(
            &t,
            "/v1/chat/completions",
            &secret,
            &with(hello("gpt-5.4-greedy"), json!({"n": n})),
        )
        .await;
        assert_eq!(a.status, 400, "{}", a.body);
        assert_eq!(a.body["error"]["type"], "invalid_request_error");
    }
    // A Claude model answers one choice: n > 1 is refused, not silently 1.
    let a =
        post(&t, "/v1/chat/completions", &secret, &with(hello("claude-greedy-x"), json!({"n": 2})))
            .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(mock.stats().requests, 1);
    assert_eq!(overruns(&t).await, 0);
    t.stop().await;
}

/// Seen: cap $5, 50 concurrent `n: 8, max_tokens: 5000` → all admitted,
/// settled $20.000850.
async fn concurrent_n_choices_stay_within_the_cap(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&hostile_toml(&mock))).await else { return };
    let (id, secret) = user(&t, 5.0).await;
    let body = with(hello("gpt-5.4-greedy"), json!({"n": 8, "max_tokens": 5000}));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (http, url, secret, body) = (
                t.http.clone(),
                format!("{}/v1/chat/completions", t.base_url),
                secret.clone(),
                body.clone(),
            );
            tokio::spawn(async move {
                // Held at the provider a while, so reservations overlap.
                let resp = http
                    .post(url)
                    .bearer_auth(secret)
                    .header("x-mock-delay-ms", "200")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                resp.status().as_u16()
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.unwrap() {
            200 => admitted += 1,
            402 => {}
            other => panic!("status {other}"),
        }
    }
    assert!((1..50).contains(&admitted), "admitted {admitted} of 50");
    let cost = t.settled(&id, admitted).await;
    let stats = mock.stats();
    assert_eq!(stats.requests, admitted, "the provider saw exactly the admitted requests");
    assert!(cost <= 5_000_000, "spent {cost} µ$ of a $5 cap");
    assert!(cost >= billed(&stats, GPT) && cost <= billed(&stats, GPT) + admitted as i64);
    assert_eq!(ledger_state(&t.db.url, &id).await, (cost, 0, 0));
    assert_eq!(overruns(&t).await, 0);
    t.stop().await;
}

/// Seen: 400 KB in `functions` or `response_format.json_schema`, cap $0.01,
/// `max_tokens: 16` → admitted, settled ≈ 125,200 µ$.
async fn fields_outside_the_messages_count_toward_the_prompt(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&hostile_toml(&mock))).await else { return };
    let (id, secret) = user(&t, 0.01).await;
    let big = "x".repeat(400_000);
    let holes = [
        json!({"functions": [{"name": "f", "description": big, "parameters": {"type": "object"}}]}),
        json!({"response_format": {"type": "json_schema",
               "json_schema": {"name": "s", "schema": {"type": "object", "description": big}}}}),
        json!({"x_vendor_context": big}),
        json!({"tools": [{"type": "function", "function": {"name": "f", "description": big}}]}),
    ];
    for extra in holes {
        let body = with(hello("gpt-5.4-greedy"), json!({"max_tokens": 16}));
        let a = post(&t, "/v1/chat/completions", &secret, &with(body, extra)).await;
        assert_eq!(a.status, 402, "{}", a.body);
        assert_eq!(a.body["error"]["code"], "spend_cap_reached");
    }
    // The same through the Anthropic shape, to either provider.
    for model in ["claude-greedy-x", "gpt-5.4-greedy"] {
        let body = json!({"model": model, "max_tokens": 16, "metadata": {"user_id": big},
                          "messages": [{"role": "user", "content": "hi"}],
                          "tools": [{"name": "t", "description": big, "input_schema": {"type": "object"}}]});
        let a = post(&t, "/v1/messages", &secret, &body).await;
        assert_eq!(a.status, 402, "{model}: {}", a.body);
    }
    assert_eq!(mock.stats().requests, 0, "nothing reached the provider");
    assert_eq!(t.key_spend(&id).await, (0, 0));
    // Within budget, the same kind of request is served and billed at least
    // what the provider billed, within its reservation.
    let (id, secret) = user(&t, 0.2).await;
    let body = with(
        hello("gpt-5.4-greedy"),
        json!({"max_tokens": 16, "functions": [{"name": "f", "description": "y".repeat(40_000)}]}),
    );
    let a = post(&t, "/v1/chat/completions", &secret, &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let stats = mock.stats();
    assert!(
        stats.input_tokens > 40_000,
        "the provider billed the functions: {}",
        stats.input_tokens
    );
    let (cost, _) = t.key_spend(&id).await;
    assert!(cost >= billed(&stats, GPT) && cost <= 200_000, "{cost}");
    assert_eq!(overruns(&t).await, 0);
    t.stop().await;
}

/// Seen: an Anthropic `document` by URL on a $0.001 cap → admitted, settled
/// at 100× the cap.
async fn attachments_by_url_reserve_the_context_window(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&hostile_toml(&mock))).await else { return };
    let (id, secret) = user(&t, 0.001).await;
    let doc = json!({"type": "document", "source": {"type": "url", "url": "https://example.com/big.pdf"}});
    let body = json!({"model": "claude-greedy-x", "max_tokens": 64, "messages": [{"role": "user",
                      "content": [doc, {"type": "text", "text": "Summarise"}]}]});
    let a = post(&t, "/v1/messages", &secret, &body).await;
    assert_eq!(a.status, 402, "{}", a.body);
    let file = json!({"model": "gpt-5.4-greedy", "max_tokens": 64, "messages": [{"role": "user",
                      "content": [{"type": "file", "file": {"file_id": "file-abc123"}},
                                  {"type": "text", "text": "Summarise"}]}]});
    assert_eq!(post(&t, "/v1/chat/completions", &secret, &file).await.status, 402);
    assert_eq!(mock.stats().requests, 0);
    assert_eq!(t.key_spend(&id).await, (0, 0));
    // A budget that covers the whole window is served, and billed at least
    // what the provider billed for the document.
    let (id, secret) = user(&t, 10.0).await;
    let a = post(&t, "/v1/messages", &secret, &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let stats = mock.stats();
    assert!(stats.input_tokens >= 100_000, "{}", stats.input_tokens);
    let (cost, _) = t.key_spend(&id).await;
    assert!(cost >= billed(&stats, CLAUDE), "{cost} < {}", billed(&stats, CLAUDE));
    assert_eq!(overruns(&t).await, 0);
    t.stop().await;
}

/// Seen: cap $1, a stream with a 400 KB `tools` entry, the client gone after
/// 5 events → billed 68 µ$ against the provider's ~$0.125; repeatable
/// forever without reaching the cap (28 µ$ through /v1/messages).
async fn a_stream_cut_before_its_usage_bills_the_prompt_bound(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&hostile_toml(&mock))).await else { return };
    let big = "z".repeat(400_000);
    let chat = json!({"model": "gpt-5.4-greedy-slow", "stream": true, "max_tokens": 200,
                      "messages": [{"role": "user", "content": "Say hello"}],
                      "tools": [{"type": "function", "function": {"name": "f", "description": big}}]});
    let messages = json!({"model": "gpt-5.4-greedy-slow", "stream": true, "max_tokens": 200,
                          "messages": [{"role": "user", "content": "Say hello"}],
                          "tools": [{"name": "f", "description": big, "input_schema": {"type": "object"}}]});
    for (path, body) in [("/v1/chat/completions", chat), ("/v1/messages", messages)] {
        mock.reset_stats();
        let (id, secret) = user(&t, 1.0).await;
        let mut admitted = 0;
        let mut refused = false;
        for _ in 0..10 {
            match cut_stream(&t, path, &secret, &body, 5).await {
                200 => admitted += 1,
                402 => {
                    refused = true;
                    break;
                }
                other => panic!("{path}: status {other}"),
            }
            // Each cut stream is settled before the next one is admitted.
            t.settled(&id, admitted).await;
        }
        assert!(refused, "{path}: {admitted} cut streams and the cap never bit");
        assert!(admitted >= 1, "{path}");
        let cost = t.settled(&id, admitted).await;
        let stats = mock.stats();
        assert_eq!(stats.requests, admitted);
        assert!(stats.input_tokens > 400_000 * admitted, "{path}: {}", stats.input_tokens);
        assert!(
            cost >= billed(&stats, GPT),
            "{path}: billed {cost} µ$ < the provider's {}",
            billed(&stats, GPT)
        );
        assert!(cost <= 1_000_000, "{path}: spent {cost} µ$ of a $1 cap");
        assert_eq!(ledger_state(&t.db.url, &id).await.1, 0, "{path}: nothing left reserved");
    }
    // Cut mid-stream by the provider itself, in both shapes: the same rule.
    for (path, model, prices) in [
        ("/v1/chat/completions", "gpt-5.4-greedy-cut", GPT),
        ("/v1/messages", "gpt-5.4-greedy-cut", GPT),
        ("/v1/messages", "claude-greedy-cut-x", CLAUDE),
        ("/v1/chat/completions", "claude-greedy-cut-x", CLAUDE),
    ] {
        mock.reset_stats();
        let (id, secret) = user(&t, 1.0).await;
        let body = json!({"model": model, "stream": true, "max_tokens": 50,
                          "messages": [{"role": "user", "content": "Say hello"}]});
        let resp = t
            .http
            .post(format!("{}{path}", t.base_url))
            .bearer_auth(&secret)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await;
        let cost = t.settled(&id, 1).await;
        let stats = mock.stats();
        assert!(
            cost >= billed(&stats, prices),
            "{path} {model}: {cost} < {}",
            billed(&stats, prices)
        );
    }
    assert_eq!(overruns(&t).await, 0);
    t.stop().await;
}

/// Seen: a non-streamed reply without a `usage` object settled at $0.
async fn replies_without_usage_are_billed(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&hostile_toml(&mock))).await else { return };
    let cases = [
        ("/v1/chat/completions", "gpt-5.4-nousage", false, GPT),
        ("/v1/chat/completions", "gpt-5.4-nousage", true, GPT),
        ("/v1/messages", "gpt-5.4-nousage", false, GPT),
        ("/v1/messages", "gpt-5.4-nousage", true, GPT),
        ("/v1/messages", "claude-nousage-x", false, CLAUDE),
        ("/v1/messages", "claude-nousage-x", true, CLAUDE),
        ("/v1/chat/completions", "claude-nousage-x", false, CLAUDE),
        ("/v1/chat/completions", "claude-nousage-x", true, CLAUDE),
        ("/v1/chat/completions", "gpt-5.4-greedy-nousage", false, GPT),
        ("/v1/messages", "claude-greedy-nousage-x", true, CLAUDE),
    ];
    for (path, model, stream, prices) in cases {
        mock.reset_stats();
        let (id, secret) = user(&t, 1.0).await;
        let body = json!({"model": model, "stream": stream, "max_tokens": 40,
                          "messages": [{"role": "user", "content": "tell me about the sea"}]});
        let resp = t
            .http
            .post(format!("{}{path}", t.base_url))
            .bearer_auth(&secret)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path} {model} {stream}");
        let _ = resp.bytes().await;
        let cost = t.settled(&id, 1).await;
        let stats = mock.stats();
        assert!(stats.output_tokens > 0);
        assert!(cost > 0, "{path} {model} {stream}: settled at $0");
        assert!(
            cost >= billed(&stats, prices),
            "{path} {model} stream={stream}: {cost} < {}",
            billed(&stats, prices)
        );
    }
    assert_eq!(overruns(&t).await, 0);
    t.stop().await;
}

/// Seen: `max_tokens` and `max_completion_tokens` both sent: reserved by the
/// smaller, both forwarded, and a provider honouring the larger overshoots.
async fn both_output_limits_are_reserved_by_the_larger(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&hostile_toml(&mock))).await else { return };
    let body =
        with(hello("gpt-5.4-greedy"), json!({"max_tokens": 16, "max_completion_tokens": 4000}));
    let (id, secret) = user(&t, 1.0).await;
    let a = post(&t, "/v1/chat/completions", &secret, &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let stats = mock.stats();
    let sent = stats.last_body.clone().unwrap();
    assert_eq!(
        (sent["max_tokens"].clone(), sent["max_completion_tokens"].clone()),
        (json!(4000), json!(4000))
    );
    assert_eq!(stats.output_tokens, 4000);
    let (cost, _) = t.key_spend(&id).await;
    assert!(cost >= billed(&stats, GPT) && cost <= billed(&stats, GPT) + 1);
    // On a budget that pays for less, both are lowered to the same limit.
    mock.reset_stats();
    let (id, secret) = user(&t, 0.01).await;
    let a = post(&t, "/v1/chat/completions", &secret, &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let limit: u64 = a.headers["qlaud-max-tokens-clamped"].to_str().unwrap().parse().unwrap();
    let stats = mock.stats();
    let sent = stats.last_body.clone().unwrap();
    assert_eq!(
        (sent["max_tokens"].clone(), sent["max_completion_tokens"].clone()),
        (json!(limit), json!(limit))
    );
    assert_eq!(stats.output_tokens, limit);
    let (cost, _) = t.key_spend(&id).await;
    assert!(cost <= 10_000, "{cost}");
    assert_eq!(overruns(&t).await, 0);
    t.stop().await;
}

/// A small deterministic generator (xorshift), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// Text with escapes, multi-byte characters and control characters.
    fn text(&mut self, max: u64) -> String {
        let alphabet = ["a", "word ", "é", "日本", "\"", "\\", "\n", "\t", "\u{1}", "🙂", "</s>"];
        let len = self.below(max + 1);
        (0..len).map(|_| alphabet[self.below(alphabet.len() as u64) as usize]).collect()
    }
    fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth > 2 { 4 } else { 6 }) {
            0 => json!(self.text(200)),
            1 => json!(self.next() as i64),
            2 => json!(self.below(1000) as f64 / 7.0),
            3 => json!(self.chance(50)),
            4 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
            _ => Value::Object(
                (0..self.below(4))
                    .map(|i| (format!("k{i}_{}", self.text(5)), self.value(depth + 1)))
                    .collect(),
            ),
        }
    }
}

/// A random request in `shape` ("messages" or "chat"): random text, unknown
/// fields, tools, images, attachments and output limits.
fn generated(rng: &mut Rng, shape: &str, model: &str, stream: bool) -> Value {
    let image = |rng: &mut Rng| {
        let data = "QUJD".repeat(rng.below(20_000) as usize + 1);
        if shape == "messages" {
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}})
        } else {
            json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{data}")}})
        }
    };
    let mut messages = Vec::new();
    for i in 0..=rng.below(4) {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        let content = if role == "user" && rng.chance(40) {
            let mut parts = vec![json!({"type": "text", "text": rng.text(3000)})];
            if rng.chance(50) {
                parts.push(image(rng));
            }
            json!(parts)
        } else {
            json!(rng.text(3000))
        };
        messages.push(json!({"role": role, "content": content}));
    }
    if messages.len() % 2 == 0 {
        messages.push(json!({"role": "user", "content": rng.text(500)}));
    }
    let mut body = json!({"model": model, "messages": messages, "stream": stream});
    let limit = rng.below(300) + 1;
    if shape == "messages" {
        body["max_tokens"] = json!(limit);
        if rng.chance(40) {
            body["system"] = json!(rng.text(5000));
        }
        if rng.chance(30) {
            body["tools"] = json!([{"name": "lookup", "description": rng.text(5000),
                                    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]);
        }
    } else {
        match rng.below(3) {
            0 => body["max_tokens"] = json!(limit),
            1 => body["max_completion_tokens"] = json!(limit),
            _ => {
                body["max_tokens"] = json!(rng.below(300) + 1);
                body["max_completion_tokens"] = json!(limit);
            }
        }
        if rng.chance(30) {
            body["tools"] = json!([{"type": "function", "function": {"name": "lookup",
                                    "description": rng.text(5000), "parameters": {"type": "object"}}}]);
        }
        if rng.chance(30) && !model.starts_with("claude") {
            body["n"] = json!(rng.below(6) + 1);
        }
        if rng.chance(20) && !model.starts_with("claude") {
            body["prediction"] = json!({"type": "content", "content": rng.text(2000)});
        }
    }
    for i in 0..rng.below(3) {
        body[format!("x_unknown_{i}")] = rng.value(0);
    }
    body
}

/// The property: for generated requests in both shapes, to providers that
/// bill the most they could (and some that report nothing, some cut), the
/// provider's bill never exceeds what qlaud reserved, and qlaud never
/// settles below the provider's bill.
async fn generated_requests_never_cost_more_than_reserved(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&hostile_toml(&mock))).await else { return };
    let (id, secret) = user(&t, 1000.0).await;
    // QLAUD_PROPERTY_SEED=<n> replays or explores other request sets.
    let seed = std::env::var("QLAUD_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0ff_ee00_0001u64);
    let mut rng = Rng(seed);
    let models = [
        ("gpt-5.4-greedy", GPT),
        ("gpt-5.4-greedy-nousage", GPT),
        ("gpt-5.4-greedy-cut", GPT),
        ("claude-greedy-x", CLAUDE),
        ("claude-greedy-nousage-x", CLAUDE),
        ("claude-greedy-cut-x", CLAUDE),
    ];
    let mut requests = 0;
    let mut total = 0;
    for i in 0..120 {
        let (model, prices) = models[rng.below(models.len() as u64) as usize];
        let (path, shape) = if rng.chance(50) {
            ("/v1/messages", "messages")
        } else {
            ("/v1/chat/completions", "chat")
        };
        let stream = rng.chance(50);
        let body = generated(&mut rng, shape, model, stream);
        mock.reset_stats();
        let resp = t
            .http
            .post(format!("{}{path}", t.base_url))
            .bearer_auth(&secret)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status == 200 || (model.contains("cut") && status == 502),
            "request {i} (seed {seed:#x}) {path} {model}: {status} {text}"
        );
        requests += 1;
        let cost = t.settled(&id, requests).await - total;
        total += cost;
        let stats = mock.stats();
        assert!(
            cost >= billed(&stats, prices),
            "request {i} (seed {seed:#x}) {path} {model} stream={stream}: settled {cost} µ$ below the provider's {}",
            billed(&stats, prices)
        );
        assert_eq!(
            overruns(&t).await,
            0,
            "request {i} (seed {seed:#x}) {path} {model}: cost more than reserved"
        );
    }
    t.stop().await;
}

/// 200 concurrent hostile requests of every kind on one capped key: the
/// settled spend stays within the cap, and every admitted request reached
/// the provider once and was settled exactly once.
async fn mixed_hostile_load_on_one_key(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&hostile_toml(&mock))).await else { return };
    let (id, secret) = user(&t, 2.0).await;
    let big = "q".repeat(100_000);
    let doc =
        json!({"type": "document", "source": {"type": "url", "url": "https://example.com/x.pdf"}});
    let kinds = [
        (false, with(hello("gpt-5.4-greedy"), json!({"n": 8, "max_tokens": 2000}))),
        (false, with(hello("gpt-5.4-greedy"), json!({"max_tokens": 500, "x_context": big}))),
        (
            false,
            json!({"model": "claude-greedy-x", "max_tokens": 200,
                       "messages": [{"role": "user", "content": [doc, {"type": "text", "text": "hi"}]}]}),
        ),
        (
            true,
            with(
                hello("gpt-5.4-greedy-slow"),
                json!({"stream": true, "max_tokens": 300, "x_context": big}),
            ),
        ),
        (false, with(hello("gpt-5.4-nousage"), json!({"max_tokens": 300}))),
        (false, with(hello("gpt-5.4-greedy-nousage"), json!({"max_tokens": 300, "n": 3}))),
    ];
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (cut, body) = kinds[i % kinds.len()].clone();
            let path = if body["model"].as_str().unwrap().starts_with("claude") {
                "/v1/messages"
            } else {
                "/v1/chat/completions"
            };
            let (http, url, secret) =
                (t.http.clone(), format!("{}{path}", t.base_url), secret.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(url)
                    .bearer_auth(secret)
                    .header("x-mock-delay-ms", "100")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                if cut && status == 200 {
                    // Read a few events and go away.
                    let mut stream = resp.bytes_stream();
                    for _ in 0..3 {
                        stream.next().await;
                    }
                } else {
                    let _ = resp.bytes().await;
                }
                status
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.unwrap() {
            200 => admitted += 1,
            402 => {}
            other => panic!("status {other}"),
        }
    }
    assert!(admitted > 0 && admitted < 200, "admitted {admitted}");
    let cost = t.settled(&id, admitted).await;
    let stats = mock.stats();
    assert_eq!(stats.requests, admitted, "each admitted request reached the provider once");
    assert!(cost <= 2_000_000, "spent {cost} µ$ of a $2 cap");
    assert!(cost >= billed(&stats, GPT), "{cost} < {}", billed(&stats, GPT));
    assert_eq!(ledger_state(&t.db.url, &id).await, (cost, 0, 0));
    assert_eq!(overruns(&t).await, 0);
    t.stop().await;
}
