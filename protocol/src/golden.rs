//! Golden wire bytes: one pinned frame per device message variant (and per [`ErrorCode`]).
//!
//! The host tests check that [`encode`](crate::encode) produces exactly these bytes and that
//! [`Decoder`](crate::Decoder) turns them back into the same frame; `docs/PROTOCOL.md` shows
//! them and a test keeps it in sync. A firmware build enables feature `golden` and checks the
//! same table, so both ends agree byte for byte. Changing a vector is changing the wire format.
//!
//! This module only holds data (`no_std`, no allocation); the checks live in the test suites.

use crate::frame::Frame;
use crate::message::{
    ChatIn, ChatOut, DeviceMsg, ErrorCode, ErrorReport, Hello, HostMsg, Telemetry,
};

/// One pinned frame: a name, the frame value and its exact wire bytes (delimiter included).
pub struct Golden<M> {
    /// Short name, unique within its table (`hello`, `chat_direct`).
    pub name: &'static str,
    /// Builds the frame; a function because heapless strings cannot be built in a `const`.
    pub frame: fn() -> Frame<M>,
    /// `COBS(postcard(frame) ++ crc16_le) ++ 0x00`.
    pub wire: &'static [u8],
}

/// Builds a bounded string from test data; panics only if a vector here is too long, which
/// the golden tests would report at once.
fn s<const N: usize>(text: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    if out.push_str(text).is_err() {
        panic!("golden string over its bound");
    }
    out
}

fn error(code: ErrorCode, seq: u16) -> ErrorReport {
    ErrorReport { code, seq }
}

/// Device -> host frames: every [`DeviceMsg`] variant.
pub const DEVICE: &[Golden<DeviceMsg>] = &[
    Golden {
        name: "hello",
        frame: || Frame {
            seq: 0,
            msg: DeviceMsg::Hello(Hello {
                protocol: 1,
                device_id: s("esp32-c3-01"),
                firmware: s("0.1.0+abc123"),
            }),
        },
        wire: &[
            0x01, 0x01, 0x1d, 0x01, 0x0b, 0x65, 0x73, 0x70, 0x33, 0x32, 0x2d, 0x63, 0x33, 0x2d,
            0x30, 0x31, 0x0c, 0x30, 0x2e, 0x31, 0x2e, 0x30, 0x2b, 0x61, 0x62, 0x63, 0x31, 0x32,
            0x33, 0x8c, 0x82, 0x00,
        ],
    },
    Golden {
        name: "chat_to_all",
        frame: || Frame {
            seq: 1,
            msg: DeviceMsg::Chat(ChatOut {
                to: None,
                text: s("hi all"),
            }),
        },
        wire: &[
            0x03, 0x01, 0x01, 0x0a, 0x06, 0x68, 0x69, 0x20, 0x61, 0x6c, 0x6c, 0x0c, 0xb9, 0x00,
        ],
    },
    Golden {
        name: "chat_direct",
        frame: || Frame {
            seq: 2,
            msg: DeviceMsg::Chat(ChatOut {
                to: Some(s("1001")),
                text: s("up 3600 s"),
            }),
        },
        wire: &[
            0x15, 0x02, 0x01, 0x01, 0x04, 0x31, 0x30, 0x30, 0x31, 0x09, 0x75, 0x70, 0x20, 0x33,
            0x36, 0x30, 0x30, 0x20, 0x73, 0x55, 0xc1, 0x00,
        ],
    },
    Golden {
        name: "ack",
        frame: || Frame {
            seq: 3,
            msg: DeviceMsg::Ack { seq: 7 },
        },
        wire: &[0x06, 0x03, 0x02, 0x07, 0xa7, 0x6e, 0x00],
    },
    Golden {
        name: "ping",
        frame: || Frame {
            seq: 127,
            msg: DeviceMsg::Ping { nonce: 0xDEAD_BEEF },
        },
        wire: &[
            0x0a, 0x7f, 0x03, 0xef, 0xfd, 0xb6, 0xf5, 0x0d, 0xc5, 0xb0, 0x00,
        ],
    },
    Golden {
        name: "pong",
        frame: || Frame {
            seq: 128,
            msg: DeviceMsg::Pong { nonce: 42 },
        },
        wire: &[0x07, 0x80, 0x01, 0x04, 0x2a, 0x54, 0x62, 0x00],
    },
    Golden {
        name: "telemetry",
        frame: || Frame {
            seq: 300,
            msg: DeviceMsg::Telemetry(Telemetry {
                name: s("uptime_s"),
                value: 3600,
            }),
        },
        wire: &[
            0x11, 0xac, 0x02, 0x05, 0x08, 0x75, 0x70, 0x74, 0x69, 0x6d, 0x65, 0x5f, 0x73, 0xa0,
            0x38, 0x1e, 0xa8, 0x00,
        ],
    },
    Golden {
        name: "telemetry_negative",
        frame: || Frame {
            seq: 0xFFFF,
            msg: DeviceMsg::Telemetry(Telemetry {
                name: s("temp_mC"),
                value: -12_500,
            }),
        },
        wire: &[
            0x12, 0xff, 0xff, 0x03, 0x05, 0x07, 0x74, 0x65, 0x6d, 0x70, 0x5f, 0x6d, 0x43, 0xa7,
            0xc3, 0x01, 0xd3, 0xb4, 0x00,
        ],
    },
    Golden {
        name: "error_malformed",
        frame: || Frame {
            seq: 9,
            msg: DeviceMsg::Error(error(ErrorCode::Malformed, 4)),
        },
        wire: &[0x03, 0x09, 0x06, 0x04, 0x04, 0x40, 0x95, 0x00],
    },
    Golden {
        name: "error_too_long",
        frame: || Frame {
            seq: 10,
            msg: DeviceMsg::Error(error(ErrorCode::TooLong, 5)),
        },
        wire: &[0x07, 0x0a, 0x06, 0x01, 0x05, 0xdc, 0xb8, 0x00],
    },
    Golden {
        name: "error_unsupported",
        frame: || Frame {
            seq: 11,
            msg: DeviceMsg::Error(error(ErrorCode::Unsupported, 0)),
        },
        wire: &[0x04, 0x0b, 0x06, 0x04, 0x03, 0x72, 0x8d, 0x00],
    },
];

/// Host -> device frames: every [`HostMsg`] variant.
pub const HOST: &[Golden<HostMsg>] = &[
    Golden {
        name: "chat_direct",
        frame: || Frame {
            seq: 0,
            msg: HostMsg::Chat(ChatIn {
                from: s("1001"),
                direct: true,
                text: s("/uptime"),
            }),
        },
        wire: &[
            0x01, 0x01, 0x11, 0x04, 0x31, 0x30, 0x30, 0x31, 0x01, 0x07, 0x2f, 0x75, 0x70, 0x74,
            0x69, 0x6d, 0x65, 0x27, 0x76, 0x00,
        ],
    },
    Golden {
        name: "chat_to_all",
        frame: || Frame {
            seq: 1,
            msg: HostMsg::Chat(ChatIn {
                from: s("esp32-c3-02"),
                direct: false,
                text: s("héllo"),
            }),
        },
        wire: &[
            0x02, 0x01, 0x0d, 0x0b, 0x65, 0x73, 0x70, 0x33, 0x32, 0x2d, 0x63, 0x33, 0x2d, 0x30,
            0x32, 0x0a, 0x06, 0x68, 0xc3, 0xa9, 0x6c, 0x6c, 0x6f, 0xaf, 0xe9, 0x00,
        ],
    },
    Golden {
        name: "ack",
        frame: || Frame {
            seq: 2,
            msg: HostMsg::Ack { seq: 0 },
        },
        wire: &[0x03, 0x02, 0x01, 0x03, 0xac, 0x6a, 0x00],
    },
    Golden {
        name: "ping",
        frame: || Frame {
            seq: 3,
            msg: HostMsg::Ping { nonce: 1 },
        },
        wire: &[0x06, 0x03, 0x02, 0x01, 0x91, 0x0b, 0x00],
    },
    Golden {
        name: "pong",
        frame: || Frame {
            seq: 4,
            msg: HostMsg::Pong { nonce: 0xDEAD_BEEF },
        },
        wire: &[
            0x0a, 0x04, 0x03, 0xef, 0xfd, 0xb6, 0xf5, 0x0d, 0x0b, 0xd7, 0x00,
        ],
    },
    Golden {
        name: "error_unknown_peer",
        frame: || Frame {
            seq: 5,
            msg: HostMsg::Error(error(ErrorCode::UnknownPeer, 2)),
        },
        wire: &[0x07, 0x05, 0x04, 0x02, 0x02, 0x4a, 0xe1, 0x00],
    },
    Golden {
        name: "error_busy",
        frame: || Frame {
            seq: 6,
            msg: HostMsg::Error(error(ErrorCode::Busy, 3)),
        },
        wire: &[0x07, 0x06, 0x04, 0x03, 0x03, 0xd6, 0xcc, 0x00],
    },
    Golden {
        name: "error_hello_required",
        frame: || Frame {
            seq: 7,
            msg: HostMsg::Error(error(ErrorCode::HelloRequired, 1)),
        },
        wire: &[0x07, 0x07, 0x04, 0x05, 0x01, 0xaf, 0xa7, 0x00],
    },
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fmt::Debug;
    use std::string::String;
    use std::vec::Vec;

    use serde::{de::DeserializeOwned, Serialize};

    use super::*;
    use crate::frame::{encode, Decoder, FrameError, MAX_WIRE_LEN};

    /// Every vector encodes to its bytes and decodes back, alone and split byte by byte.
    fn check_table<M>(table: &[Golden<M>])
    where
        M: Serialize + DeserializeOwned + PartialEq + Debug,
    {
        let mut names = BTreeSet::new();
        for g in table {
            assert!(names.insert(g.name), "duplicate golden name {}", g.name);
            let frame = (g.frame)();
            let mut out = [0u8; MAX_WIRE_LEN];
            let n = encode(&frame, &mut out).unwrap();
            assert_eq!(&out[..n], g.wire, "{}: encoded bytes differ", g.name);

            let mut decoder = Decoder::<M>::new();
            let got: Vec<_> = decoder.feed(g.wire).collect();
            assert_eq!(got, [Ok(frame)], "{}: decode", g.name);
            assert_eq!(decoder.pending(), 0);

            let mut got = Vec::new();
            for byte in g.wire {
                got.extend(decoder.feed(core::slice::from_ref(byte)));
            }
            assert_eq!(got, [Ok((g.frame)())], "{}: decode byte by byte", g.name);
        }
    }

    #[test]
    fn device_vectors() {
        check_table(DEVICE);
    }

    #[test]
    fn host_vectors() {
        check_table(HOST);
    }

    /// Adding a message variant or an error code breaks these matches, which points here:
    /// add a vector (and regenerate the doc).
    fn device_variant(msg: &DeviceMsg) -> &'static str {
        match msg {
            DeviceMsg::Hello(_) => "Hello",
            DeviceMsg::Chat(_) => "Chat",
            DeviceMsg::Ack { .. } => "Ack",
            DeviceMsg::Ping { .. } => "Ping",
            DeviceMsg::Pong { .. } => "Pong",
            DeviceMsg::Telemetry(_) => "Telemetry",
            DeviceMsg::Error(_) => "Error",
        }
    }

    fn host_variant(msg: &HostMsg) -> &'static str {
        match msg {
            HostMsg::Chat(_) => "Chat",
            HostMsg::Ack { .. } => "Ack",
            HostMsg::Ping { .. } => "Ping",
            HostMsg::Pong { .. } => "Pong",
            HostMsg::Error(_) => "Error",
        }
    }

    const ALL_CODES: [ErrorCode; 6] = [
        ErrorCode::Malformed,
        ErrorCode::TooLong,
        ErrorCode::UnknownPeer,
        ErrorCode::Busy,
        ErrorCode::Unsupported,
        ErrorCode::HelloRequired,
    ];

    fn code_index(code: ErrorCode) -> usize {
        match code {
            ErrorCode::Malformed => 0,
            ErrorCode::TooLong => 1,
            ErrorCode::UnknownPeer => 2,
            ErrorCode::Busy => 3,
            ErrorCode::Unsupported => 4,
            ErrorCode::HelloRequired => 5,
        }
    }

    #[test]
    fn every_variant_and_error_code_has_a_vector() {
        let device: BTreeSet<_> = DEVICE
            .iter()
            .map(|g| device_variant(&(g.frame)().msg))
            .collect();
        assert_eq!(
            device,
            ["Hello", "Chat", "Ack", "Ping", "Pong", "Telemetry", "Error"].into()
        );
        let host: BTreeSet<_> = HOST
            .iter()
            .map(|g| host_variant(&(g.frame)().msg))
            .collect();
        assert_eq!(host, ["Chat", "Ack", "Ping", "Pong", "Error"].into());

        let mut codes = BTreeSet::new();
        for g in DEVICE {
            if let DeviceMsg::Error(report) = (g.frame)().msg {
                codes.insert(code_index(report.code));
            }
        }
        for g in HOST {
            if let HostMsg::Error(report) = (g.frame)().msg {
                codes.insert(code_index(report.code));
            }
        }
        let all: BTreeSet<_> = ALL_CODES.iter().map(|&c| code_index(c)).collect();
        assert_eq!(all.len(), ALL_CODES.len());
        assert_eq!(codes, all, "every ErrorCode appears in a vector");
    }

    /// Flipping any single bit of a golden frame never yields a frame. (On these vectors
    /// this is exhaustive; in general COBS code-byte flips are caught only by the CRC's
    /// 1 - 2^-16 odds, see `docs/PROTOCOL.md`.)
    fn check_bit_flips<M>(table: &[Golden<M>])
    where
        M: DeserializeOwned + PartialEq + Debug,
    {
        for g in table {
            for bit in 0..g.wire.len() * 8 {
                let mut wire = g.wire.to_vec();
                wire[bit / 8] ^= 1 << (bit % 8);
                wire.push(0); // ends the frame if the flip hit the delimiter
                let got: Vec<_> = Decoder::<M>::new().feed(&wire).collect();
                assert!(
                    got.iter().all(|r| matches!(
                        r,
                        Err(FrameError::BadCrc
                            | FrameError::BadCobs
                            | FrameError::Decode
                            | FrameError::Truncated)
                    )),
                    "{} bit {bit}: {got:?}",
                    g.name
                );
                assert!(!got.is_empty(), "{} bit {bit}: nothing reported", g.name);
            }
        }
    }

    #[test]
    fn single_bit_flips_are_rejected() {
        check_bit_flips(DEVICE);
        check_bit_flips(HOST);
    }

    const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");

    fn hex(bytes: &[u8]) -> String {
        let hex: Vec<_> = bytes.iter().map(|b| std::format!("{b:02x}")).collect();
        hex.join(" ")
    }

    fn doc_table<M: Debug>(table: &[Golden<M>]) -> String {
        let mut out =
            String::from("| name | seq | message | wire bytes (hex) |\n|---|---|---|---|\n");
        for g in table {
            let frame = (g.frame)();
            out += &std::format!(
                "| `{}` | {} | `{:?}` | `{}` |\n",
                g.name,
                frame.seq,
                frame.msg,
                hex(g.wire)
            );
        }
        out
    }

    /// Replaces the text between `<!-- golden:KEY begin -->` and `<!-- golden:KEY end -->`.
    fn splice(doc: &str, key: &str, body: &str) -> Option<String> {
        let begin = std::format!("<!-- golden:{key} begin -->\n");
        let end = std::format!("<!-- golden:{key} end -->");
        let start = doc.find(&begin)? + begin.len();
        let stop = start + doc[start..].find(&end)?;
        Some(std::format!("{}{body}{}", &doc[..start], &doc[stop..]))
    }

    /// `docs/PROTOCOL.md` shows exactly these vectors. After changing a vector, run with
    /// `PROTOCOL_DOC_BLESS=1` to rewrite the doc's tables, and review the diff.
    #[test]
    fn protocol_doc_shows_the_golden_bytes() {
        let doc = std::fs::read_to_string(DOC).expect("docs/PROTOCOL.md");
        let want = splice(&doc, "device", &doc_table(DEVICE))
            .and_then(|d| splice(&d, "host", &doc_table(HOST)))
            .expect("docs/PROTOCOL.md lacks the golden:device / golden:host markers");
        if std::env::var_os("PROTOCOL_DOC_BLESS").is_some() {
            std::fs::write(DOC, &want).unwrap();
        } else if doc != want {
            panic!(
                "docs/PROTOCOL.md is out of date with protocol::golden; rerun this test with \
                 PROTOCOL_DOC_BLESS=1. Expected tables:\n{}\n{}",
                doc_table(DEVICE),
                doc_table(HOST)
            );
        }
    }
}
