//! What the simulated device says: its hello, its answers to host frames, its telemetry.
//!
//! Pure logic, no I/O, so the tests can drive it over any link (and check it without one).
//! Sequence numbers and transports belong to [`super::link`].

use protocol::message::{
    ChatIn, ChatOut, DeviceMsg, ErrorCode, Hello, HostMsg, PeerId, Telemetry, Text, MAX_ID_LEN,
    MAX_TEXT_LEN, MAX_VERSION_LEN, PROTOCOL_VERSION,
};
use protocol::Frame;

/// Firmware version the simulator reports unless told otherwise.
pub const SIM_FIRMWARE: &str = "sim-0.1.0";

/// The line `help` answers with: every command the simulator knows, in one chat frame.
pub const HELP_TEXT: &str = "commands: ping -> pong, echo TEXT -> TEXT, help -> this list";

/// The simulated device's brain: turns host frames into device messages.
#[derive(Debug, Clone)]
pub struct Responder {
    id: PeerId,
    firmware: heapless::String<MAX_VERSION_LEN>,
}

/// The device id or firmware string does not fit its protocol field.
#[derive(Debug, thiserror::Error)]
#[error("{what} `{value}` is longer than the protocol allows ({max} bytes)")]
pub struct TooLong {
    what: &'static str,
    value: String,
    max: usize,
}

impl Responder {
    /// A responder for device `id` running `firmware`.
    pub fn new(id: &str, firmware: &str) -> Result<Self, TooLong> {
        let too_long = |what, value: &str, max| TooLong {
            what,
            value: value.to_owned(),
            max,
        };
        Ok(Self {
            id: PeerId::try_from(id).map_err(|_| too_long("device id", id, MAX_ID_LEN))?,
            firmware: firmware
                .try_into()
                .map_err(|_| too_long("firmware", firmware, MAX_VERSION_LEN))?,
        })
    }

    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The hello the device sends when its link comes up.
    pub fn hello(&self) -> DeviceMsg {
        DeviceMsg::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            device_id: self.id.clone(),
            firmware: self.firmware.clone(),
        })
    }

    /// An `uptime_s` measurement.
    pub fn telemetry(&self, uptime_s: u64) -> DeviceMsg {
        DeviceMsg::Telemetry(Telemetry {
            name: truncated("uptime_s"),
            value: i64::try_from(uptime_s).unwrap_or(i64::MAX),
        })
    }

    /// Everything the device sends in answer to `frame`, in order: an ack for chat frames,
    /// then the reply if there is one.
    pub fn on_frame(&self, frame: &Frame<HostMsg>) -> Vec<DeviceMsg> {
        match &frame.msg {
            HostMsg::Chat(chat) => {
                let mut out = vec![DeviceMsg::Ack { seq: frame.seq }];
                out.extend(self.answer(chat));
                out
            }
            HostMsg::Ping { nonce } => vec![DeviceMsg::Pong { nonce: *nonce }],
            HostMsg::Error(report) => {
                tracing::warn!(code = ?report.code, seq = report.seq, "host reported an error");
                if report.code == ErrorCode::HelloRequired {
                    // The host lost (or never saw) our hello, e.g. it opened the serial
                    // port after we sent it: say it again.
                    vec![self.hello()]
                } else {
                    Vec::new()
                }
            }
            HostMsg::Ack { seq } => {
                tracing::trace!(seq, "host acked");
                Vec::new()
            }
            HostMsg::Pong { nonce } => {
                tracing::trace!(nonce, "host ponged");
                Vec::new()
            }
        }
    }

    /// The chat answer to `chat`, if any. Only direct messages are answered: a device that
    /// answered broadcasts could loop forever with another one.
    pub fn answer(&self, chat: &ChatIn) -> Option<DeviceMsg> {
        if !chat.direct {
            tracing::debug!(from = %chat.from, text = %chat.text, "ignoring broadcast");
            return None;
        }
        let text = reply_text(&chat.text);
        tracing::debug!(from = %chat.from, asked = %chat.text, answer = %text, "answering");
        Some(DeviceMsg::Chat(ChatOut {
            to: Some(chat.from.clone()),
            text: truncated(&text),
        }))
    }
}

/// The answer to a direct chat line.
pub fn reply_text(asked: &str) -> String {
    let command = asked.trim();
    if command == "ping" {
        "pong".to_owned()
    } else if command == "help" {
        HELP_TEXT.to_owned()
    } else if command == "echo" {
        String::new()
    } else if let Some(rest) = asked.trim_start().strip_prefix("echo ") {
        rest.to_owned()
    } else {
        format!("unknown command: {command}; try help")
    }
}

/// `s` cut to the longest prefix that fits `N` bytes on a char boundary.
fn truncated<const N: usize>(s: &str) -> heapless::String<N> {
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = heapless::String::new();
    // Cannot fail: `end <= N` bytes.
    let _ = out.push_str(&s[..end]);
    out
}

const _: () = assert!(HELP_TEXT.len() <= MAX_TEXT_LEN);

/// A chat text for tests and the load tool, cut to [`MAX_TEXT_LEN`].
pub fn text(s: &str) -> Text {
    truncated(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(text: &str, direct: bool) -> ChatIn {
        ChatIn {
            from: "7".try_into().unwrap(),
            direct,
            text: text.try_into().unwrap(),
        }
    }

    fn reply(r: &Responder, text: &str) -> Option<String> {
        match r.answer(&chat(text, true))? {
            DeviceMsg::Chat(out) => {
                assert_eq!(out.to.as_deref(), Some("7"));
                Some(out.text.to_string())
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn commands() {
        let r = Responder::new("dev0", SIM_FIRMWARE).unwrap();
        assert_eq!(reply(&r, "ping").as_deref(), Some("pong"));
        assert_eq!(reply(&r, " ping \r").as_deref(), Some("pong"));
        assert_eq!(reply(&r, "echo hi there").as_deref(), Some("hi there"));
        assert_eq!(reply(&r, "echo").as_deref(), Some(""));
        assert_eq!(reply(&r, "help").as_deref(), Some(HELP_TEXT));
        assert_eq!(
            reply(&r, "frob").as_deref(),
            Some("unknown command: frob; try help")
        );
    }

    #[test]
    fn broadcasts_are_never_answered() {
        let r = Responder::new("dev0", SIM_FIRMWARE).unwrap();
        assert_eq!(r.answer(&chat("ping", false)), None);
        let frame = Frame {
            seq: 3,
            msg: HostMsg::Chat(chat("ping", false)),
        };
        assert_eq!(r.on_frame(&frame), vec![DeviceMsg::Ack { seq: 3 }]);
    }

    #[test]
    fn long_unknown_command_is_cut_to_a_frame() {
        let r = Responder::new("dev0", SIM_FIRMWARE).unwrap();
        let long = "é".repeat(100); // 200 bytes, so the answer overflows
        let Some(DeviceMsg::Chat(out)) = r.answer(&chat(&long, true)) else {
            panic!("no answer");
        };
        assert!(out.text.len() <= MAX_TEXT_LEN);
        assert!(out.text.starts_with("unknown command: é"));
    }

    #[test]
    fn pings_and_hello_required() {
        let r = Responder::new("dev0", "fw").unwrap();
        let ping = Frame {
            seq: 1,
            msg: HostMsg::Ping { nonce: 42 },
        };
        assert_eq!(r.on_frame(&ping), vec![DeviceMsg::Pong { nonce: 42 }]);
        let err = Frame {
            seq: 2,
            msg: HostMsg::Error(protocol::message::ErrorReport {
                code: ErrorCode::HelloRequired,
                seq: 0,
            }),
        };
        assert_eq!(r.on_frame(&err), vec![r.hello()]);
    }

    #[test]
    fn ids_too_long_are_refused() {
        assert!(Responder::new(&"x".repeat(25), "fw").is_err());
    }
}
