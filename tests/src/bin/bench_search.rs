//! `cargo xtask bench --search`: what search costs on this machine.
//!
//! - Embedding throughput: real text (the README's paragraphs) written as
//!   conversation turns to a release `qlaud`, timed until its indexer has
//!   embedded, billed and stored every one; and the model alone through
//!   `POST /v1/embeddings`, 32 texts a call.
//! - The RSS the model adds: the same server with a model directory whose
//!   files do not load (search off) against one with the model, idle and
//!   after the embedding run.
//! - The index: synthetic unit vectors, with neighbours planted around each
//!   query, stored straight into the store's tables (as the indexer stores
//!   them) at each size, on SQLite and on PostgreSQL with pgvector. Each
//!   query runs through the server's own store code (`search_vectors`, on
//!   the index path the server chose for that store), timed, and compared
//!   with the exact top 10 computed here (recall@10). A text query through
//!   `POST /v1/search` (the model's embedding included) is timed as well.
//!
//! Prints Markdown tables for the README.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use qlaud_server::embed::DIMENSIONS;
use qlaud_server::store::{Store, VectorIndex, VectorQuery};
use serde_json::{Value, json};

struct Args {
    qlaud: String,
    model_dir: String,
    /// A PostgreSQL server with pgvector (an admin URL); none: SQLite only.
    pgvector_url: Option<String>,
    sizes: Vec<usize>,
    queries: usize,
    turns: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        qlaud: String::new(),
        model_dir: String::new(),
        pgvector_url: std::env::var("QLAUD_TEST_PGVECTOR_URL").ok().filter(|u| !u.is_empty()),
        sizes: vec![10_000, 100_000],
        queries: 100,
        turns: 600,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--qlaud" => a.qlaud = v,
            "--model-dir" => a.model_dir = v,
            "--pgvector-url" => a.pgvector_url = Some(v),
            "--sizes" => {
                a.sizes = v.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?
            }
            "--queries" => a.queries = v.parse()?,
            "--turns" => a.turns = v.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(!a.qlaud.is_empty() && !a.model_dir.is_empty(), "--qlaud and --model-dir");
    Ok(a)
}

struct Qlaud {
    child: Child,
    base: String,
    master_key: Option<String>,
}

impl Drop for Qlaud {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Qlaud {
    fn spawn(bin: &str, store: &[String], model_dir: &str) -> anyhow::Result<Qlaud> {
        let mut child = Command::new(bin)
            .args(["serve", "--bind", "127.0.0.1:0", "--embed-model-dir", model_dir])
            .args(store)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stderr = BufReader::new(child.stderr.take().context("stderr")?).lines();
        let addr = loop {
            let line = stderr.next().context("qlaud exited")??;
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest.split_whitespace().next().context("addr")?.to_string();
            }
        };
        std::thread::spawn(move || for _ in stderr {});
        let mut out = BufReader::new(child.stdout.take().context("stdout")?);
        // A fresh store (every one here) prints its master key first.
        let mut line = String::new();
        out.read_line(&mut line)?;
        let master_key = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["master_key"].as_str().map(str::to_string));
        std::thread::spawn(move || for _ in out.lines() {});
        Ok(Qlaud { child, base: format!("http://{addr}"), master_key })
    }

    fn rss_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
            })
            .unwrap_or(0)
    }
}

async fn post(http: &reqwest::Client, q: &Qlaud, key: &str, path: &str, body: Value) -> Value {
    let resp = http
        .post(format!("{}{path}", q.base))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("qlaud answers");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

/// Waits until search answers (the model is loaded).
async fn wait_ready(http: &reqwest::Client, q: &Qlaud, key: &str) {
    loop {
        let r = http
            .post(format!("{}/v1/search", q.base))
            .bearer_auth(key)
            .json(&json!({"query": "ready?"}))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The README's paragraphs: real prose of mixed length.
fn paragraphs() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = std::fs::read_to_string(root.join("README.md")).unwrap_or_default();
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| p.len() >= 40 && !p.starts_with('|') && !p.starts_with("```"))
        .collect()
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// Embedding throughput and the model's memory, on SQLite.
async fn embedding(a: &Args, http: &reqwest::Client) -> anyhow::Result<()> {
    // The same server with model files that do not load: search off.
    let empty = tempfile::tempdir()?;
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::write(empty.path().join(f), b"")?;
    }
    let dir = tempfile::tempdir()?;
    let data = vec!["--data-dir".to_string(), dir.path().join("off").display().to_string()];
    let off = Qlaud::spawn(&a.qlaud, &data, &empty.path().display().to_string())?;
    let key = off.master_key.clone().context("master key")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = http.get(format!("{}/v1/keys", off.base)).bearer_auth(&key).send().await;
    let base_rss = off.rss_kib("VmRSS:");
    drop(off);

    let data = vec!["--data-dir".to_string(), dir.path().join("on").display().to_string()];
    let on = Qlaud::spawn(&a.qlaud, &data, &a.model_dir)?;
    let key = on.master_key.clone().context("master key")?;
    let started = Instant::now();
    wait_ready(http, &on, &key).await;
    let load = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ready_rss = on.rss_kib("VmRSS:");

    // The model alone: 32 texts a call, as the indexer batches them.
    let texts = paragraphs();
    anyhow::ensure!(!texts.is_empty(), "no README paragraphs");
    let sample: Vec<String> = texts.iter().cycle().take(a.turns).cloned().collect();
    let t0 = Instant::now();
    let mut tokens = 0;
    for chunk in sample.chunks(32) {
        let v = post(
            http,
            &on,
            &key,
            "/v1/embeddings",
            json!({"model": "all-minilm-l6-v2", "input": chunk}),
        )
        .await;
        tokens += v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    }
    let model_rate = sample.len() as f64 / t0.elapsed().as_secs_f64();

    // The indexer: turns written through the API, until all are indexed.
    let conv = post(http, &on, &key, "/v1/conversations", json!({})).await;
    let conv = conv["id"].as_str().context("conversation id")?.to_string();
    let db = format!("sqlite://{}?mode=ro", dir.path().join("on/qlaud.db").display());
    let pool = qlaud_tests::store_pool(&db).await;
    let t0 = Instant::now();
    for chunk in sample.chunks(20) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|t| json!({"type": "message", "role": "user", "content": t}))
            .collect();
        post(http, &on, &key, &format!("/v1/conversations/{conv}/items"), json!({"items": items}))
            .await;
    }
    let written = t0.elapsed();
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM embed_queue").fetch_one(&pool).await?;
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let indexed = t0.elapsed();
    let busy_rss = on.rss_kib("VmHWM:");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "Embedding, {} turns of README paragraphs (mean {:.0} tokens), {cores} cores shared \
         with other work, release build; model load {:.2} s:\n",
        sample.len(),
        tokens as f64 / sample.len() as f64,
        load.as_secs_f64()
    );
    println!("| measure | value |\n|---|---|");
    println!("| the model alone (`POST /v1/embeddings`, 32 a call) | {model_rate:.0} texts/s |");
    println!(
        "| the indexer (written through the API until embedded, billed and stored) | {:.0} turns/s ({:.1} s to write, {:.1} s until all indexed) |",
        sample.len() as f64 / indexed.as_secs_f64(),
        written.as_secs_f64(),
        indexed.as_secs_f64()
    );
    println!(
        "| qlaud RSS, idle: search off / model loaded | {:.0} MiB / {:.0} MiB (+{:.0} MiB) |",
        base_rss as f64 / 1024.0,
        ready_rss as f64 / 1024.0,
        (ready_rss as f64 - base_rss as f64) / 1024.0
    );
    println!("| qlaud peak RSS after the embedding run | {:.0} MiB |\n", busy_rss as f64 / 1024.0);
    Ok(())
}

/// xorshift: deterministic unit vectors without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn unit(&mut self, around: Option<&[f32]>, noise: f32) -> Vec<f32> {
        let mut v: Vec<f32> =
            (0..DIMENSIONS).map(|i| around.map_or(0.0, |a| a[i]) + noise * self.next()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

/// A stored synthetic turn, as the exact search sees it.
struct Row {
    id: String,
    owner: usize,
    vector: Vec<f32>,
}

/// Who owns the synthetic rows: (tenant, key, thread) per owner, and the
/// share of rows each gets.
struct Owners {
    ids: Vec<(String, String, String)>,
}

/// Owner 0: the measured standard key (10 % of rows); 1: another key of
/// its tenant (40 %); 2: another tenant's key (50 %).
fn owner_of(i: usize) -> usize {
    match i % 10 {
        0 => 0,
        1..=4 => 1,
        _ => 2,
    }
}

async fn insert(
    url: &str,
    owners: &Owners,
    rows: &[Row],
    postgres: bool,
    seq0: usize,
) -> anyhow::Result<()> {
    let pool = qlaud_tests::store_pool(url).await;
    for (c, chunk) in rows.chunks(500).enumerate() {
        let mut tx = pool.begin().await?;
        let mut m = String::from(
            "INSERT INTO thread_messages (id, thread_id, tenant_id, seq, role, content, metadata, \
             created_ms) VALUES ",
        );
        let mut v = format!(
            "INSERT INTO turn_vectors (message_id, tenant_id, key_id, thread_id, role, text, \
             created_ms, {}) VALUES ",
            if postgres { "embedding_v" } else { "embedding" }
        );
        for (i, r) in chunk.iter().enumerate() {
            let (tenant, key, thread) = &owners.ids[r.owner];
            let seq = seq0 + c * 500 + i + 1;
            let sep = if i == 0 { "" } else { "," };
            m.push_str(&format!(
                "{sep}('{}','{thread}','{tenant}',{seq},'user','[]','{{}}',{})",
                r.id,
                1_700_000_000_000i64 + seq as i64
            ));
            let text: Vec<String> = r.vector.iter().map(|x| x.to_string()).collect();
            let vector = if postgres {
                format!("CAST('[{}]' AS vector)", text.join(","))
            } else {
                let hex: String = r
                    .vector
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("X'{hex}'")
            };
            v.push_str(&format!(
                "{sep}('{}','{tenant}','{key}','{thread}','user','synthetic',{},{vector})",
                r.id,
                1_700_000_000_000i64 + seq as i64
            ));
        }
        sqlx::query(sqlx::AssertSqlSafe(m)).execute(&mut *tx).await?;
        sqlx::query(sqlx::AssertSqlSafe(v)).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    pool.close().await;
    Ok(())
}

/// The exact top 10 of `q` among `rows` the filter reaches.
fn exact_top(rows: &[Row], q: &[f32], reach: &dyn Fn(usize) -> bool) -> Vec<String> {
    let mut scored: Vec<(f32, &str)> = rows
        .iter()
        .filter(|r| reach(r.owner))
        .map(|r| (r.vector.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), r.id.as_str()))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(10).map(|(_, id)| id.to_string()).collect()
}

/// The index figures on one store.
async fn index(
    a: &Args,
    http: &reqwest::Client,
    name: &str,
    url: &str,
    postgres: bool,
) -> anyhow::Result<()> {
    let store_args = vec!["--database-url".to_string(), url.to_string()];
    let q = Qlaud::spawn(&a.qlaud, &store_args, &a.model_dir)?;
    let admin = q.master_key.clone().context("master key of a fresh store")?;
    wait_ready(http, &q, &admin).await;
    let store = Store::open(url, &Default::default()).await?;
    let path = store.prepare_vector_index().await?.context("no vector index")?;
    let tenant_a: String = sqlx::query_scalar("SELECT tenant_id FROM api_keys LIMIT 1")
        .fetch_one(&qlaud_tests::store_pool(url).await)
        .await?;
    let (tenant_b, admin_b) = store.create_tenant("other").await?;
    let mut owners = Owners { ids: Vec::new() };
    let mut user_secret = String::new();
    for (tenant, key) in
        [(&tenant_a, &admin), (&tenant_a, &admin), (&tenant_b.id, &admin_b.expose().to_string())]
    {
        let k = post(http, &q, key, "/v1/keys", json!({"name": "bench"})).await;
        let secret = k["secret"].as_str().context("secret")?.to_string();
        let t = post(http, &q, &secret, "/v1/threads", json!({})).await;
        if user_secret.is_empty() {
            user_secret = secret;
        }
        owners.ids.push((
            tenant.clone(),
            k["id"].as_str().context("id")?.to_string(),
            t["id"].as_str().context("thread")?.to_string(),
        ));
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let queries: Vec<Vec<f32>> = (0..a.queries).map(|_| rng.unit(None, 1.0)).collect();
    let mut rows: Vec<Row> = Vec::new();
    let planted = queries.len() * 30;
    let texts = ["refund for my order", "the train to Porto", "two-factor codes arrive late"];
    for &size in &a.sizes {
        let start = rows.len();
        anyhow::ensure!(size > start, "--sizes must grow");
        let mut added = Vec::with_capacity(size - start);
        for i in start..size {
            // The first rows: 10 neighbours of each query for each owner
            // (noise 0.06 a component puts them near 0.83 cosine to it;
            // random rows are near 0).
            let (owner, vector) = if i < planted {
                (i / 10 % 3, rng.unit(Some(&queries[i / 30]), 0.06))
            } else {
                (owner_of(i), rng.unit(None, 1.0))
            };
            added.push(Row { id: qlaud_server::store::new_id("msg"), owner, vector });
        }
        let t0 = Instant::now();
        if postgres {
            sqlx::query("DROP INDEX IF EXISTS turn_vectors_hnsw")
                .execute(&qlaud_tests::store_pool(url).await)
                .await?;
        }
        insert(url, &owners, &added, postgres, start).await?;
        rows.extend(added);
        let mut build = String::new();
        if postgres {
            let pool = qlaud_tests::store_pool(url).await;
            let t1 = Instant::now();
            if path != VectorIndex::Exact {
                sqlx::query("SET maintenance_work_mem = '512MB'").execute(&pool).await.ok();
                sqlx::query(
                    "CREATE INDEX turn_vectors_hnsw ON turn_vectors \
                     USING hnsw (embedding_v vector_cosine_ops)",
                )
                .execute(&pool)
                .await?;
                build = format!(", HNSW index built in {:.0} s", t1.elapsed().as_secs_f64());
            }
            sqlx::query("ANALYZE turn_vectors").execute(&pool).await?;
        }
        eprintln!("{name}: {size} rows stored in {:.0} s{build}", t0.elapsed().as_secs_f64());
        for (scope, owner, reach) in [
            (
                "standard key (10 % of rows)",
                Some(0usize),
                &(|o: usize| o == 0) as &dyn Fn(usize) -> bool,
            ),
            ("admin, its tenant (50 %)", None, &(|o: usize| o < 2) as &dyn Fn(usize) -> bool),
        ] {
            let mut lat = Vec::new();
            let mut hit = 0;
            let mut total = 0;
            for query in &queries {
                let vq = VectorQuery {
                    tenant_id: &owners.ids[0].0,
                    owner: owner.map(|o| owners.ids[o].1.as_str()),
                    key_id: None,
                    thread_id: None,
                    role: None,
                    from_ms: i64::MIN,
                    to_ms: i64::MAX,
                    limit: 10,
                    vector: query,
                };
                let t = Instant::now();
                let got = store.search_vectors(&vq, path).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                let exact: HashSet<String> = exact_top(&rows, query, reach).into_iter().collect();
                total += exact.len();
                hit += got.iter().filter(|h| exact.contains(&h.message_id)).count();
            }
            println!(
                "| {name} | {} | {size} | {scope} | {:.1} | {:.1} | {:.3} |",
                path_name(path),
                quantile(&mut lat, 0.5),
                quantile(&mut lat, 0.99),
                hit as f64 / total.max(1) as f64
            );
        }
        // The whole request: the query embedded by the model, then the
        // index, through HTTP.
        let mut lat = Vec::new();
        for i in 0..a.queries.min(50) {
            let t = Instant::now();
            post(http, &q, &user_secret, "/v1/search", json!({"query": texts[i % texts.len()]}))
                .await;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        println!(
            "| {name} | {} | {size} | `POST /v1/search`, text query (standard key) | {:.1} | {:.1} | – |",
            path_name(path),
            quantile(&mut lat, 0.5),
            quantile(&mut lat, 0.99)
        );
    }
    store.close().await;
    drop(q);
    Ok(())
}

fn path_name(p: VectorIndex) -> &'static str {
    match p {
        VectorIndex::Exact => "exact scan",
        VectorIndex::Hnsw => "HNSW, iterative scan",
        VectorIndex::HnswOrExact => "HNSW (ef_search 200), exact if short",
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let http = reqwest::Client::new();
    embedding(&a, &http).await?;
    println!(
        "Search latency (ms) and recall@10 against the exact top 10, {} queries of limit 10, \
         synthetic unit vectors with 10 neighbours planted per query and owner:\n",
        a.queries
    );
    println!("| store | path | turns | who searches | p50 | p99 | recall@10 |");
    println!("|---|---|---|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("qlaud.db").display());
    index(&a, &http, "SQLite", &sqlite, false).await?;
    match &a.pgvector_url {
        Some(admin) => {
            let db = qlaud_tests::TestDb::new_postgres(admin).await.context("database")?;
            index(&a, &http, "PostgreSQL", &db.url, true).await?;
        }
        None => eprintln!("no --pgvector-url (QLAUD_TEST_PGVECTOR_URL): PostgreSQL skipped"),
    }
    Ok(())
}
