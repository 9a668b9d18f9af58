//! `switchboard`: the process supervisor, with GatewayWorker's start-script verbs.
//!
//! `start` runs a gateway, a worker and (optionally) a demo device and keeps them running;
//! `stop`, `restart`, `status` and `reload` talk to a running supervisor through its pid file,
//! signals and its state file. It holds no connection and no business logic itself.

mod config;
mod control;
mod keeper;
mod status;
mod supervise;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Run and manage Switchboard's gateway and worker processes"
)]
struct Cli {
    /// Configuration file (TOML). Default: ./switchboard.toml if it exists, else built-in defaults.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Start the gateway, a worker and the demo device; stays in the foreground unless -d.
    Start {
        /// Run in the background; return once the gateway listens.
        #[arg(short = 'd', long)]
        daemon: bool,
    },
    /// Stop a running Switchboard (workers first, then the gateway).
    Stop,
    /// Stop, then start again.
    Restart {
        /// Run in the background; return once the gateway listens.
        #[arg(short = 'd', long)]
        daemon: bool,
    },
    /// Show processes, connections and message counters.
    Status,
    /// Replace the workers (picking up a rebuilt worker binary); connections stay open.
    Reload,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    process::init_logging(cli.verbose);
    let config = config::Config::load(cli.config.as_deref())?;
    match cli.command {
        Verb::Start { daemon: false } => supervise::run_foreground(&config),
        Verb::Start { daemon: true } => control::start_daemon(&config),
        Verb::Stop => control::stop(&config),
        Verb::Restart { daemon } => {
            control::stop(&config)?;
            if daemon {
                control::start_daemon(&config)
            } else {
                supervise::run_foreground(&config)
            }
        }
        Verb::Status => status::print(&config),
        Verb::Reload => control::reload(&config),
    }
}
