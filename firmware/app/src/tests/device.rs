//! The device's protocol behaviour, driven sans-IO with a fake clock: what a gateway sees
//! on the wire for each thing it sends.

use super::harness::{chat, is_hello, reply, Harness};
use crate::device::{HELLO_RETRY_MS, REPLY_QUEUE};
use protocol::reliable::{ACK_TIMEOUT_MS, MAX_RETRIES};
use protocol::{encode, DeviceMsg, ErrorCode, ErrorReport, Frame, HostMsg, MAX_WIRE_LEN};

#[test]
fn says_hello_first_and_retries_until_acked() {
    let mut h = Harness::new();
    let (frames, wake) = h.drain();
    assert_eq!(frames.len(), 1);
    assert!(is_hello(&frames[0].msg));
    assert_ne!(frames[0].seq, 0, "seq 0 means 'no frame' in error reports");
    assert_eq!(wake, ACK_TIMEOUT_MS);
    let first = frames[0].clone();
    for _ in 0..MAX_RETRIES {
        h.now += ACK_TIMEOUT_MS;
        assert_eq!(h.drain().0, vec![first.clone()], "identical retransmission");
    }
    h.now += ACK_TIMEOUT_MS;
    let (frames, wake) = h.drain();
    assert!(frames.is_empty(), "gave up: {frames:?}");
    assert_eq!(wake, h.now + HELLO_RETRY_MS);
    h.now = wake;
    let (frames, _) = h.drain();
    assert!(is_hello(&frames[0].msg));
    assert_ne!(
        frames[0].seq, first.seq,
        "a new hello, not a retransmission"
    );
    h.send(HostMsg::Ack { seq: frames[0].seq });
    assert!(h.dev.hello_acked());
    h.now += 10 * ACK_TIMEOUT_MS;
    assert!(h.msgs().is_empty(), "no more hellos once acked");
    assert_eq!(h.stats.retransmits.get(), u32::from(MAX_RETRIES));
    assert_eq!(h.stats.gave_up.get(), 1);
}

#[test]
fn answers_direct_chat_with_ack_then_reply() {
    let mut h = Harness::joined();
    let seq = h.send(chat("42", true, "ping"));
    let msgs = h.msgs();
    assert_eq!(msgs, vec![DeviceMsg::Ack { seq }, reply("42", "pong")]);
    // Retransmitted host frame: acked again, not answered again.
    h.send_seq(seq, chat("42", true, "ping"));
    assert_eq!(h.msgs(), vec![DeviceMsg::Ack { seq }]);
    assert_eq!(h.stats.frames_in.get(), 3);
}

#[test]
fn ignores_broadcasts_but_acks_them() {
    let mut h = Harness::joined();
    let seq = h.send(chat("42", false, "ping"));
    assert_eq!(h.msgs(), vec![DeviceMsg::Ack { seq }]);
}

#[test]
fn replies_wait_for_the_ack_of_the_one_in_flight() {
    let mut h = Harness::joined();
    // As `run` does: the device writes what is due after each frame it reads.
    let a = h.send(chat("1", true, "echo a"));
    let (first, _) = h.drain();
    let b = h.send(chat("2", true, "echo b"));
    let msgs: Vec<_> = first.iter().map(|f| f.msg.clone()).collect();
    assert_eq!(msgs, vec![DeviceMsg::Ack { seq: a }, reply("1", "a")]);
    assert_eq!(h.msgs(), vec![DeviceMsg::Ack { seq: b }], "reply b waits");
    h.send(HostMsg::Ack { seq: first[1].seq });
    assert_eq!(h.msgs(), vec![reply("2", "b")]);
}

#[test]
fn reply_queue_overflow_drops_the_oldest_and_counts() {
    let mut h = Harness::joined();
    let extra = 3;
    let mut sent = Vec::new();
    for i in 0..=(REPLY_QUEUE + extra) {
        let seq = h.send(chat("7", true, &format!("echo {i}")));
        let (frames, _) = h.drain();
        assert_eq!(frames[0].msg, DeviceMsg::Ack { seq });
        sent.extend(frames.into_iter().skip(1));
    }
    assert_eq!(sent.len(), 1, "one in flight");
    assert_eq!(sent[0].msg, reply("7", "0"));
    assert_eq!(h.stats.replies_dropped.get(), extra as u32);
    // The newest REPLY_QUEUE replies follow, one per ack.
    let mut seq = sent[0].seq;
    for i in (extra + 1)..=(REPLY_QUEUE + extra) {
        h.send(HostMsg::Ack { seq });
        let (frames, _) = h.drain();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].msg, reply("7", &i.to_string()));
        seq = frames[0].seq;
    }
}

#[test]
fn hello_required_says_hello_again_and_resends_the_refused_chat() {
    let mut h = Harness::joined();
    let seq = h.send(chat("5", true, "ping"));
    assert_eq!(h.msgs(), vec![DeviceMsg::Ack { seq }, reply("5", "pong")]);
    h.send(HostMsg::Error(ErrorReport {
        code: ErrorCode::HelloRequired,
        seq: 0,
    }));
    let (frames, _) = h.drain();
    assert_eq!(frames.len(), 1);
    assert!(is_hello(&frames[0].msg));
    // A second HelloRequired while the hello is in flight changes nothing.
    h.send(HostMsg::Error(ErrorReport {
        code: ErrorCode::HelloRequired,
        seq: 0,
    }));
    assert!(h.msgs().is_empty());
    h.send(HostMsg::Ack { seq: frames[0].seq });
    assert_eq!(h.msgs(), vec![reply("5", "pong")]);
}

#[test]
fn answers_pings_and_survives_garbage() {
    let mut h = Harness::joined();
    h.feed_bytes(&[0x13, 0x37, 0xff, 0x00, 0x00, 0x42, 0x00]);
    assert_eq!(h.stats.frame_errors.get(), 2);
    h.send(HostMsg::Ping { nonce: 99 });
    assert_eq!(h.msgs(), vec![DeviceMsg::Pong { nonce: 99 }]);
    // A frame split across reads still decodes.
    let mut buf = [0u8; MAX_WIRE_LEN];
    let n = encode(
        &Frame {
            seq: 50,
            msg: HostMsg::Ping { nonce: 7 },
        },
        &mut buf,
    )
    .unwrap();
    h.feed_bytes(&buf[..3]);
    assert!(h.msgs().is_empty());
    h.feed_bytes(&buf[3..n]);
    assert_eq!(h.msgs(), vec![DeviceMsg::Pong { nonce: 7 }]);
}

#[test]
fn sends_a_telemetry_burst_every_interval() {
    let mut h = Harness::joined();
    h.board.led = true;
    let (frames, wake) = h.drain();
    assert!(frames.is_empty());
    assert_eq!(wake, 30_000);
    h.now = wake;
    let names: Vec<(String, i64)> = h
        .msgs()
        .into_iter()
        .map(|m| match m {
            DeviceMsg::Telemetry(t) => (t.name.to_string(), t.value),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let names: Vec<(&str, i64)> = names.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    assert_eq!(names[0], ("uptime_s", 30));
    assert!(names.contains(&("led", 1)));
    assert!(names.contains(&("frames_in", 1)));
    assert!(
        !names.iter().any(|(n, _)| *n == "free_stack_b"),
        "fake board cannot tell"
    );
    assert_eq!(h.drain().1, 60_000);
}

#[test]
fn led_command_switches_the_board() {
    let mut h = Harness::joined();
    h.send(chat("3", true, "led on"));
    assert!(h.board.led);
    assert!(h.msgs().contains(&reply("3", "led on")));
}

#[test]
fn never_panics_on_random_bytes() {
    let mut h = Harness::joined();
    let mut x: u32 = 0x1234_5678;
    for round in 0..2_000 {
        let len = (round % 97) + 1;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Plenty of delimiters so short frames form.
                if x.is_multiple_of(11) {
                    0
                } else {
                    x as u8
                }
            })
            .collect();
        h.feed_bytes(&bytes);
        h.now += 7;
        h.drain();
    }
    assert!(h.stats.frame_errors.get() > 0);
}
