//! The router's indexes over this gateway's own connections: client id -> connection,
//! uid -> connections, group -> connections, and each connection's uid, groups and session.
//!
//! Every lookup a command needs is a map access, never a scan of all clients. Sessions are
//! bounded here. It also notes each [`RouteChange`] (a uid's or group's first connection
//! here, its last one gone) for the router to publish to the workers' routing tables.
//! Sending, events and workers are the router's business, not this module's.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use protocol::link::{ClientId, ClientKind, PackedSession, RouteChange, Session};

use crate::connection::ClientHandle;
use crate::members::Members;

/// Most keys a session may hold; GatewayWorker apps keep a handful (uid, nick, room).
pub const MAX_SESSION_KEYS: usize = 64;
/// Most bytes (keys plus values) a session may hold. Every event of a client carries its
/// session, so a big one costs on every message.
pub const MAX_SESSION_BYTES: usize = 4096;

/// One open connection.
#[derive(Debug)]
pub struct Client {
    /// The router's way to reach the connection task.
    pub handle: ClientHandle,
    /// Its uid, if bound (the name is shared with the uid index's key).
    pub uid: Option<Arc<str>>,
    /// Groups it is in, sorted (names shared with the group index's keys). A handful at
    /// most in practice: a vector costs one small allocation where a tree cost a node.
    pub groups: Vec<Arc<str>>,
    /// Its session, packed and shared with the events that carry it (an event costs no
    /// copy; a change packs a new one).
    pub session: PackedSession,
}

/// Why a session update was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The connection is not open (anymore).
    #[error("no such client")]
    NoClient,
    /// The result would be over [`MAX_SESSION_KEYS`] or [`MAX_SESSION_BYTES`].
    #[error("session would hold {keys} keys / {bytes} bytes (max {MAX_SESSION_KEYS} / {MAX_SESSION_BYTES})")]
    TooBig {
        /// Keys it would hold.
        keys: usize,
        /// Bytes it would hold.
        bytes: usize,
    },
}

/// Hashes a [`ClientId`] with one multiplication (Fibonacci hashing). Ids come from the
/// gateway's counter, never from a peer, so SipHash's defence against chosen keys buys
/// nothing; a lookup per recipient of every send made the ordered map's search about 3% of
/// the gateway's CPU in a broadcast.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for a ClientId (one u64). Equal keys still hash equal, but a key of
        // several fields would hash poorly: this hasher is for ClientId only.
        for byte in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(*byte));
        }
    }
}

/// The indexes.
#[derive(Debug, Default)]
pub struct Registry {
    clients: HashMap<ClientId, Client, BuildHasherDefault<IdHasher>>,
    uids: HashMap<Arc<str>, Members>,
    groups: HashMap<Arc<str>, Members>,
    telnet: u64,
    /// Route changes not yet published, oldest first. Bounded by the work done between two
    /// publications (the router publishes after every batch of messages it handles).
    changes: Vec<RouteChange>,
}

fn session_bytes(session: &Session) -> usize {
    session.iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn check_session(session: &Session) -> Result<(), SessionError> {
    let (keys, bytes) = (session.len(), session_bytes(session));
    if keys > MAX_SESSION_KEYS || bytes > MAX_SESSION_BYTES {
        return Err(SessionError::TooBig { keys, bytes });
    }
    Ok(())
}

/// Removes `id` from the members at `key`, and the entry when it empties; `true` then.
fn unindex(map: &mut HashMap<Arc<str>, Members>, key: &str, id: ClientId) -> bool {
    if map.get_mut(key).is_some_and(|members| members.remove(id)) {
        map.remove(key);
        return true;
    }
    false
}

/// Adds `id` to the members at `key`. Returns the key as the index holds it (for the client
/// to share) and `true` if the entry is new.
fn index(map: &mut HashMap<Arc<str>, Members>, key: &str, id: ClientId) -> (Arc<str>, bool) {
    if let Some(held) = map.get_key_value(key).map(|(held, _)| Arc::clone(held)) {
        map.entry(Arc::clone(&held)).and_modify(|members| {
            members.insert(id);
        });
        return (held, false);
    }
    let held: Arc<str> = Arc::from(key);
    map.insert(Arc::clone(&held), Members::One(id));
    (held, true)
}

impl Registry {
    /// Adds a new connection with no uid, no groups and an empty session.
    pub fn insert(&mut self, id: ClientId, handle: ClientHandle) {
        if handle.kind == ClientKind::Telnet {
            self.telnet += 1;
        }
        let client = Client {
            handle,
            uid: None,
            groups: Vec::new(),
            session: PackedSession::new(),
        };
        self.clients.insert(id, client);
    }

    /// Removes a connection and its uid binding and group memberships.
    pub fn remove(&mut self, id: ClientId) -> Option<Client> {
        let client = self.clients.remove(&id)?;
        if self.clients.capacity() > 1024 && self.clients.len() < self.clients.capacity() / 4 {
            // After a storm of connections: a hash table never shrinks by itself.
            self.clients.shrink_to(self.clients.len() * 2);
        }
        if client.handle.kind == ClientKind::Telnet {
            self.telnet -= 1;
        }
        if let Some(uid) = &client.uid {
            self.unindex_uid(uid, id);
        }
        for group in &client.groups {
            self.unindex_group(group, id);
        }
        Some(client)
    }

    /// One connection.
    pub fn get(&self, id: ClientId) -> Option<&Client> {
        self.clients.get(&id)
    }

    /// Every connection, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ClientId, &Client)> {
        self.clients.iter()
    }

    /// Every connection's handle, for the heartbeat sweep and shutdown.
    pub fn handles_mut(&mut self) -> impl Iterator<Item = (ClientId, &mut ClientHandle)> {
        self.clients.iter_mut().map(|(id, c)| (*id, &mut c.handle))
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Open telnet connections (the rest are devices).
    pub fn telnet_count(&self) -> u64 {
        self.telnet
    }

    /// Connections bound to `uid`.
    pub fn uid_members(&self, uid: &str) -> Option<&Members> {
        self.uids.get(uid)
    }

    /// Members of `group`.
    pub fn group_members(&self, group: &str) -> Option<&Members> {
        self.groups.get(group)
    }

    /// Bound uids.
    pub fn uids(&self) -> impl Iterator<Item = &str> {
        self.uids.keys().map(|uid| &**uid)
    }

    /// Non-empty groups.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(|group| &**group)
    }

    /// Binds `uid` to `id`, replacing the connection's previous uid. `false` if not open.
    pub fn bind_uid(&mut self, id: ClientId, uid: String) -> bool {
        let Some(client) = self.clients.get_mut(&id) else {
            return false;
        };
        if client.uid.as_deref() == Some(uid.as_str()) {
            return true;
        }
        let (held, new) = index(&mut self.uids, &uid, id);
        if let Some(old) = client.uid.replace(held) {
            self.unindex_uid(&old, id);
        }
        if new {
            self.changes.push(RouteChange::UidUp(uid));
        }
        true
    }

    /// Unbinds `uid` from `id` if it is the connection's uid.
    pub fn unbind_uid(&mut self, id: ClientId, uid: &str) -> bool {
        let Some(client) = self.clients.get_mut(&id) else {
            return false;
        };
        if client.uid.as_deref() != Some(uid) {
            return false;
        }
        client.uid = None;
        self.unindex_uid(uid, id);
        true
    }

    /// Adds `id` to `group`.
    pub fn join(&mut self, id: ClientId, group: String) -> bool {
        let Some(client) = self.clients.get_mut(&id) else {
            return false;
        };
        let Err(at) = client.groups.binary_search_by(|g| (**g).cmp(&group)) else {
            return true; // already in
        };
        let (held, new) = index(&mut self.groups, &group, id);
        client.groups.insert(at, held);
        if new {
            self.changes.push(RouteChange::GroupUp(group));
        }
        true
    }

    /// Removes `id` from `group`.
    pub fn leave(&mut self, id: ClientId, group: &str) -> bool {
        let Some(client) = self.clients.get_mut(&id) else {
            return false;
        };
        if let Ok(at) = client.groups.binary_search_by(|g| (**g).cmp(group)) {
            client.groups.remove(at);
            self.unindex_group(group, id);
        }
        true
    }

    /// Dissolves `group`: every member leaves it.
    pub fn ungroup(&mut self, group: &str) {
        let Some(members) = self.groups.remove(group) else {
            return;
        };
        self.changes.push(RouteChange::GroupDown(group.to_owned()));
        for id in &members {
            if let Some(client) = self.clients.get_mut(id) {
                if let Ok(at) = client.groups.binary_search_by(|g| (**g).cmp(group)) {
                    client.groups.remove(at);
                }
            }
        }
    }

    fn unindex_uid(&mut self, uid: &str, id: ClientId) {
        if unindex(&mut self.uids, uid, id) {
            self.changes.push(RouteChange::UidDown(uid.to_owned()));
        }
    }

    fn unindex_group(&mut self, group: &str, id: ClientId) {
        if unindex(&mut self.groups, group, id) {
            self.changes.push(RouteChange::GroupDown(group.to_owned()));
        }
    }

    /// The route changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<RouteChange> {
        std::mem::take(&mut self.changes)
    }

    /// Whether route changes wait to be published.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Every uid and group held here, as the changes that build a table from nothing.
    pub fn snapshot(&self) -> impl Iterator<Item = RouteChange> + '_ {
        let uids = self.uids().map(|uid| RouteChange::UidUp(uid.to_owned()));
        uids.chain(
            self.groups()
                .map(|group| RouteChange::GroupUp(group.to_owned())),
        )
    }

    /// Replaces a session, unless the new one is over the limits.
    pub fn set_session(&mut self, id: ClientId, session: Session) -> Result<(), SessionError> {
        let client = self.clients.get_mut(&id).ok_or(SessionError::NoClient)?;
        check_session(&session)?;
        client.session = PackedSession::from_map(&session);
        Ok(())
    }

    /// Merges `update` into a session, unless the result would be over the limits; then the
    /// session is left as it was.
    pub fn update_session(&mut self, id: ClientId, update: Session) -> Result<(), SessionError> {
        let client = self.clients.get_mut(&id).ok_or(SessionError::NoClient)?;
        let mut merged = client.session.to_map();
        merged.extend(update);
        check_session(&merged)?;
        client.session = PackedSession::from_map(&merged);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_with(ids: &[u64]) -> Registry {
        let mut reg = Registry::default();
        for &n in ids {
            reg.insert(
                ClientId::new(1, n),
                ClientHandle::detached(ClientKind::Telnet),
            );
        }
        reg
    }

    fn session(pairs: &[(&str, &str)]) -> Session {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rebinding_moves_the_uid_index_and_removal_cleans_everything() {
        let (a, b) = (ClientId::new(1, 1), ClientId::new(1, 2));
        let mut reg = registry_with(&[1, 2]);
        assert!(reg.bind_uid(a, "u".into()));
        assert!(reg.bind_uid(b, "u".into()));
        assert!(reg.bind_uid(a, "v".into()));
        assert_eq!(reg.uid_members("u").map(|m| m.len()), Some(1));
        assert!(!reg.unbind_uid(b, "v"), "b is not bound to v");
        reg.join(a, "g".into());
        reg.join(b, "g".into());
        let gone = reg.remove(a).expect("a was open");
        assert_eq!(gone.uid.as_deref(), Some("v"));
        assert!(
            reg.uid_members("v").is_none(),
            "empty uid entries are dropped"
        );
        assert_eq!(reg.group_members("g").map(|m| m.len()), Some(1));
        reg.ungroup("g");
        assert!(reg.group_members("g").is_none());
        assert!(reg.get(b).is_some_and(|c| c.groups.is_empty()));
        assert!(
            !reg.bind_uid(a, "late".into()),
            "a closed client cannot be bound"
        );
    }

    #[test]
    fn route_changes_mark_a_uids_and_a_groups_first_and_last_connection() {
        use RouteChange::*;
        let (a, b) = (ClientId::new(1, 1), ClientId::new(1, 2));
        let mut reg = registry_with(&[1, 2]);
        reg.bind_uid(a, "u".into());
        reg.bind_uid(a, "u".into());
        reg.bind_uid(b, "u".into());
        reg.join(a, "g".into());
        reg.join(b, "g".into());
        assert_eq!(
            reg.take_changes(),
            [UidUp("u".into()), GroupUp("g".into())],
            "only the first connection of a uid or group is news"
        );
        let mut table: Vec<_> = reg.snapshot().collect();
        table.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(table, [GroupUp("g".into()), UidUp("u".into())]);
        reg.remove(a);
        assert!(!reg.has_changes(), "b still holds u and g");
        reg.bind_uid(b, "v".into());
        reg.leave(b, "g");
        reg.join(b, "h".into());
        reg.ungroup("h");
        reg.remove(b);
        assert_eq!(
            reg.take_changes(),
            [
                UidDown("u".into()),
                UidUp("v".into()),
                GroupDown("g".into()),
                GroupUp("h".into()),
                GroupDown("h".into()),
                UidDown("v".into()),
            ]
        );
        assert_eq!(reg.snapshot().count(), 0);
    }

    #[test]
    fn a_clients_groups_stay_sorted_and_unique_and_share_the_index_names() {
        let a = ClientId::new(1, 1);
        let mut reg = registry_with(&[1]);
        for group in ["m", "b", "x", "b"] {
            assert!(reg.join(a, group.into()));
        }
        let groups = &reg.get(a).expect("open").groups;
        assert_eq!(
            groups.iter().map(|g| &**g).collect::<Vec<_>>(),
            ["b", "m", "x"]
        );
        let (held, _) = reg.groups.get_key_value("m").expect("indexed");
        assert!(Arc::ptr_eq(held, &groups[1]), "one copy of the name");
        assert_eq!(reg.group_members("b").map(|m| m.len()), Some(1));
        assert!(reg.leave(a, "nope"));
        assert!(reg.leave(a, "m"));
        assert!(reg.group_members("m").is_none());
        assert_eq!(reg.take_changes().len(), 4, "three groups up, one down");
    }

    #[test]
    fn session_limits_count_replaced_values_once() {
        let id = ClientId::new(1, 1);
        let mut reg = registry_with(&[1]);
        let half = "x".repeat(MAX_SESSION_BYTES / 2);
        assert_eq!(reg.update_session(id, session(&[("a", &half)])), Ok(()));
        // Replacing the value of "a" with one as big is fine; adding another is not.
        assert_eq!(reg.update_session(id, session(&[("a", &half)])), Ok(()));
        let refused = reg.update_session(id, session(&[("b", &half)]));
        assert!(matches!(refused, Err(SessionError::TooBig { .. })));
        assert_eq!(reg.get(id).map(|c| c.session.len()), Some(1));
        let many: Session = (0..=MAX_SESSION_KEYS)
            .map(|i| (i.to_string(), String::new()))
            .collect();
        assert!(reg.set_session(id, many).is_err());
        assert_eq!(
            reg.set_session(ClientId::new(1, 9), Session::new()),
            Err(SessionError::NoClient)
        );
    }
}
