//! `switchboard-device`: a simulated device for the demo and the tests.
//!
//! ```text
//! switchboard-device --id dev0 --tcp 127.0.0.1:8481
//! switchboard-device --id dev0 --tcp 10.0.0.1:8481 --tcp 10.0.0.2:8481   # or --tcp A,B: fails over
//! switchboard-device --id dev0 --pty-link /tmp/sb/dev0   # gateway: [[gateway.serial]] path = "/tmp/sb/dev0"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hil::device::{run_device, DeviceConfig, Transport, SIM_FIRMWARE};
use tracing_subscriber::EnvFilter;

/// Where the simulator goes when told nothing: the default config's device port.
const DEFAULT_TCP: &str = "127.0.0.1:8481";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Simulated Switchboard device (answers ping, echo, help)"
)]
struct Cli {
    /// Device id: its uid and nickname in the chat.
    #[arg(long, default_value = "demo")]
    id: String,
    /// Connect to a gateway's device port; repeat it or separate with commas to give several
    /// gateways, tried in turn on each failed connect or lost link (backoff after a round).
    #[arg(
        long,
        value_name = "ADDR",
        value_delimiter = ',',
        conflicts_with = "pty_link"
    )]
    tcp: Vec<String>,
    /// Create a pty and publish its slave at PATH for the gateway's `[[gateway.serial]]`.
    #[arg(long, value_name = "PATH")]
    pty_link: Option<PathBuf>,
    /// Seconds between `uptime_s` telemetry frames; 0 sends none.
    #[arg(long, value_name = "N", default_value_t = 10)]
    telemetry_secs: u64,
    /// Firmware version reported in the hello.
    #[arg(long, default_value = SIM_FIRMWARE)]
    firmware: String,
    /// More logs (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut gateways: Vec<String> = cli
        .tcp
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if gateways.is_empty() {
        gateways.push(DEFAULT_TCP.to_owned());
    }
    let transport = match cli.pty_link {
        Some(path) => Transport::Pty(path),
        None => Transport::Tcp(gateways),
    };
    let cfg = DeviceConfig {
        id: cli.id,
        firmware: cli.firmware,
        transport,
        telemetry: (cli.telemetry_secs > 0).then(|| Duration::from_secs(cli.telemetry_secs)),
    };
    tracing::info!(id = %cfg.id, transport = ?cfg.transport, "simulated device starting");
    run_device(cfg, shutdown_signal())
        .await
        .context("simulated device failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM, so a stopped device removes its pty link first.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(cause = %e, "cannot catch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
