//! The gateway's state, owned by one task: connections, uids, groups and sessions (in
//! [`Registry`]), and the worker links with the events owed to them (in [`Delivery`]).
//!
//! Connections and worker links talk to it through one bounded channel of [`RouterMsg`]s;
//! it answers by queueing to them without ever waiting, so a slow peer never stalls it.
//! It also sweeps every connection for heartbeats on one timer, and kicks them all at
//! shutdown.
//! Commands and queries are executed in `commands.rs`; which worker gets which event, acks
//! and redelivery are `delivery.rs`'s; sockets are never touched here.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use protocol::link::{ClientId, ClientKind, Event, Inbound, Outbound, Reply, RouteChange};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::connection::{ClientHandle, Kick, Outgoing, RunRoom};
use crate::delivery::Delivery;
use crate::heartbeat::{now_ms, Beat, Heartbeat};
use crate::registry::Registry;
use crate::stats::{add, bump, Counters};

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
    /// A worker acked an event: it handled it, and sent its commands before this.
    Ack {
        /// The link it came on.
        link: u64,
        /// The event's id on that link.
        event: u64,
    },
    /// A worker is leaving: it gets no new events, its acks and commands still count.
    Leaving {
        /// The link it came on.
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
    /// An event with its id on this link; shared with the in-flight record that keeps it
    /// until the ack.
    Event {
        /// Increasing per link.
        id: u64,
        /// The event.
        event: Arc<Event>,
    },
    /// A query's answer.
    Reply {
        /// The query's id.
        id: u64,
        /// The answer.
        reply: Reply,
    },
    /// Route changes for the worker's table; one batch shared by every link.
    Routes {
        /// The changes, oldest first.
        changes: Arc<Vec<RouteChange>>,
        /// Whether the worker's table is complete after these.
        synced: bool,
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
/// Messages handled back to back before held events are retried, so a burst of acks costs
/// one pass over the held events, not one each.
const BATCH: usize = 256;
/// Route changes per message of a table snapshot: a 19k-user gateway's table goes in five
/// messages of ~50 KB rather than one of 250 KB, which bounds the worker's decode buffer and
/// how long it holds its table's lock applying one.
const SNAPSHOT_CHUNK: usize = 4096;

/// The router's state.
pub struct Router {
    pub(crate) gateway: u16,
    pub(crate) registry: Registry,
    pub(crate) delivery: Delivery,
    /// Monitoring links; they only get replies.
    monitors: Vec<WorkerHandle>,
    pub(crate) counters: Arc<Counters>,
    telnet_beat: Heartbeat,
    device_beat: Heartbeat,
    /// Connections with items staged during this batch of messages, queued when it ends
    /// ([`Router::flush`]). Bounded by the connections; what is staged, by the batch
    /// (`BATCH` messages).
    staged: RefCell<Vec<ClientId>>,
    /// Sizes the runs of text this batch starts, from what the last batch's runs held.
    room: RunRoom,
}

impl Router {
    /// An empty router for `config`'s gateway.
    pub fn new(config: &GatewayConfig, counters: Arc<Counters>) -> Self {
        Self {
            gateway: config.id,
            registry: Registry::default(),
            delivery: Delivery::new(config, counters.clone()),
            monitors: Vec::new(),
            counters,
            telnet_beat: Heartbeat::telnet(config),
            device_beat: Heartbeat::devices(config),
            staged: RefCell::new(Vec::new()),
            room: RunRoom::default(),
        }
    }

    /// Runs until `shutdown` (then kicks every connection, including those whose `Opened`
    /// is still queued, and refuses new ones) or until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<RouterMsg>, shutdown: CancellationToken) {
        let mut retry = tokio::time::interval(RETRY_PENDING);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Telnet and devices share the interval (`ping_interval_ms`); only limits differ.
        let sweep_every = self.telnet_beat.sweep_every();
        let mut sweep = tokio::time::interval(sweep_every.unwrap_or(Duration::from_secs(3600)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    rx.close();
                    while let Ok(msg) = rx.try_recv() {
                        if let RouterMsg::Opened { handle, .. } = msg {
                            handle.kick(Kick::Shutdown);
                        }
                    }
                    for (_, handle) in self.registry.handles_mut() {
                        handle.kick(Kick::Shutdown);
                    }
                    break;
                }
                // Before the channel: under a load that never empties it, heartbeats go on.
                _ = sweep.tick(), if sweep_every.is_some() => self.sweep(),
                msg = rx.recv() => match msg {
                    Some(msg) => {
                        self.handle(msg);
                        for _ in 1..BATCH {
                            match rx.try_recv() {
                                Ok(msg) => self.handle(msg),
                                Err(_) => break,
                            }
                        }
                        self.publish_routes();
                        self.delivery.drain_if_dirty();
                    }
                    None => break,
                },
                _ = retry.tick(), if self.delivery.held() > 0 && self.delivery.workers() > 0 => {
                    self.delivery.drain();
                }
            }
            self.flush();
        }
        tracing::debug!(held = self.delivery.held(), "router stopped");
    }

    /// One heartbeat sweep: pings connections silent for another interval, kicks those
    /// silent for their kind's limit.
    pub fn sweep(&mut self) {
        let now = now_ms();
        let (telnet, devices) = (self.telnet_beat, self.device_beat);
        for (id, handle) in self.registry.handles_mut() {
            let beat = if handle.kind == ClientKind::Telnet {
                telnet
            } else {
                devices
            };
            let silent = handle.silent_ms(now);
            match beat.check(silent, &mut handle.pinged) {
                Beat::Quiet => {}
                Beat::Ping => {
                    tracing::trace!(conn = %id, silent, "silent, pinged");
                    if handle.stage(Outgoing::Ping, &self.room) {
                        self.staged.get_mut().push(id);
                    }
                }
                Beat::Close => {
                    handle.kick(Kick::Idle);
                }
            }
        }
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
                    // What this batch staged for it cannot be written: counted as dropped.
                    queue_staged(&self.counters, id, &client.handle, &self.room);
                    let uid = client.uid.as_deref().map(String::from);
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
                tracing::info!(link = worker.link, worker = %worker.name, held = self.delivery.held(), "worker connected");
                // The others hear of the changes so far; the newcomer gets the table as it
                // is now, then only later changes.
                self.publish_routes();
                self.send_table(&worker);
                self.delivery.link_up(worker);
            }
            RouterMsg::WorkerDown { link } => {
                if self.delivery.link_down(link) {
                    let workers = self.delivery.workers();
                    tracing::info!(link, workers, "worker disconnected");
                } else {
                    self.monitors.retain(|m| m.link != link);
                }
            }
            RouterMsg::Ack { link, event } => self.delivery.ack(link, event),
            RouterMsg::Leaving { link } => self.delivery.leaving(link),
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

    /// Hands an event to a worker or holds it. `busy_seq` is set for a client's message:
    /// that one is refused (the client is told) rather than held past the limit.
    fn emit(&mut self, event: Event, busy_seq: Option<u16>) {
        // A worker must see every route change made before this event (a bind, a join)
        // before the event itself, or it could act on an older table.
        self.publish_routes();
        let client = event.client();
        if self.delivery.emit(event, busy_seq.is_some()) {
            return;
        }
        bump(&self.counters.dropped);
        tracing::debug!(conn = %client, "no worker free and pending queue full; message refused");
        if let (Some(c), Some(seq)) = (self.registry.get(client), busy_seq) {
            self.offer(client, &c.handle, Outgoing::Busy { seq });
        }
    }

    /// Stages `item` for connection `id`; it is queued when the batch of messages being
    /// handled ends.
    pub(crate) fn offer(&self, id: ClientId, handle: &ClientHandle, item: Outgoing) {
        if handle.stage(item, &self.room) {
            self.staged.borrow_mut().push(id);
        }
    }

    /// [`Router::offer`] for a body other connections get too.
    pub(crate) fn offer_shared(&self, id: ClientId, handle: &ClientHandle, body: &Arc<Outbound>) {
        if handle.stage_shared(body, &self.room) {
            self.staged.borrow_mut().push(id);
        }
    }

    /// Queues what this batch of messages staged, connection by connection. Items a
    /// connection's queue cannot take are counted as dropped (and the connection is
    /// disconnected as too slow).
    pub fn flush(&mut self) {
        for id in self.staged.get_mut().drain(..) {
            if let Some(client) = self.registry.get(id) {
                queue_staged(&self.counters, id, &client.handle, &self.room);
            }
        }
        self.room.next_batch();
    }

    /// Sends the route changes noted since the last call to every worker link.
    pub(crate) fn publish_routes(&mut self) {
        if !self.registry.has_changes() {
            return;
        }
        let changes = Arc::new(self.registry.take_changes());
        for worker in self.delivery.handles() {
            let routes = LinkOut::Routes {
                changes: changes.clone(),
                synced: true,
            };
            queue_or_kill(worker, routes);
        }
    }

    /// Sends a new worker the whole route table, in chunks, the last one marked synced.
    fn send_table(&self, worker: &WorkerHandle) {
        let mut table = self.registry.snapshot().peekable();
        loop {
            let changes: Vec<RouteChange> = table.by_ref().take(SNAPSHOT_CHUNK).collect();
            let synced = table.peek().is_none();
            let routes = LinkOut::Routes {
                changes: Arc::new(changes),
                synced,
            };
            if !queue_or_kill(worker, routes) || synced {
                return;
            }
        }
    }

    /// Queues a reply on `link`. A worker that cannot take it is hopelessly behind (or
    /// gone): its link is closed so it reconnects instead of waiting forever.
    fn reply(&mut self, link: u64, id: u64, reply: Reply) {
        let monitor = || self.monitors.iter().find(|m| m.link == link);
        let Some(worker) = self.delivery.handle(link).or_else(monitor) else {
            return;
        };
        queue_or_kill(worker, LinkOut::Reply { id, reply });
    }

    /// Open connections by kind: (telnet, devices).
    pub(crate) fn client_counts(&self) -> (u64, u64) {
        let telnet = self.registry.telnet_count();
        (telnet, self.registry.len() as u64 - telnet)
    }
}

/// Queues what is staged for connection `id`, counting the messages refused as dropped.
fn queue_staged(counters: &Counters, id: ClientId, handle: &ClientHandle, room: &RunRoom) {
    let refused = handle.flush(id, room);
    if refused > 0 {
        add(&counters.dropped, refused as u64);
    }
}

/// Queues a reply or route changes on a worker link. A worker that cannot take them is
/// hopelessly behind (or gone): its link is closed so it relinks, and gets a fresh route
/// table, instead of waiting forever or keeping a table that missed a change. Returns
/// whether it was queued.
fn queue_or_kill(worker: &WorkerHandle, routes: LinkOut) -> bool {
    match worker.tx.try_send(routes) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            tracing::warn!(
                link = worker.link,
                "worker link queue full, closing the link"
            );
            worker.kill.cancel();
            false
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

/// Whether a connection of `kind` takes `body`.
pub(crate) fn accepts(kind: ClientKind, body: &protocol::link::Outbound) -> bool {
    matches!(
        (kind.is_device(), body),
        (false, protocol::link::Outbound::Line(_)) | (true, protocol::link::Outbound::Device(_))
    )
}
