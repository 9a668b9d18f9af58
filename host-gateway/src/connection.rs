//! What every connection task shares with the router: the items of its bounded outbound
//! queue, the handle the router keeps to reach it, registration, and how a connection ends.
//!
//! The socket I/O itself is in `telnet_conn.rs` and `device_conn.rs`; routing decisions are
//! the router's. Overflow policy: a client whose queue is full is disconnected as too slow,
//! so one stuck client never slows the router or anyone else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use protocol::link::{ClientId, ClientKind, Inbound, Outbound};
use std::future::{ready, Future, Ready};
use std::pin::Pin;

use futures::future::Either;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::mailbox::{self, TrySendError};
use crate::router::RouterMsg;
use crate::server::Context;
use crate::stats::bump;

/// One item of a connection's outbound queue.
#[derive(Debug)]
pub enum Outgoing {
    /// A message to write; shared so a broadcast costs one allocation, not one per client.
    Send(Arc<Outbound>),
    /// The client's message was not accepted (no worker and the pending queue is full).
    Busy {
        /// Frame sequence number of the refused device frame, 0 for telnet.
        seq: u16,
    },
    /// Write `farewell` (if any) after everything queued before it, then close.
    Close {
        /// The last message.
        farewell: Option<Arc<Outbound>>,
    },
}

/// The router's way to reach one connection.
#[derive(Debug)]
pub struct ClientHandle {
    /// The connection's kind; decides which [`Outbound`] bodies it takes.
    pub kind: ClientKind,
    tx: mailbox::Sender<Outgoing>,
    kick: Kick,
}

impl ClientHandle {
    /// Queues `item` without waiting. A full queue disconnects the client as too slow.
    /// Returns whether the item was queued.
    pub fn offer(&self, id: ClientId, item: Outgoing) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                if !self.kick.too_slow.swap(true, Ordering::Relaxed) {
                    tracing::warn!(conn = %id, "outbound queue full, disconnecting slow client");
                }
                self.kick.token.cancel();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

#[cfg(test)]
impl ClientHandle {
    /// A handle whose queue nobody reads, for tests of the router's bookkeeping.
    pub(crate) fn detached(kind: ClientKind) -> ClientHandle {
        let (tx, _rx) = mailbox::mailbox(1);
        ClientHandle {
            kind,
            tx,
            kick: Kick::default(),
        }
    }
}

/// Disconnects a client from outside its task, remembering why.
#[derive(Debug, Clone, Default)]
struct Kick {
    token: CancellationToken,
    too_slow: Arc<AtomicBool>,
}

/// Why a connection ended; logged, and decides the last words to a telnet user.
#[derive(Debug)]
pub enum End {
    /// The peer closed its side.
    PeerClosed,
    /// Reading or writing failed.
    Io(std::io::Error),
    /// The outbound queue overflowed.
    TooSlow,
    /// A worker's `CloseClient`.
    ClosedByWorker,
    /// The gateway is shutting down.
    Shutdown,
    /// The peer sent nothing for the configured number of heartbeat intervals.
    HeartbeatTimeout {
        /// How long it had been silent.
        silent: std::time::Duration,
    },
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::PeerClosed => f.write_str("peer closed"),
            End::Io(err) => write!(f, "i/o error: {err}"),
            End::TooSlow => f.write_str("too slow"),
            End::ClosedByWorker => f.write_str("closed by worker"),
            End::Shutdown => f.write_str("gateway shutting down"),
            End::HeartbeatTimeout { silent } => {
                write!(f, "heartbeat timeout: silent for {silent:?}")
            }
        }
    }
}

/// A connection task's side of its registration.
pub struct Conn {
    /// The connection's id.
    pub id: ClientId,
    /// Its outbound queue.
    pub rx: mailbox::Receiver<Outgoing>,
    /// The same queue, for answers the connection gives itself (pong, `!` lines).
    pub own: mailbox::Sender<Outgoing>,
    kick: Kick,
    ctx: Context,
}

impl Conn {
    /// Gives a new connection its id and announces it to the router (the Connect event).
    /// Returns `None` if the router is gone (the gateway is stopping).
    pub async fn open(ctx: &Context, kind: ClientKind, peer: String) -> Option<Conn> {
        let id = ctx.next_client_id();
        bump(&ctx.counters.connections_total);
        let (tx, rx) = mailbox::mailbox(ctx.config.client_queue);
        let kick = Kick {
            token: ctx.shutdown.child_token(),
            too_slow: Arc::default(),
        };
        let handle = ClientHandle {
            kind,
            tx: tx.clone(),
            kick: kick.clone(),
        };
        let opened = RouterMsg::Opened { id, peer, handle };
        if !to_router(&ctx.router, opened).await {
            return None;
        }
        Some(Conn {
            id,
            rx,
            own: tx,
            kick,
            ctx: ctx.clone(),
        })
    }

    /// The gateway's shared context.
    pub fn ctx(&self) -> &Context {
        &self.ctx
    }

    /// Hands a message from the client to the router; waits if the router is busy, which
    /// slows this client's reading and nobody else's. `false` when the router is gone.
    pub fn inbound(
        router: &mpsc::Sender<RouterMsg>,
        id: ClientId,
        body: Inbound,
        seq: u16,
    ) -> ToRouter<'_> {
        to_router(router, RouterMsg::Inbound { id, body, seq })
    }

    /// Resolves when the connection must stop from outside: kicked or shutdown. The kick
    /// token is a child of the shutdown token, so one wait covers both (a connection's task
    /// keeps this future inline: one wait instead of two is ~90 bytes per connection).
    pub async fn stopped(kick: &CancellationToken, shutdown: &CancellationToken) -> End {
        kick.cancelled().await;
        if shutdown.is_cancelled() {
            End::Shutdown
        } else {
            End::TooSlow
        }
    }

    /// The token that kicks this connection.
    pub fn kick_token(&self) -> CancellationToken {
        self.kick.token.clone()
    }

    /// Tells the router the connection is gone (the Close event) and logs why.
    pub async fn close(self, end: &End) {
        match end {
            End::Io(_) | End::TooSlow | End::HeartbeatTimeout { .. } => {
                tracing::info!(reason = %end, "closed")
            }
            _ => tracing::debug!(reason = %end, "closed"),
        }
        to_router(&self.ctx.router, RouterMsg::Closed { id: self.id }).await;
    }
}

/// What [`to_router`] returns: ready at once, or a boxed wait.
pub type ToRouter<'a> = Either<Ready<bool>, Pin<Box<dyn Future<Output = bool> + Send + 'a>>>;

/// Hands `msg` to the router, waiting while its queue is full; `false` when it is gone.
///
/// Not an `async fn`: a connection's task keeps every future it may await inline, and one
/// holding a `RouterMsg` (device frames are a few hundred bytes) and `Sender::send`'s wait
/// is over a kilobyte, paid by every idle connection for a wait that happens only when the
/// router is behind. So the message is queued synchronously when there is room, and only a
/// real wait is boxed.
pub fn to_router(router: &mpsc::Sender<RouterMsg>, msg: RouterMsg) -> ToRouter<'_> {
    match router.try_send(msg) {
        Ok(()) => Either::Left(ready(true)),
        Err(mpsc::error::TrySendError::Closed(_)) => Either::Left(ready(false)),
        Err(mpsc::error::TrySendError::Full(msg)) => {
            Either::Right(Box::pin(async move { router.send(msg).await.is_ok() }))
        }
    }
}
