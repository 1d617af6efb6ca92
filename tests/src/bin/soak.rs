//! `cargo xtask soak --minutes N`: mixed traffic against qlaud for a long
//! time, to catch what only time shows (memory or file descriptors that
//! grow, latency that creeps).
//!
//! Starts the mock upstream and `qlaud` in front of it, mints keys (some
//! with caps small enough to be refused with 402), then sends an open-loop
//! mix at a fixed rate: Messages and Chat Completions, JSON and streamed,
//! same-dialect and translated, streams the client abandons, token counts,
//! model lists, usage reports and key mints. Every minute it prints qlaud's
//! RSS, open files and that minute's p50/p99 latency; at the end a Markdown
//! table for the README. Not part of CI.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

struct Args {
    qlaud: String,
    mock: String,
    minutes: u64,
    rate: u64,
    database_url: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        qlaud: String::new(),
        mock: String::new(),
        minutes: 30,
        rate: 50,
        database_url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--qlaud" => a.qlaud = v,
            "--mock" => a.mock = v,
            "--minutes" => a.minutes = v.parse::<u64>()?.max(1),
            "--rate" => a.rate = v.parse::<u64>()?.max(1),
            "--database-url" => a.database_url = Some(v),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(!a.qlaud.is_empty() && !a.mock.is_empty(), "--qlaud and --mock are required");
    Ok(a)
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// One kind of request in the mix.
#[derive(Clone, Copy)]
enum Kind {
    Messages,
    MessagesStream,
    Chat,
    ChatStream,
    /// GPT through `/v1/messages`, streamed.
    Translated,
    /// A stream read for one chunk, then dropped.
    Abandoned,
    CountTokens,
    Models,
    Usage,
    MintKey,
}

const MIX: &[Kind] = &[
    Kind::Messages,
    Kind::MessagesStream,
    Kind::Chat,
    Kind::ChatStream,
    Kind::Translated,
    Kind::Messages,
    Kind::Abandoned,
    Kind::CountTokens,
    Kind::Models,
    Kind::Chat,
    Kind::Usage,
    Kind::MessagesStream,
    Kind::MintKey,
];

fn message(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": stream,
           "messages": [{"role": "user", "content": "hello world this is a soak request"}]})
}

/// Sends one request; `Ok` when it got an answer it should (a 402 of a
/// capped key included), with its latency to the end of the body.
async fn send(
    http: &reqwest::Client,
    base: &str,
    kind: Kind,
    key: &str,
    admin: &str,
) -> Result<Duration, String> {
    let started = Instant::now();
    let (method, path, body, who) = match kind {
        Kind::Messages => ("POST", "/v1/messages", Some(message("claude-soak", false)), key),
        Kind::MessagesStream | Kind::Abandoned => {
            ("POST", "/v1/messages", Some(message("claude-soak", true)), key)
        }
        Kind::Chat => ("POST", "/v1/chat/completions", Some(message("gpt-soak", false)), key),
        Kind::ChatStream => ("POST", "/v1/chat/completions", Some(message("gpt-soak", true)), key),
        Kind::Translated => ("POST", "/v1/messages", Some(message("gpt-soak", true)), key),
        Kind::CountTokens => {
            ("POST", "/v1/messages/count_tokens", Some(message("claude-soak", false)), key)
        }
        Kind::Models => ("GET", "/v1/models", None, key),
        Kind::Usage => ("GET", "/v1/usage", None, admin),
        Kind::MintKey => {
            ("POST", "/v1/keys", Some(json!({"name": "soak", "max_spend_usd": 1})), admin)
        }
    };
    let url = format!("{base}{path}");
    let mut req = if method == "GET" { http.get(url) } else { http.post(url) };
    req = req.header("x-api-key", who);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let mut resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) && status != 402 {
        return Err(format!("{path}: {status}"));
    }
    if matches!(kind, Kind::Abandoned) {
        let _ = resp.chunk().await;
        return Ok(started.elapsed());
    }
    while let Some(_chunk) = resp.chunk().await.map_err(|e| e.to_string())? {}
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut mock =
        Command::new(&a.mock).args(["--bind", "127.0.0.1:0"]).stdout(Stdio::piped()).spawn()?;
    let line =
        BufReader::new(mock.stdout.take().unwrap()).lines().next().context("mock output")??;
    let _mock = Guard(mock);
    let info: Value = serde_json::from_str(&line)?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("qlaud.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{a}\"\n\
             api_key = \"mock-anthropic-key\"\n[providers.openai]\nkind = \"openai\"\n\
             base_url = \"{o}\"\napi_key = \"mock-openai-key\"\n\
             [models.\"claude-soak\"]\nprovider = \"anthropic\"\nmax_output_tokens = 1000\n\
             prices = {{ input = \"3\", output = \"15\" }}\n\
             [models.\"gpt-soak\"]\nprovider = \"openai\"\nmax_output_tokens = 1000\n\
             prices = {{ input = \"1.25\", output = \"10\" }}\n",
            a = info["anthropic_base_url"].as_str().unwrap(),
            o = info["openai_base_url"].as_str().unwrap(),
        ),
    )?;
    let mut qlaud = Command::new(&a.qlaud)
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&config)
        .args(match &a.database_url {
            Some(url) => vec!["--database-url".into(), url.clone()],
            None => vec!["--data-dir".into(), dir.path().join("data").display().to_string()],
        })
        .env("RUST_LOG", "warn,qlaud=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let master_line =
        BufReader::new(qlaud.stdout.take().unwrap()).lines().next().context("qlaud stdout")??;
    let master: Value = serde_json::from_str(&master_line)?;
    let admin = master["master_key"].as_str().context("master key")?.to_string();
    let mut stderr = BufReader::new(qlaud.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = stderr.next().context("qlaud exited")??;
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in stderr {});
    let pid = qlaud.id();
    let _qlaud = Guard(qlaud);
    let base = format!("http://{addr}");

    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    // 16 users: most uncapped, some with caps spent within minutes (402s).
    let mut keys = Vec::new();
    for i in 0..16 {
        let body = if i % 4 == 0 {
            json!({"name": format!("capped-{i}"), "max_spend_usd": 0.01})
        } else {
            json!({"name": format!("user-{i}")})
        };
        let k: Value = http
            .post(format!("{base}/v1/keys"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        keys.push(k["secret"].as_str().context("key secret")?.to_string());
    }
    let keys = Arc::new(keys);

    eprintln!(
        "soak: {} minutes at {} req/s against qlaud pid {pid} ({} store)",
        a.minutes,
        a.rate,
        if a.database_url.is_some() { "PostgreSQL" } else { "SQLite" }
    );
    println!("| minute | requests | failed | p50 (ms) | p99 (ms) | RSS (MiB) | open files |");
    println!("|---|---|---|---|---|---|---|");
    let start = Instant::now();
    let mut n: u64 = 0;
    let failed = Arc::new(AtomicU64::new(0));
    let last_error = Arc::new(Mutex::new(None::<String>));
    for minute in 1..=a.minutes {
        let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
        let minute_start = start + Duration::from_secs(60 * (minute - 1));
        let mut tasks = Vec::new();
        for i in 0..a.rate * 60 {
            let due = minute_start + Duration::from_nanos(i * 1_000_000_000 / a.rate);
            tokio::time::sleep_until(due.into()).await;
            n += 1;
            let kind = MIX[(n as usize) % MIX.len()];
            let key = keys[(n as usize / MIX.len()) % keys.len()].clone();
            let (http, base, admin, hist, failed, last_error) = (
                http.clone(),
                base.clone(),
                admin.clone(),
                hist.clone(),
                failed.clone(),
                last_error.clone(),
            );
            tasks.push(tokio::spawn(async move {
                match send(&http, &base, kind, &key, &admin).await {
                    Ok(d) => {
                        let _ = hist.lock().unwrap().record(d.as_micros() as u64);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        *last_error.lock().unwrap() = Some(e);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.ok();
        }
        let h = hist.lock().unwrap().clone();
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {minute} | {} | {} | {:.1} | {:.1} | {:.1} | {} |",
            h.len(),
            failed.swap(0, Ordering::Relaxed),
            ms(0.5),
            ms(0.99),
            proc_kib(pid, "VmRSS:") as f64 / 1024.0,
            open_files(pid)
        );
        if let Some(e) = last_error.lock().unwrap().take() {
            eprintln!("  last failure this minute: {e}");
        }
    }
    println!("\npeak RSS {:.1} MiB", proc_kib(pid, "VmHWM:") as f64 / 1024.0);
    Ok(())
}
