//! `switchboard status`: the supervisor's processes from its state file, and the gateway's
//! counters asked over a monitoring link (same secret as workers, receives no events).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use protocol::link::{GatewayStats, GatewayToWorker, Query, Reply, WorkerToGateway, LINK_VERSION};
use protocol::link_codec::LinkCodec;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::config::Config;
use crate::control::running_pid;
use crate::keeper::unix_now;
use crate::supervise::read_state;

/// How long the gateway has to answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prints the status; fails if Switchboard is not running.
pub fn print(config: &Config) -> Result<()> {
    let Some(pid) = running_pid(config) else {
        bail!("switchboard is not running");
    };
    let now = unix_now();
    match read_state(config) {
        Some(state) => {
            println!(
                "switchboard running: supervisor pid {pid}, up {}, {} reload(s)",
                age(now, state.started_at),
                state.reloads
            );
            println!("  process   pid       up          restarts  last exit");
            for p in &state.process {
                println!(
                    "  {:<9} {:<9} {:<11} {:<9} {}",
                    p.name,
                    p.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                    p.pid.map_or_else(|| "-".into(), |_| age(now, p.started_at)),
                    p.restarts,
                    p.last_exit.as_deref().unwrap_or("-"),
                );
            }
        }
        None => println!("switchboard running: supervisor pid {pid} (no state file yet)"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match runtime.block_on(async { tokio::time::timeout(QUERY_TIMEOUT, query_stats(config)).await })
    {
        Ok(Ok(s)) => print_stats(&s),
        Ok(Err(err)) => println!("gateway: no answer ({err:#})"),
        Err(_) => println!("gateway: no answer within {QUERY_TIMEOUT:?}"),
    }
    Ok(())
}

fn print_stats(s: &GatewayStats) {
    println!(
        "gateway {} up {}s: {} telnet user(s), {} device(s), {} worker(s); {} connection(s) since start",
        s.gateway, s.uptime_s, s.telnet_clients, s.device_clients, s.workers, s.connections_total
    );
    println!(
        "  messages: {} in, {} out; {} bad input, {} dropped",
        s.messages_in, s.messages_out, s.input_errors, s.dropped
    );
}

/// Asks the gateway for its counters over a monitoring link.
pub async fn query_stats(config: &Config) -> Result<GatewayStats> {
    let addr = &config.gateway.worker_listen;
    let stream = TcpStream::connect(addr.as_str())
        .await
        .with_context(|| format!("connecting to the gateway's link port {addr}"))?;
    let mut link: Link = Framed::new(stream, LinkCodec::new());
    send(
        &mut link,
        &WorkerToGateway::Monitor {
            version: LINK_VERSION,
            secret: config.gateway.secret.clone(),
        },
    )
    .await?;
    match recv(&mut link).await? {
        GatewayToWorker::Welcome { .. } => {}
        GatewayToWorker::Refused { reason } => bail!("gateway refused the status link: {reason}"),
        other => bail!("unexpected first message from the gateway: {other:?}"),
    }
    send(
        &mut link,
        &WorkerToGateway::Query {
            id: 1,
            query: Query::Stats,
        },
    )
    .await?;
    loop {
        match recv(&mut link).await? {
            GatewayToWorker::Reply {
                id: 1,
                reply: Reply::Stats(stats),
            } => return Ok(stats),
            GatewayToWorker::Reply { reply, .. } => bail!("unexpected reply: {reply:?}"),
            _ => continue,
        }
    }
}

type Link = Framed<TcpStream, LinkCodec<GatewayToWorker>>;

async fn send(link: &mut Link, msg: &WorkerToGateway) -> Result<()> {
    link.send(msg).await.context("writing to the gateway")
}

async fn recv(link: &mut Link) -> Result<GatewayToWorker> {
    link.next()
        .await
        .context("the gateway closed the link")?
        .context("reading from the gateway")
}

/// `3h2m`, `5m10s` or `42s`.
fn age(now: u64, since: u64) -> String {
    let s = now.saturating_sub(since);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}
