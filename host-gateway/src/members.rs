//! The connections under one uid or group in the registry's indexes: one connection held
//! inline (most uids have one, and a fresh group starts with one), a set past that.
//!
//! A one-element `BTreeSet` is a ~100-byte tree node; every logged-in user had one for its
//! uid. Inline it costs nothing beyond the index entry.

use std::collections::{btree_set, BTreeSet};
use std::iter::{Chain, Flatten};
use std::option;

use protocol::link::ClientId;

/// A non-empty set of connections, iterated in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// Exactly one.
    One(ClientId),
    /// Two or more.
    Many(BTreeSet<ClientId>),
}

impl Members {
    /// Adds `id`; `false` if it was already in.
    pub fn insert(&mut self, id: ClientId) -> bool {
        match self {
            Members::One(one) if *one == id => false,
            Members::One(one) => {
                *self = Members::Many(BTreeSet::from([*one, id]));
                true
            }
            Members::Many(set) => set.insert(id),
        }
    }

    /// Removes `id`; `true` when nobody is left (the caller drops the entry).
    pub fn remove(&mut self, id: ClientId) -> bool {
        match self {
            Members::One(one) => *one == id,
            Members::Many(set) => {
                set.remove(&id);
                // Back to inline at one: a group that shrank gives its node back. A set
                // holds two or more, so it is never emptied by one removal.
                if let (1, Some(&last)) = (set.len(), set.first()) {
                    *self = Members::One(last);
                }
                false
            }
        }
    }

    /// How many (at least one).
    pub fn len(&self) -> usize {
        match self {
            Members::One(_) => 1,
            Members::Many(set) => set.len(),
        }
    }

    /// Never empty; for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The members, in id order.
    pub fn iter(&self) -> Iter<'_> {
        let (one, many) = match self {
            Members::One(id) => (Some(id), None),
            Members::Many(set) => (None, Some(set.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// Iterator over [`Members`].
pub type Iter<'a> =
    Chain<option::IntoIter<&'a ClientId>, Flatten<option::IntoIter<btree_set::Iter<'a, ClientId>>>>;

impl<'a> IntoIterator for &'a Members {
    type Item = &'a ClientId;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(members: &Members) -> Vec<u64> {
        members.iter().map(|id| id.conn()).collect()
    }

    #[test]
    fn grows_from_one_inline_and_shrinks_back() {
        let id = |n| ClientId::new(1, n);
        let mut m = Members::One(id(5));
        assert!(!m.insert(id(5)));
        assert_eq!((m.len(), ids(&m)), (1, vec![5]));
        assert!(m.insert(id(2)));
        assert!(m.insert(id(9)));
        assert_eq!((m.len(), ids(&m)), (3, vec![2, 5, 9]));
        assert!(!m.remove(id(5)));
        assert!(!m.remove(id(7)), "removing a stranger changes nothing");
        assert!(!m.remove(id(2)));
        assert_eq!(m, Members::One(id(9)), "one left is held inline again");
        assert!(m.remove(id(9)), "the last one gone empties it");
    }

    #[test]
    fn removing_a_stranger_from_one_leaves_it() {
        let mut m = Members::One(ClientId::new(1, 1));
        assert!(!m.remove(ClientId::new(1, 2)));
        assert_eq!(m.len(), 1);
    }
}
