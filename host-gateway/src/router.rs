//! The gateway's state, owned by one task: connections, uids, groups and sessions (in
//! [`Registry`]), the connected workers, and the events held while none is connected.
//!
//! Connections and worker links talk to it through one bounded channel of [`RouterMsg`]s;
//! it answers by queueing to them without ever waiting, so a slow peer never stalls it.
//! Commands and queries are executed in `commands.rs`; sockets are never touched here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use protocol::link::{ClientId, ClientKind, Event, Inbound, Reply};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::connection::{ClientHandle, Outgoing};
use crate::registry::Registry;
use crate::stats::{bump, Counters};

/// Messages the router's channel carries.
#[derive(Debug)]
pub enum RouterMsg {
    /// A connection opened.
    Opened {
        /// Its id.
        id: ClientId,
        /// Remote address or serial path.
        peer: String,
        /// How to reach it.
        handle: ClientHandle,
    },
    /// A connection sent a message.
    Inbound {
        /// The sender.
        id: ClientId,
        /// What it sent.
        body: Inbound,
        /// The device frame's sequence number (0 for telnet), for a `Busy` answer.
        seq: u16,
    },
    /// A connection closed.
    Closed {
        /// Its id.
        id: ClientId,
    },
    /// A worker passed the handshake.
    WorkerUp(WorkerHandle),
    /// A worker link closed.
    WorkerDown {
        /// The link's id.
        link: u64,
    },
    /// A worker's command.
    Command {
        /// The link it came on.
        link: u64,
        /// The command.
        command: protocol::link::Command,
    },
    /// A worker's query.
    Query {
        /// The link to answer on.
        link: u64,
        /// The worker's query id.
        id: u64,
        /// The question.
        query: protocol::link::Query,
    },
}

/// What the router hands a worker link to send.
#[derive(Debug)]
pub enum LinkOut {
    /// An event; the link numbers it.
    Event(Event),
    /// A query's answer.
    Reply {
        /// The query's id.
        id: u64,
        /// The answer.
        reply: Reply,
    },
}

/// The router's way to reach one worker link.
#[derive(Debug)]
pub struct WorkerHandle {
    /// The link's id, unique in this gateway's life.
    pub link: u64,
    /// The worker's name, for logs.
    pub name: String,
    /// The link's bounded outbound queue.
    pub tx: mpsc::Sender<LinkOut>,
    /// Closes the link (a worker too far behind to take a reply).
    pub kill: CancellationToken,
    /// A monitoring link (`switchboard status`): answered, never given events.
    pub monitor: bool,
}

/// How often held events are retried while a worker's queue is full.
const RETRY_PENDING: Duration = Duration::from_millis(50);

/// The router's state.
pub struct Router {
    pub(crate) gateway: u16,
    pub(crate) registry: Registry,
    pub(crate) workers: Vec<WorkerHandle>,
    /// Monitoring links; they only get replies.
    monitors: Vec<WorkerHandle>,
    /// Events not yet handed to a worker, oldest first.
    pending: VecDeque<Event>,
    pending_cap: usize,
    pub(crate) counters: Arc<Counters>,
}

impl Router {
    /// An empty router for `config`'s gateway.
    pub fn new(config: &GatewayConfig, counters: Arc<Counters>) -> Self {
        Self {
            gateway: config.id,
            registry: Registry::default(),
            workers: Vec::new(),
            monitors: Vec::new(),
            pending: VecDeque::new(),
            pending_cap: config.pending_events,
            counters,
        }
    }

    /// Runs until `shutdown` or until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<RouterMsg>, shutdown: CancellationToken) {
        let mut retry = tokio::time::interval(RETRY_PENDING);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => break,
                },
                _ = retry.tick(), if !self.pending.is_empty() && !self.workers.is_empty() => {
                    self.drain_pending();
                }
            }
        }
        tracing::debug!(held = self.pending.len(), "router stopped");
    }

    /// Handles one message.
    pub fn handle(&mut self, msg: RouterMsg) {
        match msg {
            RouterMsg::Opened { id, peer, handle } => {
                let kind = handle.kind;
                self.registry.insert(id, handle);
                self.emit(
                    Event::Connect {
                        client: id,
                        kind,
                        peer,
                    },
                    None,
                );
            }
            RouterMsg::Inbound { id, body, seq } => {
                let Some(client) = self.registry.get(id) else {
                    return;
                };
                let session = client.session.clone();
                let event = Event::Message {
                    client: id,
                    session,
                    body,
                };
                self.emit(event, Some(seq));
            }
            RouterMsg::Closed { id } => {
                if let Some(client) = self.registry.remove(id) {
                    let uid = client.uid;
                    let session = client.session;
                    self.emit(
                        Event::Close {
                            client: id,
                            uid,
                            session,
                        },
                        None,
                    );
                }
            }
            RouterMsg::WorkerUp(worker) if worker.monitor => {
                tracing::debug!(link = worker.link, "monitor connected");
                self.monitors.push(worker);
            }
            RouterMsg::WorkerUp(worker) => {
                tracing::info!(link = worker.link, worker = %worker.name, held = self.pending.len(), "worker connected");
                self.workers.push(worker);
                self.drain_pending();
            }
            RouterMsg::WorkerDown { link } => {
                if self.monitors.iter().any(|m| m.link == link) {
                    self.monitors.retain(|m| m.link != link);
                    return;
                }
                self.workers.retain(|w| w.link != link);
                tracing::info!(link, workers = self.workers.len(), "worker disconnected");
            }
            RouterMsg::Command { link, .. } if self.monitors.iter().any(|m| m.link == link) => {
                tracing::warn!(link, "command from a monitoring link ignored");
            }
            RouterMsg::Command { link, command } => self.execute(link, command),
            RouterMsg::Query { link, id, query } => {
                let reply = self.answer(query);
                self.reply(link, id, reply);
            }
        }
    }

    /// The worker that handles `client`'s events: sticky, so one client's events stay in
    /// order on one worker while the set of workers does not change.
    fn worker_for(&self, client: ClientId) -> Option<&WorkerHandle> {
        let n = self.workers.len() as u64;
        if n == 0 {
            return None;
        }
        let index = usize::try_from(client.conn() % n).unwrap_or(0);
        self.workers.get(index)
    }

    /// Hands an event to its worker, or holds it. `busy_seq` is set for a client's message:
    /// that one is refused (the client is told) rather than held past the limit.
    fn emit(&mut self, event: Event, busy_seq: Option<u16>) {
        // Once anything is held, everything queues behind it, so no event overtakes another.
        let event = if self.pending.is_empty() {
            match self.try_hand(event) {
                None => return,
                Some(event) => event,
            }
        } else {
            event
        };
        self.hold(event, busy_seq);
    }

    /// Tries to queue `event` to its worker; gives it back if there is none or it is full.
    fn try_hand(&self, event: Event) -> Option<Event> {
        let Some(worker) = self.worker_for(event.client()) else {
            return Some(event);
        };
        match worker.tx.try_send(LinkOut::Event(event)) {
            Ok(()) => None,
            Err(TrySendError::Full(LinkOut::Event(event)))
            | Err(TrySendError::Closed(LinkOut::Event(event))) => Some(event),
            Err(_) => None, // only events are sent here
        }
    }

    fn hold(&mut self, event: Event, busy_seq: Option<u16>) {
        // Connect and Close are held past the limit: their number is bounded by the
        // connections themselves, and losing one would leave a worker's view wrong forever.
        if let (Some(seq), true) = (busy_seq, self.pending.len() >= self.pending_cap) {
            let client = event.client();
            bump(&self.counters.dropped);
            tracing::debug!(conn = %client, "no worker and pending queue full; message refused");
            if let Some(c) = self.registry.get(client) {
                c.handle.offer(client, Outgoing::Busy { seq });
            }
            return;
        }
        self.pending.push_back(event);
    }

    /// Hands held events to workers, oldest first, until one is refused.
    fn drain_pending(&mut self) {
        while let Some(event) = self.pending.pop_front() {
            if let Some(event) = self.try_hand(event) {
                self.pending.push_front(event);
                break;
            }
        }
    }

    /// Queues a reply on `link`. A worker that cannot take it is hopelessly behind (or
    /// gone): its link is closed so it reconnects instead of waiting forever.
    fn reply(&mut self, link: u64, id: u64, reply: Reply) {
        let mut links = self.workers.iter().chain(&self.monitors);
        let Some(worker) = links.find(|w| w.link == link) else {
            return;
        };
        if let Err(TrySendError::Full(_)) = worker.tx.try_send(LinkOut::Reply { id, reply }) {
            tracing::warn!(link, "worker link queue full, closing the link");
            worker.kill.cancel();
        }
    }

    /// Open connections by kind: (telnet, devices).
    pub(crate) fn client_counts(&self) -> (u64, u64) {
        let telnet = self.registry.telnet_count();
        (telnet, self.registry.len() as u64 - telnet)
    }
}

/// Whether a connection of `kind` takes `body`.
pub(crate) fn accepts(kind: ClientKind, body: &protocol::link::Outbound) -> bool {
    matches!(
        (kind.is_device(), body),
        (false, protocol::link::Outbound::Line(_)) | (true, protocol::link::Outbound::Device(_))
    )
}
