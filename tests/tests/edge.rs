//! The edge of the server against the real binary, on SQLite and
//! PostgreSQL: the key is checked before any body byte is read, body
//! limits come from `Content-Length`, and silent connections and slow
//! bodies are closed after a bounded time (raw TCP where clients would not
//! misbehave on purpose).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, QlaudProcess, TestDb, backend_tests, mock_toml};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

backend_tests!(
    no_key_is_refused_before_the_body,
    body_limits_come_from_content_length,
    slow_bodies_and_silent_connections_are_closed,
);

struct Running {
    process: QlaudProcess,
    master: String,
    _db: TestDb,
    _config: tempfile::NamedTempFile,
}

/// A server with 1 s header and body timeouts.
async fn start(backend: Backend, mock: &MockUpstream) -> Option<Running> {
    let db = TestDb::new(backend).await?;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), mock_toml(mock)).unwrap();
    let args = [
        "--database-url",
        db.url.as_str(),
        "--config",
        config.path().to_str().unwrap(),
        "--header-timeout-secs",
        "1",
        "--body-timeout-secs",
        "1",
    ];
    let process = QlaudProcess::spawn(&args).await;
    let boot: Value =
        serde_json::from_str(process.stdout.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let master = boot["master_key"].as_str().unwrap().to_string();
    Some(Running { process, master, _db: db, _config: config })
}

/// The model endpoints and whether each answers in Anthropic's error shape
/// (else OpenAI's; thread turns answer in qlaud's own).
const MODEL_ENDPOINTS: [(&str, Shape); 9] = [
    ("/v1/messages", Shape::Anthropic),
    ("/v1/messages/count_tokens", Shape::Anthropic),
    ("/v1/chat/completions", Shape::OpenAi),
    ("/v1/responses", Shape::OpenAi),
    ("/v1/embeddings", Shape::OpenAi),
    ("/v1/threads/thr_unknown/messages", Shape::Qlaud),
    // Speech takes JSON too (transcriptions read multipart after the key).
    ("/v1/audio/speech", Shape::OpenAi),
    ("/v1/text-to-speech/voice_1", Shape::OpenAi),
    ("/v1/text-to-speech/voice_1/stream", Shape::OpenAi),
];

#[derive(Clone, Copy, Debug)]
enum Shape {
    Anthropic,
    OpenAi,
    Qlaud,
}

/// Checks an error body is in the endpoint's own shape; its message.
fn error_message(shape: Shape, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    let m = match shape {
        Shape::Anthropic => {
            assert_eq!(v["type"], "error", "{body}");
            &v["error"]["message"]
        }
        Shape::OpenAi => &v["error"]["message"],
        Shape::Qlaud => &v["message"],
    };
    m.as_str().unwrap_or_else(|| panic!("no message in {body}")).to_string()
}

/// A raw HTTP/1.1 exchange: sends `head` (with its blank line) and `body`,
/// then reads until the answer is complete, the connection closes, or 10 s
/// pass. Returns the status (0 if none came), the answer's body and how
/// long the answer took.
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, Duration) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&got).to_string();
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                })
                .unwrap_or(usize::MAX);
            if got.len() >= end + 4 + len {
                break;
            }
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body, elapsed)
}

fn post_head(path: &str, key: Option<&str>, content_length: u64) -> String {
    let auth = key.map(|k| format!("x-api-key: {k}\r\n")).unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nhost: qlaud\r\ncontent-type: application/json\r\n{auth}\
         content-length: {content_length}\r\n\r\n"
    )
}

async fn no_key_is_refused_before_the_body(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(r) = start(backend, &mock).await else { return };
    let http = reqwest::Client::new();
    let base = r.process.base_url();
    for (path, shape) in MODEL_ENDPOINTS {
        // Malformed JSON, with no key and with a wrong one: 401, not 400.
        for key in [None, Some("qlk_live_wrongwrongwrongwrongwrongwrongwrong")] {
            let mut req = http.post(format!("{base}{path}")).body("{not json");
            if let Some(k) = key {
                req = req.header("authorization", format!("Bearer {k}"));
            }
            let resp = req.header("content-type", "application/json").send().await.unwrap();
            assert_eq!(resp.status(), 401, "{path} with key {key:?}");
            error_message(shape, &resp.text().await.unwrap());
        }
        // A huge declared body of which 10 bytes arrive: the 401 comes at
        // once, without waiting for the rest (reading it would time out
        // after 1 s with 408 instead).
        let (status, body, took) =
            raw(r.process.addr, &post_head(path, None, 30_000_000), b"{\"model\":").await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(error_message(shape, &body).contains("API key"), "{body}");
        assert!(took < Duration::from_millis(900), "{path}: the 401 took {took:?}");
    }
    // The key is checked before the body also for qlaud's own errors: a
    // valid key with malformed JSON gets 400.
    let resp = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", &r.master)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    error_message(Shape::Anthropic, &resp.text().await.unwrap());
}

async fn body_limits_come_from_content_length(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(r) = start(backend, &mock).await else { return };
    let key = Some(r.master.as_str());
    // Over the model limit (32 MiB), declared: 413 at once, in the shape.
    for (path, shape) in MODEL_ENDPOINTS {
        let (status, body, took) = raw(r.process.addr, &post_head(path, key, 40 << 20), b"").await;
        assert_eq!(status, 413, "{path}: {body}");
        assert!(error_message(shape, &body).contains("at most"), "{body}");
        assert!(took < Duration::from_millis(900), "{path}: {took:?}");
    }
    // qlaud's own endpoints, with their smaller limits.
    let (status, body, _) = raw(r.process.addr, &post_head("/v1/keys", key, 1 << 20), b"").await;
    assert_eq!(status, 413, "{body}");
    error_message(Shape::Qlaud, &body);
    // Undeclared (chunked) bodies stop at the limit too.
    let chunk = vec![b' '; 70 * 1024];
    let head = format!(
        "POST /v1/keys HTTP/1.1\r\nhost: qlaud\r\ncontent-type: application/json\r\n\
         x-api-key: {}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        r.master,
        chunk.len()
    );
    let mut body = chunk.clone();
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let (status, text, _) = raw(r.process.addr, &head, &body).await;
    assert_eq!(status, 413, "{text}");
}

async fn slow_bodies_and_silent_connections_are_closed(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(r) = start(backend, &mock).await else { return };
    let key = Some(r.master.as_str());
    // Declares 1,000,000 bytes and sends 9: refused after the 1 s body
    // timeout, on a model endpoint, on one of qlaud's own and on the raw
    // body of Stripe's webhook.
    for (path, shape, declared) in [
        ("/v1/messages", Shape::Anthropic, 1_000_000),
        ("/v1/keys", Shape::Qlaud, 60_000),
        ("/v1/billing/stripe/webhook/ten_unknown", Shape::Qlaud, 60_000),
    ] {
        let (status, body, took) =
            raw(r.process.addr, &post_head(path, key, declared), b"{\"name\":").await;
        assert_eq!(status, 408, "{path}: {body}");
        assert!(error_message(shape, &body).contains("did not arrive"), "{body}");
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    }
    // A connection that sends nothing is closed within a bounded time.
    let mut tcp = tokio::net::TcpStream::connect(r.process.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the silent connection was not closed: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    // Connections that do send requests are untouched meanwhile.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/messages", r.process.base_url()))
        .header("x-api-key", &r.master)
        .json(&json!({"model": "claude-test", "max_tokens": 5,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
