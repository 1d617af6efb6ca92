//! `cargo xtask bench`: qlaud versus going straight to the mock upstream.
//!
//! Starts the mock upstream and one or more release `qlaud` processes in
//! front of it (one key with a spend cap, so the ledger is on the path), then
//! for each path (direct, through qlaud) measures:
//! - added latency at a fixed request rate (open loop: latency counts from
//!   when a request was due, so a stall is never hidden);
//! - time to first byte of a stream at a fixed rate;
//! - saturated requests/s with a fixed number of concurrent clients;
//!
//! and qlaud's peak RSS. Prints a Markdown table for the README: medians
//! over the runs, with the spread (min–max) of what qlaud adds.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

struct Args {
    qlaud: String,
    mock: String,
    seconds: u64,
    rate: u64,
    concurrency: usize,
    runs: usize,
    /// A store for qlaud other than a fresh SQLite file (an empty database).
    database_url: Option<String>,
    /// Where the embedding model's files are: qlaud loads it from there.
    /// Without it qlaud runs without the model (nothing fetched or loaded
    /// while it is measured).
    embed_model_dir: Option<String>,
    /// qlaud processes sharing the store (`database_url`), requests spread
    /// round-robin across them.
    processes: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        qlaud: String::new(),
        mock: String::new(),
        seconds: 5,
        rate: 1000,
        concurrency: 32,
        runs: 3,
        database_url: None,
        embed_model_dir: None,
        processes: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--qlaud" => a.qlaud = v,
            "--mock" => a.mock = v,
            "--seconds" => a.seconds = v.parse()?,
            "--rate" => a.rate = v.parse()?,
            "--concurrency" => a.concurrency = v.parse()?,
            "--runs" => a.runs = v.parse::<usize>()?.max(1),
            "--database-url" => a.database_url = Some(v),
            "--embed-model-dir" => a.embed_model_dir = Some(v),
            "--processes" => a.processes = v.parse::<usize>()?.max(1),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(!a.qlaud.is_empty() && !a.mock.is_empty(), "--qlaud and --mock are required");
    // Processes share one store only through a database server; each would
    // get a SQLite file of its own.
    anyhow::ensure!(
        a.processes == 1 || a.database_url.is_some(),
        "--processes {} needs --database-url (a PostgreSQL the processes share)",
        a.processes
    );
    Ok(a)
}

/// Where requests go and how they authenticate. With several URLs, each
/// request goes to the next one (clones share the counter).
#[derive(Clone)]
struct Target {
    urls: Vec<String>,
    next: Arc<AtomicUsize>,
    headers: Vec<(&'static str, String)>,
}

impl Target {
    fn new(urls: Vec<String>, headers: Vec<(&'static str, String)>) -> Target {
        Target { urls, next: Arc::default(), headers }
    }

    fn request(&self, http: &reqwest::Client, body: &Value) -> reqwest::RequestBuilder {
        let url = &self.urls[self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len()];
        let mut r = http.post(url).json(body);
        for (k, v) in &self.headers {
            r = r.header(*k, v);
        }
        r
    }
}

fn body(stream: bool) -> Value {
    json!({"model": "claude-bench", "max_tokens": 64, "stream": stream,
           "messages": [{"role": "user", "content": "hello world this is a benchmark request"}]})
}

/// Latencies (µs) at `rate` requests/s for `seconds`, from the due time of
/// each request to its full answer (or, with `ttfb`, its first body byte).
async fn open_loop(
    http: &reqwest::Client,
    t: &Target,
    rate: u64,
    seconds: u64,
    stream: bool,
) -> (Histogram<u64>, u64) {
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let errors = Arc::new(AtomicU64::new(0));
    let body = Arc::new(body(stream));
    let start = Instant::now();
    let total = rate * seconds;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (http, t, body, hist, errors) =
            (http.clone(), t.clone(), body.clone(), hist.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let ok = match t.request(&http, &body).send().await {
                Ok(resp) if resp.status().is_success() => {
                    if stream {
                        let mut resp = resp;
                        let first = resp.chunk().await.is_ok();
                        let elapsed = due.elapsed();
                        while let Ok(Some(_)) = resp.chunk().await {}
                        first.then_some(elapsed)
                    } else {
                        resp.bytes().await.ok().map(|_| due.elapsed())
                    }
                }
                _ => None,
            };
            match ok {
                Some(d) => hist.lock().unwrap().record(d.as_micros() as u64).unwrap(),
                None => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.ok();
    }
    let h = hist.lock().unwrap().clone();
    (h, errors.load(Ordering::Relaxed))
}

/// Requests/s with `concurrency` clients each sending back to back.
async fn closed_loop(
    http: &reqwest::Client,
    t: &Target,
    concurrency: usize,
    seconds: u64,
) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let body = Arc::new(body(false));
    let end = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, t, body, done, errors) =
                (http.clone(), t.clone(), body.clone(), done.clone(), errors.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let ok = match t.request(&http, &body).send().await {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    let counter = if ok { &done } else { &errors };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.ok();
    }
    let n = done.load(Ordering::Relaxed);
    (n as f64 / start.elapsed().as_secs_f64(), errors.load(Ordering::Relaxed))
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Starts `qlaud serve` and waits for its address. Only the process that
/// initialises an empty store prints a master key (on stdout, before it
/// listens), so only `first` reads one.
fn spawn_qlaud(
    a: &Args,
    config: &std::path::Path,
    data_dir: &std::path::Path,
    first: bool,
) -> anyhow::Result<(Guard, String, Option<Value>)> {
    let mut qlaud = Command::new(&a.qlaud)
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(config)
        .args(match &a.database_url {
            Some(url) => vec!["--database-url".into(), url.clone()],
            None => vec!["--data-dir".into(), data_dir.display().to_string()],
        })
        .args(match &a.embed_model_dir {
            Some(model) => vec!["--embed-model-dir".to_string(), model.clone()],
            None => vec!["--no-embed-model".to_string()],
        })
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = qlaud.stdout.take().unwrap();
    let stderr = qlaud.stderr.take().unwrap();
    // Owned from here, so an early return below still stops the process.
    let qlaud = Guard(qlaud);
    let master = if first {
        let line = BufReader::new(stdout).lines().next().context("qlaud stdout")??;
        Some(serde_json::from_str(&line)?)
    } else {
        std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
        None
    };
    let mut stderr = BufReader::new(stderr).lines();
    let addr = loop {
        let line = stderr.next().context("qlaud exited")??;
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in stderr {});
    Ok((qlaud, addr, master))
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
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
            "[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"mock-anthropic-key\"\n\
             [models.\"claude-bench\"]\nprovider = \"anthropic\"\nmax_output_tokens = 1000\n\
             prices = {{ input = \"3\", output = \"15\" }}\n",
            info["anthropic_base_url"].as_str().unwrap()
        ),
    )?;
    // One after another: the first initialises the store (migrations, the
    // first tenant), the others find it ready.
    let data_dir = dir.path().join("data");
    let mut qlauds = Vec::with_capacity(a.processes);
    let mut master = None;
    for i in 0..a.processes {
        let (guard, addr, m) = spawn_qlaud(&a, &config, &data_dir, i == 0)?;
        eprintln!("qlaud {}/{} at {addr}", i + 1, a.processes);
        master = master.or(m);
        qlauds.push((guard, addr));
    }
    let master = master.context("qlaud printed no master key")?;

    let http = reqwest::Client::builder().pool_max_idle_per_host(4096).tcp_nodelay(true).build()?;
    // A cap far above what the runs spend: every request still reserves and
    // settles against it, as a capped key in production does.
    let key: Value = http
        .post(format!("http://{}/v1/keys", qlauds[0].1))
        .bearer_auth(master["master_key"].as_str().unwrap())
        .json(&json!({"name": "bench", "max_spend_usd": 1_000_000}))
        .send()
        .await?
        .error_for_status()
        .context("minting the bench key")?
        .json()
        .await?;
    anyhow::ensure!(key["max_spend_usd"].is_number(), "the bench key has no cap: {key}");
    let direct = Target::new(
        vec![format!("{}/v1/messages", info["anthropic_base_url"].as_str().unwrap())],
        vec![
            ("x-api-key", "mock-anthropic-key".into()),
            ("anthropic-version", "2023-06-01".into()),
        ],
    );
    let via = Target::new(
        qlauds.iter().map(|(_, addr)| format!("http://{addr}/v1/messages")).collect(),
        vec![("x-api-key", key["secret"].as_str().unwrap().to_string())],
    );

    eprintln!("warming up");
    closed_loop(&http, &direct, a.concurrency, 1).await;
    closed_loop(&http, &via, a.concurrency, 1).await;

    // Each figure is the median over the runs: this machine is shared and
    // single runs swing widely.
    let stream_rate = (a.rate / 4).max(1);
    let mut rows: Vec<Vec<[f64; 2]>> = vec![Vec::new(); 5];
    let mut errors = 0;
    for run in 1..=a.runs {
        eprintln!(
            "run {run}/{}: open loop at {} req/s, streams at {stream_rate} req/s, saturated with {} clients, {} s each",
            a.runs, a.rate, a.concurrency, a.seconds
        );
        let (d, e1) = open_loop(&http, &direct, a.rate, a.seconds, false).await;
        let (q, e2) = open_loop(&http, &via, a.rate, a.seconds, false).await;
        let (ds, e3) = open_loop(&http, &direct, stream_rate, a.seconds, true).await;
        let (qs, e4) = open_loop(&http, &via, stream_rate, a.seconds, true).await;
        let (d_rps, e5) = closed_loop(&http, &direct, a.concurrency, a.seconds).await;
        let (q_rps, e6) = closed_loop(&http, &via, a.concurrency, a.seconds).await;
        errors += e1 + e2 + e3 + e4 + e5 + e6;
        let msq = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        rows[0].push([msq(&d, 0.5), msq(&q, 0.5)]);
        rows[1].push([msq(&d, 0.99), msq(&q, 0.99)]);
        rows[2].push([msq(&ds, 0.5), msq(&qs, 0.5)]);
        rows[3].push([msq(&ds, 0.99), msq(&qs, 0.99)]);
        rows[4].push([d_rps, q_rps]);
    }
    let rss: Vec<String> = qlauds
        .iter()
        .map(|(q, _)| format!("{:.1}", peak_rss_kib(q.0.id()) as f64 / 1024.0))
        .collect();
    let col = |row: &[[f64; 2]], i: usize| median(&row.iter().map(|r| r[i]).collect::<Vec<_>>());
    // The spread shows how far single runs disagree, which a median hides.
    let added = |row: &[[f64; 2]]| {
        let d: Vec<f64> = row.iter().map(|r| r[1] - r[0]).collect();
        let (lo, hi) = min_max(&d);
        format!("{:.3} ({lo:.2}–{hi:.2})", median(&d))
    };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "Measured {} on {cores} cores (load generator, mock and qlaud on one machine), {} store, \
         {} qlaud process{}, capped key; median of {} runs of {} s each:\n",
        chrono_date(),
        if a.database_url.is_some() { "PostgreSQL" } else { "SQLite" },
        a.processes,
        if a.processes == 1 { "" } else { "es" },
        a.runs,
        a.seconds
    );
    println!(
        "| measure | direct to mock | through qlaud | added by qlaud (min–max of {} runs) |",
        a.runs
    );
    println!("|---|---|---|---|");
    let labels = [
        format!("latency p50 at {} req/s (ms)", a.rate),
        format!("latency p99 at {} req/s (ms)", a.rate),
        format!("stream time to first byte p50 at {stream_rate} req/s (ms)"),
        format!("stream time to first byte p99 at {stream_rate} req/s (ms)"),
    ];
    for (label, row) in labels.iter().zip(&rows) {
        println!("| {label} | {:.3} | {:.3} | {} |", col(row, 0), col(row, 1), added(row));
    }
    let ratios: Vec<f64> = rows[4].iter().map(|r| 100.0 * r[1] / r[0].max(1.0)).collect();
    let (lo, hi) = min_max(&ratios);
    println!(
        "| saturated requests/s ({} clients) | {:.0} | {:.0} | {:.0} % of direct ({lo:.0}–{hi:.0} %) |",
        a.concurrency,
        col(&rows[4], 0),
        col(&rows[4], 1),
        median(&ratios)
    );
    if rss.len() == 1 {
        println!("| qlaud peak RSS (MiB) | – | {} | – |", rss[0]);
    } else {
        println!("| qlaud peak RSS per process (MiB) | – | {} | – |", rss.join(", "));
    }
    if errors > 0 {
        println!("\n{errors} requests failed");
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

fn chrono_date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
