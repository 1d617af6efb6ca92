//! The outbound client against local receivers: the fence at connect time
//! (with a fake resolver standing in for DNS), redirects, limits, retries.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const STRICT: Policy = Policy { allow_private: false };
const OPEN: Policy = Policy { allow_private: true };

/// DNS as the test says: names map to fixed addresses.
struct FakeDns(HashMap<&'static str, Vec<IpAddr>>);

impl Lookup for FakeDns {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let found = self.0.get(host.as_str()).cloned();
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        })
    }
}

fn fake_dns(entries: &[(&'static str, &str)]) -> Arc<FakeDns> {
    let mut map: HashMap<&'static str, Vec<IpAddr>> = HashMap::new();
    for (name, ip) in entries {
        map.entry(name).or_default().push(ip.parse().unwrap());
    }
    Arc::new(FakeDns(map))
}

/// What a receiver saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// A plain-TCP HTTP/1.1 receiver answering `answer(n)` (the raw response)
/// to its n-th request (from 0); `None` holds the connection open without
/// answering.
struct Receiver {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn receiver(answer: impl Fn(usize) -> Option<String> + Send + Sync + 'static) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c, s, answer) = (connections.clone(), seen.clone(), Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let n = c.fetch_add(1, Ordering::SeqCst);
            let (s, answer) = (s.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(read) = socket.read(&mut chunk).await else { return };
                    if read == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..read]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let Ok(read) = socket.read(&mut chunk).await else { return };
                    if read == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..read]);
                }
                s.lock().unwrap().push(Seen { head, body: buf[head_end..].to_vec() });
                match answer(n) {
                    Some(response) => {
                        let _ = socket.write_all(response.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    Receiver { addr, connections, seen }
}

fn ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn status(code: u16, extra: &str) -> String {
    format!("HTTP/1.1 {code} X\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n")
}

fn secret() -> WebhookSecret {
    WebhookSecret::parse(&WebhookSecret::generate()).unwrap()
}

fn quick() -> Limits {
    Limits { timeout: Duration::from_secs(2), max_response_bytes: 1024 }
}

#[tokio::test]
async fn the_reported_ssrf_urls_are_refused_without_a_request() {
    let trap = receiver(|_| Some(ok("{}"))).await;
    let out = Outbound::with_lookup(STRICT, fake_dns(&[("attacker.example", "127.0.0.1")]));
    let port = trap.addr.port();
    for url in [
        "https://169.254.169.254/latest/meta-data/iam/security-credentials/".to_string(),
        "https://10.0.0.1/".to_string(),
        "http://127.0.0.1@169.254.169.254/latest/meta-data/".to_string(),
        "http://localhost@attacker.example/".to_string(),
        format!("http://127.0.0.1:{port}/"),
        format!("https://127.0.0.1:{port}/"),
        format!("https://[::1]:{port}/"),
        format!("https://[::ffff:127.0.0.1]:{port}/"),
        format!("https://localhost:{port}/"),
        format!("https://attacker.example:{port}/"),
    ] {
        let got = out.post_signed(&secret(), &url, "{}", quick()).await;
        assert!(matches!(got, Err(OutboundError::Refused(_))), "{url}: {got:?}");
    }
    assert_eq!(trap.connections.load(Ordering::SeqCst), 0, "nothing reached the trap");
}

#[tokio::test]
async fn names_resolving_to_fenced_addresses_are_refused_at_connect_time() {
    let trap = receiver(|_| Some(ok("{}"))).await;
    let port = trap.addr.port();
    let out = Outbound::with_lookup(
        STRICT,
        fake_dns(&[
            ("loopback.test", "127.0.0.1"),
            ("loopback6.test", "::1"),
            ("metadata.test", "169.254.169.254"),
            ("mapped.test", "::ffff:169.254.169.254"),
            ("ula.test", "fd12::1"),
            ("ec2v6.test", "fd00:ec2::254"),
            // One public address does not vouch for a private one beside it.
            ("mixed.test", "93.184.215.14"),
            ("mixed.test", "127.0.0.1"),
        ]),
    );
    for name in [
        "loopback.test",
        "loopback6.test",
        "metadata.test",
        "mapped.test",
        "ula.test",
        "ec2v6.test",
        "mixed.test",
    ] {
        let url = format!("https://{name}:{port}/hook");
        // The form is fine: only the addresses give it away, at connect time.
        assert!(out.check_url(&url).is_ok(), "{url}");
        let got = out.post_signed(&secret(), &url, "{}", quick()).await;
        match got {
            Err(OutboundError::Refused(why)) => assert!(why.contains(name), "{why}"),
            other => panic!("{url}: {other:?}"),
        }
    }
    assert_eq!(trap.connections.load(Ordering::SeqCst), 0, "nothing reached the trap");
}

#[tokio::test]
async fn allowed_targets_receive_a_signed_post_through_the_resolver() {
    let target = receiver(|_| Some(ok(r#"{"ok":true}"#))).await;
    let out = Outbound::with_lookup(OPEN, fake_dns(&[("hooks.test", "127.0.0.1")]));
    let secret = secret();
    let url = format!("http://hooks.test:{}/hook", target.addr.port());
    let got = out.post_signed(&secret, &url, r#"{"a":1}"#, quick()).await.unwrap();
    assert_eq!((got.status, &got.body[..]), (200, &br#"{"ok":true}"#[..]));
    let seen = target.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.body, br#"{"a":1}"#);
    let (id, ts) = (seen.header("webhook-id").unwrap(), seen.header("webhook-timestamp").unwrap());
    assert!(id.starts_with("msg_"));
    let ts: i64 = ts.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    assert_eq!(seen.header("webhook-signature").unwrap(), secret.sign(&id, ts, &seen.body));
    assert_eq!(seen.header("content-type").as_deref(), Some("application/json"));
    assert!(seen.header("authorization").is_none());
    // The same receiver, but not allowed by a strict operator.
    let strict = Outbound::with_lookup(STRICT, fake_dns(&[("hooks.test", "127.0.0.1")]));
    let https = format!("https://hooks.test:{}/hook", target.addr.port());
    assert!(matches!(
        strict.post_signed(&secret, &https, "{}", quick()).await,
        Err(OutboundError::Refused(_))
    ));
    assert_eq!(target.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let target = receiver(|_| Some(ok("{}"))).await;
    let location = format!("location: http://{}/stolen\r\n", target.addr);
    let redirector = receiver(move |_| Some(status(302, &location))).await;
    let out = Outbound::new(OPEN);
    let url = format!("http://{}/hook", redirector.addr);
    let got = out.post_signed(&secret(), &url, "{}", quick()).await;
    assert_eq!(got.unwrap_err(), OutboundError::Status(302));
    assert_eq!(redirector.seen.lock().unwrap().len(), 1);
    assert_eq!(target.connections.load(Ordering::SeqCst), 0, "the redirect target got nothing");
    assert!(!OutboundError::Status(302).is_retryable());
}

#[tokio::test]
async fn answers_are_bounded_in_size_and_time() {
    let out = Outbound::new(OPEN);
    let big = receiver(|_| Some(ok(&"x".repeat(2000)))).await;
    let got = out.post_signed(&secret(), &format!("http://{}/", big.addr), "{}", quick()).await;
    assert_eq!(got.unwrap_err(), OutboundError::TooLarge(1024));
    // Without a content-length, counted as it streams.
    let chunked = receiver(|_| {
        let chunk = "y".repeat(600);
        Some(format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
             258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
        ))
    })
    .await;
    let got = out.post_signed(&secret(), &format!("http://{}/", chunked.addr), "{}", quick()).await;
    assert_eq!(got.unwrap_err(), OutboundError::TooLarge(1024));
    let silent = receiver(|_| None).await;
    let limits = Limits { timeout: Duration::from_millis(300), ..quick() };
    let started = std::time::Instant::now();
    let got = out.post_signed(&secret(), &format!("http://{}/", silent.addr), "{}", limits).await;
    assert_eq!(got.unwrap_err(), OutboundError::Timeout(Duration::from_millis(300)));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn retries_repeat_the_message_id_and_stop_at_what_a_retry_cannot_fix() {
    let out = Outbound::new(OPEN);
    let flaky = receiver(|n| Some(if n < 2 { status(503, "") } else { ok("{}") })).await;
    let url = format!("http://{}/", flaky.addr);
    let (secret, message) = (secret(), Message::new("{}"));
    let backoff = Backoff {
        attempts: 5,
        first_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    };
    let got = retry(backoff, |_| out.send(&secret, &url, &message, quick(), &[])).await;
    assert_eq!(got.unwrap().status, 200);
    let seen = flaky.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.header("webhook-id").unwrap() == message.id));
    // A 4xx is final: one attempt.
    let gone = receiver(|_| Some(status(410, ""))).await;
    let url = format!("http://{}/", gone.addr);
    let got = retry(backoff, |_| out.send(&secret, &url, &message, quick(), &[])).await;
    assert_eq!(got.unwrap_err(), OutboundError::Status(410));
    assert_eq!(gone.connections.load(Ordering::SeqCst), 1);
    // Out of attempts: the last failure.
    let down = receiver(|_| Some(status(500, ""))).await;
    let url = format!("http://{}/", down.addr);
    let got = retry(backoff, |_| out.send(&secret, &url, &message, quick(), &[])).await;
    assert_eq!(got.unwrap_err(), OutboundError::Status(500));
    assert_eq!(down.connections.load(Ordering::SeqCst), 5);
}
