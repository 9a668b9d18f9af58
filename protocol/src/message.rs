//! Every device message, both directions, declared in one place so it reads like a table.
//!
//! Field sizes are bounded (heapless) so a frame always fits [`crate::MAX_FRAME_LEN`]; the
//! variant order is the wire tag, so new variants go at the end of an enum, never between.
//! Framing, sequence numbers and CRC live in [`crate::frame`], not here.

use serde::{Deserialize, Serialize};

/// Version of the device protocol a peer speaks, sent in [`Hello`].
pub const PROTOCOL_VERSION: u8 = 1;

/// Longest device id or human uid, in bytes. Short enough for a `/who` column.
pub const MAX_ID_LEN: usize = 24;
/// Longest chat text in one frame, in bytes. Keeps a frame under 256 bytes so a device
/// needs only a small receive buffer; longer user lines are refused before they reach a device.
pub const MAX_TEXT_LEN: usize = 200;
/// Longest firmware version string, in bytes.
pub const MAX_VERSION_LEN: usize = 24;
/// Longest telemetry name, in bytes.
pub const MAX_NAME_LEN: usize = 16;

/// A device id or a human uid (decimal digits), as it appears in the chat.
pub type PeerId = heapless::String<MAX_ID_LEN>;
/// Chat text carried in a frame.
pub type Text = heapless::String<MAX_TEXT_LEN>;

/// A message from a device to the gateway.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeviceMsg {
    /// First message after the link comes up (and again after a link loss).
    Hello(Hello),
    /// Chat text from the device.
    Chat(ChatOut),
    /// Acknowledges the host frame with this sequence number.
    Ack {
        /// Sequence number of the acknowledged frame.
        seq: u16,
    },
    /// Liveness probe; the host answers with `Pong` carrying the same nonce.
    Ping {
        /// Echoed back in the pong.
        nonce: u32,
    },
    /// Answer to a host `Ping`.
    Pong {
        /// The nonce of the ping.
        nonce: u32,
    },
    /// A named measurement.
    Telemetry(Telemetry),
    /// The device could not handle something the host sent.
    Error(ErrorReport),
}

/// A message from the gateway to a device.
#[allow(
    clippy::large_enum_variant,
    reason = "no_std and no allocation: a message is a plain value sized for its largest variant"
)]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HostMsg {
    /// Chat text for the device.
    Chat(ChatIn),
    /// Acknowledges the device frame with this sequence number.
    Ack {
        /// Sequence number of the acknowledged frame.
        seq: u16,
    },
    /// Liveness probe; the device answers with `Pong` carrying the same nonce.
    Ping {
        /// Echoed back in the pong.
        nonce: u32,
    },
    /// Answer to a device `Ping`.
    Pong {
        /// The nonce of the ping.
        nonce: u32,
    },
    /// The host could not handle something the device sent.
    Error(ErrorReport),
}

/// Who a device is; opens every session.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the device.
    pub protocol: u8,
    /// The device's id; also its uid and nickname in the chat.
    pub device_id: PeerId,
    /// Firmware version, free form (`0.1.0+abc123`).
    pub firmware: heapless::String<MAX_VERSION_LEN>,
}

/// Chat text a device sends.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChatOut {
    /// Recipient: a uid or device id, or `None` for everyone in the chat.
    pub to: Option<PeerId>,
    /// The text.
    pub text: Text,
}

/// Chat text a device receives.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChatIn {
    /// Sender's uid or device id; a device replies to it.
    pub from: PeerId,
    /// `true` when sent to this device alone, `false` for a line to everyone.
    /// Devices answer commands only in direct messages, so two devices never talk in a loop.
    pub direct: bool,
    /// The text.
    pub text: Text,
}

/// A named measurement from a device.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Telemetry {
    /// Measurement name, with its unit as a suffix when it has one (`uptime_s`, `temp_mC`).
    pub name: heapless::String<MAX_NAME_LEN>,
    /// Value, an integer so counters never lose precision.
    pub value: i64,
}

/// An error one side reports to the other.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ErrorReport {
    /// What went wrong.
    pub code: ErrorCode,
    /// Sequence number of the frame it is about, `0` when it is about no frame.
    pub seq: u16,
}

/// Error kinds reported on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ErrorCode {
    /// A frame could not be decoded (bad COBS, CRC or postcard).
    Malformed,
    /// A frame or a field was too long.
    TooLong,
    /// The message named a peer nobody knows.
    UnknownPeer,
    /// The receiver's queue is full; the message was not accepted, send it again later.
    Busy,
    /// A message the receiver does not handle (version skew).
    Unsupported,
    /// The device must say `Hello` first.
    HelloRequired,
}
