//! The gateway API a handler acts through, with GatewayWorker's names and meaning.
//!
//! [`Gateway`] is a cheap `Clone` handle over the links that are up. Commands are
//! fire-and-forget: a command about one client goes to the link of the gateway in the
//! client id's top bits; uid and group commands go to the gateways the routing table
//! (`routes.rs`) says hold a recipient; broadcasts go to every linked gateway.
//! Queries (in `query.rs`) go out with an id and are awaited for [`QUERY_TIMEOUT`], then
//! aggregated across gateways (counts summed, lists concatenated, booleans or-ed).
//!
//! Overflow policy: each link has a bounded outgoing queue of [`LINK_QUEUE`] messages;
//! a command waits for space, so a slow gateway slows the handler (backpressure) rather
//! than growing memory or dropping commands. This module owns no socket; `link.rs` does.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use protocol::link::{ClientId, Command, Outbound, Reply, RouteChange, Session, WorkerToGateway};
use smallvec::SmallVec;
use tokio::sync::{mpsc, oneshot};

use crate::session::SessionCache;

mod query;
mod routes;

pub(crate) use routes::{Routes, Targets};

/// Messages queued for one link's writer. Deep enough to absorb a burst of broadcasts
/// (a `/who` answer is one message per participant); past it the handler waits.
pub const LINK_QUEUE: usize = 1024;
/// How long a query waits for its reply. A gateway answers from memory in microseconds;
/// seconds mean it is stuck or the link is dying, and the handler should move on.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a gateway call failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The client's gateway (or the one asked) has no link up right now.
    #[error("gateway {0} is not linked")]
    NotLinked(u16),
    /// The link closed before the message went out or before the reply came.
    #[error("link to gateway {0} closed")]
    LinkClosed(u16),
    /// No reply within [`QUERY_TIMEOUT`].
    #[error("gateway {gateway} did not answer within {after:?}")]
    Timeout {
        /// The gateway asked.
        gateway: u16,
        /// How long we waited.
        after: Duration,
    },
    /// The gateway answered with the wrong kind of reply (version skew or a bug).
    #[error("gateway {gateway} answered {query} with {reply:?}")]
    UnexpectedReply {
        /// The gateway.
        gateway: u16,
        /// The query's name.
        query: &'static str,
        /// What came back (boxed: a reply can be big, and errors travel by value).
        reply: Box<Reply>,
    },
}

/// The sending side of one link that is up.
#[derive(Clone)]
pub(crate) struct LinkTx {
    /// Distinguishes this connection from earlier ones to the same gateway.
    pub(crate) serial: u64,
    pub(crate) tx: mpsc::Sender<WorkerToGateway>,
}

/// Links a command goes out on; inline for the usual one or two, so sending allocates no
/// list.
type Links = SmallVec<[(u16, LinkTx); 2]>;

struct Pending {
    serial: u64,
    tx: oneshot::Sender<Reply>,
}

struct Inner {
    /// Links that are up, by gateway id (from their `Welcome`).
    links: RwLock<BTreeMap<u16, LinkTx>>,
    /// Queries waiting for a reply, by query id.
    pending: Mutex<HashMap<u64, Pending>>,
    next_query: AtomicU64,
    next_serial: AtomicU64,
    sessions: SessionCache,
    /// Which gateways hold which uids and groups.
    routes: Mutex<Routes>,
    /// `false`: uid and group commands go to every gateway, as in GatewayWorker.
    targeted: bool,
}

/// Handle to every linked gateway; clone it freely.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

/// Locks ignoring poison: every critical section here is a single map operation, so a
/// panicking holder cannot leave a map half-changed.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Gateway {
    /// A handle with no links yet; `targeted` turns the routing table on.
    pub(crate) fn new(targeted: bool) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                links: RwLock::new(BTreeMap::new()),
                pending: Mutex::new(HashMap::new()),
                next_query: AtomicU64::new(1),
                next_serial: AtomicU64::new(1),
                sessions: SessionCache::default(),
                routes: Mutex::new(Routes::default()),
                targeted,
            }),
        }
    }

    pub(crate) fn sessions(&self) -> &SessionCache {
        &self.inner.sessions
    }

    // ---- link bookkeeping (link.rs) ----

    /// A link to `gateway` came up; returns its serial. A second link claiming the same
    /// gateway id replaces the first (both configs name one gateway twice).
    pub(crate) fn register(&self, gateway: u16, tx: mpsc::Sender<WorkerToGateway>) -> u64 {
        let serial = self.inner.next_serial.fetch_add(1, Ordering::Relaxed);
        let mut links = self.inner.links.write().unwrap_or_else(|p| p.into_inner());
        // The new link's gateway sends its whole table again.
        lock(&self.inner.routes).forget(gateway);
        if links.insert(gateway, LinkTx { serial, tx }).is_some() {
            tracing::warn!(
                gateway,
                "two links claim the same gateway id; using the newest"
            );
        }
        serial
    }

    /// The link with `serial` went down: forget it and fail its pending queries.
    pub(crate) fn unregister(&self, gateway: u16, serial: u64) {
        {
            let mut links = self.inner.links.write().unwrap_or_else(|p| p.into_inner());
            if links
                .get(&gateway)
                .is_some_and(|link| link.serial == serial)
            {
                links.remove(&gateway);
                self.inner.sessions.forget_gateway(gateway);
                lock(&self.inner.routes).forget(gateway);
            }
        }
        // Dropping the senders wakes the waiters with LinkClosed.
        lock(&self.inner.pending).retain(|_, pending| pending.serial != serial);
    }

    /// Route changes arrived on link `serial` of `gateway`; ignored unless that link is the
    /// gateway's current one (a replaced link's table is not the new link's).
    pub(crate) fn apply_routes(
        &self,
        gateway: u16,
        serial: u64,
        changes: Vec<RouteChange>,
        synced: bool,
    ) {
        let links = self.inner.links.read().unwrap_or_else(|p| p.into_inner());
        if links
            .get(&gateway)
            .is_some_and(|link| link.serial == serial)
        {
            lock(&self.inner.routes).apply(gateway, changes, synced);
        }
    }

    /// A reply arrived; hands it to the query waiting for it, if it still waits.
    pub(crate) fn deliver_reply(&self, id: u64, reply: Reply) {
        if let Some(pending) = lock(&self.inner.pending).remove(&id) {
            let _ = pending.tx.send(reply);
        } else {
            tracing::debug!(
                query = id,
                "reply for a query nobody waits for (timed out?)"
            );
        }
    }

    /// Ids of the gateways linked right now.
    pub fn linked_gateways(&self) -> Vec<u16> {
        self.linked().to_vec()
    }

    fn linked(&self) -> SmallVec<[u16; 4]> {
        let links = self.inner.links.read().unwrap_or_else(|p| p.into_inner());
        links.keys().copied().collect()
    }

    fn links(&self) -> Links {
        let links = self.inner.links.read().unwrap_or_else(|p| p.into_inner());
        links.iter().map(|(id, link)| (*id, link.clone())).collect()
    }

    fn route(&self, gateway: u16) -> Result<LinkTx, GatewayError> {
        let links = self.inner.links.read().unwrap_or_else(|p| p.into_inner());
        links
            .get(&gateway)
            .cloned()
            .ok_or(GatewayError::NotLinked(gateway))
    }

    // ---- commands ----

    async fn command_to(&self, gateway: u16, command: Command) -> Result<(), GatewayError> {
        let link = self.route(gateway)?;
        link.tx
            .send(WorkerToGateway::Command(command))
            .await
            .map_err(|_| GatewayError::LinkClosed(gateway))
    }

    /// Sends to every linked gateway; tries them all and reports the first failure.
    async fn command_all(&self, command: Command) -> Result<(), GatewayError> {
        self.command_each(self.links(), command).await
    }

    /// Sends to the `targets` among the linked gateways.
    async fn command_targets(
        &self,
        targets: Targets,
        command: Command,
    ) -> Result<(), GatewayError> {
        match targets {
            Targets::All => self.command_all(command).await,
            Targets::Some(ids) => {
                let links = {
                    let links = self.inner.links.read().unwrap_or_else(|p| p.into_inner());
                    ids.iter()
                        .filter_map(|id| Some((id, links.get(&id)?.clone())))
                        .collect()
                };
                self.command_each(links, command).await
            }
        }
    }

    /// Where a command for `uids` goes.
    fn uid_targets<'a>(&self, uids: impl IntoIterator<Item = &'a str>) -> Targets {
        if !self.inner.targeted {
            return Targets::All;
        }
        let linked = self.linked();
        lock(&self.inner.routes).for_uids(uids, &linked)
    }

    /// Where a command for `groups` goes.
    fn group_targets<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> Targets {
        if !self.inner.targeted {
            return Targets::All;
        }
        let linked = self.linked();
        lock(&self.inner.routes).for_groups(groups, &linked)
    }

    /// Whether the routing table knows a linked gateway holding `uid`, without asking any
    /// gateway (`is_uid_online` asks when this says no). Always false with
    /// `routing = "everywhere"`, which keeps no table.
    pub fn known_online(&self, uid: &str) -> bool {
        self.inner.targeted && lock(&self.inner.routes).uid_known(uid)
    }

    /// Every uid the routing table knows a linked gateway to hold, in no order.
    pub fn known_online_uids(&self) -> Vec<String> {
        if !self.inner.targeted {
            return Vec::new();
        }
        lock(&self.inner.routes).uids()
    }

    /// Sends to each of `links`; tries them all and reports the first failure.
    async fn command_each(&self, links: Links, command: Command) -> Result<(), GatewayError> {
        let mut result = Ok(());
        let last = links.len().saturating_sub(1);
        let mut command = Some(command);
        for (i, (gateway, link)) in links.into_iter().enumerate() {
            // The last link (usually the only one) takes the command itself, not a copy.
            let copy = if i == last {
                command.take()
            } else {
                command.clone()
            };
            let Some(copy) = copy else { break };
            let sent = link.tx.send(WorkerToGateway::Command(copy)).await;
            if sent.is_err() && result.is_ok() {
                result = Err(GatewayError::LinkClosed(gateway));
            }
        }
        result
    }

    /// `sendToClient`.
    pub async fn send_to_client(
        &self,
        client: ClientId,
        body: Outbound,
    ) -> Result<(), GatewayError> {
        self.command_to(client.gateway(), Command::SendToClient { client, body })
            .await
    }

    /// `sendToAll`: every connection on every gateway except `exclude`.
    pub async fn send_to_all(
        &self,
        body: Outbound,
        exclude: &[ClientId],
    ) -> Result<(), GatewayError> {
        self.command_all(Command::SendToAll {
            body,
            exclude: exclude.to_vec(),
        })
        .await
    }

    /// `sendToUid` for one uid.
    pub async fn send_to_uid(&self, uid: &str, body: Outbound) -> Result<(), GatewayError> {
        self.send_to_uids(&[uid], body).await
    }

    /// `sendToUid` for several uids: only to the gateways that hold one of them.
    pub async fn send_to_uids(&self, uids: &[&str], body: Outbound) -> Result<(), GatewayError> {
        let targets = self.uid_targets(uids.iter().copied());
        if targets.is_nowhere() {
            return Ok(());
        }
        let uids = uids.iter().map(|uid| uid.to_string()).collect();
        self.command_targets(targets, Command::SendToUid { uids, body })
            .await
    }

    /// `sendToGroup` for one group, except the `exclude`d connections.
    pub async fn send_to_group(
        &self,
        group: &str,
        body: Outbound,
        exclude: &[ClientId],
    ) -> Result<(), GatewayError> {
        self.send_to_groups(&[group], body, exclude).await
    }

    /// `sendToGroup` for several groups (a member of two gets it once), only to the
    /// gateways that hold a member.
    pub async fn send_to_groups(
        &self,
        groups: &[&str],
        body: Outbound,
        exclude: &[ClientId],
    ) -> Result<(), GatewayError> {
        let targets = self.group_targets(groups.iter().copied());
        if targets.is_nowhere() {
            // Say, the chat's device room with no device online: no copies of the names.
            return Ok(());
        }
        let groups = groups.iter().map(|group| group.to_string()).collect();
        self.command_targets(
            targets,
            Command::SendToGroup {
                groups,
                body,
                exclude: exclude.to_vec(),
            },
        )
        .await
    }

    /// `bindUid`: a connection has at most one uid; a uid may have many connections.
    pub async fn bind_uid(&self, client: ClientId, uid: &str) -> Result<(), GatewayError> {
        self.command_to(
            client.gateway(),
            Command::BindUid {
                client,
                uid: uid.to_string(),
            },
        )
        .await
    }

    /// `unbindUid`.
    pub async fn unbind_uid(&self, client: ClientId, uid: &str) -> Result<(), GatewayError> {
        self.command_to(
            client.gateway(),
            Command::UnbindUid {
                client,
                uid: uid.to_string(),
            },
        )
        .await
    }

    /// `joinGroup`.
    pub async fn join_group(&self, client: ClientId, group: &str) -> Result<(), GatewayError> {
        if self.inner.targeted {
            lock(&self.inner.routes).joined(group, client.gateway());
        }
        self.command_to(
            client.gateway(),
            Command::JoinGroup {
                client,
                group: group.to_string(),
            },
        )
        .await
    }

    /// `leaveGroup`.
    pub async fn leave_group(&self, client: ClientId, group: &str) -> Result<(), GatewayError> {
        self.command_to(
            client.gateway(),
            Command::LeaveGroup {
                client,
                group: group.to_string(),
            },
        )
        .await
    }

    /// `ungroup`: dissolves the group on every gateway.
    pub async fn ungroup(&self, group: &str) -> Result<(), GatewayError> {
        self.command_all(Command::Ungroup {
            group: group.to_string(),
        })
        .await
    }

    /// `closeClient`, with an optional last message.
    pub async fn close_client(
        &self,
        client: ClientId,
        farewell: Option<Outbound>,
    ) -> Result<(), GatewayError> {
        self.command_to(client.gateway(), Command::CloseClient { client, farewell })
            .await
    }

    /// `setSession`: replaces the client's session.
    pub async fn set_session(
        &self,
        client: ClientId,
        session: Session,
    ) -> Result<(), GatewayError> {
        self.inner.sessions.write(client, &session, false);
        self.command_to(client.gateway(), Command::SetSession { client, session })
            .await
    }

    /// `updateSession`: merges `session`'s keys into the client's session.
    pub async fn update_session(
        &self,
        client: ClientId,
        session: Session,
    ) -> Result<(), GatewayError> {
        self.inner.sessions.write(client, &session, true);
        self.command_to(client.gateway(), Command::UpdateSession { client, session })
            .await
    }
}
