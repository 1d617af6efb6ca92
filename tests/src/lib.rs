//! End-to-end test harness: starts the real qlaud server with a fresh store
//! per test, on SQLite and (when `QLAUD_TEST_DATABASE_URL` is set) on a fresh
//! PostgreSQL database of its own, so tests run in parallel.

pub mod mock;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use qlaud_server::{ServeConfig, Server};
use sqlx::{Connection, Executor};

/// The store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn name(backend: Backend)` once per backend, as
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

/// The PostgreSQL server tests use, or `None` (loudly) when not configured.
/// Under `CI=true` a missing database fails the test instead.
///
/// libtest has no way to skip a test once it runs, so a `postgres::` test
/// without a database returns at once and is reported as passed. The note
/// below goes straight to the process's stderr (libtest captures only
/// `eprintln!`), once per test binary; `cargo xtask test` leaves these tests
/// out by name instead, and counts them as skipped.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("QLAUD_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "CI=true but QLAUD_TEST_DATABASE_URL is not set");
            static NOTE: std::sync::Once = std::sync::Once::new();
            NOTE.call_once(|| {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "\nNOTE: QLAUD_TEST_DATABASE_URL is not set: the postgres:: tests of this \
                     binary test NOTHING and are reported as passed (use --skip postgres::, or \
                     cargo xtask test, to see them counted as skipped)."
                );
            });
            None
        }
    }
}

/// The PostgreSQL server with pgvector the search tests' PostgreSQL half
/// runs on (`QLAUD_TEST_PGVECTOR_URL`; `cargo xtask test` starts one), or
/// `None`, loudly. Under `CI=true` a missing server fails the test.
pub fn pgvector_admin_url() -> Option<String> {
    match std::env::var("QLAUD_TEST_PGVECTOR_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "CI=true but QLAUD_TEST_PGVECTOR_URL is not set");
            static NOTE: std::sync::Once = std::sync::Once::new();
            NOTE.call_once(|| {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "\nNOTE: QLAUD_TEST_PGVECTOR_URL is not set: the postgres:: search tests \
                     test NOTHING and are reported as passed (cargo xtask test starts a \
                     PostgreSQL with pgvector and sets it)."
                );
            });
            None
        }
    }
}

/// Search on: the embedding model from the tests' cache, and an indexer
/// that looks for new turns often.
pub fn search_config(config: &mut ServeConfig) {
    config.embed_model_dir = Some(embed_model_dir());
    config.embed_poll = std::time::Duration::from_millis(100);
}

/// Where the tests keep the embedding model, fetched once per machine by
/// the first server that needs it (`$CARGO_TARGET_DIR/embed-model`).
pub fn embed_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QLAUD_EMBED_MODEL_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("embed-model")
}

/// A database of its own for one test, on one backend; dropped with it.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

impl TestDb {
    /// `None` when the backend is PostgreSQL and no server is configured.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("qlaud.db").display());
                Some(TestDb { url, _dir: Some(dir), pg_drop: None })
            }
            Backend::Postgres => TestDb::new_postgres(&postgres_admin_url()?).await,
        }
    }

    /// Like [`TestDb::new`], with PostgreSQL on the pgvector-enabled server.
    pub async fn new_search(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => TestDb::new(backend).await,
            Backend::Postgres => TestDb::new_postgres(&pgvector_admin_url()?).await,
        }
    }

    /// A fresh database on the PostgreSQL server at `admin`.
    pub async fn new_postgres(admin: &str) -> Option<TestDb> {
        let admin = admin.to_string();
        let name = format!("qlaud_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to PostgreSQL");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        conn.close().await.ok();
        let url = with_database(&admin, &name);
        Some(TestDb { url, _dir: None, pg_drop: Some((admin, name)) })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg_drop.take() {
            // Drop runs inside the test's runtime; use a thread of our own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                            let _ = conn
                                .execute(sqlx::AssertSqlSafe(format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                )))
                                .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map(|i| authority_start + i);
    let mut out = match path_start {
        Some(i) => format!("{}/{name}", &base[..i]),
        None => format!("{base}/{name}"),
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A running server with its own store and a bootstrapped tenant.
pub struct TestServer {
    server: Option<Server>,
    pub db: TestDb,
    pub addr: SocketAddr,
    pub base_url: String,
    pub tenant_id: String,
    pub master_key: String,
    pub http: reqwest::Client,
    /// The server's billing clock; tests move it across calendar windows.
    pub clock: std::sync::Arc<qlaud_server::clock::Clock>,
}

impl TestServer {
    /// `None` when the backend is not available (PostgreSQL not configured).
    pub async fn start(backend: Backend) -> Option<TestServer> {
        TestServer::start_with(backend, None).await
    }

    /// Starts with `qlaud_toml` as the server's config file. Like every
    /// test server it allows private webhook targets, so local receivers
    /// can take spend alerts and tool calls.
    pub async fn start_with(backend: Backend, qlaud_toml: Option<&str>) -> Option<TestServer> {
        TestServer::start_with_options(backend, qlaud_toml, true).await
    }

    /// Starts as a production operator would run it: without
    /// `--allow-private-webhooks`.
    pub async fn start_strict(backend: Backend) -> Option<TestServer> {
        TestServer::start_with_options(backend, None, false).await
    }

    async fn start_with_options(
        backend: Backend,
        qlaud_toml: Option<&str>,
        allow_private_webhooks: bool,
    ) -> Option<TestServer> {
        TestServer::start_configured(backend, qlaud_toml, |config| {
            config.allow_private_webhooks = allow_private_webhooks;
        })
        .await
    }

    /// Starts with `qlaud_toml` and whatever `configure` changes in the
    /// server's configuration (private webhooks are allowed unless it says
    /// otherwise).
    pub async fn start_configured(
        backend: Backend,
        qlaud_toml: Option<&str>,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> Option<TestServer> {
        TestServer::start_on(TestDb::new(backend).await?, qlaud_toml, configure).await
    }

    /// A server with search on: the embedding model (from the tests'
    /// cache) and, on PostgreSQL, the pgvector-enabled server.
    pub async fn start_search(backend: Backend) -> Option<TestServer> {
        TestServer::start_on(TestDb::new_search(backend).await?, None, search_config).await
    }

    /// Starts on `db`.
    pub async fn start_on(
        db: TestDb,
        qlaud_toml: Option<&str>,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> Option<TestServer> {
        let config_file = qlaud_toml.map(|text| {
            let path = std::env::temp_dir().join(format!("qlaud-{}.toml", uuid::Uuid::new_v4()));
            std::fs::write(&path, text).expect("write qlaud.toml");
            path
        });
        let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), db.url.clone());
        config.config_file = config_file;
        config.allow_private_webhooks = true;
        configure(&mut config);
        let clock = config.clock.clone();
        let server = Server::start(&config).await.expect("server starts");
        // A restart on a store that has its tenant already: the caller
        // knows the keys.
        let (tenant_id, master_key) = match &server.bootstrap {
            Some((tenant, secret)) => (tenant.id.clone(), secret.expose().to_string()),
            None => (String::new(), String::new()),
        };
        let addr = server.local_addr();
        Some(TestServer {
            tenant_id,
            master_key,
            base_url: format!("http://{addr}"),
            addr,
            db,
            server: Some(server),
            http: reqwest::Client::new(),
            clock,
        })
    }

    /// The server's billing time, Unix ms.
    pub fn clock_now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// An SDK client with `key`.
    pub fn client(&self, key: &str) -> qlaud::Client {
        qlaud::Client::new(&self.base_url, key).expect("client builds")
    }

    /// A second tenant: `(tenant_id, master_key)`.
    pub async fn create_tenant(&self, name: &str) -> (String, String) {
        let (tenant, secret) = self.server().store().create_tenant(name).await.unwrap();
        (tenant.id, secret.expose().to_string())
    }

    /// Sends a raw request and returns the status and JSON body (Null when
    /// the body is empty or not JSON).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<RawBody>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base_url));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        match body {
            Some(RawBody::Json(v)) => req = req.json(&v),
            Some(RawBody::Text(t)) => {
                req = req.header("content-type", "application/json").body(t);
            }
            None => {}
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// Stops the server and hands back its store, to start another server
    /// on it.
    pub async fn stop_keeping_store(mut self) -> TestDb {
        if let Some(server) = self.server.take() {
            server.close().await.expect("server closes");
        }
        self.db
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.close().await.expect("server closes");
        }
    }
}

/// The events of a server-sent-events body: `(event name, data)`.
pub fn sse_events(text: &str) -> Vec<(Option<String>, String)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).map(str::to_string);
            let data: String = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (name, data)
        })
        .collect()
}

impl TestServer {
    /// Mints a key with the master key; the answer's JSON.
    pub async fn mint(&self, body: serde_json::Value) -> serde_json::Value {
        let (status, key) = self
            .request(
                reqwest::Method::POST,
                "/v1/keys",
                Some(&self.master_key),
                Some(RawBody::Json(body)),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        key
    }
}

impl TestServer {
    /// A key's settled spend and settled requests this month, as the usage
    /// report says (it flushes the server's settlement queue first).
    pub async fn key_spend(&self, key_id: &str) -> (i64, u64) {
        let path = format!("/v1/usage?key_id={key_id}");
        let (status, v) =
            self.request(reqwest::Method::GET, &path, Some(&self.master_key), None).await;
        assert_eq!(status, 200, "{v}");
        (v["totals"]["cost_micros"].as_i64().unwrap(), v["totals"]["requests"].as_u64().unwrap())
    }

    /// Waits until `requests` requests of the key are settled (a stream is
    /// settled after its last event is sent); returns the key's spend.
    pub async fn settled(&self, key_id: &str, requests: u64) -> i64 {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (cost, n) = self.key_spend(key_id).await;
            if n >= requests {
                assert_eq!(n, requests, "settled more requests than were admitted");
                return cost;
            }
            assert!(tokio::time::Instant::now() < deadline, "only {n} of {requests} settled");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A request body for [`TestServer::request`].
pub enum RawBody {
    Json(serde_json::Value),
    /// Sent verbatim as `application/json` (for malformed JSON).
    Text(String),
}

/// The `qlaud` binary of this workspace, built once per test run.
pub fn qlaud_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "qlaud-server", "--bin", "qlaud"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the qlaud binary failed");
        target.join("debug").join("qlaud")
    })
    .clone()
}

/// The flags of `qlaud serve` processes sharing one test store behind
/// `mock`: the store, a qlaud.toml naming the mock (in the temp dir, gone
/// with this), and the flags added.
pub struct ServeArgs {
    args: Vec<String>,
    config: PathBuf,
}

impl Drop for ServeArgs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

impl ServeArgs {
    pub fn new(db: &TestDb, mock: &mock::MockUpstream, extra: &[&str]) -> ServeArgs {
        let config = std::env::temp_dir().join(format!("qlaud-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&config, mock_toml(mock)).expect("write qlaud.toml");
        let mut args = vec![
            "--database-url".to_string(),
            db.url.clone(),
            "--config".to_string(),
            config.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        ServeArgs { args, config }
    }

    /// Starts one more process with these flags.
    pub async fn spawn(&self) -> QlaudProcess {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        QlaudProcess::spawn(&args).await
    }
}

/// A `qlaud serve` process of the real binary.
pub struct QlaudProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    /// What it printed on stdout before it started listening.
    pub stdout: String,
}

impl QlaudProcess {
    /// Mints a key through this process with the admin key `master`; the
    /// answer (with its `secret`).
    pub async fn mint(&self, master: &str, body: serde_json::Value) -> serde_json::Value {
        reqwest::Client::new()
            .post(format!("{}/v1/keys", self.base_url()))
            .bearer_auth(master)
            .json(&body)
            .send()
            .await
            .expect("minting a key")
            .json()
            .await
            .expect("a key")
    }

    /// The JSON line a fresh store's first start prints (`master_key`,
    /// `tenant_id`).
    pub fn boot(&self) -> serde_json::Value {
        let line = self.stdout.lines().find(|l| l.starts_with('{')).expect("a bootstrap line");
        serde_json::from_str(line).expect("the bootstrap line is JSON")
    }

    /// Starts `qlaud serve` on a free port (allowing private webhook
    /// targets, as every test server does) with `args` added, and waits
    /// until it listens.
    pub async fn spawn(args: &[&str]) -> QlaudProcess {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
        let mut child = tokio::process::Command::new(qlaud_bin())
            .arg("serve")
            .args(["--bind", "127.0.0.1:0", "--allow-private-webhooks"])
            .arg("--embed-model-dir")
            .arg(embed_model_dir())
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn qlaud");
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut addr = None;
        let mut seen = String::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while addr.is_none() {
            let line = tokio::time::timeout_at(deadline, stderr.next_line())
                .await
                .expect("qlaud starts within 60 s")
                .expect("read stderr");
            let Some(line) = line else { panic!("qlaud exited before listening:\n{seen}") };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(rest) = line.split("addr=").nth(1) {
                addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
        }
        // Keep draining stderr so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        // The bootstrap line, if any, was printed before the listening line.
        let mut stdout = String::new();
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), out.read(&mut buf)).await
        {
            stdout.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        tokio::spawn(async move {
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        QlaudProcess { child, addr: addr.unwrap(), stdout }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL, no chance to clean up.
    pub async fn kill(mut self) {
        self.child.kill().await.ok();
    }

    /// Sends a signal by name (`TERM`, `INT`) without waiting.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("qlaud is running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Waits up to `limit` for the process to exit; its exit status.
    pub async fn exited_within(
        &mut self,
        limit: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait()).await.ok().map(|r| r.expect("wait"))
    }
}

/// A qlaud.toml whose providers point at `mock`, with test models:
/// `claude-test` (Anthropic, upstream id `claude-upstream`, $3/$15 per
/// million input/output tokens, cache $0.30 read / $3.75 write) and
/// `gpt-test` (OpenAI, upstream `gpt-upstream`, $1.25/$10, cache read
/// $0.125), plus `claude-<fault>` and `gpt-<fault>` for each of the mock's
/// faults, priced the same.
pub fn mock_toml(mock: &mock::MockUpstream) -> String {
    let mut toml = format!(
        r#"
[providers.anthropic]
kind = "anthropic"
base_url = "{a}"
api_key = "mock-anthropic-key"
timeout_secs = 2

[providers.openai]
kind = "openai"
base_url = "{o}"
api_key = "mock-openai-key"
timeout_secs = 2
"#,
        a = mock.anthropic_base_url(),
        o = mock.openai_base_url()
    );
    // The audio providers, at the mock's root.
    toml.push_str(&format!(
        "\n[providers.elevenlabs]\nkind = \"elevenlabs\"\nbase_url = \"{a}\"\n\
         api_key = \"{e}\"\ntimeout_secs = 2\n\n[providers.deepgram]\nkind = \"deepgram\"\n\
         base_url = \"{a}\"\napi_key = \"{d}\"\ntimeout_secs = 2\n",
        a = mock.anthropic_base_url(),
        e = mock::audio::ELEVENLABS_KEY,
        d = mock::audio::DEEPGRAM_KEY,
    ));
    let claude =
        r#"prices = { input = "3", output = "15", cache_read = "0.3", cache_write = "3.75" }"#;
    let gpt = r#"prices = { input = "1.25", output = "10", cache_read = "0.125" }"#;
    let mut model = |name: &str, provider: &str, upstream: &str, prices: &str| {
        toml.push_str(&format!(
            "\n[models.\"{name}\"]\nprovider = \"{provider}\"\nupstream = \"{upstream}\"\n\
             max_output_tokens = 1000\n{prices}\n"
        ));
    };
    model("claude-test", "anthropic", "claude-upstream", claude);
    model("gpt-test", "openai", "gpt-upstream", gpt);
    let faults =
        ["error-500", "error-429", "error-400", "error-529", "slow", "hang", "cut", "flaky"];
    let billing = ["greedy", "nousage", "greedy-cut", "greedy-nousage", "greedy-slow"];
    for fault in faults.into_iter().chain(billing) {
        model(&format!("claude-{fault}"), "anthropic", &format!("claude-{fault}"), claude);
        model(&format!("gpt-{fault}"), "openai", &format!("gpt-{fault}"), gpt);
    }
    // Perplexity's Agent API, at the mock's root (its client's base URL has
    // no /v1): `sonar-test` at $1/$1 per million tokens, $0.005 a web
    // search and $0.0005 a fetched URL.
    toml.push_str(&format!(
        "\n[providers.perplexity]\nkind = \"perplexity\"\nbase_url = \"{a}\"\n\
         api_key = \"mock-openai-key\"\ntimeout_secs = 2\n\n[models.\"sonar-test\"]\n\
         provider = \"perplexity\"\nupstream = \"sonar-upstream\"\nmax_output_tokens = 1000\n\
         context_window = 1000\nprices = {{ input = \"1\", output = \"1\", \
         web_search_calls = \"5000\", fetch_url_calls = \"500\" }}\n",
        a = mock.anthropic_base_url(),
    ));
    // Video models whose renders fail, or never finish (the mock treats
    // models named so that way).
    for name in ["sora-fail", "sora-stuck"] {
        toml.push_str(&format!(
            "\n[models.\"{name}\"]\nprovider = \"openai\"\nupstream = \"{name}\"\n\
             kind = \"video\"\nprices = {{ video_seconds_720p = \"100000\" }}\n"
        ));
    }
    // Embedding models: $0.02 per million input tokens.
    for (name, upstream) in [("embed-test", "embed-upstream"), ("embed-nousage", "embed-nousage")] {
        toml.push_str(&format!(
            "\n[models.\"{name}\"]\nprovider = \"openai\"\nupstream = \"{upstream}\"\n\
             kind = \"embedding\"\ncontext_window = 300000\nprices = {{ input = \"0.02\" }}\n"
        ));
    }
    toml
}

/// The ledger's own view of a key: settled and reserved micro-dollars
/// (over all its windows), and the open reservations of the whole store.
pub async fn ledger_state(url: &str, key_id: &str) -> (i64, i64, i64) {
    use sqlx::Row;
    let pool = store_pool(url).await;
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(settled_micros), 0) AS BIGINT) AS s, \
         CAST(COALESCE(SUM(reserved_micros), 0) AS BIGINT) AS r FROM key_spend WHERE key_id = $1",
    )
    .bind(key_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let open: i64 = sqlx::query("SELECT COUNT(*) AS n FROM reservations")
        .fetch_one(&pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    pool.close().await;
    (row.try_get("s").unwrap(), row.try_get("r").unwrap(), open)
}

/// A pool on a test database, for checking the ledger's own tables.
pub async fn store_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(url).await.expect("connect to the test store")
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(super::with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            super::with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
