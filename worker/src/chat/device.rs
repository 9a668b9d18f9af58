//! Devices in the chat: a device joins with its `Hello` (uid and nickname = device id),
//! talks with `ChatOut` frames, reports `Telemetry`, and gets what was queued for it.
//! Frames before the `Hello` are answered with `HelloRequired`.

use protocol::link::{ClientId, Outbound, Session};
use protocol::{ChatOut, DeviceMsg, ErrorCode, ErrorReport, Hello, HostMsg, PROTOCOL_VERSION};

use super::commands::{is_device_id, is_uid_shape, joined};
use super::deliver::{self, Outcome, Speaker, Target};
use super::{now, GROUP_DEVICES, GROUP_USERS, SESSION_DEVICE, SESSION_NICK, SESSION_UID};
use crate::handler::{Context, HandlerResult};

fn error(code: ErrorCode) -> Outbound {
    Outbound::Device(HostMsg::Error(ErrorReport { code, seq: 0 }))
}

/// A frame from a device.
pub(super) async fn on_device(cx: &Context, client: ClientId, msg: DeviceMsg) -> HandlerResult {
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
            cx.store().touch_device(id, now(), None)?;
            on_chat(cx, client, id, chat).await
        }
        DeviceMsg::Telemetry(t) => {
            cx.store()
                .touch_device(id, now(), Some((t.name.as_str(), t.value)))?;
            Ok(())
        }
        DeviceMsg::Error(report) => {
            tracing::info!(device = %id, code = ?report.code, seq = report.seq, "device reported an error");
            cx.store().touch_device(id, now(), None)?;
            Ok(())
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
