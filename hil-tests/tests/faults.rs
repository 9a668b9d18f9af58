//! Faults with real processes, sockets and ptys (issue #4): a connect flood, connections
//! reset mid-line or mid-frame, a worker killed with a message queued for an offline device,
//! and many users sending over-long, non-UTF-8 lines at once.
//!
//! Each test ends the way a user would check: the gateway and worker still run and two
//! users can still chat. Load behaviour (throughput, latency) is `load.rs`'s business, and
//! delivery across many disruptions is `soak.rs`'s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hil::device::{serve, DeviceLink, Responder, SIM_FIRMWARE};
use hil::harness::{Cluster, ClusterOptions, Matcher, TelnetUser};
use protocol::frame::{encode_to_vec, Frame};
use protocol::message::{ChatOut, DeviceMsg, HostMsg};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A device rejoining goes through the gateway's serial reopen backoff: allow for it.
const REJOIN: Duration = Duration::from_secs(10);
/// Connections opened and dropped in the flood.
const FLOOD: usize = 1000;
/// Flood connections in flight at once: fast, yet well inside the listener's backlog.
const FLOOD_CONCURRENCY: usize = 64;
/// Idle connections held open through the flood.
const HELD: usize = 200;
/// How often the chatting user speaks during the flood.
const CHAT_PACE: Duration = Duration::from_millis(5);
/// A flood connect that takes longer than this means the gateway stopped accepting. Above
/// 1 s on purpose: a SYN dropped by a full accept queue is retried after 1 s, which the
/// gateway hits today under this flood (issue #4 notes).
const CONNECT_LIMIT: Duration = Duration::from_secs(3);

/// The ending every test shares: both processes run, and the two users chat both ways.
async fn still_chatting(c: &mut Cluster, a: &mut TelnetUser, b: &mut TelnetUser) {
    c.assert_alive();
    a.say_and_wait(b, "still chatting").await;
    b.say_and_wait(a, "yes we are").await;
    c.assert_alive();
}

/// Sends `DEV:ask` and expects the device's private answer; returns the lines before it.
async fn ask(user: &mut TelnetUser, dev: &str, ask: &str, answer: &str) -> Vec<String> {
    user.send_line(&format!("{dev}:{ask}")).await;
    user.expect_line(format!("{dev} ({dev}) -> you: {answer}"))
        .await
        .skipped
}

/// The bytes of a public chat frame from a device saying `text`.
fn chat_frame(seq: u16, text: &str) -> Vec<u8> {
    let msg = DeviceMsg::Chat(ChatOut {
        to: None,
        text: text.try_into().expect("short test text"),
    });
    encode_to_vec(&Frame { seq, msg })
        .expect("encoding a test frame")
        .to_vec()
}

/// The first half of `frame`: no delimiter, so the gateway is left mid-frame.
fn first_half(frame: &[u8]) -> &[u8] {
    &frame[..frame.len() / 2]
}

/// Drops `stream` with an RST instead of a FIN.
fn reset(stream: TcpStream) {
    stream
        .set_zero_linger()
        .expect("setting SO_LINGER 0 on a test socket");
    drop(stream);
}

/// 1,000 connections opened and dropped (a third with RST) and 200 held idle, while a
/// logged-in user keeps chatting; afterwards a new user can still log in.
#[tokio::test]
async fn connect_flood_while_users_chat() {
    let started = Instant::now();
    let mut c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;

    let mut held = Vec::with_capacity(HELD);
    for i in 0..HELD {
        let s = tokio::time::timeout(CONNECT_LIMIT, TcpStream::connect(c.telnet))
            .await
            .unwrap_or_else(|_| panic!("held connection {i}: connect timed out"))
            .unwrap_or_else(|e| panic!("held connection {i}: {e}"));
        held.push(s);
    }

    let done = AtomicBool::new(false);
    let addr = c.telnet;
    let flood = async {
        let failures = futures::stream::iter(0..FLOOD)
            .map(|i| async move {
                match tokio::time::timeout(CONNECT_LIMIT, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) if i % 3 == 0 => {
                        reset(s);
                        None
                    }
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(format!("flood connection {i}: {e}")),
                    Err(_) => Some(format!("flood connection {i}: connect timed out")),
                }
            })
            .buffer_unordered(FLOOD_CONCURRENCY)
            .filter_map(futures::future::ready)
            .collect::<Vec<String>>()
            .await;
        done.store(true, Ordering::Release);
        failures
    };
    let chat = async {
        // Paced like a fast typist, so the chat does not starve the flood of this thread.
        let mut pace = tokio::time::interval(CHAT_PACE);
        let mut rounds = 0;
        let mut slowest = Duration::ZERO;
        while rounds < 3 || !done.load(Ordering::Acquire) {
            pace.tick().await;
            let sent = Instant::now();
            alice
                .say_and_wait(&mut bob, &format!("during the flood {rounds}"))
                .await;
            slowest = slowest.max(sent.elapsed());
            rounds += 1;
        }
        (rounds, slowest)
    };
    let flood_started = Instant::now();
    let (failures, (rounds, slowest)) = tokio::join!(flood, chat);
    let flood_took = flood_started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {FLOOD} flood connections failed; first: {:?}",
        failures.len(),
        failures.first()
    );
    c.assert_alive();

    for s in held {
        reset(s);
    }
    let mut carol = c.user("carol").await;
    alice.expect_line(format!("* {} joined", carol.tag())).await;
    carol.say_and_wait(&mut alice, "new after the flood").await;
    still_chatting(&mut c, &mut alice, &mut bob).await;
    eprintln!(
        "connect flood: {FLOOD} connections in {flood_took:?}, {rounds} chat round trips \
         meanwhile (slowest {slowest:?}), {:?} in all",
        started.elapsed()
    );
}

/// A user resets mid-line (and another mid-nickname), a TCP device resets mid-frame, and a
/// pty device sends half a frame then garbage: none of the fragments reach anyone, the
/// others see the user and device leave, and the devices work again afterwards.
#[tokio::test]
async fn resets_mid_line_and_truncated_frames() {
    let started = Instant::now();
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev0")).await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;

    // A telnet user: half a line, then RST.
    let mut mallory = c.user("mallory").await;
    let tag = mallory.tag();
    alice.expect_line(format!("* {tag} joined")).await;
    mallory.send_raw(b"half a li").await;
    let (rd, wr, _, _) = mallory.into_split();
    reset(rd.reunite(wr).expect("halves of one stream"));
    let before = alice.expect_line(format!("* {tag} left")).await.skipped;
    alice.assert_not_among(&before, "half a li");

    // A connection that resets halfway through its nickname.
    let mut half_nick = TcpStream::connect(c.telnet).await.expect("connecting");
    half_nick.write_all(b"half-ni").await.expect("writing");
    reset(half_nick);

    // A TCP device: hello, half a chat frame, then RST.
    let responder = Responder::new("tcp0", SIM_FIRMWARE).expect("a valid device id");
    let mut dev = TcpStream::connect(c.device_addr).await.expect("connecting");
    let hello = encode_to_vec(&Frame {
        seq: 0,
        msg: responder.hello(),
    })
    .expect("encoding hello");
    dev.write_all(&hello).await.expect("writing hello");
    alice.expect_line("* tcp0 (tcp0) joined").await;
    dev.write_all(first_half(&chat_frame(1, "truncated over tcp")))
        .await
        .expect("writing half a frame");
    reset(dev);
    let before = alice.expect_line("* tcp0 (tcp0) left").await.skipped;
    alice.assert_not_among(&before, "truncated");
    let _tcp0 = c.start_tcp_device("tcp0");
    alice.expect_line("* tcp0 (tcp0) joined").await;
    ask(&mut alice, "tcp0", "ping", "pong").await;

    // A pty device: half a chat frame, garbage up to a delimiter, then a device ping.
    let responder = Responder::new("dev0", SIM_FIRMWARE).expect("a valid device id");
    let mut link = DeviceLink::open_pty(&c.serial_path("dev0")).expect("opening a pty");
    link.send(responder.hello()).await.expect("sending hello");
    alice.expect_line("* dev0 (dev0) joined").await;
    link.send_raw(first_half(&chat_frame(1, "truncated on serial")))
        .await
        .expect("writing half a frame");
    link.send_raw(b"\x13\x37 line noise \xff\xfe\x01\x00")
        .await
        .expect("writing garbage");
    const NONCE: u32 = 0x5eed_f00d;
    link.send(DeviceMsg::Ping { nonce: NONCE })
        .await
        .expect("sending a ping");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match link.recv_timeout(left).await {
            Ok(HostMsg::Pong { nonce }) if nonce == NONCE => break,
            Ok(_) => {}
            Err(e) => panic!("no pong for the device's ping after a truncated frame: {e}"),
        }
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let device = tokio::spawn(async move {
        let mut stopped = std::pin::pin!(futures::FutureExt::fuse(async move {
            let _ = stopped.await;
        }));
        serve(&mut link, &responder, None, Instant::now(), &mut stopped).await
    });
    let before = ask(&mut alice, "dev0", "ping", "pong").await;
    alice.assert_not_among(&before, "truncated");
    let before = alice.say_and_wait(&mut bob, "after the fragments").await;
    bob.assert_not_among(&before, "truncated");
    bob.assert_not_among(&before, "half a li");
    stop.send(()).expect("the device task is running");
    device
        .await
        .expect("the device task")
        .expect("the device link");

    still_chatting(&mut c, &mut alice, &mut bob).await;
    eprintln!("resets and truncated input: {:?}", started.elapsed());
}

/// A message queued for an offline device is kept through a SIGKILL of the worker and
/// delivered when the device is back.
#[tokio::test]
async fn queued_message_survives_worker_sigkill() {
    let started = Instant::now();
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev0")).await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;
    let mut dev = c.start_pty_device("dev0");
    alice.expect_line("* dev0 (dev0) joined").await;
    ask(&mut alice, "dev0", "ping", "pong").await;

    dev.stop().await;
    alice.expect_line("* dev0 (dev0) left").await;
    alice.send_line("dev0:echo kept").await;
    alice.expect_line("* dev0 is offline, message queued").await;
    c.kill_worker().await;
    c.start_worker().await;

    let _dev = c.start_pty_device("dev0");
    alice
        .expect_line_within("dev0 (dev0) -> you: kept", REJOIN)
        .await;
    still_chatting(&mut c, &mut alice, &mut bob).await;
    eprintln!("queued message through SIGKILL: {:?}", started.elapsed());
}

/// Lines of [`LONG_BYTES`] and more, each refused with a `!` line.
const LONG_BYTES: usize = 10 * 1024;
/// Users sending them at once.
const SENDERS: usize = 20;

/// A 10 KiB line with invalid UTF-8 mixed in: lone 0xC3 lead bytes and 0xFF data bytes
/// (doubled, as telnet escapes a literal 0xFF), ended by CRLF.
fn long_bad_line() -> Vec<u8> {
    let chunk: &[u8] = b"LONGLINE \xc3\x28 \xff\xff \xc3 ";
    let mut line = Vec::with_capacity(LONG_BYTES + chunk.len() + 2);
    while line.len() < LONG_BYTES {
        line.extend_from_slice(chunk);
    }
    line.extend_from_slice(b"\r\n");
    line
}

/// 20 users send a 10 KiB non-UTF-8 line at once: each gets a `!` line, nobody else sees
/// any of it, and everyone can still send a (non-UTF-8) private line round a ring.
#[tokio::test]
async fn many_users_send_overlong_invalid_utf8_at_once() {
    let started = Instant::now();
    let mut c = Cluster::start().await;
    let mut users = Vec::with_capacity(SENDERS);
    for i in 0..SENDERS {
        users.push(c.user(&format!("u{i}")).await);
    }
    let tags: Vec<String> = users.iter().map(TelnetUser::tag).collect();
    let uids: Vec<String> = users.iter().map(|u| u.uid().to_owned()).collect();

    let long = long_bad_line();
    let refused = futures::future::join_all(users.iter_mut().map(|u| {
        let long = &long;
        async move {
            u.send_raw(long).await;
            u.expect_line(Matcher::starts_with("!")).await
        }
    }))
    .await;

    // Round a ring, each user sends the next one a short private line with bad bytes.
    for (i, u) in users.iter_mut().enumerate() {
        let to = &uids[(i + 1) % SENDERS];
        let mut line = format!("{to}:ok ").into_bytes();
        line.extend_from_slice(b"\xc3\xff\xff\xc3\x28");
        line.extend_from_slice(format!(" from u{i}\r\n").as_bytes());
        u.send_raw(&line).await;
    }
    let ring = futures::future::join_all(users.iter_mut().enumerate().map(|(i, u)| {
        let from = &tags[(i + SENDERS - 1) % SENDERS];
        let prefix = format!("{from} -> you: ok ");
        let suffix = format!(" from u{}", (i + SENDERS - 1) % SENDERS);
        async move {
            u.expect_line(Matcher::pred(
                &format!("{prefix:?}...{suffix:?}"),
                move |l| l.starts_with(&prefix) && l.ends_with(&suffix),
            ))
            .await
        }
    }))
    .await;

    for (u, (bang, ring)) in users.iter().zip(refused.iter().zip(&ring)) {
        let seen: Vec<String> = bang.skipped.iter().chain(&ring.skipped).cloned().collect();
        u.assert_not_among(&seen, "LONGLINE");
        assert!(
            !u.is_closed(),
            "{} was disconnected\n{}",
            u.name,
            u.history()
        );
    }
    let (a, rest) = users.split_first_mut().expect("at least two users");
    still_chatting(&mut c, a, &mut rest[0]).await;
    eprintln!(
        "{SENDERS} users with over-long non-UTF-8 lines: {:?}",
        started.elapsed()
    );
}
