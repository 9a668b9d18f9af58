//! The gateway API a handler acts through, with GatewayWorker's names and meaning.
//!
//! [`Gateway`] is a cheap `Clone` handle over the links that are up. Commands are
//! fire-and-forget: a command about one client goes to the link of the gateway in the
//! client id's top bits; broadcasts, uid and group commands go to every linked gateway.
//! Queries go out with an id and are awaited for [`QUERY_TIMEOUT`], then aggregated across
//! gateways (counts summed, lists concatenated, booleans or-ed).
//!
//! Overflow policy: each link has a bounded outgoing queue of [`LINK_QUEUE`] messages;
//! a command waits for space, so a slow gateway slows the handler (backpressure) rather
//! than growing memory or dropping commands. This module owns no socket; `link.rs` does.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use protocol::link::{
    ClientId, ClientInfo, Command, GatewayStats, Outbound, Query, Reply, Session, WorkerToGateway,
};
use tokio::sync::{mpsc, oneshot};

use crate::session::SessionCache;

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
        /// What came back.
        reply: Reply,
    },
}

/// The sending side of one link that is up.
#[derive(Clone)]
pub(crate) struct LinkTx {
    /// Distinguishes this connection from earlier ones to the same gateway.
    pub(crate) serial: u64,
    pub(crate) tx: mpsc::Sender<WorkerToGateway>,
}

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
}

/// Handle to every linked gateway; clone it freely.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

/// Locks ignoring poison: every critical section here is a single map operation, so a
/// panicking holder cannot leave a map half-changed.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes a pending query when its caller stops waiting (reply, timeout or cancellation).
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.id);
    }
}

impl Gateway {
    pub(crate) fn new() -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                links: RwLock::new(BTreeMap::new()),
                pending: Mutex::new(HashMap::new()),
                next_query: AtomicU64::new(1),
                next_serial: AtomicU64::new(1),
                sessions: SessionCache::default(),
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
        if links.insert(gateway, LinkTx { serial, tx }).is_some() {
            tracing::warn!(gateway, "two links claim the same gateway id; using the newest");
        }
        serial
    }

    /// The link with `serial` went down: forget it and fail its pending queries.
    pub(crate) fn unregister(&self, gateway: u16, serial: u64) {
        {
            let mut links = self.inner.links.write().unwrap_or_else(|p| p.into_inner());
            if links.get(&gateway).is_some_and(|link| link.serial == serial) {
                links.remove(&gateway);
            }
        }
        // Dropping the senders wakes the waiters with LinkClosed.
        lock(&self.inner.pending).retain(|_, pending| pending.serial != serial);
    }

    /// A reply arrived; hands it to the query waiting for it, if it still waits.
    pub(crate) fn deliver_reply(&self, id: u64, reply: Reply) {
        if let Some(pending) = lock(&self.inner.pending).remove(&id) {
            let _ = pending.tx.send(reply);
        } else {
            tracing::debug!(query = id, "reply for a query nobody waits for (timed out?)");
        }
    }

    /// Ids of the gateways linked right now.
    pub fn linked_gateways(&self) -> Vec<u16> {
        self.links().into_iter().map(|(id, _)| id).collect()
    }

    fn links(&self) -> Vec<(u16, LinkTx)> {
        let links = self.inner.links.read().unwrap_or_else(|p| p.into_inner());
        links.iter().map(|(id, link)| (*id, link.clone())).collect()
    }

    fn route(&self, gateway: u16) -> Result<LinkTx, GatewayError> {
        let links = self.inner.links.read().unwrap_or_else(|p| p.into_inner());
        links.get(&gateway).cloned().ok_or(GatewayError::NotLinked(gateway))
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
        let mut result = Ok(());
        for (gateway, link) in self.links() {
            let sent = link.tx.send(WorkerToGateway::Command(command.clone())).await;
            if sent.is_err() && result.is_ok() {
                result = Err(GatewayError::LinkClosed(gateway));
            }
        }
        result
    }

    /// `sendToClient`.
    pub async fn send_to_client(&self, client: ClientId, body: Outbound) -> Result<(), GatewayError> {
        self.command_to(client.gateway(), Command::SendToClient { client, body }).await
    }

    /// `sendToAll`: every connection on every gateway except `exclude`.
    pub async fn send_to_all(&self, body: Outbound, exclude: &[ClientId]) -> Result<(), GatewayError> {
        self.command_all(Command::SendToAll { body, exclude: exclude.to_vec() }).await
    }

    /// `sendToUid` for one uid.
    pub async fn send_to_uid(&self, uid: &str, body: Outbound) -> Result<(), GatewayError> {
        self.send_to_uids(&[uid], body).await
    }

    /// `sendToUid` for several uids.
    pub async fn send_to_uids(&self, uids: &[&str], body: Outbound) -> Result<(), GatewayError> {
        let uids = uids.iter().map(|uid| uid.to_string()).collect();
        self.command_all(Command::SendToUid { uids, body }).await
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

    /// `sendToGroup` for several groups (a member of two gets it once).
    pub async fn send_to_groups(
        &self,
        groups: &[&str],
        body: Outbound,
        exclude: &[ClientId],
    ) -> Result<(), GatewayError> {
        let groups = groups.iter().map(|group| group.to_string()).collect();
        self.command_all(Command::SendToGroup { groups, body, exclude: exclude.to_vec() }).await
    }

    /// `bindUid`: a connection has at most one uid; a uid may have many connections.
    pub async fn bind_uid(&self, client: ClientId, uid: &str) -> Result<(), GatewayError> {
        self.command_to(client.gateway(), Command::BindUid { client, uid: uid.to_string() }).await
    }

    /// `unbindUid`.
    pub async fn unbind_uid(&self, client: ClientId, uid: &str) -> Result<(), GatewayError> {
        self.command_to(client.gateway(), Command::UnbindUid { client, uid: uid.to_string() }).await
    }

    /// `joinGroup`.
    pub async fn join_group(&self, client: ClientId, group: &str) -> Result<(), GatewayError> {
        self.command_to(client.gateway(), Command::JoinGroup { client, group: group.to_string() }).await
    }

    /// `leaveGroup`.
    pub async fn leave_group(&self, client: ClientId, group: &str) -> Result<(), GatewayError> {
        self.command_to(client.gateway(), Command::LeaveGroup { client, group: group.to_string() }).await
    }

    /// `ungroup`: dissolves the group on every gateway.
    pub async fn ungroup(&self, group: &str) -> Result<(), GatewayError> {
        self.command_all(Command::Ungroup { group: group.to_string() }).await
    }

    /// `closeClient`, with an optional last message.
    pub async fn close_client(&self, client: ClientId, farewell: Option<Outbound>) -> Result<(), GatewayError> {
        self.command_to(client.gateway(), Command::CloseClient { client, farewell }).await
    }

    /// `setSession`: replaces the client's session.
    pub async fn set_session(&self, client: ClientId, session: Session) -> Result<(), GatewayError> {
        self.inner.sessions.write(client, &session, false);
        self.command_to(client.gateway(), Command::SetSession { client, session }).await
    }

    /// `updateSession`: merges `session`'s keys into the client's session.
    pub async fn update_session(&self, client: ClientId, session: Session) -> Result<(), GatewayError> {
        self.inner.sessions.write(client, &session, true);
        self.command_to(client.gateway(), Command::UpdateSession { client, session }).await
    }

    // ---- queries ----

    async fn ask(&self, gateway: u16, link: LinkTx, query: Query) -> Result<Reply, GatewayError> {
        let id = self.inner.next_query.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(id, Pending { serial: link.serial, tx });
        let _guard = PendingGuard { inner: &self.inner, id };
        link.tx
            .send(WorkerToGateway::Query { id, query })
            .await
            .map_err(|_| GatewayError::LinkClosed(gateway))?;
        match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(GatewayError::LinkClosed(gateway)),
            Err(_) => Err(GatewayError::Timeout { gateway, after: QUERY_TIMEOUT }),
        }
    }

    async fn ask_one(&self, gateway: u16, query: Query) -> Result<Reply, GatewayError> {
        let link = self.route(gateway)?;
        self.ask(gateway, link, query).await
    }

    /// Asks every linked gateway at once; fails if any of them fails.
    async fn ask_all(&self, query: Query) -> Result<Vec<(u16, Reply)>, GatewayError> {
        let asks = self.links().into_iter().map(|(gateway, link)| {
            let query = query.clone();
            async move { self.ask(gateway, link, query).await.map(|reply| (gateway, reply)) }
        });
        futures::future::join_all(asks).await.into_iter().collect()
    }

    /// `isOnline`: is this connection open?
    pub async fn is_online(&self, client: ClientId) -> Result<bool, GatewayError> {
        let gateway = client.gateway();
        expect_bool(gateway, "IsOnline", self.ask_one(gateway, Query::IsOnline(client)).await?)
    }

    /// `isUidOnline`: is any connection, on any gateway, bound to `uid`?
    pub async fn is_uid_online(&self, uid: &str) -> Result<bool, GatewayError> {
        let replies = self.ask_all(Query::IsUidOnline(uid.to_string())).await?;
        let mut online = false;
        for (gateway, reply) in replies {
            online |= expect_bool(gateway, "IsUidOnline", reply)?;
        }
        Ok(online)
    }

    /// `getClientIdByUid`: every connection bound to `uid`.
    pub async fn client_ids_by_uid(&self, uid: &str) -> Result<Vec<ClientId>, GatewayError> {
        let replies = self.ask_all(Query::ClientIdsByUid(uid.to_string())).await?;
        concat(replies, "ClientIdsByUid", |reply| match reply {
            Reply::Clients(clients) => Ok(clients),
            other => Err(other),
        })
    }

    /// `getUidByClientId`.
    pub async fn uid_by_client_id(&self, client: ClientId) -> Result<Option<String>, GatewayError> {
        let gateway = client.gateway();
        match self.ask_one(gateway, Query::UidByClientId(client)).await? {
            Reply::Uid(uid) => Ok(uid),
            reply => Err(GatewayError::UnexpectedReply { gateway, query: "UidByClientId", reply }),
        }
    }

    /// `getAllClientIdCount`.
    pub async fn client_count(&self) -> Result<u64, GatewayError> {
        self.sum(Query::ClientCount(None), "ClientCount").await
    }

    /// `getClientIdCountByGroup`.
    pub async fn group_client_count(&self, group: &str) -> Result<u64, GatewayError> {
        self.sum(Query::ClientCount(Some(group.to_string())), "ClientCount").await
    }

    /// `getAllClientIdList`.
    pub async fn client_ids(&self) -> Result<Vec<ClientId>, GatewayError> {
        self.clients(Query::ClientIds(None)).await
    }

    /// `getClientIdListByGroup`.
    pub async fn group_client_ids(&self, group: &str) -> Result<Vec<ClientId>, GatewayError> {
        self.clients(Query::ClientIds(Some(group.to_string()))).await
    }

    /// `getAllUidList` (a uid bound on two gateways appears once).
    pub async fn uids(&self) -> Result<Vec<String>, GatewayError> {
        let replies = self.ask_all(Query::Uids).await?;
        let mut uids = concat(replies, "Uids", |reply| match reply {
            Reply::Uids(uids) => Ok(uids),
            other => Err(other),
        })?;
        uids.sort();
        uids.dedup();
        Ok(uids)
    }

    /// `getAllUidCount`, summed over gateways (a uid bound on two gateways counts twice).
    pub async fn uid_count(&self) -> Result<u64, GatewayError> {
        self.sum(Query::UidCount, "UidCount").await
    }

    /// `getAllGroupIdList` (a group present on two gateways appears once).
    pub async fn groups(&self) -> Result<Vec<String>, GatewayError> {
        let replies = self.ask_all(Query::Groups).await?;
        let mut groups = concat(replies, "Groups", |reply| match reply {
            Reply::Groups(groups) => Ok(groups),
            other => Err(other),
        })?;
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// `getSession`: the freshest copy this worker knows, else the gateway's.
    pub async fn get_session(&self, client: ClientId) -> Result<Option<Session>, GatewayError> {
        if let Some(session) = self.inner.sessions.get(client) {
            return Ok(Some(session));
        }
        let gateway = client.gateway();
        match self.ask_one(gateway, Query::GetSession(client)).await? {
            Reply::Session(session) => Ok(session),
            reply => Err(GatewayError::UnexpectedReply { gateway, query: "GetSession", reply }),
        }
    }

    /// `getAllClientSessions`: every open connection with its uid and session.
    pub async fn client_sessions(&self) -> Result<Vec<ClientInfo>, GatewayError> {
        self.sessions_of(None).await
    }

    /// `getClientSessionsByGroup`.
    pub async fn group_client_sessions(&self, group: &str) -> Result<Vec<ClientInfo>, GatewayError> {
        self.sessions_of(Some(group.to_string())).await
    }

    /// Every linked gateway's counters.
    pub async fn stats(&self) -> Result<Vec<GatewayStats>, GatewayError> {
        let replies = self.ask_all(Query::Stats).await?;
        concat(replies, "Stats", |reply| match reply {
            Reply::Stats(stats) => Ok(vec![stats]),
            other => Err(other),
        })
    }

    async fn sessions_of(&self, group: Option<String>) -> Result<Vec<ClientInfo>, GatewayError> {
        let replies = self.ask_all(Query::Sessions(group)).await?;
        let mut infos = concat(replies, "Sessions", |reply| match reply {
            Reply::Sessions(infos) => Ok(infos),
            other => Err(other),
        })?;
        // The gateway's copies may predate this worker's own updates.
        for info in &mut infos {
            if let Some(session) = self.inner.sessions.get(info.client) {
                info.session = session;
            }
        }
        Ok(infos)
    }

    async fn sum(&self, query: Query, name: &'static str) -> Result<u64, GatewayError> {
        let mut total = 0u64;
        for (gateway, reply) in self.ask_all(query).await? {
            match reply {
                Reply::Count(n) => total = total.saturating_add(n),
                reply => return Err(GatewayError::UnexpectedReply { gateway, query: name, reply }),
            }
        }
        Ok(total)
    }

    async fn clients(&self, query: Query) -> Result<Vec<ClientId>, GatewayError> {
        let replies = self.ask_all(query).await?;
        concat(replies, "ClientIds", |reply| match reply {
            Reply::Clients(clients) => Ok(clients),
            other => Err(other),
        })
    }
}

fn expect_bool(gateway: u16, query: &'static str, reply: Reply) -> Result<bool, GatewayError> {
    match reply {
        Reply::Bool(b) => Ok(b),
        reply => Err(GatewayError::UnexpectedReply { gateway, query, reply }),
    }
}

/// Concatenates list replies, failing on the first reply of the wrong kind.
fn concat<T>(
    replies: Vec<(u16, Reply)>,
    query: &'static str,
    take: impl Fn(Reply) -> Result<Vec<T>, Reply>,
) -> Result<Vec<T>, GatewayError> {
    let mut all = Vec::new();
    for (gateway, reply) in replies {
        let items = take(reply).map_err(|reply| GatewayError::UnexpectedReply { gateway, query, reply })?;
        all.extend(items);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway stand-in answering every query on one link with `answer`.
    fn fake_link(gateway: &Gateway, id: u16, answer: impl Fn(&Query) -> Option<Reply> + Send + 'static) {
        let (tx, mut rx) = mpsc::channel(LINK_QUEUE);
        gateway.register(id, tx);
        let gateway = gateway.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if let WorkerToGateway::Query { id, query } = msg {
                    if let Some(reply) = answer(&query) {
                        gateway.deliver_reply(id, reply);
                    }
                }
            }
        });
    }

    #[tokio::test]
    async fn queries_are_aggregated_across_gateways() {
        let gateway = Gateway::new();
        fake_link(&gateway, 1, |q| match q {
            Query::ClientCount(_) => Some(Reply::Count(2)),
            Query::IsUidOnline(_) => Some(Reply::Bool(false)),
            Query::Uids => Some(Reply::Uids(vec!["1".into(), "2".into()])),
            _ => None,
        });
        fake_link(&gateway, 2, |q| match q {
            Query::ClientCount(_) => Some(Reply::Count(3)),
            Query::IsUidOnline(_) => Some(Reply::Bool(true)),
            Query::Uids => Some(Reply::Uids(vec!["2".into(), "3".into()])),
            _ => None,
        });
        assert_eq!(gateway.client_count().await.unwrap(), 5);
        assert!(gateway.is_uid_online("3").await.unwrap());
        assert_eq!(gateway.uids().await.unwrap(), ["1", "2", "3"]);
        assert_eq!(gateway.linked_gateways(), [1, 2]);
    }

    #[tokio::test]
    async fn a_client_on_an_unlinked_gateway_is_a_typed_error() {
        let gateway = Gateway::new();
        let err = gateway.send_to_client(ClientId::new(9, 1), Outbound::Line("x".into())).await.unwrap_err();
        assert!(matches!(err, GatewayError::NotLinked(9)), "{err:?}");
        // With nothing linked, broadcasts go nowhere and counts are zero.
        gateway.send_to_all(Outbound::Line("x".into()), &[]).await.unwrap();
        assert_eq!(gateway.client_count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_wrong_reply_kind_is_reported() {
        let gateway = Gateway::new();
        fake_link(&gateway, 1, |_| Some(Reply::Bool(true)));
        let err = gateway.client_count().await.unwrap_err();
        assert!(matches!(err, GatewayError::UnexpectedReply { gateway: 1, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_link_going_down_fails_its_pending_queries_at_once() {
        let gateway = Gateway::new();
        let (tx, mut rx) = mpsc::channel(4);
        let serial = gateway.register(1, tx);
        let asking = tokio::spawn({
            let gateway = gateway.clone();
            async move { gateway.is_online(ClientId::new(1, 5)).await }
        });
        assert!(matches!(rx.recv().await, Some(WorkerToGateway::Query { .. })));
        gateway.unregister(1, serial);
        let result = tokio::time::timeout(Duration::from_secs(1), asking).await.unwrap().unwrap();
        assert!(matches!(result, Err(GatewayError::LinkClosed(1))), "{result:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_query_times_out() {
        let gateway = Gateway::new();
        fake_link(&gateway, 1, |_| None);
        let err = gateway.is_online(ClientId::new(1, 5)).await.unwrap_err();
        assert!(matches!(err, GatewayError::Timeout { gateway: 1, .. }), "{err:?}");
        assert!(lock(&gateway.inner.pending).is_empty());
    }
}
