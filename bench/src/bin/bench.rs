//! `switchboard-bench`: the load generator. Drives a running chat server (Switchboard or
//! the reference) through one scenario and prints one JSON line with what arrived, how
//! fast, and what the watched server processes spent.
//!
//! ```text
//! switchboard-bench --telnet 127.0.0.1:8480 --watch gateway=PID --watch worker=PID \
//!     private --users 100 --secs 10 --rate 10000
//! switchboard-bench broadcast --users 100 --senders 4 --rate 2000
//! switchboard-bench connect --concurrency 32 --secs 5
//! switchboard-bench overload --users 100 --window 1000 --secs 5
//! switchboard-bench devices --devices 16 --pty-dir /tmp/ptys   # gateway: serial /tmp/ptys/dev<i>
//! switchboard-bench --source 127.0.0.1 --source 127.0.0.2 idle --conns 19000
//! ```
//!
//! `cargo xtask bench` runs these against both servers and prints the table.

use std::net::{IpAddr, SocketAddr};

use bench::procstat::Watched;
use bench::scenario::{broadcast, connect, devices, idle, overload, private, Common};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Switchboard's load generator: one scenario, one JSON line"
)]
struct Cli {
    /// The chat's telnet address.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8480",
        global = true
    )]
    telnet: SocketAddr,
    /// A server process to charge, `LABEL=PID` (repeat for each process).
    #[arg(long, value_name = "LABEL=PID", global = true)]
    watch: Vec<Watched>,
    /// Label of the server in the report.
    #[arg(long, default_value = "server", global = true)]
    label: String,
    /// Source address to connect from (repeat to spread connections over several).
    #[arg(long, value_name = "IP", global = true)]
    source: Vec<IpAddr>,
    /// Nicknames start with this.
    #[arg(long, default_value = "b", global = true)]
    prefix: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Private messages from each user to the next.
    Private {
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Messages per second in all; 0: as fast as the window allows (saturation).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Messages in flight per user.
        #[arg(long, default_value_t = 8)]
        window: usize,
        #[arg(long, default_value_t = 5.0)]
        drain_secs: f64,
    },
    /// Lines to everyone from a few senders.
    Broadcast {
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value_t = 4)]
        senders: usize,
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Lines per second in all.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 5.0)]
        drain_secs: f64,
    },
    /// Connect, log in, close, as fast as `concurrency` loops go.
    Connect {
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Private messages far past saturation, then silence: memory peak and settled, losses.
    Overload {
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Messages in flight per user: deep, so the server is the limit.
        #[arg(long, default_value_t = 1000)]
        window: usize,
        #[arg(long, default_value_t = 5.0)]
        settle_secs: f64,
    },
    /// Simulated devices and users exchanging private chat frames both ways, through ptys
    /// the gateway opens as serial ports (`--pty-dir`) or the device TCP port (`--device-tcp`).
    Devices {
        #[arg(long, default_value_t = 16)]
        devices: usize,
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Frames per second each way in all; 0: as fast as acks and the window allow.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Messages in flight from each user to its device.
        #[arg(long, default_value_t = 4)]
        window: usize,
        #[arg(long, default_value_t = 5.0)]
        drain_secs: f64,
        /// Publish device i's pty at DIR/dev<i> (the gateway lists them as serial ports).
        #[arg(long, value_name = "DIR", conflicts_with = "device_tcp")]
        pty_dir: Option<std::path::PathBuf>,
        /// Connect the devices to this gateway device port instead.
        #[arg(long, value_name = "ADDR", required_unless_present = "pty_dir")]
        device_tcp: Option<String>,
    },
    /// Hold many idle connections and measure the server's memory per connection.
    Idle {
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Log every connection in (default: stop at the nickname prompt).
        #[arg(long)]
        login: bool,
        #[arg(long, default_value_t = 2.0)]
        hold_secs: f64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let common = Common {
        server: cli.telnet,
        label: cli.label,
        watch: cli.watch,
        sources: cli.source,
        prefix: cli.prefix,
    };
    let report = match cli.scenario {
        Scenario::Private {
            users,
            secs,
            rate,
            window,
            drain_secs,
        } => {
            let cfg = private::Private {
                users,
                secs,
                rate,
                window,
                drain_secs,
            };
            private::run(&common, &cfg).await?
        }
        Scenario::Broadcast {
            users,
            senders,
            secs,
            rate,
            drain_secs,
        } => {
            let cfg = broadcast::Broadcast {
                users,
                senders,
                secs,
                rate,
                drain_secs,
            };
            broadcast::run(&common, &cfg).await?
        }
        Scenario::Overload {
            users,
            secs,
            window,
            settle_secs,
        } => {
            let cfg = overload::Overload {
                users,
                secs,
                window,
                settle_secs,
            };
            overload::run(&common, &cfg).await?
        }
        Scenario::Devices {
            devices: count,
            secs,
            rate,
            window,
            drain_secs,
            pty_dir,
            device_tcp,
        } => {
            let transport = match (pty_dir, device_tcp) {
                (Some(dir), _) => devices::Transport::Pty(dir),
                (None, Some(addr)) => devices::Transport::Tcp(addr),
                (None, None) => anyhow::bail!("give --pty-dir or --device-tcp"),
            };
            let cfg = devices::Devices {
                devices: count,
                secs,
                rate,
                window,
                drain_secs,
                transport,
            };
            devices::run(&common, &cfg).await?
        }
        Scenario::Connect { concurrency, secs } => {
            connect::run(&common, &connect::Connect { concurrency, secs }).await?
        }
        Scenario::Idle {
            conns,
            login,
            hold_secs,
        } => {
            let cfg = idle::Idle {
                conns,
                login,
                hold_secs,
            };
            idle::run(&common, &cfg).await?
        }
    };
    println!("{}", report.json());
    Ok(())
}
