//! One worker's link: the handshake (version and shared secret), then events out and
//! commands, queries and acks in, as length-delimited postcard messages (see
//! `protocol::link`). A worker that misbehaves loses its link, never the gateway its
//! clients. Acks and `Leaving` go to the router in order with the commands, so an ack is
//! seen after the commands it covers; ids, acks and redelivery are `delivery.rs`'s.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use protocol::link::{Event, GatewayToWorker, WorkerToGateway, LINK_VERSION, MAX_LINK_FRAME};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
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

type Link = Framed<TcpStream, LengthDelimitedCodec>;

/// Serves one worker connection until it closes or the gateway stops.
pub async fn serve(ctx: Context, stream: TcpStream, link: u64) {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_LINK_FRAME)
        .new_codec();
    let mut framed = Framed::new(stream, codec);
    let (name, monitor) = match handshake(&ctx, &mut framed).await {
        Ok(hello) => hello,
        Err(Refusal::Silent(reason)) => {
            tracing::info!(%reason, "worker link closed before hello");
            return;
        }
        Err(Refusal::Refuse(reason)) => {
            tracing::warn!(%reason, "worker refused");
            let refused = GatewayToWorker::Refused { reason };
            let _ = tokio::time::timeout(REFUSE_TIMEOUT, send(&mut framed, &refused)).await;
            return;
        }
    };
    let welcome = GatewayToWorker::Welcome {
        version: LINK_VERSION,
        gateway: ctx.config.id,
    };
    if let Err(reason) = send(&mut framed, &welcome).await {
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
    let (sink, stream) = framed.split();
    // A monitor's queries are not traffic: only worker links count in `link_in`/`link_out`.
    let traffic = (!monitor).then(|| ctx.counters.clone());
    let reason = tokio::select! {
        reason = read_loop(stream, link, &ctx, traffic.clone()) => reason,
        reason = write_loop(sink, rx, traffic) => reason,
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
        Ok(Some(Err(err))) => return Err(Refusal::Silent(err.to_string())),
        Ok(Some(Ok(bytes))) => bytes,
    };
    let (version, secret, name, monitor) = match postcard::from_bytes(&first) {
        Ok(WorkerToGateway::Hello {
            version,
            secret,
            name,
        }) => (version, secret, name, false),
        Ok(WorkerToGateway::Monitor { version, secret }) => {
            (version, secret, "monitor".into(), true)
        }
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

async fn send(framed: &mut Link, msg: &GatewayToWorker) -> Result<(), String> {
    let bytes = postcard::to_allocvec(msg).map_err(|e| e.to_string())?;
    framed
        .send(Bytes::from(bytes))
        .await
        .map_err(|e| e.to_string())
}

/// Feeds the worker's commands and queries to the router, in order. Returns why it stopped.
async fn read_loop(
    mut stream: futures::stream::SplitStream<Link>,
    link: u64,
    ctx: &Context,
    counters: Option<Arc<Counters>>,
) -> String {
    loop {
        let bytes = match stream.next().await {
            None => return "worker closed the link".into(),
            Some(Err(err)) => return format!("read error: {err}"),
            Some(Ok(bytes)) => bytes,
        };
        if let Some(counters) = &counters {
            bump(&counters.link_in);
        }
        let msg = match postcard::from_bytes::<WorkerToGateway>(&bytes) {
            Ok(msg) => msg,
            Err(err) => return format!("undecodable message: {err}"),
        };
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

/// Writes events and replies to the worker. Returns why it stopped.
async fn write_loop(
    mut sink: futures::stream::SplitSink<Link, Bytes>,
    mut rx: mpsc::Receiver<LinkOut>,
    counters: Option<Arc<Counters>>,
) -> String {
    while let Some(first) = rx.recv().await {
        let mut item = Some(first);
        while let Some(out) = item.take() {
            let msg = match out {
                LinkOut::Event { id, event } => GatewayToWorker::Event {
                    id,
                    event: Event::clone(&event),
                },
                LinkOut::Reply { id, reply } => GatewayToWorker::Reply { id, reply },
                LinkOut::Routes { changes, synced } => GatewayToWorker::Routes {
                    changes: Vec::clone(&changes),
                    synced,
                },
            };
            if let Some(counters) = &counters {
                bump(&counters.link_out);
            }
            let bytes = match postcard::to_allocvec(&msg) {
                Ok(bytes) => bytes,
                Err(err) => return format!("cannot encode: {err}"),
            };
            if let Err(err) = sink.feed(Bytes::from(bytes)).await {
                return format!("write error: {err}");
            }
            item = rx.try_recv().ok();
        }
        if let Err(err) = sink.flush().await {
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
