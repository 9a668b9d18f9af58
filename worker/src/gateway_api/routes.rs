//! The worker's routing table: which linked gateways hold which uids and groups, fed by
//! each gateway's `Routes` messages, so a uid or group command goes only to the gateways
//! that hold a recipient instead of to every gateway (GatewayWorker's way).
//!
//! The table only ever narrows a fan-out when it knows better. A gateway whose table has
//! not arrived yet (just linked) counts as holding everything. A uid no gateway is known to
//! hold is sent to every gateway, and asked of every gateway by `is_uid_online`: a bind
//! made a moment ago by another worker may not have reached us yet, and a private message
//! must not be lost to that. Groups take this worker's own joins at once, kept apart from
//! what gateways report until the gateway confirms them (its `GroupUp`) or its link goes, so
//! a join followed by a send to the group reaches the new member even when a `GroupDown` of
//! the group's previous last member is still on its way.
//!
//! What stays open: between gateways there is no order, so a uid that just moved from one
//! gateway to another may be routed to the old one for one link round trip, and a message
//! there is not delivered — the same window as asking the gateways and then sending.

use std::collections::{BTreeSet, HashMap};

use protocol::link::RouteChange;
use smallvec::SmallVec;

/// Where a uid or group command should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Targets {
    /// Every linked gateway.
    All,
    /// These gateways (maybe none).
    Some(GatewaySet),
}

impl Targets {
    /// No gateway holds a recipient: the command need not even be built.
    pub(crate) fn is_nowhere(&self) -> bool {
        matches!(self, Targets::Some(set) if set.0.is_empty())
    }
}

/// Gateway ids, sorted, each once. A command goes to one gateway or a handful, so up to
/// four are kept inline: routing a message allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GatewaySet(SmallVec<[u16; 4]>);

impl GatewaySet {
    pub(crate) fn insert(&mut self, gateway: u16) {
        if let Err(at) = self.0.binary_search(&gateway) {
            self.0.insert(at, gateway);
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().copied()
    }
}

impl Extend<u16> for GatewaySet {
    fn extend<I: IntoIterator<Item = u16>>(&mut self, gateways: I) {
        gateways
            .into_iter()
            .for_each(|gateway| self.insert(gateway));
    }
}

impl FromIterator<u16> for GatewaySet {
    fn from_iter<I: IntoIterator<Item = u16>>(gateways: I) -> GatewaySet {
        let mut set = GatewaySet::default();
        set.extend(gateways);
        set
    }
}

/// The table; one per worker, behind the gateway API's lock.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    uids: HashMap<String, BTreeSet<u16>>,
    groups: HashMap<String, BTreeSet<u16>>,
    /// This worker's joins the gateway has not confirmed with a `GroupUp` (only a group's
    /// first member is one). An unconfirmed join stays until that gateway's next `GroupUp`
    /// for the group or its link goes, costing at most one needless message per send to
    /// that group while the group is empty there; bounded by the group names.
    joins: HashMap<String, BTreeSet<u16>>,
    /// Gateways whose whole table has arrived.
    synced: BTreeSet<u16>,
}

fn add(map: &mut HashMap<String, BTreeSet<u16>>, key: String, gateway: u16) {
    map.entry(key).or_default().insert(gateway);
}

fn remove(map: &mut HashMap<String, BTreeSet<u16>>, key: &str, gateway: u16) {
    if let Some(set) = map.get_mut(key) {
        set.remove(&gateway);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl Routes {
    /// Applies a `Routes` message from `gateway`.
    pub(crate) fn apply(&mut self, gateway: u16, changes: Vec<RouteChange>, synced: bool) {
        for change in changes {
            match change {
                RouteChange::UidUp(uid) => add(&mut self.uids, uid, gateway),
                RouteChange::UidDown(uid) => remove(&mut self.uids, &uid, gateway),
                RouteChange::GroupUp(group) => {
                    remove(&mut self.joins, &group, gateway);
                    add(&mut self.groups, group, gateway)
                }
                RouteChange::GroupDown(group) => remove(&mut self.groups, &group, gateway),
            }
        }
        if synced {
            self.synced.insert(gateway);
        }
    }

    /// Forgets everything about `gateway` (its link went down, or a new link to it starts
    /// over with a fresh table).
    pub(crate) fn forget(&mut self, gateway: u16) {
        self.synced.remove(&gateway);
        for map in [&mut self.uids, &mut self.groups, &mut self.joins] {
            map.retain(|_, set| {
                set.remove(&gateway);
                !set.is_empty()
            });
        }
    }

    /// This worker made `gateway` add a member to `group`.
    pub(crate) fn joined(&mut self, group: &str, gateway: u16) {
        add(&mut self.joins, group.to_owned(), gateway);
    }

    /// Whether a gateway is known to hold `uid` (a linked one: the caller checks).
    pub(crate) fn uid_known(&self, uid: &str) -> bool {
        self.uids.contains_key(uid)
    }

    /// Every uid some gateway holds.
    pub(crate) fn uids(&self) -> Vec<String> {
        self.uids.keys().cloned().collect()
    }

    /// Where a command for `uids` goes among the `linked` gateways.
    pub(crate) fn for_uids<'a>(
        &self,
        uids: impl IntoIterator<Item = &'a str>,
        linked: &[u16],
    ) -> Targets {
        let mut targets = self.unsynced(linked);
        for uid in uids {
            match self.uids.get(uid) {
                Some(holders) => targets.extend(holders.iter().copied()),
                None => return Targets::All,
            }
        }
        Targets::Some(targets)
    }

    /// Where a command for `groups` goes among the `linked` gateways.
    pub(crate) fn for_groups<'a>(
        &self,
        groups: impl IntoIterator<Item = &'a str>,
        linked: &[u16],
    ) -> Targets {
        let mut targets = self.unsynced(linked);
        for group in groups {
            for map in [&self.groups, &self.joins] {
                if let Some(holders) = map.get(group) {
                    targets.extend(holders.iter().copied());
                }
            }
        }
        Targets::Some(targets)
    }

    fn unsynced(&self, linked: &[u16]) -> GatewaySet {
        linked
            .iter()
            .copied()
            .filter(|gateway| !self.synced.contains(gateway))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RouteChange::*;

    fn set(ids: &[u16]) -> Targets {
        Targets::Some(ids.iter().copied().collect())
    }

    #[test]
    fn a_gateway_set_is_sorted_and_holds_each_id_once_past_its_inline_room() {
        let set: GatewaySet = [7, 3, 7, 1, 9, 3, 2, 1].into_iter().collect();
        assert_eq!(set.iter().collect::<Vec<_>>(), [1, 2, 3, 7, 9]);
    }

    #[test]
    fn a_uid_goes_to_its_gateways_and_an_unknown_one_everywhere() {
        let mut routes = Routes::default();
        let linked = [1, 2, 3];
        routes.apply(1, vec![UidUp("a".into())], true);
        routes.apply(2, vec![UidUp("a".into()), UidUp("b".into())], true);
        assert_eq!(
            routes.for_uids(["a"], &linked),
            set(&[1, 2, 3]),
            "3 not synced"
        );
        routes.apply(3, vec![], true);
        assert_eq!(routes.for_uids(["a"], &linked), set(&[1, 2]));
        assert_eq!(routes.for_uids(["b"], &linked), set(&[2]));
        assert_eq!(routes.for_uids(["b", "nobody"], &linked), Targets::All);
        routes.apply(2, vec![UidDown("a".into())], true);
        assert_eq!(routes.for_uids(["a"], &linked), set(&[1]));
        routes.forget(1);
        assert!(!routes.uid_known("a"));
        assert_eq!(routes.for_uids(["a"], &[2, 3]), Targets::All);
    }

    #[test]
    fn a_group_goes_to_its_gateways_and_an_empty_one_nowhere() {
        let mut routes = Routes::default();
        let linked = [1, 2];
        routes.apply(1, vec![GroupUp("g".into())], true);
        routes.apply(2, vec![], true);
        assert_eq!(routes.for_groups(["g"], &linked), set(&[1]));
        assert_eq!(routes.for_groups(["empty"], &linked), set(&[]));
        assert!(routes.for_groups(["empty"], &linked).is_nowhere());
        assert!(!routes.for_groups(["g"], &linked).is_nowhere());
        assert!(!Targets::All.is_nowhere());
        routes.joined("empty", 2);
        assert_eq!(routes.for_groups(["empty", "g"], &linked), set(&[1, 2]));
        routes.apply(1, vec![GroupDown("g".into())], true);
        assert_eq!(routes.for_groups(["g"], &linked), set(&[]));
    }

    #[test]
    fn an_own_join_survives_a_late_group_down_until_confirmed() {
        let mut routes = Routes::default();
        let linked = [1];
        routes.apply(1, vec![GroupUp("g".into())], true);
        // The last member leaves on gateway 1 while this worker joins a new one there.
        routes.joined("g", 1);
        routes.apply(1, vec![GroupDown("g".into())], true);
        assert_eq!(
            routes.for_groups(["g"], &linked),
            set(&[1]),
            "the join still counts"
        );
        routes.apply(1, vec![GroupUp("g".into())], true);
        routes.apply(1, vec![GroupDown("g".into())], true);
        assert_eq!(
            routes.for_groups(["g"], &linked),
            set(&[]),
            "confirmed, then gone"
        );
    }
}
