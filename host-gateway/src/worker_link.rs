//! One worker's link: the handshake (version and shared secret), then events out and
//! commands, queries and acks in, as length-delimited postcard messages (see
//! `protocol::link`). A worker that misbehaves loses its link, never the gateway its
//! clients. Acks and `Leaving` go to the router in order with the commands, so an ack is
//! seen after the commands it covers; ids, acks and redelivery are `delivery.rs`'s.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::link::{GatewayToWorker, WorkerToGateway, LINK_VERSION};
use protocol::link_codec::{self, EventFrame, LinkCodec, LinkCodecError, LinkWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::router::{LinkOut, RouterMsg, WorkerHandle};
use crate::server::Context;
use crate::stats::{bump, Counters};

/// Time a worker has to say Hello; a silent peer is not a worker.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a refusal may take to write before the socket is dropped.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Events and replies queued for one worker. Events are bounded by `max_in_flight`
/// before they get here; past this, events are held by the router and replies close
/// the link.
const LINK_QUEUE: usize = 16 * 1024;

type Link = Framed<TcpStream, LinkCodec<WorkerToGateway>>;

/// Serves one worker connection until it closes or the gateway stops.
pub async fn serve(ctx: Context, stream: TcpStream, link: u64) {
    let mut framed = Framed::new(stream, LinkCodec::new());
    let (name, monitor) = match handshake(&ctx, &mut framed).await {
        Ok(hello) => hello,
        Err(Refusal::Silent(reason)) => {
            tracing::info!(%reason, "worker link closed before hello");
            return;
        }
        Err(Refusal::Refuse(reason)) => {
            tracing::warn!(%reason, "worker refused");
            let refused = GatewayToWorker::Refused { reason };
            let _ = tokio::time::timeout(REFUSE_TIMEOUT, framed.send(&refused)).await;
            return;
        }
    };
    let welcome = GatewayToWorker::Welcome {
        version: LINK_VERSION,
        gateway: ctx.config.id,
    };
    if let Err(reason) = framed.send(&welcome).await {
        tracing::info!(%reason, "worker link lost during welcome");
        return;
    }
    let (tx, rx) = mpsc::channel(LINK_QUEUE);
    let kill = CancellationToken::new();
    let handle = WorkerHandle {
        link,
        name: name.clone(),
        tx,
        kill: kill.clone(),
        monitor,
    };
    if ctx.router.send(RouterMsg::WorkerUp(handle)).await.is_err() {
        return;
    }
    // Two halves of the socket, each with its own task-free loop: no lock between them.
    let parts = framed.into_parts();
    let (read_half, write_half) = parts.io.into_split();
    let stream = link_codec::reader(read_half, parts.read_buf);
    // A monitor's queries are not traffic: only worker links count in `link_in`/`link_out`.
    let traffic = (!monitor).then(|| ctx.counters.clone());
    let reason = tokio::select! {
        reason = read_loop(stream, link, &ctx, traffic.clone()) => reason,
        reason = write_loop(write_half, rx, traffic) => reason,
        _ = kill.cancelled() => "too far behind".to_owned(),
        _ = ctx.shutdown.cancelled() => "gateway shutting down".to_owned(),
    };
    tracing::info!(worker = %name, %reason, "worker link closed");
    let _ = ctx.router.send(RouterMsg::WorkerDown { link }).await;
}

enum Refusal {
    /// Nothing to answer: the peer left or sent no hello at all.
    Silent(String),
    /// Tell the worker why.
    Refuse(String),
}

/// Waits for a valid Hello (or Monitor); returns the worker's name and whether the link
/// is a monitor.
async fn handshake(ctx: &Context, framed: &mut Link) -> Result<(String, bool), Refusal> {
    let first = match tokio::time::timeout(HELLO_TIMEOUT, framed.next()).await {
        Err(_) => return Err(Refusal::Refuse("no hello within 5 s".into())),
        Ok(None) => return Err(Refusal::Silent("closed".into())),
        Ok(Some(Err(LinkCodecError::Io(err)))) => return Err(Refusal::Silent(err.to_string())),
        Ok(Some(Err(_))) => return Err(Refusal::Refuse("expected Hello".into())),
        Ok(Some(Ok(first))) => first,
    };
    let (version, secret, name, monitor) = match first {
        WorkerToGateway::Hello {
            version,
            secret,
            name,
        } => (version, secret, name, false),
        WorkerToGateway::Monitor { version, secret } => (version, secret, "monitor".into(), true),
        _ => return Err(Refusal::Refuse("expected Hello".into())),
    };
    if version != LINK_VERSION {
        return Err(Refusal::Refuse(format!(
            "link version {version} not supported; this gateway speaks {LINK_VERSION}"
        )));
    }
    if !constant_time_eq(secret.as_bytes(), ctx.config.secret.as_bytes()) {
        return Err(Refusal::Refuse("bad secret".into()));
    }
    Ok((name, monitor))
}

/// Compares secrets without a timing hint of how many leading bytes matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Feeds the worker's commands and queries to the router, in order. Returns why it stopped.
async fn read_loop(
    mut stream: Framed<OwnedReadHalf, LinkCodec<WorkerToGateway>>,
    link: u64,
    ctx: &Context,
    counters: Option<Arc<Counters>>,
) -> String {
    loop {
        let msg = match stream.next().await {
            None => return "worker closed the link".into(),
            Some(Err(err)) => return format!("read error: {err}"),
            Some(Ok(msg)) => msg,
        };
        if let Some(counters) = &counters {
            bump(&counters.link_in);
            if matches!(msg, WorkerToGateway::Ack { .. }) {
                bump(&counters.link_acks);
            }
        }
        let to_router = match msg {
            WorkerToGateway::Command(command) => RouterMsg::Command { link, command },
            WorkerToGateway::Query { id, query } => RouterMsg::Query { link, id, query },
            WorkerToGateway::Ack { event } => RouterMsg::Ack { link, event },
            WorkerToGateway::Leaving => RouterMsg::Leaving { link },
            WorkerToGateway::Hello { .. } | WorkerToGateway::Monitor { .. } => {
                return "second Hello".into();
            }
        };
        if ctx.router.send(to_router).await.is_err() {
            return "gateway shutting down".into();
        }
    }
}

/// Writes events and replies to the worker: whatever is queued goes out in one write
/// (up to `WRITE_BATCH` bytes), each message serialized straight into the write buffer.
/// Returns why it stopped.
async fn write_loop(
    socket: OwnedWriteHalf,
    mut rx: mpsc::Receiver<LinkOut>,
    counters: Option<Arc<Counters>>,
) -> String {
    let mut link = LinkWriter::new(socket);
    while let Some(first) = rx.recv().await {
        let mut item = Some(first);
        while let Some(out) = item.take() {
            let encoded = match out {
                LinkOut::Event { id, event } => link.push(EventFrame { id, event: &event }),
                LinkOut::Reply { id, reply } => link.push(GatewayToWorker::Reply { id, reply }),
                LinkOut::Routes { changes, synced } => link.push(GatewayToWorker::Routes {
                    changes: Vec::clone(&changes),
                    synced,
                }),
            };
            if let Err(err) = encoded {
                return format!("cannot encode: {err}");
            }
            if let Some(counters) = &counters {
                bump(&counters.link_out);
            }
            if !link.is_full() {
                item = rx.try_recv().ok();
            }
        }
        if let Err(err) = link.flush().await {
            return format!("write error: {err}");
        }
    }
    "router gone".into()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secret_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
