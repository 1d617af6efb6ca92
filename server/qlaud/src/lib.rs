//! The qlaud server: the implementation of [`qlaud_api::QlaudApi`].
//!
//! A request flows `http` (entry points) → `auth` → the domain module
//! (`keys`, `threads`, `tools`, `jobs`, or `gateway` → `providers/*` → `meter` for model calls) → `store`.

pub mod auth;
pub mod billing;
pub mod clock;
pub mod config;
pub mod context;
pub mod dashboard;
pub mod dialects;
pub mod embed;
pub mod error;
pub mod gateway;
pub mod http;
pub mod jobs;
pub mod keys;
mod listener;
pub mod media;
pub mod meter;
pub mod metrics;
pub mod outbound;
pub mod providers;
pub mod request_log;
pub mod search;
pub mod secrets;
pub mod shutdown;
pub mod store;
pub mod threads;
pub mod tokens;
pub mod tools;
pub mod units;
pub mod usage;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dropshot::{ConfigDropshot, ConfigLogging, ConfigLoggingLevel, HttpServer, ServerBuilder};

use crate::context::Context;
use crate::keys::secret::Secret;
use crate::store::{Store, TenantRow};

/// How to run a server.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub bind: SocketAddr,
    pub database_url: String,
    /// A qlaud.toml with providers and models on top of the built-in ones.
    pub config_file: Option<PathBuf>,
    /// How long another process's heartbeat may be silent before its open
    /// reservations are settled by crash recovery.
    pub instance_timeout: std::time::Duration,
    /// The clock billing goes by (tests move it across calendar windows).
    pub clock: Arc<clock::Clock>,
    /// `--allow-private-webhooks`: tenants' URLs may be plain http and
    /// reach loopback and private addresses (development and tests only).
    pub allow_private_webhooks: bool,
    /// Worst-case requests a budget lease has room for
    /// (`--lease-requests`, default 16; 0: no leases).
    pub lease_requests: u64,
    /// Jobs this process runs at once (`--job-workers`).
    pub job_workers: usize,
    /// Jobs one tenant may have in progress at once across every process
    /// on the store (`--job-tenant-concurrency`, default 16).
    pub job_tenant_concurrency: usize,
    /// How long a job and its result are kept after it ended
    /// (`--job-retention-secs`, default 7 days).
    pub job_retention: std::time::Duration,
    /// How often an idle job runner looks for jobs submitted to other
    /// processes.
    pub job_poll: std::time::Duration,
    /// How often the server polls the videos no client polled to their
    /// end, and how long one may go without an outcome before it is
    /// settled at its price.
    pub video_sweep: gateway::video::Sweep,
    /// A connection that has sent no byte for this long is closed.
    pub header_timeout: Duration,
    /// A request body that has not fully arrived within this is refused
    /// (408) and its connection closed.
    pub body_timeout: Duration,
    /// `--metrics-token`: `/metrics` needs it as a bearer token.
    pub metrics_token: Option<String>,
    /// `--metrics-bind`: `/metrics` is served there instead of on `bind`.
    pub metrics_bind: Option<SocketAddr>,
    /// Where the embedding model's files are (fetched there in the
    /// background when missing). `None`: no model, search answers 503.
    pub embed_model_dir: Option<PathBuf>,
    /// How often an idle search indexer looks for turns to embed.
    pub embed_poll: Duration,
    /// How long turns whose owner key cannot pay for their embedding now
    /// (cap reached, suspended, disabled) wait before they are tried again.
    pub embed_defer: Duration,
    /// Where the key sealing stored secrets comes from.
    pub secret_key: secrets::KeySource,
}

impl ServeConfig {
    /// A configuration with defaults for everything but the two essentials.
    pub fn new(bind: SocketAddr, database_url: String) -> ServeConfig {
        ServeConfig {
            bind,
            database_url,
            config_file: None,
            instance_timeout: std::time::Duration::from_secs(15),
            clock: Arc::default(),
            allow_private_webhooks: false,
            lease_requests: 16,
            job_workers: 8,
            job_tenant_concurrency: 16,
            job_retention: std::time::Duration::from_secs(7 * 86_400),
            job_poll: std::time::Duration::from_millis(500),
            video_sweep: gateway::video::Sweep {
                every: Duration::from_secs(60),
                max_age: Duration::from_secs(86_400),
            },
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            metrics_token: None,
            metrics_bind: None,
            embed_model_dir: None,
            embed_poll: Duration::from_millis(500),
            embed_defer: Duration::from_secs(60),
            secret_key: secrets::KeySource::default(),
        }
    }
}

/// A running server.
pub struct Server {
    http: HttpServer<Context>,
    /// `/metrics` on its own address, with `--metrics-bind`.
    metrics_http: Option<HttpServer<Context>>,
    /// The first tenant and its master key, when this start created them.
    pub bootstrap: Option<(TenantRow, Secret)>,
}

impl Server {
    /// Connects the store, runs migrations, bootstraps an empty store and
    /// starts serving.
    pub async fn start(config: &ServeConfig) -> anyhow::Result<Server> {
        let store =
            Store::open(&config.database_url, &config.secret_key).await.with_context(|| {
                format!("opening the store at {}", redact_url(&config.database_url))
            })?;
        let catalog = config::Catalog::load(config.config_file.as_deref())?;
        let bootstrap = store.bootstrap().await?;
        let mut api = qlaud_api::qlaud_api_mod::api_description::<http::QlaudImpl>()
            .map_err(|e| anyhow::anyhow!("building the API: {e}"))?;
        dashboard::register(&mut api)?;
        // dropshot logs through slog; qlaud's own logs go through tracing.
        // Per-request info logs would cost more than the gateway itself, so
        // dropshot only reports warnings.
        let log = ConfigLogging::StderrTerminal { level: ConfigLoggingLevel::Warn }
            .to_logger("qlaud")
            .context("creating the HTTP logger")?;
        let outbound = outbound::Policy { allow_private: config.allow_private_webhooks };
        if outbound.allow_private {
            tracing::warn!(
                "--allow-private-webhooks: tenants' webhook URLs may use plain http and reach \
                 loopback and private addresses; never use this in production"
            );
        }
        let mut ctx =
            Context::new(store, gateway::Gateway::new(catalog), config.clock.clone(), outbound);
        ctx.metrics_access = metrics::Access::new(
            config.bind,
            config.metrics_token.clone(),
            config.metrics_bind.is_some(),
        );
        if !ctx.metrics_access.on_main && config.metrics_bind.is_none() {
            tracing::warn!(
                "/metrics is off: the server listens beyond loopback and neither \
                 --metrics-token nor --metrics-bind is set"
            );
        }
        let metrics_http = match config.metrics_bind {
            Some(bind) => Some(metrics::serve_separately(bind, ctx.clone(), log.clone())?),
            None => None,
        };
        meter::ledger::spawn_recovery(
            ctx.store.clone(),
            ctx.clock.clone(),
            ctx.meter.instance_id.clone(),
            config.instance_timeout,
        );
        ctx.meter.leases.set_size(config.lease_requests);
        meter::lease::spawn_sweeper(ctx.meter.clone());
        ctx.search = Arc::new(start_search(&ctx, config).await?);
        jobs::runner::spawn(
            ctx.clone(),
            jobs::runner::Settings {
                workers: config.job_workers,
                per_tenant: config.job_tenant_concurrency,
                instance_timeout: config.instance_timeout,
                retention: config.job_retention,
                poll: config.job_poll,
            },
        );
        gateway::video::spawn_sweep(ctx.clone(), config.video_sweep);
        qlaud_api::body::set_read_timeout(config.body_timeout);
        let dropshot_config = ConfigDropshot {
            bind_address: config.bind,
            default_request_body_max_bytes: qlaud_api::ADMIN_BODY_MAX_BYTES,
            ..Default::default()
        };
        let http = ServerBuilder::new(api, ctx, log)
            .config(dropshot_config)
            .start()
            .map_err(|e| anyhow::anyhow!("starting the HTTP server on {}: {e}", config.bind))?;
        if !listener::set_nodelay_on_listener(http.local_addr()) {
            tracing::warn!("could not set TCP_NODELAY on the listener: streams may stall");
        }
        let drain = http.app_private().drain.clone();
        listener::spawn_silent_reaper(http.local_addr(), config.header_timeout, drain);
        Ok(Server { http, metrics_http, bootstrap })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Where `/metrics` is served on its own (`--metrics-bind`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_http.as_ref().map(HttpServer::local_addr)
    }

    pub fn store(&self) -> &Store {
        &self.http.app_private().store
    }

    /// Serves until the server fails.
    pub async fn wait(&self) -> anyhow::Result<()> {
        self.http.wait_for_shutdown().await.map_err(|e| anyhow::anyhow!(e))
    }

    /// Stops accepting requests, finishes the ones in flight and closes the
    /// store (a drain with no deadline).
    pub async fn close(self) -> anyhow::Result<()> {
        self.shutdown(Duration::MAX).await.map(|_| ())
    }

    /// The start of a shutdown: `/health` answers 503 from now on.
    pub fn begin_drain(&self) {
        self.http.app_private().drain.begin();
    }

    /// A graceful shutdown: new connections are refused, requests and
    /// streams in flight may finish for up to `deadline`; then the streams
    /// still running end with an error event in their client's shape and
    /// settle at what they used. Every settlement is written before the
    /// store closes. A non-streamed request still waiting for its provider
    /// after a further grace period is left open, for the next start's
    /// crash recovery.
    pub async fn shutdown(self, deadline: Duration) -> anyhow::Result<Drained> {
        let ctx = self.http.app_private().clone();
        let addr = self.http.local_addr();
        ctx.drain.begin();
        let started = std::time::Instant::now();
        // dropshot stops accepting, ends idle connections, and waits for
        // handlers and response bodies; the stream tasks are waited for
        // separately (one may outlive its connection while it settles).
        if let Some(m) = self.metrics_http {
            // Scrapes are cheap and stateless: no drain for them.
            let _ = m.close().await;
        }
        let closing = tokio::spawn(self.http.close());
        // Refuse new connections once dropshot's accept loop has stopped.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !listener::stop_listening(addr) {
            tracing::warn!("could not close the listening socket; new connections will hang");
        }
        let all_done = async {
            let closed = closing.await.map_err(|e| e.to_string()).and_then(|r| r);
            ctx.drain.idle().await;
            closed
        };
        tokio::pin!(all_done);
        let mut complete = true;
        let closed = match tokio::time::timeout(deadline, &mut all_done).await {
            Ok(closed) => closed,
            Err(_) => {
                ctx.drain.cut();
                match tokio::time::timeout(CUT_GRACE, &mut all_done).await {
                    Ok(closed) => closed,
                    Err(_) => {
                        complete = false;
                        Ok(())
                    }
                }
            }
        };
        if let Err(e) = closed {
            tracing::warn!(error = %e, "closing the HTTP server");
        }
        ctx.meter.recorder.close().await;
        // Every settlement is written: give the leases' room back, so a
        // shutdown bills nothing a request did not use.
        let now = ctx.clock.now_ms();
        meter::lease::give_back(&ctx.store, &ctx.meter.leases, now, None).await;
        ctx.store.close().await;
        Ok(Drained { elapsed: started.elapsed(), cut_streams: ctx.drain.cut_streams(), complete })
    }
}

/// Starts the embedding model and, where the store can hold vectors, the
/// indexer that embeds queued turns.
async fn start_search(ctx: &Context, config: &ServeConfig) -> anyhow::Result<search::Search> {
    let embedder = match &config.embed_model_dir {
        Some(dir) => embed::Embedder::start(dir.clone()),
        None => embed::Embedder::off(),
    };
    let index = ctx.store.prepare_vector_index().await.context("preparing the vector index")?;
    if index.is_none() {
        tracing::warn!(
            "this PostgreSQL has no pgvector extension: search answers 503 and turns stay \
             queued until pgvector is installed (every managed PostgreSQL offers it)"
        );
    } else if config.embed_model_dir.is_some() {
        let biller = search::billing::Biller {
            meter: ctx.meter.clone(),
            model: ctx.gateway.catalog.model(embed::MODEL_NAME).cloned(),
            defer: config.embed_defer,
        };
        search::indexer::spawn(
            ctx.store.clone(),
            embedder.clone(),
            ctx.clock.clone(),
            biller,
            search::indexer::Settings {
                instance_id: ctx.meter.instance_id.clone(),
                instance_timeout: config.instance_timeout,
                poll: config.embed_poll,
            },
        );
    }
    Ok(search::Search { embedder, index })
}

/// How long streams get to end and settle once the drain deadline has cut
/// them, and non-streamed requests to finish.
const CUT_GRACE: Duration = Duration::from_secs(5);

/// What a shutdown did.
#[derive(Debug)]
pub struct Drained {
    pub elapsed: Duration,
    /// Streams (and thread-turn rounds) ended by the deadline.
    pub cut_streams: usize,
    /// `false` when requests were still running after the grace period.
    pub complete: bool,
}

/// A database URL fit for logs: the password is replaced.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
