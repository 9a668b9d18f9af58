//! `switchboard-worker`: runs the chat on the worker library. Parses the CLI, starts
//! logging, loads the config, opens the store and calls [`worker::run`] until SIGINT or
//! SIGTERM. No logic of its own.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{ArgAction, Parser};
use worker::{Chat, MemcachedStore, SledStore, Store, StoreKind, WorkerConfig};

/// Looked for in the working directory when `-c` is not given.
const DEFAULT_CONFIG: &str = "switchboard.toml";

/// Switchboard worker: links to the gateways and runs the chat.
#[derive(Parser, Debug)]
#[command(name = "switchboard-worker", version)]
struct Cli {
    /// Config file (its `[worker]` section). Default: ./switchboard.toml if present, else built-in defaults.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// More logging: -v debug, -vv trace. RUST_LOG overrides.
    #[arg(short, action = ArgAction::Count)]
    verbose: u8,
    /// Gateway to link to (its worker_listen address); repeat for several. Replaces the file's list.
    #[arg(long = "gateway", value_name = "ADDR")]
    gateways: Vec<String>,
    /// Shared secret of the gateways.
    #[arg(long)]
    secret: Option<String>,
    /// The store's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Name for the gateways' logs (default worker-PID).
    #[arg(long)]
    name: Option<String>,
}

fn load_config(cli: &Cli) -> anyhow::Result<WorkerConfig> {
    let mut config = match &cli.config {
        Some(path) => WorkerConfig::load(path)?,
        None if Path::new(DEFAULT_CONFIG).exists() => {
            WorkerConfig::load(Path::new(DEFAULT_CONFIG))?
        }
        None => WorkerConfig::default(),
    };
    if !cli.gateways.is_empty() {
        config.gateways = cli.gateways.clone();
    }
    if let Some(secret) = &cli.secret {
        config.secret = secret.clone();
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(name) = &cli.name {
        config.name = name.clone();
    }
    Ok(config)
}

/// Installs the SIGINT and SIGTERM handlers now, and returns a future that completes on
/// the first of them. Installed before the worker starts: a signal arriving while it links
/// must start the hand-over, not kill the process by the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let signals = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut int), Ok(mut term)) = signals else {
            tracing::error!("cannot install signal handlers; stop me with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT"),
            _ = term.recv() => tracing::info!("SIGTERM"),
        }
    }
}

/// Opens the configured backend; an unreachable memcached fails here, naming the servers.
fn open_store(config: &WorkerConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match config.store {
        StoreKind::Sled => {
            Arc::new(SledStore::open(&config.data_dir).context("cannot open the sled store")?)
        }
        StoreKind::Memcached => {
            let store = MemcachedStore::connect(&config.memcached, &config.memcached_prefix)
                .context("cannot open the memcached store")?;
            tracing::info!(servers = ?config.memcached, prefix = %config.memcached_prefix, "memcached store");
            Arc::new(store)
        }
    })
}

async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let store = open_store(&config)?;
    worker::run(config, store, Chat::new(), shutdown).await?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    process::init_logging(cli.verbose);
    let started = load_config(&cli).and_then(|config| {
        // One thread by default: the handler runs one event at a time anyway, and no
        // hand-over between the links and the handler crosses threads.
        let runtime = process::runtime(config.threads).context("cannot start the async runtime")?;
        runtime.block_on(run(config))
    });
    match started {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
