//! How gateways announce their worker-link address in memcached for workers to find: the
//! keys, the values and the timings, one definition for both sides. Talking to memcached
//! is theirs (the gateway's `announce.rs`, the worker's `discovery.rs`).
//!
//! - `{prefix}gateway:{id}` = the gateway's worker-link address (`host:port`), written with
//!   a time-to-live of [`RECORD_TTL_S`] and rewritten every [`ANNOUNCE_EVERY_MS`]: a
//!   gateway that dies disappears within the TTL, one that leaves deletes it at once.
//! - `{prefix}gateways` = the ids that announced, as decimal numbers separated by commas
//!   (`1,2,7`), changed only with `gets`/`cas`. An id whose record is gone is dropped from
//!   it by the next gateway that announces.
//!
//! Gateways write to every discovery server and workers read every one and take the union,
//! so one memcached server down loses nothing as long as another answers.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Seconds a gateway's record lives unless rewritten. Long enough that three missed
/// rewrites (a memcached hiccup, a stalled gateway) do not make it vanish, short enough
/// that workers stop trying a dead gateway within seconds.
pub const RECORD_TTL_S: u32 = 10;
/// How often a gateway rewrites its record: three rewrites per TTL.
pub const ANNOUNCE_EVERY_MS: u64 = 3_000;
/// How often a worker reads the records: a new gateway is linked within this (plus the
/// link's own connect), a dead one dropped within this after its record expired.
pub const LOOKUP_EVERY_MS: u64 = 2_000;

/// The key of the index of gateway ids.
pub fn index_key(prefix: &str) -> String {
    format!("{prefix}gateways")
}

/// The key of gateway `id`'s record.
pub fn record_key(prefix: &str, id: u16) -> String {
    format!("{prefix}gateway:{id}")
}

/// Parses an index value; anything that is not a gateway id is skipped (a newer writer's
/// format, a hand edit), never an error.
pub fn parse_index(value: &str) -> BTreeSet<u16> {
    value
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}

/// Formats an index value.
pub fn format_index(ids: &BTreeSet<u16>) -> String {
    let ids: Vec<String> = ids.iter().map(|id| format!("{id}")).collect();
    ids.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_and_skips_junk() {
        let ids: BTreeSet<u16> = [7, 1, 2].into_iter().collect();
        assert_eq!(format_index(&ids), "1,2,7");
        assert_eq!(parse_index("1,2,7"), ids);
        assert_eq!(parse_index(" 1, x,,70000,2 ,7"), ids);
        assert!(parse_index("").is_empty());
        assert_eq!(record_key("sb:", 7), "sb:gateway:7");
        assert_eq!(index_key("sb:"), "sb:gateways");
    }
}
