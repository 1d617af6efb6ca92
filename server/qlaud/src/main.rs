//! The `qlaud` binary: `qlaud serve` and `qlaud admin …`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
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
}

#[derive(Args)]
struct StoreArgs {
    /// Directory for the embedded SQLite store and other state.
    #[arg(long, env = "QLAUD_DATA_DIR", default_value = "./qlaud-data")]
    data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; overrides --data-dir's SQLite file.
    #[arg(long, env = "QLAUD_DATABASE_URL")]
    database_url: Option<String>,
}

impl StoreArgs {
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
        Command::Admin(AdminCommand::CreateTenant { name, store }) => {
            let store = Store::connect(&store.url()?).await?;
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
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServeConfig::new(args.bind, args.store.url()?);
    config.config_file = args.config;
    config.instance_timeout = std::time::Duration::from_secs(args.instance_timeout_secs);
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
    tokio::select! {
        r = server.wait() => r,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}
