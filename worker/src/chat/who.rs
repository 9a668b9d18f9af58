//! The `/who` answer: who is online (from the gateways' sessions) and which devices the
//! registry knows, formatted one participant per line. Pure: the caller does the I/O.

use std::collections::{BTreeMap, BTreeSet};

use protocol::link::ClientInfo;

use super::{SESSION_NICK, SESSION_UID};
use crate::store::DeviceRecord;

/// The `/who` lines: a header, online users by uid, online devices, then registered
/// devices that are offline (a message to them is queued).
///
/// ```text
/// * online: 2 users, 1 device
///   1  alice  user
///   2  bob  user
///   dev-1  dev-1  device  fw=0.1.0 last-seen=3s ago  temp_mC=21500
///   dev-2  dev-2  device  offline  fw=0.1.0 last-seen=3600s ago
/// ```
pub fn who_lines(
    online: &[ClientInfo],
    registry: &[(String, DeviceRecord)],
    now: u64,
) -> Vec<String> {
    let mut users = BTreeMap::new();
    let mut devices = BTreeSet::new();
    for info in online {
        let (Some(uid), Some(nick)) = (
            info.session.get(SESSION_UID),
            info.session.get(SESSION_NICK),
        ) else {
            continue; // still choosing a nickname, or a device before its hello
        };
        if info.kind.is_device() {
            devices.insert(uid.to_string());
        } else {
            // Numeric order: 2 before 10.
            let key = (uid.parse::<u64>().unwrap_or(u64::MAX), uid.to_string());
            users.insert(key, nick.to_string());
        }
    }
    let records: BTreeMap<&str, &DeviceRecord> =
        registry.iter().map(|(id, r)| (id.as_str(), r)).collect();

    let mut lines = vec![format!(
        "* online: {}, {}",
        count(users.len(), "user"),
        count(devices.len(), "device")
    )];
    for ((_, uid), nick) in &users {
        lines.push(format!("  {uid}  {nick}  user"));
    }
    for id in &devices {
        lines.push(device_line(
            id,
            true,
            records.get(id.as_str()).copied(),
            now,
        ));
    }
    for (id, record) in &records {
        if !devices.contains(*id) {
            lines.push(device_line(id, false, Some(record), now));
        }
    }
    lines
}

fn device_line(id: &str, online: bool, record: Option<&DeviceRecord>, now: u64) -> String {
    let mut line = format!("  {id}  {id}  device");
    if !online {
        line.push_str("  offline");
    }
    if let Some(record) = record {
        let ago = now.saturating_sub(record.last_seen);
        line.push_str(&format!("  fw={} last-seen={ago}s ago", record.firmware));
        if !record.telemetry.is_empty() {
            let values: Vec<String> = record
                .telemetry
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            line.push_str("  ");
            line.push_str(&values.join(" "));
        }
    }
    line
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use protocol::link::{ClientId, ClientKind, Session};

    use super::*;

    fn info(conn: u64, kind: ClientKind, pairs: &[(&str, &str)]) -> ClientInfo {
        let session: Session = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ClientInfo {
            client: ClientId::new(1, conn),
            kind,
            uid: session.get("uid").cloned(),
            session: session.into(),
        }
    }

    fn record(fw: &str, last_seen: u64, telemetry: &[(&str, i64)]) -> DeviceRecord {
        DeviceRecord {
            firmware: fw.into(),
            first_seen: 1,
            last_seen,
            telemetry: telemetry.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn users_then_devices_then_offline_devices() {
        let online = [
            info(1, ClientKind::Telnet, &[("nick", "bob"), ("uid", "10")]),
            info(2, ClientKind::Telnet, &[("nick", "alice"), ("uid", "2")]),
            info(3, ClientKind::Telnet, &[]),
            info(
                4,
                ClientKind::DeviceTcp,
                &[("nick", "dev-1"), ("uid", "dev-1"), ("device", "1")],
            ),
            info(5, ClientKind::DeviceSerial, &[]),
        ];
        let registry = [
            ("dev-0".to_string(), record("0.0.9", 40, &[])),
            (
                "dev-1".to_string(),
                record("0.1.0", 97, &[("temp_mC", 21500), ("uptime_s", 42)]),
            ),
        ];
        assert_eq!(
            who_lines(&online, &registry, 100),
            [
                "* online: 2 users, 1 device",
                "  2  alice  user",
                "  10  bob  user",
                "  dev-1  dev-1  device  fw=0.1.0 last-seen=3s ago  temp_mC=21500 uptime_s=42",
                "  dev-0  dev-0  device  offline  fw=0.0.9 last-seen=60s ago",
            ]
        );
    }

    #[test]
    fn nobody() {
        assert_eq!(who_lines(&[], &[], 0), ["* online: 0 users, 0 devices"]);
    }
}
