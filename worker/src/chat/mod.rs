//! The chat application, as a [`Handler`]: telnet users pick a nickname and get a numeric
//! uid, devices join with their `Hello`, and everyone talks to everyone (`TEXT`) or to one
//! participant (`UID:TEXT`). The exact lines are in [`commands`]; `/who` is in [`who`].
//!
//! All state lives in sessions (nick, uid) and the store (uids, devices, offline messages,
//! history), so a restarted worker carries on with the connections the gateway kept.

pub mod commands;
mod deliver;
mod device;
pub mod who;

use std::time::{SystemTime, UNIX_EPOCH};

use protocol::link::{ClientId, ClientKind, Outbound, PackedSession, Session};
use protocol::DeviceMsg;

use self::commands::{Input, ASK_NICK, BYE, EMPTY_PRIVATE, GREETING, HELP, TOO_LONG_FOR_DEVICE};
use self::deliver::{Outcome, Speaker, Target};
use crate::handler::{Context, Handler, HandlerResult};
use crate::store::User;

/// Group of every telnet user who has a nickname.
pub const GROUP_USERS: &str = "users";
/// Group of every device that said hello.
pub const GROUP_DEVICES: &str = "devices";
/// Session key of the nickname.
pub const SESSION_NICK: &str = "nick";
/// Session key of the uid (the same string the connection is bound to).
pub const SESSION_UID: &str = "uid";
/// Session key present (`"1"`) on devices.
pub const SESSION_DEVICE: &str = "device";

/// Unix seconds now (0 if the clock is before 1970).
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The chat handler. Everything it must keep is in sessions and the store; the only
/// in-memory state is the `last_seen` write throttle, which a restart may forget.
#[derive(Debug, Default)]
pub struct Chat {
    seen: device::SeenThrottle,
}

impl Chat {
    /// A chat.
    pub fn new() -> Chat {
        Chat::default()
    }
}

async fn tell(cx: &Context, client: ClientId, line: impl Into<String>) -> HandlerResult {
    cx.gateway()
        .send_to_client(client, Outbound::Line(line.into()))
        .await?;
    Ok(())
}

/// The nickname and uid of a participant, from its session.
fn identity(session: &PackedSession) -> Option<(&str, &str)> {
    Some((session.get(SESSION_NICK)?, session.get(SESSION_UID)?))
}

impl Handler for Chat {
    async fn on_connect(
        &mut self,
        cx: &Context,
        client: ClientId,
        kind: ClientKind,
        _peer: String,
    ) -> HandlerResult {
        if kind.is_device() {
            return Ok(()); // a device introduces itself with its hello frame
        }
        // Two lines in one command: one link message and one write for every connect.
        tell(cx, client, format!("{GREETING}\r\n{ASK_NICK}")).await
    }

    async fn on_message(&mut self, cx: &Context, client: ClientId, line: String) -> HandlerResult {
        let session = cx.session();
        let Some((nick, uid)) = identity(&session) else {
            return choose_nick(cx, client, &line).await;
        };
        let me = Speaker { client, nick, uid };
        match commands::parse(&line) {
            Input::Empty => Ok(()),
            Input::Command { name, .. } => command(cx, client, name).await,
            Input::Say(text) => deliver::broadcast(cx, &me, text).await,
            Input::Private { to, text } => {
                let target = deliver::resolve(cx, to).await?;
                if target == Target::Unknown && !commands::is_user_uid(to) {
                    // `note: ...` names nobody: an ordinary line that happens to hold a colon.
                    return deliver::broadcast(cx, &me, line.trim()).await;
                }
                if text.is_empty() {
                    return tell(cx, client, EMPTY_PRIVATE).await;
                }
                match deliver::private(cx, &me, to, target, text).await? {
                    Outcome::Sent => Ok(()),
                    Outcome::Queued => tell(cx, client, commands::queued(to)).await,
                    Outcome::TooLongForDevice => tell(cx, client, TOO_LONG_FOR_DEVICE).await,
                    Outcome::QueueFull => tell(cx, client, commands::queue_full(to)).await,
                    Outcome::Unknown => tell(cx, client, commands::no_such_uid(to)).await,
                }
            }
        }
    }

    async fn on_device(&mut self, cx: &Context, client: ClientId, msg: DeviceMsg) -> HandlerResult {
        device::on_device(cx, client, msg, &mut self.seen).await
    }

    async fn on_close(
        &mut self,
        cx: &Context,
        _client: ClientId,
        _uid: Option<String>,
    ) -> HandlerResult {
        let session = cx.session();
        let Some((nick, uid)) = identity(&session) else {
            return Ok(()); // left before choosing a nickname (or a device before its hello)
        };
        if session.contains_key(SESSION_DEVICE) {
            // A connection change: always recorded (once per connection, not per frame).
            self.seen.forget(uid);
            cx.store().touch_device(uid, now(), None)?;
        }
        let line = Outbound::Line(commands::left(nick, uid));
        cx.gateway().send_to_group(GROUP_USERS, line, &[]).await?;
        Ok(())
    }
}

/// The first line of a telnet user: the nickname.
async fn choose_nick(cx: &Context, client: ClientId, line: &str) -> HandlerResult {
    let nick = line.trim();
    if let Err(refusal) = commands::check_nick(nick) {
        tell(cx, client, refusal).await?;
        return tell(cx, client, ASK_NICK).await;
    }
    let store = cx.store();
    let number = fresh_uid(cx)?;
    store.put_user(
        number,
        &User {
            nick: nick.to_string(),
            created: now(),
        },
    )?;
    let uid = number.to_string();
    let gateway = cx.gateway();
    gateway.bind_uid(client, &uid).await?;
    gateway.join_group(client, GROUP_USERS).await?;
    let session: Session = [(SESSION_NICK, nick), (SESSION_UID, &uid)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cx.set_session(session).await?;
    tell(cx, client, commands::welcome(nick, &uid)).await?;
    let joined = Outbound::Line(commands::joined(nick, &uid));
    gateway
        .send_to_group(GROUP_USERS, joined, &[client])
        .await?;
    Ok(())
}

/// A human uid nobody online holds. The store never gives one twice, unless its counter
/// went back (a memcached server restarted or evicted it): then a uid it gives may still be
/// online, which the routing table knows without asking; the counter is raised past every
/// online uid and the next one taken.
fn fresh_uid(cx: &Context) -> Result<u64, crate::store::StoreError> {
    let store = cx.store();
    let number = store.next_uid()?;
    let gateway = cx.gateway();
    if !gateway.known_online(&number.to_string()) {
        return Ok(number);
    }
    let highest = gateway
        .known_online_uids()
        .iter()
        .filter_map(|uid| uid.parse::<u64>().ok())
        .max()
        .unwrap_or(number);
    tracing::warn!(
        uid = number,
        highest,
        "the store's uid counter went back (memcached restarted?); raising it past the online uids"
    );
    store.raise_uid_counter(highest)?;
    store.next_uid()
}

/// `/who`, `/help`, `/quit`, or an unknown command.
async fn command(cx: &Context, client: ClientId, name: &str) -> HandlerResult {
    match name {
        "/who" => {
            let online = cx.gateway().client_sessions().await?;
            let registry = cx.store().devices()?;
            for line in who::who_lines(&online, &registry, now()) {
                tell(cx, client, line).await?;
            }
            Ok(())
        }
        "/help" => {
            for line in HELP {
                tell(cx, client, *line).await?;
            }
            Ok(())
        }
        "/quit" => {
            cx.gateway()
                .close_client(client, Some(Outbound::Line(BYE.to_string())))
                .await?;
            Ok(())
        }
        other => tell(cx, client, commands::unknown_command(other)).await,
    }
}
