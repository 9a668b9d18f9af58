//! `switchboard-gateway`: parses the command line, starts tracing, loads the config and
//! runs the gateway until SIGINT or SIGTERM. Everything else is in the library.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Parser;
use gateway::{GatewayConfig, Listeners, SerialConfig};

/// Config file used when `-c` is not given and it exists in the working directory.
const DEFAULT_CONFIG: &str = "switchboard.toml";

/// Switchboard's gateway: holds telnet, device and serial connections; workers do the rest.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Config file (its [gateway] section). Default: ./switchboard.toml if it exists,
    /// else built-in defaults.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// More logging: -v debug, -vv trace. RUST_LOG overrides.
    #[arg(short, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Gateway id (top 16 bits of client ids).
    #[arg(long)]
    id: Option<u16>,
    /// Telnet listen address.
    #[arg(long, value_name = "ADDR")]
    telnet: Option<String>,
    /// Device TCP listen address.
    #[arg(long, value_name = "ADDR")]
    device: Option<String>,
    /// Worker link listen address.
    #[arg(long, value_name = "ADDR")]
    worker_listen: Option<String>,
    /// Shared secret workers must present.
    #[arg(long)]
    secret: Option<String>,
    /// Serial port to open, PATH or PATH:BAUD; repeatable, added to the config's ports.
    #[arg(long, value_name = "PATH[:BAUD]", value_parser = parse_serial)]
    serial: Vec<SerialConfig>,
}

fn parse_serial(arg: &str) -> Result<SerialConfig, String> {
    if let Some((path, baud)) = arg.rsplit_once(':') {
        if let Ok(baud) = baud.parse::<u32>() {
            return Ok(SerialConfig {
                path: path.into(),
                baud,
            });
        }
    }
    if arg.is_empty() {
        return Err("empty serial path".into());
    }
    Ok(SerialConfig {
        path: arg.into(),
        baud: gateway::config::DEFAULT_BAUD,
    })
}

fn load_config(cli: &Cli) -> anyhow::Result<GatewayConfig> {
    let mut config = match &cli.config {
        Some(path) => GatewayConfig::load(path)?,
        None if Path::new(DEFAULT_CONFIG).exists() => {
            GatewayConfig::load(Path::new(DEFAULT_CONFIG))?
        }
        None => GatewayConfig::default(),
    };
    if let Some(id) = cli.id {
        config.id = id;
    }
    if let Some(addr) = &cli.telnet {
        config.telnet_listen = addr.clone();
    }
    if let Some(addr) = &cli.device {
        config.device_listen = addr.clone();
    }
    if let Some(addr) = &cli.worker_listen {
        config.worker_listen = addr.clone();
    }
    if let Some(secret) = &cli.secret {
        config.secret = secret.clone();
    }
    config.serial.extend(cli.serial.iter().cloned());
    config.validate()?;
    Ok(config)
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    process::init_logging(cli.verbose);
    let config = load_config(&cli)?;
    let runtime = process::runtime(config.threads).context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: GatewayConfig) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config)
        .await
        .context("cannot start the gateway (is another one running?)")?;
    for (what, listener) in [
        ("telnet", &listeners.telnet),
        ("device", &listeners.device),
        ("worker", &listeners.worker),
    ] {
        let addr = listener
            .local_addr()
            .context("reading a listener's address")?;
        tracing::info!("listening {what}={addr}");
    }
    for port in &config.serial {
        tracing::info!("serial {}@{}", port.path.display(), port.baud);
    }
    let stop = stop_signal();
    tokio::pin!(stop);
    let signal_error = std::sync::Mutex::new(None);
    gateway::run(config, listeners, async {
        if let Err(err) = (&mut stop).await {
            *signal_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
        }
    })
    .await?;
    if let Some(err) = signal_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(err);
    }
    Ok(())
}
