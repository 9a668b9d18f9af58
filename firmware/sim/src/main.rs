//! `switchboard-sim`: a simulated Switchboard device on the host, talking to the gateway's
//! device port over TCP with the same application code as the firmware.

use std::net::SocketAddr;

use app::{Config, Stats};
use clap::Parser;
use embassy_executor::Spawner;
use embassy_time::Duration;

const FIRMWARE: &str = concat!(env!("CARGO_PKG_VERSION"), "+sim");

/// A simulated Switchboard device: joins the chat and answers direct messages
/// (help, ping, echo, uptime, led, info).
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Device id: its uid and nickname in the chat (1 to 24 bytes, not all digits).
    #[arg(long, default_value = "sim-1", value_parser = device_id)]
    id: String,
    /// The gateway's device TCP port.
    #[arg(long, default_value = "127.0.0.1:8481")]
    tcp: SocketAddr,
    /// Seconds between telemetry bursts.
    #[arg(long, default_value_t = Config::DEFAULT_TELEMETRY_EVERY.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    telemetry_secs: u64,
    /// More logging: -v debug, -vv trace.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn device_id(id: &str) -> Result<String, String> {
    let ok = !id.is_empty()
        && id.len() <= protocol::MAX_ID_LEN
        && !id.bytes().all(|b| b.is_ascii_digit())
        && !id.contains(char::is_whitespace);
    if ok {
        Ok(id.to_owned())
    } else {
        Err("1 to 24 bytes, no spaces, not all digits (digits are human uids)".into())
    }
}

static STATS: Stats = Stats::new();

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let cli = Cli::parse();
    sim::logger::init(cli.verbose);
    let config: &'static Config = Box::leak(Box::new(Config {
        device_id: cli.id.leak(),
        firmware: FIRMWARE,
        telemetry_every: Duration::from_secs(cli.telemetry_secs),
    }));
    log::info!("{} as {}, gateway {}", FIRMWARE, config.device_id, cli.tcp);
    spawner.spawn(device(cli.tcp, config).expect("the only task"));
}

#[embassy_executor::task]
async fn device(addr: SocketAddr, config: &'static Config) {
    sim::connect::serve(addr, config, &STATS).await
}
