//! The gateway<->worker link: events a gateway hands to workers, commands and queries a
//! worker sends back, and the replies. One definition, shared by both processes.
//!
//! On TCP each message is postcard bytes behind a 4-byte big-endian length (tokio-util's
//! `LengthDelimitedCodec` defaults), at most [`MAX_LINK_FRAME`] bytes: `link_codec` frames
//! them. The first message on
//! a link is the worker's [`WorkerToGateway::Hello`] with the shared secret; the gateway
//! answers [`GatewayToWorker::Welcome`] or [`GatewayToWorker::Refused`] and closes.
//! Delivery guarantees (acks, redelivery) are the gateway's business, not this module's.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::message::{DeviceMsg, HostMsg};

/// Version of the link protocol; a gateway refuses a worker that speaks another.
pub const LINK_VERSION: u16 = 3;
/// Largest link message. A session, a `/who` reply with thousands of clients or a 4 KiB
/// line fit easily; anything bigger is a bug or an attack, and closes the link.
pub const MAX_LINK_FRAME: usize = 8 * 1024 * 1024;

/// Identifies one connection across the whole cluster: the gateway that holds it in the top
/// 16 bits, that gateway's connection counter in the low 48.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl ClientId {
    /// The client id of connection `conn` on gateway `gateway`.
    pub const fn new(gateway: u16, conn: u64) -> Self {
        ClientId(((gateway as u64) << 48) | (conn & 0xFFFF_FFFF_FFFF))
    }

    /// Id of the gateway holding the connection.
    pub const fn gateway(self) -> u16 {
        (self.0 >> 48) as u16
    }

    /// The gateway-local connection number.
    pub const fn conn(self) -> u64 {
        self.0 & 0xFFFF_FFFF_FFFF
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}{:012x}", self.gateway(), self.conn())
    }
}

impl core::str::FromStr for ClientId {
    type Err = core::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(ClientId)
    }
}

/// A connection's session: a small string map the gateway keeps for the worker
/// (GatewayWorker's `$_SESSION`), handed back with every event of that connection. This is
/// the editable form (commands that set it); it is kept and carried as a
/// [`PackedSession`], which is the same map on the wire.
pub type Session = BTreeMap<String, String>;

pub use crate::session::PackedSession;

/// What kind of peer a connection is; decides how [`Outbound`] bodies are encoded.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// A line-based telnet user.
    Telnet,
    /// A device speaking framed [`crate::message`]s over TCP.
    DeviceTcp,
    /// A device speaking framed messages over a serial port.
    DeviceSerial,
}

impl ClientKind {
    /// `true` for both device transports.
    pub fn is_device(self) -> bool {
        !matches!(self, ClientKind::Telnet)
    }
}

/// A message from a client, as the gateway decoded it.
///
/// The device frame is boxed: it is ~240 bytes (fixed-capacity strings), a line 24, and an
/// inbound message is moved through several queues and futures on both sides (measured:
/// those moves were a tenth of the gateway's and worker's CPU at saturation). A box
/// encodes exactly as its content, so the wire is unchanged.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Inbound {
    /// One line from a telnet user: telnet negotiation stripped, no line terminator, valid
    /// UTF-8 (invalid sequences replaced by U+FFFD).
    Line(String),
    /// A frame from a device. Pings, pongs and acks are the gateway's and never arrive here.
    Device(Box<DeviceMsg>),
}

/// A message for a client; the gateway encodes it for the client's kind. The device frame
/// is boxed for the same reason as [`Inbound`]'s.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Text for telnet users; the gateway appends `\r\n`. Not delivered to devices.
    Line(String),
    /// A frame for devices; the gateway assigns the sequence number. Not delivered to telnet users.
    Device(Box<HostMsg>),
}

/// Something that happened on a gateway's connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Event {
    /// A connection was accepted (or a serial port opened).
    Connect {
        /// The new connection.
        client: ClientId,
        /// Its kind.
        kind: ClientKind,
        /// Remote address, or the serial port's path.
        peer: String,
    },
    /// A connection sent a message.
    Message {
        /// The sender.
        client: ClientId,
        /// The sender's session as the gateway holds it (shared with the gateway's copy:
        /// an event costs no copy of it; on the wire it is the map itself).
        session: PackedSession,
        /// What it sent.
        body: Inbound,
    },
    /// A connection closed. Its uid binding and groups are already gone.
    Close {
        /// The closed connection.
        client: ClientId,
        /// Its uid while it was open, if bound.
        uid: Option<String>,
        /// Its last session.
        session: PackedSession,
    },
}

impl Event {
    /// The connection the event is about.
    pub fn client(&self) -> ClientId {
        match self {
            Event::Connect { client, .. }
            | Event::Message { client, .. }
            | Event::Close { client, .. } => *client,
        }
    }
}

/// A fire-and-forget instruction from a worker; GatewayWorker's `Gateway::*` calls.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Command {
    /// `sendToClient`.
    SendToClient {
        /// Recipient.
        client: ClientId,
        /// Body.
        body: Outbound,
    },
    /// `sendToAll`: every connection of the gateway but the excluded ones.
    SendToAll {
        /// Body.
        body: Outbound,
        /// Connections that do not get it.
        exclude: Vec<ClientId>,
    },
    /// `sendToUid`: every connection bound to one of the uids.
    SendToUid {
        /// Recipients.
        uids: Vec<String>,
        /// Body.
        body: Outbound,
    },
    /// `sendToGroup`: every member of the groups but the excluded connections.
    SendToGroup {
        /// Groups.
        groups: Vec<String>,
        /// Body.
        body: Outbound,
        /// Connections that do not get it.
        exclude: Vec<ClientId>,
    },
    /// `bindUid`: a connection may have one uid; a uid may have many connections.
    BindUid {
        /// Connection.
        client: ClientId,
        /// Uid.
        uid: String,
    },
    /// `unbindUid`.
    UnbindUid {
        /// Connection.
        client: ClientId,
        /// Uid.
        uid: String,
    },
    /// `joinGroup`.
    JoinGroup {
        /// Connection.
        client: ClientId,
        /// Group.
        group: String,
    },
    /// `leaveGroup`.
    LeaveGroup {
        /// Connection.
        client: ClientId,
        /// Group.
        group: String,
    },
    /// `ungroup`: dissolves a group.
    Ungroup {
        /// Group.
        group: String,
    },
    /// `closeClient`, optionally sending a last message first.
    CloseClient {
        /// Connection.
        client: ClientId,
        /// Sent before closing.
        farewell: Option<Outbound>,
    },
    /// `setSession`: replaces the session.
    SetSession {
        /// Connection.
        client: ClientId,
        /// New session.
        session: Session,
    },
    /// `updateSession`: merges keys into the session.
    UpdateSession {
        /// Connection.
        client: ClientId,
        /// Keys to set.
        session: Session,
    },
}

/// A question a worker asks one gateway; the answer is a [`Reply`] with the same id.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Query {
    /// `isOnline`: is this connection open? Answer: `Bool`.
    IsOnline(ClientId),
    /// `isUidOnline`: is any connection bound to this uid? Answer: `Bool`.
    IsUidOnline(String),
    /// `getClientIdByUid`. Answer: `Clients`.
    ClientIdsByUid(String),
    /// `getUidByClientId`. Answer: `Uid`.
    UidByClientId(ClientId),
    /// `getAllClientIdCount` (or a group's with `Some`). Answer: `Count`.
    ClientCount(Option<String>),
    /// `getAllClientIdList` (or a group's with `Some`). Answer: `Clients`.
    ClientIds(Option<String>),
    /// `getAllUidList`. Answer: `Uids`.
    Uids,
    /// `getAllUidCount`. Answer: `Count`.
    UidCount,
    /// `getAllGroupIdList`. Answer: `Groups`.
    Groups,
    /// `getSession`. Answer: `Session`.
    GetSession(ClientId),
    /// `getAllClientSessions` (or a group's with `Some`). Answer: `Sessions`.
    Sessions(Option<String>),
    /// The gateway's counters, for `switchboard status`. Answer: `Stats`.
    Stats,
}

/// A gateway's answer to a [`Query`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Reply {
    /// Yes or no.
    Bool(bool),
    /// A count.
    Count(u64),
    /// Client ids.
    Clients(Vec<ClientId>),
    /// A uid, if bound.
    Uid(Option<String>),
    /// Uids.
    Uids(Vec<String>),
    /// Group names.
    Groups(Vec<String>),
    /// A session, if the connection is open.
    Session(Option<PackedSession>),
    /// Sessions of open connections, with their uid binding.
    Sessions(Vec<ClientInfo>),
    /// The gateway's counters.
    Stats(GatewayStats),
}

/// A gateway's counters since it started, for `switchboard status`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct GatewayStats {
    /// The gateway's id.
    pub gateway: u16,
    /// Seconds since the gateway started.
    pub uptime_s: u64,
    /// Open telnet connections.
    pub telnet_clients: u64,
    /// Open device connections (TCP and serial).
    pub device_clients: u64,
    /// Connected workers.
    pub workers: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Messages received from clients (lines and device frames).
    pub messages_in: u64,
    /// Messages written to clients.
    pub messages_out: u64,
    /// Bad input from clients: over-long lines, corrupt frames.
    pub input_errors: u64,
    /// Messages not delivered: a full output queue, no worker, a closed client.
    pub dropped: u64,
    /// Messages received from workers: commands, queries, acks.
    pub link_in: u64,
    /// Messages sent to workers: events, replies, route updates.
    pub link_out: u64,
    /// Of `link_in`, the acks (cumulative: one per batch of events a worker handled).
    pub link_acks: u64,
}

/// A change in what a gateway holds, for the workers' routing tables: a worker sends a
/// uid's or a group's messages only to the gateways that hold it (GatewayWorker sends them
/// to every gateway). Sent only on transitions: a uid's first connection on this gateway,
/// its last one gone; a group's first member, its last one gone.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// The uid now has a connection on this gateway.
    UidUp(String),
    /// The uid has no connection on this gateway any more.
    UidDown(String),
    /// The group now has a member on this gateway.
    GroupUp(String),
    /// The group has no member on this gateway any more.
    GroupDown(String),
}

/// One open connection, as listed by [`Query::Sessions`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClientInfo {
    /// Connection.
    pub client: ClientId,
    /// Its kind.
    pub kind: ClientKind,
    /// Its uid, if bound.
    pub uid: Option<String>,
    /// Its session.
    pub session: PackedSession,
}

/// Everything a worker sends on a link.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum WorkerToGateway {
    /// Opens the link.
    Hello {
        /// [`LINK_VERSION`].
        version: u16,
        /// The shared secret from both configs.
        secret: String,
        /// A name for logs (`worker-1@host`).
        name: String,
    },
    /// A command.
    Command(Command),
    /// A query.
    Query {
        /// Chosen by the worker, echoed in the reply.
        id: u64,
        /// The question.
        query: Query,
    },
    /// Every event on this link up to this id is handled (their commands were sent before
    /// this ack). Cumulative: a worker handles a link's events in order, so one ack after a
    /// batch covers the whole batch.
    Ack {
        /// Event id.
        event: u64,
    },
    /// Opens a monitoring link instead of `Hello` (`switchboard status`): same handshake and
    /// secret, the gateway answers `Welcome`, then only queries are answered; the link is not
    /// a worker, gets no events and does not count in `GatewayStats::workers`.
    Monitor {
        /// [`LINK_VERSION`].
        version: u16,
        /// The shared secret from both configs.
        secret: String,
    },
    /// The worker is leaving (reload, shutdown): send it no new events. It acks what it
    /// already has, then closes the link; whatever it has not acked by then is redelivered.
    Leaving,
}

/// Everything a gateway sends on a link.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum GatewayToWorker {
    /// The worker is accepted.
    Welcome {
        /// [`LINK_VERSION`].
        version: u16,
        /// The gateway's id, as found in the top bits of its [`ClientId`]s.
        gateway: u16,
    },
    /// The worker is refused (bad secret, version skew); the gateway closes the link.
    Refused {
        /// Why, for the worker's log.
        reason: String,
    },
    /// An event to handle.
    Event {
        /// Gateway-assigned, increasing per link; the worker acks it.
        id: u64,
        /// The event.
        event: Event,
    },
    /// The answer to a query.
    Reply {
        /// The query's id.
        id: u64,
        /// The answer.
        reply: Reply,
    },
    /// Route changes, in the order they happened. Right after `Welcome` the gateway sends
    /// its whole table as `UidUp`/`GroupUp` changes in one or more of these, the last one
    /// with `synced` set; every later one has `synced` set. Until then a worker must treat
    /// the gateway as holding everything.
    Routes {
        /// The changes.
        changes: Vec<RouteChange>,
        /// The worker's table for this gateway is complete once this is applied.
        synced: bool,
    },
}
