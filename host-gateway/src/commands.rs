//! Executes workers' [`Command`]s and answers their [`Query`]s against the router's state,
//! with GatewayWorker's semantics. Every recipient set comes from an index; only
//! `SendToAll` and the whole-gateway queries walk every client.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use protocol::link::{ClientId, ClientInfo, Command, Outbound, Query, Reply};

use crate::connection::Outgoing;
use crate::router::{accepts, Router};
use crate::stats::bump;

/// Connections a send skips: almost always none or one (the speaker), so a short list is
/// scanned (hashing every recipient's id cost more than the send), a long one hashed once.
enum Exclude {
    Few(Vec<ClientId>),
    Many(HashSet<ClientId>),
}

impl Exclude {
    /// Lists longer than this are hashed.
    const SCAN: usize = 8;

    fn new(ids: Vec<ClientId>) -> Exclude {
        if ids.len() <= Self::SCAN {
            Exclude::Few(ids)
        } else {
            Exclude::Many(ids.into_iter().collect())
        }
    }

    fn contains(&self, id: &ClientId) -> bool {
        match self {
            Exclude::Few(ids) => ids.contains(id),
            Exclude::Many(ids) => ids.contains(id),
        }
    }
}

impl Router {
    /// Executes one command from worker link `link`.
    pub(crate) fn execute(&mut self, link: u64, command: Command) {
        match command {
            Command::SendToClient { client, body } => {
                self.send_one(client, Arc::new(body));
            }
            Command::SendToAll { body, exclude } => {
                let body = Arc::new(body);
                let exclude = Exclude::new(exclude);
                for (id, client) in self.registry.iter() {
                    if !exclude.contains(id) && accepts(client.handle.kind, &body) {
                        self.offer_shared(*id, &client.handle, &body);
                    }
                }
            }
            Command::SendToUid { uids, body } => {
                let body = Arc::new(body);
                if let [uid] = uids.as_slice() {
                    // The usual case (a private message): the uid's own index, no set built.
                    let members = self.registry.uid_members(uid).into_iter().flatten();
                    self.broadcast(members.copied(), body);
                } else {
                    let mut ids = BTreeSet::new();
                    for uid in &uids {
                        if let Some(members) = self.registry.uid_members(uid) {
                            ids.extend(members);
                        }
                    }
                    self.broadcast(ids, body);
                }
            }
            Command::SendToGroup {
                groups,
                body,
                exclude,
            } => {
                let body = Arc::new(body);
                let exclude = Exclude::new(exclude);
                if let [group] = groups.as_slice() {
                    // The usual case (a chat line to one room): walk the index itself
                    // rather than copying every member into a set first.
                    let members = self.registry.group_members(group).into_iter().flatten();
                    let ids = members.copied().filter(|id| !exclude.contains(id));
                    self.broadcast(ids, body);
                } else {
                    let mut ids = BTreeSet::new();
                    for group in &groups {
                        if let Some(members) = self.registry.group_members(group) {
                            ids.extend(members.iter().filter(|id| !exclude.contains(id)));
                        }
                    }
                    self.broadcast(ids, body);
                }
            }
            Command::BindUid { client, uid } => {
                self.registry.bind_uid(client, uid);
            }
            Command::UnbindUid { client, uid } => {
                self.registry.unbind_uid(client, &uid);
            }
            Command::JoinGroup { client, group } => {
                self.registry.join(client, group);
            }
            Command::LeaveGroup { client, group } => {
                self.registry.leave(client, &group);
            }
            Command::Ungroup { group } => self.registry.ungroup(&group),
            Command::CloseClient { client, farewell } => {
                if let Some(c) = self.registry.get(client) {
                    let farewell = farewell.filter(|f| accepts(c.handle.kind, f)).map(Arc::new);
                    self.offer(client, &c.handle, Outgoing::Close { farewell });
                }
            }
            Command::SetSession { client, session } => {
                if let Err(err) = self.registry.set_session(client, session) {
                    tracing::warn!(link, conn = %client, cause = %err, "SetSession refused");
                }
            }
            Command::UpdateSession { client, session } => {
                if let Err(err) = self.registry.update_session(client, session) {
                    tracing::warn!(link, conn = %client, cause = %err, "UpdateSession refused");
                }
            }
        }
    }

    /// `SendToClient`: a body of the wrong kind for the client is a worker bug, logged.
    fn send_one(&self, id: ClientId, body: Arc<Outbound>) {
        let Some(client) = self.registry.get(id) else {
            bump(&self.counters.dropped);
            return;
        };
        if !accepts(client.handle.kind, &body) {
            tracing::warn!(conn = %id, kind = ?client.handle.kind, "message of the wrong kind for this client dropped");
            bump(&self.counters.dropped);
            return;
        }
        self.offer(id, &client.handle, Outgoing::Send(body));
    }

    /// Sends to each of `ids` that takes this kind of body; the others are skipped silently
    /// (a line for everyone is not for devices). The last recipient gets `body` itself: a
    /// message for one connection (a private one) is staged without a copy.
    fn broadcast(&self, ids: impl IntoIterator<Item = ClientId>, body: Arc<Outbound>) {
        let mut ids = ids.into_iter().peekable();
        while let Some(id) = ids.next() {
            let Some(client) = self.registry.get(id) else {
                continue;
            };
            if !accepts(client.handle.kind, &body) {
                continue;
            }
            if ids.peek().is_none() {
                self.offer(id, &client.handle, Outgoing::Send(body));
                return;
            }
            self.offer_shared(id, &client.handle, &body);
        }
    }

    /// Answers one query.
    pub(crate) fn answer(&self, query: Query) -> Reply {
        let reg = &self.registry;
        let members = |group: &str| reg.group_members(group).into_iter().flatten().copied();
        // Every connection's id, in order (the registry keeps them in no particular one).
        let all_ids = || {
            let mut ids: Vec<ClientId> = reg.iter().map(|(id, _)| *id).collect();
            ids.sort_unstable();
            ids
        };
        match query {
            Query::IsOnline(id) => Reply::Bool(reg.get(id).is_some()),
            Query::IsUidOnline(uid) => Reply::Bool(reg.uid_members(&uid).is_some()),
            Query::ClientIdsByUid(uid) => Reply::Clients(
                reg.uid_members(&uid)
                    .into_iter()
                    .flatten()
                    .copied()
                    .collect(),
            ),
            Query::UidByClientId(id) => {
                Reply::Uid(reg.get(id).and_then(|c| c.uid.as_deref().map(String::from)))
            }
            Query::ClientCount(None) => Reply::Count(reg.len() as u64),
            Query::ClientCount(Some(group)) => {
                Reply::Count(reg.group_members(&group).map_or(0, |m| m.len() as u64))
            }
            Query::ClientIds(None) => Reply::Clients(all_ids()),
            Query::ClientIds(Some(group)) => Reply::Clients(members(&group).collect()),
            Query::Uids => Reply::Uids(sorted(reg.uids())),
            Query::UidCount => Reply::Count(reg.uids().count() as u64),
            Query::Groups => Reply::Groups(sorted(reg.groups())),
            Query::GetSession(id) => Reply::Session(reg.get(id).map(|c| c.session.clone())),
            Query::Sessions(None) => Reply::Sessions(
                all_ids()
                    .into_iter()
                    .filter_map(|id| self.info(id))
                    .collect(),
            ),
            Query::Sessions(Some(group)) => {
                Reply::Sessions(members(&group).filter_map(|id| self.info(id)).collect())
            }
            Query::Stats => {
                let mut stats = self.counters.snapshot(self.gateway);
                (stats.telnet_clients, stats.device_clients) = self.client_counts();
                stats.workers = self.delivery.workers() as u64;
                Reply::Stats(stats)
            }
        }
    }

    fn info(&self, id: ClientId) -> Option<ClientInfo> {
        let client = self.registry.get(id)?;
        Some(ClientInfo {
            client: id,
            kind: client.handle.kind,
            uid: client.uid.as_deref().map(String::from),
            session: client.session.clone(),
        })
    }
}

fn sorted<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = names.map(String::from).collect();
    names.sort_unstable();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exclude_list_skips_the_same_ids_scanned_or_hashed() {
        for len in [0, 1, Exclude::SCAN, Exclude::SCAN + 1, 100] {
            let ids: Vec<ClientId> = (0..len as u64).map(|n| ClientId::new(1, n * 2)).collect();
            let exclude = Exclude::new(ids);
            assert_eq!(matches!(exclude, Exclude::Many(_)), len > Exclude::SCAN);
            for n in 0..len as u64 * 2 {
                assert_eq!(
                    exclude.contains(&ClientId::new(1, n)),
                    n % 2 == 0,
                    "{len}: {n}"
                );
            }
        }
    }
}
