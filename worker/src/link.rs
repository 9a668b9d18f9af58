//! One worker's link to one gateway: connect, `Hello`, wait for `Welcome`, then a reader
//! (events to the runtime, replies to their queries) and a writer (the link's queue).
//!
//! A gateway that is down, refuses us, or drops the link is retried forever with backoff
//! (100 ms doubling to 5 s); a worker never exits because a gateway is away. This module
//! moves messages only: what an event means is the runtime's and the handler's business.
//!
//! Leaving ([`Stop::leave`]): the link sends `Leaving`, links no new gateway, and keeps
//! reading (events the gateway sent before it saw `Leaving`, query replies) until the
//! gateway closes its side, or until the link was quiet for [`LEAVE_QUIET`] with every event
//! it delivered handled (the gateway sends nothing new after `Leaving` and does not close;
//! an event still on its way then is never handled, so it is redelivered without a
//! duplicate). It stays registered, so the handler's commands and acks still
//! go out, until [`Stop::close`]; then its writer drains and closes the socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use protocol::link::{Event, GatewayToWorker, WorkerToGateway, LINK_VERSION};
use protocol::link_codec::{self, LinkCodec, LinkCodecError, LinkWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::gateway_api::{Gateway, LINK_QUEUE};

/// First retry delay after a failure; short so a restarted gateway is re-linked at once.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay: a gateway coming back is linked within this, and a dead one costs
/// one connection attempt per period.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A TCP connect that takes longer than this is treated as a failure (host unreachable).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The gateway answers `Hello` from memory; no answer in this long means something else
/// is listening on the port, or the gateway is stuck.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// After a `Refused` (wrong secret, version skew) retrying fast cannot help: an operator
/// has to fix a config, so retry at the slowest pace and keep the log readable.
pub const REFUSED_RETRY: Duration = MAX_BACKOFF;
/// How long a closing link waits for its writer to send what is queued (acks, commands).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A leaving link that heard nothing for this long, with all its events handled, is done:
/// what the gateway sent before it saw `Leaving` arrives within a round trip, and a later
/// straggler is redelivered (never handled here, so no duplicate). Short, because the next
/// worker cannot open the store until this one exits.
pub(crate) const LEAVE_QUIET: Duration = Duration::from_millis(250);

/// Messages read back to back before the link looks at its stop signals again.
const READ_BATCH: usize = 64;

type Transport = Framed<TcpStream, LinkCodec<GatewayToWorker>>;
type Reader = Framed<OwnedReadHalf, LinkCodec<GatewayToWorker>>;

/// The two steps of a graceful stop, shared by the runtime and every link.
#[derive(Clone, Default)]
pub(crate) struct Stop {
    /// Tell the gateways we are leaving; read on until they close; link no new ones.
    pub(crate) leave: CancellationToken,
    /// The runtime is done with events: close the links (after their queues are written).
    pub(crate) close: CancellationToken,
}

/// An event read from a link, with the way back to that link for its ack.
pub(crate) struct Delivery {
    /// The gateway it came from.
    pub(crate) gateway: u16,
    /// The gateway's event id, echoed in the ack.
    pub(crate) id: u64,
    pub(crate) event: Event,
    /// The queue of the connection the event came on; the ack must go back on it.
    pub(crate) ack: mpsc::Sender<WorkerToGateway>,
    /// Held until the event was handled and acked: a leaving link counts what it still owes.
    pub(crate) outstanding: Arc<()>,
}

/// What the link needs to introduce itself.
#[derive(Clone)]
pub(crate) struct LinkParams {
    pub(crate) addr: String,
    pub(crate) secret: String,
    pub(crate) name: String,
}

/// Why a connection attempt or a link ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("no answer to hello within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Codec(#[from] LinkCodecError),
    #[error("gateway closed the link")]
    Closed,
    #[error("refused: {0}")]
    Refused(String),
    #[error("gateway speaks link version {0}, we speak {LINK_VERSION}")]
    Version(u16),
    #[error("unexpected first message {0:?}")]
    Unexpected(Box<GatewayToWorker>),
}

/// Runs one link until leaving: connects, serves, reconnects. `events` is weak so that
/// the runtime's queue closes once the runtime and the links that are still reading let go.
///
/// `retire` set ends the task the next time it is not linked (the gateway left the
/// discovery records; cleared again if it comes back): a link that is up stays up, since it
/// is the best proof the gateway lives.
pub(crate) async fn run_link(
    params: LinkParams,
    gateway: Gateway,
    events: mpsc::WeakSender<Delivery>,
    stop: Stop,
    retire: Arc<AtomicBool>,
) {
    let addr = params.addr.as_str();
    let mut backoff = INITIAL_BACKOFF;
    let mut failures = 0u32;
    loop {
        if retire.load(Ordering::Relaxed) {
            return;
        }
        let attempt = tokio::select! {
            _ = stop.leave.cancelled() => return,
            attempt = handshake(&params) => attempt,
        };
        let delay = match attempt {
            Ok((transport, id)) => {
                backoff = INITIAL_BACKOFF;
                failures = 0;
                // Gone only once the runtime is leaving: then link no new gateway.
                let Some(events) = events.upgrade() else {
                    return;
                };
                match serve(transport, id, addr, &gateway, events, &stop).await {
                    Served::Lost => INITIAL_BACKOFF,
                    Served::Closed => return,
                }
            }
            Err(LinkError::Refused(reason)) => {
                tracing::error!(addr = %addr, reason = %reason, "gateway refused this worker; check the secret and versions");
                REFUSED_RETRY
            }
            Err(err) => {
                failures += 1;
                // The first failure is news; the next ones while it stays down are noise.
                if failures == 1 {
                    tracing::warn!(addr = %addr, cause = %err, "cannot link to gateway; retrying");
                } else {
                    tracing::debug!(addr = %addr, cause = %err, failures, "cannot link to gateway");
                }
                let delay = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                delay
            }
        };
        tokio::select! {
            _ = stop.leave.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Connects and exchanges `Hello`/`Welcome`; returns the transport and the gateway's id.
async fn handshake(params: &LinkParams) -> Result<(Transport, u16), LinkError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&params.addr))
        .await
        .map_err(|_| LinkError::ConnectTimeout(CONNECT_TIMEOUT))??;
    stream.set_nodelay(true)?;
    let mut transport = Framed::new(stream, LinkCodec::new());
    let hello = WorkerToGateway::Hello {
        version: LINK_VERSION,
        secret: params.secret.clone(),
        name: params.name.clone(),
    };
    transport.send(&hello).await?;
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, transport.next())
        .await
        .map_err(|_| LinkError::HandshakeTimeout(HANDSHAKE_TIMEOUT))?
        .ok_or(LinkError::Closed)??;
    match first {
        GatewayToWorker::Welcome { version, gateway } if version == LINK_VERSION => {
            Ok((transport, gateway))
        }
        GatewayToWorker::Welcome { version, .. } => Err(LinkError::Version(version)),
        GatewayToWorker::Refused { reason } => Err(LinkError::Refused(reason)),
        other => Err(LinkError::Unexpected(Box::new(other))),
    }
}

/// How a served link ended.
enum Served {
    /// It broke: reconnect (unless leaving).
    Lost,
    /// Closed on purpose (leaving, or the runtime is done): do not reconnect.
    Closed,
}

/// How the reading half of a link ended.
enum ReadEnd {
    /// The link broke.
    Lost(LinkError),
    /// After our `Leaving`, the gateway closed its side or went quiet with all handled.
    GatewayDone,
    /// [`Stop::close`] fired while still reading.
    Closed,
}

/// Serves a linked connection until it breaks or is closed on purpose.
async fn serve(
    transport: Transport,
    id: u16,
    addr: &str,
    gateway: &Gateway,
    events: mpsc::Sender<Delivery>,
    stop: &Stop,
) -> Served {
    let (tx, rx) = mpsc::channel(LINK_QUEUE);
    let serial = gateway.register(id, tx.clone());
    tracing::info!(gateway = id, addr = %addr, "worker linked");
    // Two halves of the socket, no lock between them; what the gateway sent right behind
    // its welcome stays in the reader's buffer.
    let parts = transport.into_parts();
    let (read_half, write_half) = parts.io.into_split();
    let stream = link_codec::reader(read_half, parts.read_buf);
    let mut writer = tokio::spawn(write_loop(write_half, rx));
    let ended = tokio::select! {
        ended = read_loop(stream, id, serial, &tx, gateway, events, stop) => ended,
        written = &mut writer => match written {
            Ok(Err(err)) => ReadEnd::Lost(err),
            _ => ReadEnd::Lost(LinkError::Closed),
        },
    };
    if let ReadEnd::Lost(err) = ended {
        gateway.unregister(id, serial);
        tracing::warn!(gateway = id, addr = %addr, cause = %err, "link to gateway lost; reconnecting");
        writer.abort();
        return Served::Lost;
    }
    if let ReadEnd::GatewayDone = ended {
        tracing::info!(
            gateway = id,
            "leaving link done reading; finishing what is queued"
        );
        // Stay registered while the runtime handles what is queued: those events' commands
        // and acks still go out on this link.
        tokio::select! {
            _ = stop.close.cancelled() => {}
            _ = &mut writer => {}
        }
    }
    gateway.unregister(id, serial);
    drop(tx);
    // The writer ends once the last queue sender (acks held by the runtime, commands in
    // flight) is gone and what was queued is written.
    if tokio::time::timeout(DRAIN_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        tracing::warn!(gateway = id, "link writer did not drain in time");
        writer.abort();
    }
    tracing::info!(gateway = id, addr = %addr, "link closed");
    Served::Closed
}

/// Reads until the link breaks, the gateway is done after our `Leaving`, or [`Stop::close`].
/// Owns `events` so the runtime's queue sees this link stop reading.
#[allow(
    clippy::too_many_arguments,
    reason = "one link's read side: every argument is a different part of the link"
)]
async fn read_loop(
    mut stream: Reader,
    id: u16,
    serial: u64,
    tx: &mpsc::Sender<WorkerToGateway>,
    gateway: &Gateway,
    events: mpsc::Sender<Delivery>,
    stop: &Stop,
) -> ReadEnd {
    let mut leaving = false;
    let outstanding = Arc::new(());
    // Made once, not per message: each of these registers with its token (a lock) when
    // made and unregisters when dropped.
    let close = stop.close.cancelled();
    let leave = stop.leave.cancelled();
    // Armed after `Leaving`, and pushed back by every message that arrives.
    let quiet = tokio::time::sleep(LEAVE_QUIET);
    tokio::pin!(close, leave, quiet);
    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut close => return ReadEnd::Closed,
            _ = &mut leave, if !leaving => {
                leaving = true;
                // Queued behind the commands already sent, like everything on this link.
                tokio::select! {
                    biased;
                    _ = &mut close => return ReadEnd::Closed,
                    sent = tx.send(WorkerToGateway::Leaving) => if sent.is_err() {
                        return ReadEnd::Lost(LinkError::Closed);
                    },
                }
                tracing::info!(gateway = id, "told the gateway we are leaving; reading what it already sent");
                quiet.as_mut().reset(tokio::time::Instant::now() + LEAVE_QUIET);
                continue;
            }
            frame = stream.next() => frame,
            _ = &mut quiet, if leaving => {
                if Arc::strong_count(&outstanding) == 1 {
                    return ReadEnd::GatewayDone;
                }
                quiet.as_mut().reset(tokio::time::Instant::now() + LEAVE_QUIET);
                continue;
            }
        };
        // Then whatever else is already here, without going back through the select
        // (whose cancellation waits take a lock each time they are polled); the stops are
        // looked at again after READ_BATCH messages at most.
        let mut frame = Some(frame);
        let mut batch = 0;
        while let Some(next) = frame.take() {
            if leaving {
                quiet
                    .as_mut()
                    .reset(tokio::time::Instant::now() + LEAVE_QUIET);
            }
            let msg = match next {
                None if leaving => return ReadEnd::GatewayDone,
                None => return ReadEnd::Lost(LinkError::Closed),
                Some(Err(err)) => return ReadEnd::Lost(LinkError::Codec(err)),
                Some(Ok(msg)) => msg,
            };
            match msg {
                GatewayToWorker::Event {
                    id: event_id,
                    event,
                } => {
                    let delivery = Delivery {
                        gateway: id,
                        id: event_id,
                        event,
                        ack: tx.clone(),
                        outstanding: Arc::clone(&outstanding),
                    };
                    match events.try_send(delivery) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return ReadEnd::Closed,
                        // Waits while the runtime is EVENT_QUEUE events behind: backpressure
                        // through TCP to the gateway, which holds its own bounded queue.
                        Err(mpsc::error::TrySendError::Full(delivery)) => tokio::select! {
                            biased;
                            _ = &mut close => return ReadEnd::Closed,
                            sent = events.send(delivery) => if sent.is_err() { return ReadEnd::Closed },
                        },
                    }
                }
                GatewayToWorker::Reply { id: query, reply } => gateway.deliver_reply(query, reply),
                GatewayToWorker::Routes { changes, synced } => {
                    gateway.apply_routes(id, serial, changes, synced)
                }
                other => {
                    tracing::warn!(gateway = id, message = ?other, "unexpected message on a linked link")
                }
            }
            batch += 1;
            if batch < READ_BATCH {
                frame = stream.next().now_or_never();
            }
        }
    }
}

/// Writes the link's queue to the socket: whatever is queued goes out in one write (up to
/// `WRITE_BATCH` bytes), each message serialized straight into the write buffer. Acks are
/// cumulative, so only the last of a batch is written, after everything else in it (an ack
/// may go later, never earlier). Ends once every sender is gone and everything queued is
/// written.
async fn write_loop(
    socket: OwnedWriteHalf,
    mut rx: mpsc::Receiver<WorkerToGateway>,
) -> Result<(), LinkError> {
    let mut link = LinkWriter::new(socket);
    while let Some(first) = rx.recv().await {
        let mut item = Some(first);
        let mut ack = None;
        while let Some(msg) = item.take() {
            match msg {
                WorkerToGateway::Ack { event } => {
                    // The runtime acks a link's events in order; the highest covers them all.
                    debug_assert!(ack.is_none_or(|acked| acked < event), "acks go backwards");
                    ack = Some(ack.map_or(event, |acked: u64| acked.max(event)));
                }
                msg => match link.push(&msg) {
                    Ok(()) => {}
                    // The gateway would close the link on it; drop this one message instead.
                    Err(LinkCodecError::TooBig(len)) => {
                        tracing::error!(len, "link message over MAX_LINK_FRAME dropped");
                    }
                    Err(err) => return Err(err.into()),
                },
            }
            if !link.is_full() {
                item = rx.try_recv().ok();
            }
        }
        if let Some(event) = ack {
            link.push(WorkerToGateway::Ack { event })?;
        }
        link.flush().await?;
    }
    link.shutdown().await?;
    Ok(())
}
