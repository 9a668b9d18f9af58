//! A connection's session as it is kept and carried: a read-only string map packed into one
//! shared allocation, in exactly the bytes postcard puts on the link for a map.
//!
//! Every event carries its client's session, and a gateway keeps one per connection. As a
//! `BTreeMap<String, String>` a two-key session (nick, uid) is a 540-byte tree node and four
//! strings: six allocations to decode on every event in the worker, and ~700 bytes per
//! logged-in connection in the gateway. Packed it is one allocation of a few dozen bytes,
//! an event shares it by reference count, and decoding one from the link takes two
//! allocations (a scratch buffer and the packed copy).
//!
//! Edits go through [`Session`] (the map): `to_map`, change, [`PackedSession::from_map`].
//! Entries are kept sorted by key with no duplicates, so two packed sessions are equal when
//! their maps are, and iteration runs in key order like the map's.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::link::Session;

/// A session packed into one allocation (none when empty). Cloning shares it.
///
/// Layout: a varint count, then per entry a varint length and the key's bytes, a varint
/// length and the value's bytes (postcard's encoding of a map of strings). Only this module
/// writes it, from valid `&str`s in key order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PackedSession(Option<Arc<[u8]>>);

impl PackedSession {
    /// The empty session (no allocation).
    pub const fn new() -> Self {
        PackedSession(None)
    }

    /// Packs `map`.
    pub fn from_map(map: &Session) -> Self {
        let mut packer = Packer::default();
        for (key, value) in map {
            packer.push(key, value);
        }
        packer.finish()
    }

    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// `true` if `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries().map_or(0, |(count, _)| count)
    }

    /// `true` when no key is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The entries, in key order.
    pub fn iter(&self) -> Iter<'_> {
        match self.entries() {
            Some((left, rest)) => Iter { left, rest },
            None => Iter { left: 0, rest: &[] },
        }
    }

    /// An editable copy.
    pub fn to_map(&self) -> Session {
        self.iter()
            .map(|(k, v)| (String::from(k), String::from(v)))
            .collect()
    }

    /// Bytes of all keys and values.
    pub fn text_bytes(&self) -> usize {
        self.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    fn entries(&self) -> Option<(usize, &[u8])> {
        take_varint(self.0.as_deref()?)
    }
}

impl From<&Session> for PackedSession {
    fn from(map: &Session) -> Self {
        PackedSession::from_map(map)
    }
}

impl From<Session> for PackedSession {
    fn from(map: Session) -> Self {
        PackedSession::from_map(&map)
    }
}

impl fmt::Debug for PackedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The entries of a [`PackedSession`], in key order.
pub struct Iter<'a> {
    left: usize,
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let (key, rest) = take_str(self.rest)?;
        let (value, rest) = take_str(rest)?;
        self.left -= 1;
        self.rest = rest;
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// Builds the packed bytes from entries given in strictly increasing key order: the
/// entries go after room left for the count, and the result is copied once into its `Arc`.
struct Packer {
    count: usize,
    body: Vec<u8>,
}

impl Default for Packer {
    fn default() -> Self {
        // Room for the count, and for a small session's entries without regrowing.
        let mut body = Vec::with_capacity(64);
        body.resize(VARINT_MAX, 0);
        Packer { count: 0, body }
    }
}

impl Packer {
    fn push(&mut self, key: &str, value: &str) {
        self.count += 1;
        for text in [key, value] {
            put_varint(&mut self.body, text.len());
            self.body.extend_from_slice(text.as_bytes());
        }
    }

    fn finish(self) -> PackedSession {
        if self.count == 0 {
            return PackedSession::new();
        }
        let (count, len) = varint(self.count);
        let mut body = self.body;
        let start = VARINT_MAX - len;
        body[start..VARINT_MAX].copy_from_slice(&count[..len]);
        PackedSession(Some(Arc::from(&body[start..])))
    }
}

/// Longest varint of a `usize` (10 bytes of 7 bits for 64 bits).
const VARINT_MAX: usize = 10;

/// `n` as a varint: the bytes, and how many of them are used.
fn varint(mut n: usize) -> ([u8; VARINT_MAX], usize) {
    let mut bytes = [0; VARINT_MAX];
    let mut len = 0;
    while n >= 0x80 {
        bytes[len] = (n as u8) | 0x80;
        len += 1;
        n >>= 7;
    }
    bytes[len] = n as u8;
    (bytes, len + 1)
}

fn put_varint(out: &mut Vec<u8>, n: usize) {
    let (bytes, len) = varint(n);
    out.extend_from_slice(&bytes[..len]);
}

fn take_varint(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut n = 0usize;
    for (i, byte) in bytes.iter().enumerate().take(VARINT_MAX) {
        // Only this module's own bytes are read here; a last byte that would overflow is
        // refused all the same.
        if i == VARINT_MAX - 1 && *byte > 1 {
            return None;
        }
        n |= usize::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

fn take_str(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = take_varint(bytes)?;
    if len > rest.len() {
        return None;
    }
    let (text, rest) = rest.split_at(len);
    Some((core::str::from_utf8(text).ok()?, rest))
}

impl Serialize for PackedSession {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for PackedSession {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PackedVisitor)
    }
}

struct PackedVisitor;

impl<'de> Visitor<'de> for PackedVisitor {
    type Value = PackedSession;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PackedSession, A::Error> {
        // A gateway sends its entries in key order; packing them as they come costs no
        // tree. Anything else (another peer) goes through a map to be sorted and deduped.
        let mut packer = Packer::default();
        let mut last: Option<Text<'de>> = None;
        while let Some((key, value)) = map.next_entry::<Text<'de>, Text<'de>>()? {
            if last
                .as_ref()
                .is_some_and(|last| last.as_str() >= key.as_str())
            {
                let mut sorted = packer.finish().to_map();
                sorted.insert(key.into_string(), value.into_string());
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    sorted.insert(key, value);
                }
                return Ok(PackedSession::from_map(&sorted));
            }
            packer.push(key.as_str(), value.as_str());
            last = Some(key);
        }
        Ok(packer.finish())
    }
}

/// A string decoded without a copy when the input allows it.
enum Text<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }

    fn into_string(self) -> String {
        match self {
            Text::Borrowed(s) => String::from(s),
            Text::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text::Borrowed(s))
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text::Owned(String::from(s)))
            }

            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text::Owned(s))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> Session {
        pairs
            .iter()
            .map(|(k, v)| (String::from(*k), String::from(*v)))
            .collect()
    }

    #[test]
    fn reads_like_the_map_it_was_packed_from() {
        let m = map(&[("uid", "u-1"), ("nick", "ada"), ("room", "")]);
        let packed = PackedSession::from_map(&m);
        assert_eq!(packed.get("nick"), Some("ada"));
        assert_eq!(packed.get("room"), Some(""));
        assert_eq!(packed.get("missing"), None);
        assert!(packed.contains_key("uid"));
        assert_eq!(packed.len(), 3);
        assert_eq!(packed.text_bytes(), 3 + 3 + 4 + 3 + 4);
        assert_eq!(
            packed.iter().collect::<Vec<_>>(),
            [("nick", "ada"), ("room", ""), ("uid", "u-1")]
        );
        assert_eq!(packed.to_map(), m);
        assert_eq!(format!("{packed:?}"), format!("{m:?}"));
        // One allocation of the count and each text behind its length, nothing else.
        assert_eq!(
            packed.0.as_ref().map(|bytes| bytes.len()),
            Some(1 + 9 + 6 + 8)
        );
    }

    #[test]
    fn the_empty_session_holds_no_allocation() {
        let empty = PackedSession::from_map(&Session::new());
        assert_eq!(empty, PackedSession::new());
        assert!(empty.0.is_none());
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(empty.iter().next(), None);
    }

    #[test]
    fn out_of_order_and_repeated_keys_from_a_peer_are_sorted_and_the_last_wins() {
        // Not what a gateway sends, but a map on the wire may come in any order.
        let mut wire = Vec::new();
        put_varint(&mut wire, 3);
        for (k, v) in [("b", "1"), ("a", "2"), ("b", "3")] {
            for text in [k, v] {
                put_varint(&mut wire, text.len());
                wire.extend_from_slice(text.as_bytes());
            }
        }
        let packed: PackedSession = postcard::from_bytes(&wire).unwrap();
        assert_eq!(packed.to_map(), map(&[("a", "2"), ("b", "3")]));
        assert_eq!(
            packed,
            PackedSession::from_map(&map(&[("a", "2"), ("b", "3")]))
        );
    }

    #[test]
    fn a_repeated_key_in_a_row_keeps_the_last_value() {
        let wire = [2u8, 1, b'a', 1, b'1', 1, b'a', 1, b'2'];
        let packed: PackedSession = postcard::from_bytes(&wire).unwrap();
        assert_eq!(packed.to_map(), map(&[("a", "2")]));
    }

    #[test]
    fn a_session_with_more_entries_than_a_one_byte_count_holds() {
        let m: Session = (0..300)
            .map(|i| (alloc::format!("k{i:03}"), alloc::format!("v{i}")))
            .collect();
        let wire = postcard::to_allocvec(&m).unwrap();
        assert_eq!(&wire[..2], &[0xac, 0x02], "300 as a varint");
        let packed: PackedSession = postcard::from_bytes(&wire).unwrap();
        assert_eq!(packed.len(), 300);
        assert_eq!(packed.get("k299"), Some("v299"));
        assert_eq!(postcard::to_allocvec(&packed).unwrap(), wire);
        assert_eq!(PackedSession::from_map(&m), packed);
    }

    #[test]
    fn bad_utf8_on_the_wire_is_an_error() {
        let wire = [1u8, 1, b'k', 1, 0xff];
        assert!(postcard::from_bytes::<PackedSession>(&wire).is_err());
    }

    proptest! {
        /// On the wire a packed session is the map: either side may be either type.
        #[test]
        fn on_the_wire_it_is_the_map(m in proptest::collection::btree_map(".{0,12}", ".{0,40}", 0..20)) {
            let packed = PackedSession::from_map(&m);
            let as_map = postcard::to_allocvec(&m).unwrap();
            let as_packed = postcard::to_allocvec(&packed).unwrap();
            prop_assert_eq!(&as_packed, &as_map);
            let back: PackedSession = postcard::from_bytes(&as_map).unwrap();
            prop_assert_eq!(&back, &packed);
            prop_assert_eq!(back.to_map(), m.clone());
            for (k, v) in &m {
                prop_assert_eq!(packed.get(k), Some(v.as_str()));
            }
        }
    }
}
