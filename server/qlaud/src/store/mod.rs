//! The store: one sqlx code path over SQLite (the embedded default) and
//! PostgreSQL (several qlaud processes, one database).
//!
//! Queries are written once in portable SQL with `$n` placeholders (sqlx's
//! SQLite driver reads `$n` as the n-th argument) and run through sqlx's `Any`
//! driver, which keeps each backend's prepared-statement cache.

mod billing;
mod jobs;
mod key_data;
mod key_list;
mod keys;
mod leases;
mod ledger;
mod request_log;
mod requests;
mod responses;
mod search;
mod secrets;
mod sessions;
mod tenants;
mod threads;
mod tools;
mod usage;
mod videos;
mod webhook_secrets;

use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use billing::{AlertState, BillingEventRow, MeterRow, ModelSums, SettingsRow};
pub use jobs::{
    HELD as JOB_HOLDER, JobAccess, JobInsert, JobOutcome, JobQuery, JobRow, NewJob, job_status_str,
    parse_job_status,
};
pub use key_list::{KeyActivity, KeyQuery, ListedKey, WindowStarts};
pub use keys::{
    KeyChanges, KeyRow, NewKey, STRIPE_CUSTOMER, parse_period, parse_scope, period_str, scope_str,
};
pub use ledger::{CapState, HeldReservation, NewReservation, RateCount, RateCounted};
pub use request_log::{PushRunRow, PushTotals, RequestLogQuery, RequestLogRow};
pub use requests::MAX_BATCH;
pub use responses::{NewResponse, ResponseRow};
pub use search::{
    Deferral, HitRow, IndexedGroup, NewVector, PendingTurn, VectorIndex, VectorQuery,
};
pub use sessions::SessionRow;
pub use tenants::TenantRow;
pub use threads::{
    MessageQuery, MessageRow, NewMessage, NewThread, ThreadAccess, ThreadChanges, ThreadQuery,
    ThreadRow, TurnClaim, parse_role, parse_truncation, role_str, truncation_str,
};
pub use tools::{NewTool, ToolQuery, ToolRow};
pub use usage::{UsageCell, UsageFilter, UsageRow};
pub use videos::VideoRow;
pub use webhook_secrets::WebhookSecretRow;

use crate::error::Result;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Where writes go. On SQLite a single connection, so writers queue in
    /// order inside qlaud instead of sleeping in SQLite's busy handler (which
    /// backs off in growing steps and wrecks tail latency); on PostgreSQL the
    /// same pool as reads.
    writer: AnyPool,
    backend: Backend,
    /// Batches admissions (see `ledger::spawn_admitter`).
    admitter: tokio::sync::mpsc::Sender<ledger::ReserveJob>,
    /// What seals the tenants' secrets at rest (see `use_secret_key`).
    secret_key: Option<std::sync::Arc<crate::secrets::Keyring>>,
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and runs the
    /// embedded migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("unsupported database URL {url:?}: expected sqlite://… or postgres://…");
        };
        if backend == Backend::Sqlite {
            // Before the first connection: SQLite links extensions at open.
            crate::search::sqlite_vec::register();
        }
        let options = AnyConnectOptions::from_str(url)?;
        let sqlite_options = |max: u32| {
            AnyPoolOptions::new()
                // WAL lets readers run beside the one writer; the busy
                // timeout makes writers queue instead of failing.
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        Ok(())
                    })
                })
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(30))
        };
        let (pool, writer) = match backend {
            Backend::Sqlite => {
                let writer = sqlite_options(1).connect_with(options.clone()).await?;
                migrate(&writer, backend).await?;
                (sqlite_options(8).connect_with(options).await?, writer)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await?;
                migrate(&pool, backend).await?;
                (pool.clone(), pool)
            }
        };
        let admitter = ledger::spawn_admitter(writer.clone(), backend);
        Ok(Store { pool, writer, backend, admitter, secret_key: None })
    }

    /// [`Store::connect`], then the secret key from `key` (see
    /// `use_secret_key`): what every command that opens the store does.
    pub async fn open(url: &str, key: &crate::secrets::KeySource) -> anyhow::Result<Store> {
        let key_source = key;
        let mut store = Store::connect(url).await?;
        // PostgreSQL is shared by several processes: its key is the
        // operator's to give, never one made here.
        let key = match store.backend {
            Backend::Postgres if key.value.is_none() && key.file.is_none() => None,
            _ => key.for_url(url).load()?,
        };
        store.use_secret_key(key, key_source.load_previous()?).await?;
        Ok(store)
    }

    /// The SQLite URL for a data directory, creating the directory (0700)
    /// and the database file (0600) when absent and tightening them when
    /// an older version made them readable to others: they hold the
    /// tenants' keys and usage.
    pub fn sqlite_url_for(data_dir: &Path) -> anyhow::Result<String> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir)?;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
        let file = data_dir.join("qlaud.db");
        // SQLite gives its -wal and -shm files the database file's mode.
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&file)?;
        for name in ["qlaud.db", "qlaud.db-wal", "qlaud.db-shm"] {
            let path = data_dir.join(name);
            if path.exists() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        Ok(format!("sqlite://{}?mode=rwc", file.display()))
    }

    /// The id of the key sealing stored secrets, if there is one.
    pub fn secret_key_id(&self) -> Option<&str> {
        self.secret_key.as_deref().map(|k| k.current.id())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// For reads.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// For writes and transactions that write.
    pub(crate) fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> crate::error::Result<()> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// Runs the embedded migrations. PostgreSQL serialises concurrent runs with an
/// advisory lock; SQLite has none, so when several processes start on one
/// fresh file the losers' migration transactions fail and roll back, and a
/// retry finds the work done.
async fn migrate(pool: &AnyPool, backend: Backend) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if backend == Backend::Sqlite && attempt < 10 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "migration raced another process; retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Statements whose text depends on a batch size (`n` rows or jobs in one
/// statement). sqlx takes only static SQL, so each size's text is built on
/// first use and kept for the life of the process: at most `max` strings.
pub(crate) fn sized_sql(
    cache: &'static OnceLock<Vec<&'static str>>,
    max: usize,
    n: usize,
    build: impl Fn(usize) -> String,
) -> &'static str {
    cache.get_or_init(|| (1..=max).map(|n| &*Box::leak(build(n).into_boxed_str())).collect())[n - 1]
}

/// Milliseconds since the Unix epoch, the store's time unit.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A fresh id with a type prefix, such as `key_019a…`. Ids are UUIDv7:
/// they sort in creation order within a process, so lists ordered by
/// creation time (ties broken by id) keep the order things were made in
/// the same millisecond, and new rows land at the end of the id index.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

pub(crate) type StoreResult<T> = Result<T>;
