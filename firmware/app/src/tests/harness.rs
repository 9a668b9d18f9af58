//! A gateway's view of one [`Device`]: feeds it host frames, decodes what it writes, moves a
//! fake clock. Shared by the device and relay tests.

use crate::device::{Device, Step};
use crate::{Board, Config, Stats};
use embassy_time::Duration;
use protocol::{encode, ChatIn, ChatOut, Decoder, DeviceMsg, Frame, HostMsg, MAX_WIRE_LEN};

#[derive(Default)]
pub(super) struct Fake {
    pub(super) led: bool,
}

impl Board for Fake {
    const NAME: &'static str = "fake";
    fn set_led(&mut self, on: bool) {
        self.led = on;
    }
    fn led(&self) -> bool {
        self.led
    }
}

pub(super) static CONFIG: Config = Config {
    device_id: "dev1",
    firmware: "0.1.0+fake",
    telemetry_every: Duration::from_secs(30),
};

pub(super) struct Harness {
    pub(super) dev: Device<'static>,
    pub(super) board: Fake,
    pub(super) stats: &'static Stats,
    pub(super) now: u64,
    host_seq: u16,
    decoder: Decoder<DeviceMsg>,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with_config(&CONFIG)
    }

    pub(super) fn with_config(config: &'static Config) -> Self {
        Self {
            dev: Device::new(config, 0),
            board: Fake::default(),
            stats: Box::leak(Box::new(Stats::new())),
            now: 0,
            host_seq: 0,
            decoder: Decoder::new(),
        }
    }

    /// Everything the device writes now, decoded, and when it wants to be called again.
    pub(super) fn drain(&mut self) -> (Vec<Frame<DeviceMsg>>, u64) {
        let mut out = [0u8; MAX_WIRE_LEN];
        let mut frames = Vec::new();
        loop {
            match self
                .dev
                .transmit(self.now, &self.board, self.stats, &mut out)
            {
                Step::Write(n) => {
                    let got: Vec<_> = self.decoder.feed(&out[..n]).collect();
                    assert_eq!(got.len(), 1, "one frame per write");
                    frames.push(got.into_iter().next().unwrap().unwrap());
                }
                Step::Wait(at) => {
                    assert!(at > self.now, "must not ask to be woken in the past");
                    return (frames, at);
                }
            }
        }
    }

    pub(super) fn msgs(&mut self) -> Vec<DeviceMsg> {
        self.drain().0.into_iter().map(|f| f.msg).collect()
    }

    pub(super) fn feed_bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            self.dev
                .receive(&mut bytes, self.now, &mut self.board, self.stats);
        }
    }

    pub(super) fn send_seq(&mut self, seq: u16, msg: HostMsg) {
        let mut buf = [0u8; MAX_WIRE_LEN];
        let n = encode(&Frame { seq, msg }, &mut buf).unwrap();
        self.feed_bytes(&buf[..n]);
    }

    pub(super) fn send(&mut self, msg: HostMsg) -> u16 {
        self.host_seq += 1;
        self.send_seq(self.host_seq, msg);
        self.host_seq
    }

    /// Boots the link and acks its Hello.
    pub(super) fn joined() -> Self {
        Self::joined_as(&CONFIG)
    }

    /// Boots a link with this config and acks its Hello.
    pub(super) fn joined_as(config: &'static Config) -> Self {
        let mut h = Self::with_config(config);
        let (frames, _) = h.drain();
        let seq = frames[0].seq;
        h.send(HostMsg::Ack { seq });
        assert!(h.dev.hello_acked());
        h
    }
}

pub(super) fn chat(from: &str, direct: bool, text: &str) -> HostMsg {
    HostMsg::Chat(ChatIn {
        from: from.try_into().unwrap(),
        direct,
        text: text.try_into().unwrap(),
    })
}

pub(super) fn reply(to: &str, text: &str) -> DeviceMsg {
    DeviceMsg::Chat(ChatOut {
        to: Some(to.try_into().unwrap()),
        text: text.try_into().unwrap(),
    })
}

pub(super) fn is_hello(msg: &DeviceMsg) -> bool {
    matches!(msg, DeviceMsg::Hello(h) if h.device_id == "dev1" && h.firmware == "0.1.0+fake" && h.protocol == protocol::PROTOCOL_VERSION)
}
