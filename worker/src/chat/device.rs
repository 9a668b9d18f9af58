//! Devices in the chat: a device joins with its `Hello` (uid and nickname = device id),
//! talks with `ChatOut` frames, reports `Telemetry`, and gets what was queued for it.
//! Frames before the `Hello` are answered with `HelloRequired`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use protocol::link::{ClientId, Outbound, Session};
use protocol::{ChatOut, DeviceMsg, ErrorCode, ErrorReport, Hello, HostMsg, PROTOCOL_VERSION};

use super::commands::{is_device_id, is_uid_shape, joined};
use super::deliver::{self, Outcome, Speaker, Target};
use super::{now, GROUP_DEVICES, GROUP_USERS, SESSION_DEVICE, SESSION_NICK, SESSION_UID};
use crate::handler::{Context, HandlerResult};

fn error(code: ErrorCode) -> Outbound {
    Outbound::Device(Box::new(HostMsg::Error(ErrorReport { code, seq: 0 })))
}

/// Shortest time between two `last_seen`-only registry writes for one device: `last_seen`
/// is shown in whole seconds, and a chatty device must not turn every frame into a write.
const SEEN_EVERY: Duration = Duration::from_secs(1);

/// When each device's registry record was last written for a frame. One entry per device
/// that sent a frame since its connection last closed, so bounded by the device count.
///
/// These writes are not flushed: a `last_seen` lost to a kill -9 is harmless (the device's
/// next frame rewrites it), unlike offline messages and uids, which the store flushes before
/// anyone is told they exist.
#[derive(Debug, Default)]
pub(super) struct SeenThrottle {
    written: HashMap<String, Instant>,
}

impl SeenThrottle {
    /// Whether a `last_seen`-only write for `id` is due now; if so, counts it as written.
    fn due(&mut self, id: &str, now: Instant) -> bool {
        match self.written.get_mut(id) {
            Some(at) if now.duration_since(*at) < SEEN_EVERY => false,
            Some(at) => {
                *at = now;
                true
            }
            None => {
                self.written.insert(id.to_string(), now);
                true
            }
        }
    }

    /// Notes a write that carried data (telemetry), made whatever the throttle says.
    fn wrote(&mut self, id: &str, now: Instant) {
        self.written.insert(id.to_string(), now);
    }

    /// The device's connection closed: drop its entry.
    pub(super) fn forget(&mut self, id: &str) {
        self.written.remove(id);
    }
}

/// Writes `last_seen` for a frame, at most once per [`SEEN_EVERY`] per device.
fn touch(cx: &Context, id: &str, seen: &mut SeenThrottle) -> HandlerResult {
    if seen.due(id, Instant::now()) {
        cx.store().touch_device(id, now(), None)?;
    }
    Ok(())
}

/// A frame from a device.
pub(super) async fn on_device(
    cx: &Context,
    client: ClientId,
    msg: DeviceMsg,
    seen: &mut SeenThrottle,
) -> HandlerResult {
    if let DeviceMsg::Hello(hello) = msg {
        return on_hello(cx, client, hello).await;
    }
    let session = cx.session();
    let Some(id) = session
        .get(SESSION_UID)
        .filter(|_| session.contains_key(SESSION_DEVICE))
    else {
        // Never answer an error with an error: two confused peers would loop.
        if !matches!(msg, DeviceMsg::Error(_)) {
            cx.gateway()
                .send_to_client(client, error(ErrorCode::HelloRequired))
                .await?;
        }
        return Ok(());
    };
    match msg {
        DeviceMsg::Chat(chat) => {
            touch(cx, id, seen)?;
            on_chat(cx, client, id, chat).await
        }
        DeviceMsg::Telemetry(t) => {
            // Carries a value: always written (a skipped one would be lost), and it counts
            // as this second's last_seen write.
            cx.store()
                .touch_device(id, now(), Some((t.name.as_str(), t.value)))?;
            seen.wrote(id, Instant::now());
            Ok(())
        }
        DeviceMsg::Error(report) => {
            tracing::info!(device = %id, code = ?report.code, seq = report.seq, "device reported an error");
            touch(cx, id, seen)
        }
        // The gateway answers these itself; nothing to do if one slips through.
        DeviceMsg::Ack { .. }
        | DeviceMsg::Ping { .. }
        | DeviceMsg::Pong { .. }
        | DeviceMsg::Hello(_) => Ok(()),
    }
}

async fn on_hello(cx: &Context, client: ClientId, hello: Hello) -> HandlerResult {
    let id = hello.device_id.as_str();
    let gateway = cx.gateway();
    if !is_device_id(id) {
        tracing::warn!(client = %client, device = id, "device id refused (empty, digits only, or spaces)");
        gateway
            .send_to_client(client, error(ErrorCode::Unsupported))
            .await?;
        return Ok(());
    }
    if hello.protocol != PROTOCOL_VERSION {
        tracing::warn!(
            device = id,
            protocol = hello.protocol,
            "device speaks another protocol version"
        );
    }
    let session = cx.session();
    let previous = session
        .get(SESSION_UID)
        .filter(|_| session.contains_key(SESSION_DEVICE));
    // A repeated hello (the device's link blipped) refreshes the registry and delivers what
    // queued meanwhile, without announcing the device twice.
    let rejoin = previous.is_some_and(|uid| uid == id);
    if !rejoin {
        if let Some(old) = previous {
            gateway.unbind_uid(client, old).await?;
        }
        gateway.bind_uid(client, id).await?;
        gateway.join_group(client, GROUP_DEVICES).await?;
        let session: Session = [(SESSION_NICK, id), (SESSION_UID, id), (SESSION_DEVICE, "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cx.set_session(session).await?;
    }
    cx.store()
        .upsert_device(id, hello.firmware.as_str(), now())?;
    if !rejoin {
        gateway
            .send_to_group(GROUP_USERS, Outbound::Line(joined(id, id)), &[])
            .await?;
    }
    let delivered = deliver::flush_offline(cx, client, id).await?;
    tracing::info!(device = id, firmware = %hello.firmware, delivered, "device joined");
    Ok(())
}

async fn on_chat(cx: &Context, client: ClientId, id: &str, chat: ChatOut) -> HandlerResult {
    let from = Speaker {
        client,
        nick: id,
        uid: id,
    };
    let text = chat.text.as_str();
    let Some(to) = chat.to else {
        return deliver::broadcast(cx, &from, text).await;
    };
    let to = to.as_str();
    let target = if is_uid_shape(to) {
        deliver::resolve(cx, to).await?
    } else {
        Target::Unknown
    };
    let reply = match deliver::private(cx, &from, to, target, text).await? {
        Outcome::Sent | Outcome::Queued => return Ok(()),
        Outcome::Unknown => error(ErrorCode::UnknownPeer),
        Outcome::QueueFull => error(ErrorCode::Busy),
        // A frame's text always fits a frame.
        Outcome::TooLongForDevice => error(ErrorCode::TooLong),
    };
    cx.gateway().send_to_client(client, reply).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_is_written_at_most_once_a_second_per_device() {
        let mut seen = SeenThrottle::default();
        let t0 = Instant::now();
        assert!(seen.due("a", t0));
        assert!(!seen.due("a", t0 + Duration::from_millis(999)));
        assert!(seen.due("b", t0 + Duration::from_millis(10)));
        assert!(seen.due("a", t0 + SEEN_EVERY));
        seen.wrote("a", t0 + Duration::from_secs(5));
        assert!(!seen.due("a", t0 + Duration::from_millis(5500)));
        seen.forget("a");
        assert!(seen.due("a", t0 + Duration::from_millis(5600)));
        assert_eq!(seen.written.len(), 2);
    }
}
