//! The worker's cache of sessions it changed, so back-to-back events of one client see
//! each other's updates even when the gateway sent the second event before it applied the
//! first one's `SetSession`.
//!
//! Entries exist only for clients whose events this worker handles (the current event's
//! client, or one already cached) and are dropped when the client's `Close` was handled,
//! or when the link to its gateway goes down (the gateway may have restarted).
//! A change made to such a client by *another* worker is not seen here until the client
//! closes; with one worker per client (the gateway's routing) that does not happen.

use std::collections::HashMap;
use std::sync::Mutex;

use protocol::link::{ClientId, PackedSession, Session};

#[derive(Default)]
struct State {
    /// The client whose event is being handled, with the session the gateway sent. Shared
    /// with the handler that reads it: reading a session copies nothing.
    current: Option<(ClientId, PackedSession)>,
    /// Sessions this worker changed, newer than what the gateway sends with events.
    changed: HashMap<ClientId, PackedSession>,
}

/// Shared by the runtime (which sets the current event) and the `Gateway` handle (whose
/// `set_session` / `update_session` write through it).
#[derive(Default)]
pub(crate) struct SessionCache {
    state: Mutex<State>,
}

impl SessionCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent map (every write is one
        // insert or remove), so a poisoned lock is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An event of `client` carrying `session` is about to be handled.
    pub(crate) fn begin(&self, client: ClientId, session: PackedSession) {
        self.lock().current = Some((client, session));
    }

    /// The event is handled; `closed` drops the client's entry.
    pub(crate) fn end(&self, client: ClientId, closed: bool) {
        let mut state = self.lock();
        state.current = None;
        if closed {
            state.changed.remove(&client);
        }
    }

    /// The freshest session known for `client`, if this worker tracks it.
    pub(crate) fn get(&self, client: ClientId) -> Option<PackedSession> {
        let state = self.lock();
        if let Some(session) = state.changed.get(&client) {
            return Some(session.clone());
        }
        match &state.current {
            Some((current, session)) if *current == client => Some(session.clone()),
            _ => None,
        }
    }

    /// Records a `SetSession` (`merge == false`) or `UpdateSession` for a tracked client;
    /// does nothing for others.
    pub(crate) fn write(&self, client: ClientId, session: &Session, merge: bool) {
        let mut state = self.lock();
        let base = match (state.changed.get(&client), &state.current) {
            (Some(cached), _) => cached,
            (None, Some((current, sent))) if *current == client => sent,
            _ => return,
        };
        let new = if merge {
            let mut merged = base.to_map();
            merged.extend(session.iter().map(|(k, v)| (k.clone(), v.clone())));
            PackedSession::from_map(&merged)
        } else {
            PackedSession::from_map(session)
        };
        state.changed.insert(client, new);
    }

    /// The link to `gateway` went down: its clients may be gone without a `Close` (the
    /// gateway restarted), and after a reconnect its copies are the ones to trust.
    pub(crate) fn forget_gateway(&self, gateway: u16) {
        self.lock()
            .changed
            .retain(|client, _| client.gateway() != gateway);
    }

    /// Number of cached sessions (for tests and stats).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().changed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(pairs: &[(&str, &str)]) -> Session {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_change_outlives_the_event_and_beats_the_gateways_copy() {
        let cache = SessionCache::default();
        let a = ClientId::new(1, 1);
        cache.begin(a, session(&[("x", "1")]).into());
        cache.write(a, &session(&[("nick", "al")]), true);
        assert_eq!(
            cache.get(a).map(|s| s.to_map()),
            Some(session(&[("nick", "al"), ("x", "1")]))
        );
        cache.end(a, false);
        // The gateway's copy in the next event predates the update.
        cache.begin(a, session(&[("x", "1")]).into());
        assert_eq!(
            cache.get(a).map(|s| s.to_map()),
            Some(session(&[("nick", "al"), ("x", "1")]))
        );
        cache.write(a, &session(&[("y", "2")]), false);
        assert_eq!(
            cache.get(a).map(|s| s.to_map()),
            Some(session(&[("y", "2")]))
        );
        cache.end(a, true);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn untracked_clients_are_not_cached() {
        let cache = SessionCache::default();
        let (a, b) = (ClientId::new(1, 1), ClientId::new(1, 2));
        cache.begin(a, PackedSession::new());
        cache.write(b, &session(&[("k", "v")]), false);
        assert_eq!(cache.get(b), None);
        assert_eq!(cache.len(), 0);
        cache.end(a, false);
        assert_eq!(cache.get(a), None);
    }

    #[test]
    fn a_lost_gateway_takes_its_clients_entries_along() {
        let cache = SessionCache::default();
        for client in [ClientId::new(1, 1), ClientId::new(2, 1)] {
            cache.begin(client, PackedSession::new());
            cache.write(client, &session(&[("k", "v")]), false);
            cache.end(client, false);
        }
        cache.forget_gateway(1);
        assert_eq!(cache.get(ClientId::new(1, 1)), None);
        assert_eq!(
            cache.get(ClientId::new(2, 1)).map(|s| s.to_map()),
            Some(session(&[("k", "v")]))
        );
    }
}
