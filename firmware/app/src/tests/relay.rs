//! `send`, relays and the loop guard: what humans and devices get when devices talk to each
//! other, first one device at a time, then two devices wired back to back through a stand-in
//! gateway until they go quiet.

use super::harness::{chat, reply, Harness};
use crate::command::SEND_USAGE;
use crate::Config;
use embassy_time::Duration;
use protocol::{ChatOut, DeviceMsg, HostMsg, MAX_TEXT_LEN};

static DEV_A: Config = Config {
    device_id: "devA",
    firmware: "0.1.0+fake",
    telemetry_every: Duration::from_secs(30),
};
static DEV_B: Config = Config {
    device_id: "devB",
    ..DEV_A
};

/// The chats the device sends now, acking each one as the gateway would.
fn chats(h: &mut Harness) -> Vec<DeviceMsg> {
    let mut sent = Vec::new();
    loop {
        let (frames, _) = h.drain();
        let chat = frames
            .into_iter()
            .find(|f| matches!(f.msg, DeviceMsg::Chat(_)));
        let Some(frame) = chat else { return sent };
        h.send(HostMsg::Ack { seq: frame.seq });
        sent.push(frame.msg);
    }
}

#[test]
fn send_tells_the_requester_then_sends_the_text() {
    let mut h = Harness::joined_as(&DEV_A);
    h.send(chat("1", true, "send devB ping"));
    assert_eq!(
        chats(&mut h),
        vec![reply("1", "sent to devB"), reply("devB", "ping")]
    );
    h.send(chat("1", true, "send devB  echo  two words "));
    assert_eq!(
        chats(&mut h),
        vec![reply("1", "sent to devB"), reply("devB", "echo  two words")]
    );
}

#[test]
fn malformed_send_gets_the_usage_and_sends_nothing() {
    let mut h = Harness::joined_as(&DEV_A);
    let too_long = format!("send {} ping", "d".repeat(protocol::MAX_ID_LEN + 1));
    for line in ["send", "send devB", "send devB   ", too_long.as_str()] {
        h.send(chat("1", true, line));
        assert_eq!(chats(&mut h), vec![reply("1", SEND_USAGE)], "{line:?}");
    }
    // No send happened, so no relay target: a device's text is dropped.
    h.send(chat("devB", true, "pong"));
    assert_eq!(chats(&mut h), vec![]);
}

#[test]
fn device_text_goes_to_the_last_requester() {
    let mut h = Harness::joined_as(&DEV_A);
    h.send(chat("1", true, "send devB ping"));
    chats(&mut h);
    h.send(chat("devB", true, "pong"));
    assert_eq!(chats(&mut h), vec![reply("1", "devB: pong")]);
    h.send(chat("2", true, "send devC ping"));
    chats(&mut h);
    h.send(chat("devB", true, "frob"));
    assert_eq!(
        chats(&mut h),
        vec![reply("2", "devB: frob")],
        "the last requester, not a hint to devB"
    );
}

#[test]
fn relayed_text_is_cut_to_a_frame_on_a_char_boundary() {
    let mut h = Harness::joined_as(&DEV_A);
    h.send(chat("1", true, "send devB ping"));
    chats(&mut h);
    // 199 bytes: two bytes per 'ü' after one 'x', so the cut falls inside a char.
    let long = format!("x{}", "ü".repeat((MAX_TEXT_LEN - 2) / 2));
    h.send(chat("devB", true, &long));
    let sent = chats(&mut h);
    let [DeviceMsg::Chat(ChatOut { to, text })] = sent.as_slice() else {
        panic!("one relay expected: {sent:?}");
    };
    assert_eq!(to.as_deref(), Some("1"));
    let rest = text
        .strip_prefix("devB: x")
        .expect("prefixed with the sender");
    assert!(rest.chars().all(|c| c == 'ü'), "{text}");
    assert_eq!(text.len(), MAX_TEXT_LEN - 1, "199: 200 would split a 'ü'");
}

#[test]
fn devices_get_answers_to_commands_and_nothing_else() {
    let mut h = Harness::joined_as(&DEV_A);
    h.send(chat("devB", true, "ping"));
    assert_eq!(chats(&mut h), vec![reply("devB", "pong")]);
    h.send(chat("devB", true, "uptime"));
    assert_eq!(chats(&mut h), vec![reply("devB", "uptime 0s")]);
    // Unknown text, stray arguments, empty lines, and `send` (a device cannot make another
    // device send): no hint, no usage, nothing, and no send.
    for line in [
        "frob",
        "pong",
        "ping now",
        "uptime 3s",
        "",
        "send devC ping",
        "send",
    ] {
        h.send(chat("devB", true, line));
        assert_eq!(chats(&mut h), vec![], "{line:?}");
    }
    // An empty id is not a human's.
    h.send(chat("", true, "frob"));
    assert_eq!(chats(&mut h), vec![]);
    // Humans still get hints.
    h.send(chat("7", true, "frob"));
    assert_eq!(
        chats(&mut h),
        vec![reply("7", "unknown command 'frob'; try help")]
    );
}

#[test]
fn replies_that_are_commands_are_not_sent_to_devices() {
    let mut h = Harness::joined_as(&DEV_A);
    h.send(chat("devB", true, "led on"));
    assert!(h.board.led, "the command still runs");
    assert_eq!(chats(&mut h), vec![], "'led on' back to devB would loop");
    h.send(chat("devB", true, "echo ping"));
    assert_eq!(chats(&mut h), vec![]);
    h.send(chat("devB", true, "echo pong"));
    assert_eq!(chats(&mut h), vec![reply("devB", "pong")]);
    h.send(chat("3", true, "led status"));
    assert_eq!(
        chats(&mut h),
        vec![reply("3", "led on")],
        "humans: as before"
    );
}

/// Two devices and a gateway that acks every frame and routes chats between them; chats to
/// anyone else land in `humans`. Both logs read `from -> to: text`.
struct Net {
    devs: [Harness; 2],
    humans: Vec<String>,
    between_devices: Vec<String>,
}

impl Net {
    fn new() -> Self {
        Self {
            devs: [Harness::joined_as(&DEV_A), Harness::joined_as(&DEV_B)],
            humans: Vec::new(),
            between_devices: Vec::new(),
        }
    }

    fn id(i: usize) -> &'static str {
        [DEV_A.device_id, DEV_B.device_id][i]
    }

    fn human_says(&mut self, from: &str, to: usize, text: &str) {
        self.devs[to].send(chat(from, true, text));
    }

    /// One millisecond: every device writes what is due, the gateway acks and delivers it.
    /// Returns how many chats the devices sent.
    fn step(&mut self) -> usize {
        let mut sent = 0;
        for i in 0..2 {
            self.devs[i].now += 1;
            let (frames, _) = self.devs[i].drain();
            for frame in frames {
                let DeviceMsg::Chat(out) = frame.msg else {
                    continue;
                };
                sent += 1;
                self.devs[i].send(HostMsg::Ack { seq: frame.seq });
                let to = out.to.expect("devices only send direct messages");
                let line = format!("{} -> {to}: {}", Self::id(i), out.text);
                match (0..2).find(|&j| Self::id(j) == to) {
                    Some(j) => {
                        self.devs[j].send(chat(Self::id(i), true, &out.text));
                        self.between_devices.push(line);
                    }
                    None => self.humans.push(line),
                }
            }
        }
        sent
    }

    /// Steps until nothing moves; panics if that takes more than `bound` steps, then checks
    /// that nothing moves for a good while longer.
    fn settle(&mut self, bound: usize) {
        let mut steps = 0;
        while self.step() > 0 {
            steps += 1;
            assert!(
                steps <= bound,
                "still talking after {bound} steps: {:?}",
                self.between_devices
            );
        }
        for _ in 0..1_000 {
            assert_eq!(self.step(), 0, "quiet, then talking again");
        }
    }

    /// The chats humans got since the last call.
    fn take_humans(&mut self) -> Vec<String> {
        std::mem::take(&mut self.humans)
    }
}

#[test]
fn two_devices_exchange_ping_and_pong_then_go_quiet() {
    let mut net = Net::new();
    net.human_says("1", 0, "send devB ping");
    net.settle(10);
    assert_eq!(
        net.take_humans(),
        ["devA -> 1: sent to devB", "devA -> 1: devB: pong"]
    );
    assert_eq!(
        net.between_devices,
        ["devA -> devB: ping", "devB -> devA: pong"]
    );
}

#[test]
fn two_devices_never_loop_whatever_is_sent() {
    let mut net = Net::new();
    // Each of these makes a device answer with something; none may start a conversation
    // between the devices that does not end.
    // (what human 1 asks devA, what devA relays to 1 afterwards, devB's LED afterwards)
    let cases: [(&str, &[&str], bool); 8] = [
        ("send devB uptime", &["devB: uptime 0s"], false),
        ("send devB led on", &[], true), // `led on` answers `led on`: never sent back
        ("send devB led toggle", &[], false),
        ("send devB echo echo echo ping", &[], false),
        ("send devB echo pong", &["devB: pong"], false),
        ("send devB frob", &[], false), // devB has no relay target, gives devices no hints
        ("send devB send devA ping", &[], false),
        ("send devA ping", &["devA: pong"], false), // to itself
    ];
    for (line, relayed, led) in cases {
        net.human_says("1", 0, line);
        net.settle(10);
        let mut want = vec![format!("devA -> 1: sent to {}", &line[5..9])];
        want.extend(relayed.iter().map(|r| format!("devA -> 1: {r}")));
        assert_eq!(net.take_humans(), want, "{line:?}");
        assert_eq!(net.devs[1].board.led, led, "{line:?}");
    }
    // Both devices asked at once, each to make the other answer: both now have relay
    // targets, the worst case for a loop.
    net.human_says("1", 0, "send devB led toggle");
    net.human_says("2", 1, "send devA led toggle");
    net.human_says("1", 0, "send devB echo frob");
    net.human_says("2", 1, "send devA echo frob");
    net.settle(20);
    let mut got = net.take_humans();
    got.sort();
    assert_eq!(
        got,
        [
            "devA -> 1: devB: frob",
            "devA -> 1: sent to devB",
            "devA -> 1: sent to devB",
            "devB -> 2: devA: frob",
            "devB -> 2: sent to devA",
            "devB -> 2: sent to devA",
        ]
    );
    for line in &net.between_devices {
        assert!(
            !line.contains("try help"),
            "a device hinted a device: {line}"
        );
    }
}
