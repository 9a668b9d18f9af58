//! Getting a chat message to its audience, for users and devices alike: a line to
//! everyone (users get text, devices a non-direct `ChatIn`), or a private message to one
//! uid, queued in the store when that uid is a registered device that is offline.

use protocol::link::{ClientId, Outbound};
use protocol::{ChatIn, HostMsg, PeerId, Text, MAX_TEXT_LEN};

use super::commands::{is_user_uid, said, whispered};
use super::{now, GROUP_DEVICES, GROUP_USERS};
use crate::handler::{Context, HandlerError};
use crate::store::{HistoryEntry, OfflineMessage, StoreError};
use crate::throttle::Throttle;

/// Who is speaking.
pub(super) struct Speaker<'a> {
    pub(super) client: ClientId,
    pub(super) nick: &'a str,
    pub(super) uid: &'a str,
}

/// Where a private message would go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// A user with a connection now.
    User,
    /// A device with a connection now.
    Device,
    /// A registered device that is offline.
    OfflineDevice,
    /// Nobody we know (or a user who left: human uids are not reused).
    Unknown,
}

/// What became of a private message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Sent,
    Queued,
    TooLongForDevice,
    QueueFull,
    Unknown,
}

/// Finds out what `uid` is right now.
pub(super) async fn resolve(cx: &Context, uid: &str) -> Result<Target, HandlerError> {
    let online = cx.gateway().is_uid_online(uid).await?;
    Ok(match (is_user_uid(uid), online) {
        (true, true) => Target::User,
        (true, false) => Target::Unknown,
        (false, true) => Target::Device,
        (false, false) if cx.store().device(uid)?.is_some() => Target::OfflineDevice,
        (false, false) => Target::Unknown,
    })
}

/// A device frame for `text` from `from`; `None` when it does not fit a frame.
pub(super) fn chat_frame(from: &str, text: &str, direct: bool) -> Option<Outbound> {
    let from = PeerId::try_from(from).ok()?;
    let text = Text::try_from(text).ok()?;
    Some(Outbound::Device(Box::new(HostMsg::Chat(ChatIn {
        from,
        direct,
        text,
    }))))
}

/// Says `text` to everyone but the speaker, and keeps it in the history.
pub(super) async fn broadcast(
    cx: &Context,
    from: &Speaker<'_>,
    text: &str,
) -> Result<(), HandlerError> {
    let gateway = cx.gateway();
    let exclude = [from.client];
    gateway
        .send_to_group(
            GROUP_USERS,
            Outbound::Line(said(from.nick, from.uid, text)),
            &exclude,
        )
        .await?;
    // Devices get what fits a frame; a longer line is for the humans only.
    if let Some(frame) = chat_frame(from.uid, text, false) {
        gateway
            .send_to_group(GROUP_DEVICES, frame, &exclude)
            .await?;
    }
    let entry = HistoryEntry {
        at: now(),
        uid: from.uid.into(),
        nick: from.nick.into(),
        text: text.into(),
    };
    if let Err(err) = cx.store().append_history(&entry) {
        // Losing a history line is not worth failing the message for. A store that fails
        // fails every line: logged once, then once an interval with the count.
        static FAILED: Throttle = Throttle::new();
        if let Some(also) = FAILED.admit() {
            tracing::warn!(cause = %err, lines_not_kept_since_last_warning = also, "history not kept");
        }
    }
    Ok(())
}

/// Sends `text` to `to` alone (already resolved to `target`).
pub(super) async fn private(
    cx: &Context,
    from: &Speaker<'_>,
    to: &str,
    target: Target,
    text: &str,
) -> Result<Outcome, HandlerError> {
    let gateway = cx.gateway();
    match target {
        Target::Unknown => Ok(Outcome::Unknown),
        Target::User => {
            gateway
                .send_to_uid(to, Outbound::Line(whispered(from.nick, from.uid, text)))
                .await?;
            Ok(Outcome::Sent)
        }
        Target::Device => match chat_frame(from.uid, text, true) {
            Some(frame) => {
                gateway.send_to_uid(to, frame).await?;
                Ok(Outcome::Sent)
            }
            None => Ok(Outcome::TooLongForDevice),
        },
        Target::OfflineDevice => {
            if text.len() > MAX_TEXT_LEN {
                return Ok(Outcome::TooLongForDevice);
            }
            let msg = OfflineMessage {
                from: from.uid.into(),
                text: text.into(),
                at: now(),
            };
            match cx.store().push_offline(to, &msg) {
                Ok(()) => Ok(Outcome::Queued),
                Err(StoreError::QueueFull { .. }) => Ok(Outcome::QueueFull),
                Err(err) => Err(err.into()),
            }
        }
    }
}

/// Hands a device everything queued for it, oldest first; each message leaves the queue
/// only once its frame was handed to the gateway.
pub(super) async fn flush_offline(
    cx: &Context,
    client: ClientId,
    device: &str,
) -> Result<usize, HandlerError> {
    let queued = cx
        .store()
        .peek_offline(device, crate::store::MAX_OFFLINE_PER_DEVICE)?;
    let mut delivered = 0;
    for (key, msg) in queued {
        match chat_frame(&msg.from, &msg.text, true) {
            Some(frame) => {
                cx.gateway().send_to_client(client, frame).await?;
                delivered += 1;
            }
            None => {
                tracing::warn!(device, from = %msg.from, "queued message does not fit a frame; dropped")
            }
        }
        cx.store().remove_offline(device, key)?;
    }
    Ok(delivered)
}
