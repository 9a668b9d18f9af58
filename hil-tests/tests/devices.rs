//! Devices in the chat: simulated devices on a pty (as a serial port) and over TCP, with
//! telnet users talking to them through the real gateway and worker.

use std::time::{Duration, Instant as StdInstant};

use hil::device::{serve, DeviceLink, Responder, Served, HELP_TEXT, SIM_FIRMWARE};
use hil::harness::{Cluster, ClusterOptions, Matcher, TelnetUser};
use protocol::frame::{encode_to_vec, Frame};
use protocol::message::{ChatOut, DeviceMsg};

/// A device rejoining goes through the gateway's reopen backoff: allow for it.
const REJOIN: Duration = Duration::from_secs(10);

/// Sends `DEV:ask` and expects the device's private answer.
async fn ask(user: &mut TelnetUser, dev: &str, ask: &str, answer: &str) -> Vec<String> {
    user.send_line(&format!("{dev}:{ask}")).await;
    user.expect_line(format!("{dev} ({dev}) -> you: {answer}"))
        .await
        .skipped
}

/// Two users and a device on a pty: the main demo scenario.
#[tokio::test]
async fn two_users_and_a_pty_device() {
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev0")).await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;
    let _dev = c.start_pty_device("dev0");
    alice.expect_line("* dev0 (dev0) joined").await;
    bob.expect_line("* dev0 (dev0) joined").await;

    ask(&mut alice, "dev0", "ping", "pong").await;
    ask(&mut bob, "dev0", "echo hi", "hi").await;
    ask(&mut alice, "dev0", "help", HELP_TEXT).await;
    ask(
        &mut alice,
        "dev0",
        "frobnicate",
        "unknown command: frobnicate; try help",
    )
    .await;

    // A public line reaches the users but the device never answers it.
    alice.send_line("ping").await;
    bob.expect_line(format!("{}: ping", alice.tag())).await;
    let before = ask(&mut alice, "dev0", "echo marker", "marker").await;
    alice.assert_not_among(&before, "pong");

    // Device answers are private: bob never saw alice's.
    let before = alice.say_and_wait(&mut bob, "done").await;
    for private in ["pong", "frobnicate", "marker", "commands:"] {
        bob.assert_not_among(&before, private);
    }

    // /who lists the device with its firmware.
    alice.send_line("/who").await;
    let line = alice.expect_line(Matcher::contains("dev0")).await.line;
    assert!(
        line.contains("device")
            && line.contains(SIM_FIRMWARE)
            && line.to_lowercase().contains("seen"),
        "/who line for a device should say `device`, its firmware and when it was last seen: \
         {line:?}\n{}",
        alice.history()
    );
    c.assert_alive();
}

/// A message to a known device that is offline is queued and delivered when it returns.
#[tokio::test]
async fn message_to_an_offline_device_is_queued_and_delivered() {
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev0")).await;
    let mut alice = c.user("alice").await;
    let mut dev = c.start_pty_device("dev0");
    alice.expect_line("* dev0 (dev0) joined").await;
    ask(&mut alice, "dev0", "ping", "pong").await;

    dev.stop().await; // its pty closes: the gateway loses the serial port
    alice.expect_line("* dev0 (dev0) left").await;
    alice.send_line("dev0:echo queued").await;
    alice.expect_line("* dev0 is offline, message queued").await;

    let _dev = c.start_pty_device("dev0"); // a new pty on the same link path
    alice
        .expect_line_within("* dev0 (dev0) joined", REJOIN)
        .await;
    alice.expect_line("dev0 (dev0) -> you: queued").await;
}

/// `switchboard-device --tcp` joins over the device port and answers.
#[tokio::test]
async fn tcp_device_joins_answers_and_leaves() {
    let mut c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let mut dev = c.start_tcp_device("tcp0");
    alice.expect_line("* tcp0 (tcp0) joined").await;
    ask(&mut alice, "tcp0", "ping", "pong").await;
    ask(&mut alice, "tcp0", "echo over tcp", "over tcp").await;
    dev.stop().await;
    alice.expect_line("* tcp0 (tcp0) left").await;
}

/// Line noise and a corrupt frame on the device line: the device still gets its pings.
async fn noise_then_ping(c: &mut Cluster, mut link: DeviceLink, dev: &str) {
    let mut alice = c.user("alice").await;
    let responder = Responder::new(dev, SIM_FIRMWARE).unwrap();
    link.send(responder.hello()).await.unwrap();
    alice.expect_line(format!("* {dev} ({dev}) joined")).await;

    // Garbage, ended by a delimiter as a real line's noise eventually is.
    link.send_raw(b"\x13\x37 line noise \xff\xfe\x01\x00")
        .await
        .unwrap();
    // A well-formed frame with one byte flipped: bad CRC.
    let chat = DeviceMsg::Chat(ChatOut {
        to: None,
        text: "this frame is corrupt".try_into().unwrap(),
    });
    let mut bytes = encode_to_vec(&Frame { seq: 9, msg: chat }).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == 0x55 { 0x56 } else { 0x55 };
    link.send_raw(&bytes).await.unwrap();
    // Bytes that are not even COBS, then a lone delimiter.
    link.send_raw(&[0x05, 0x01, 0x00, 0x00]).await.unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let device = tokio::spawn(async move {
        let mut stopped = std::pin::pin!(futures::FutureExt::fuse(async move {
            let _ = stopped.await;
        }));
        serve(&mut link, &responder, None, StdInstant::now(), &mut stopped).await
    });
    let before = ask(&mut alice, dev, "ping", "pong").await;
    alice.assert_not_among(&before, "corrupt");
    c.assert_alive();
    stop.send(()).unwrap();
    assert_eq!(device.await.unwrap().unwrap(), Served::Shutdown);
}

#[tokio::test]
async fn pty_device_survives_line_noise_and_corrupt_frames() {
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev0")).await;
    let link = DeviceLink::open_pty(&c.serial_path("dev0")).unwrap();
    noise_then_ping(&mut c, link, "dev0").await;
}

#[tokio::test]
async fn tcp_device_survives_line_noise_and_corrupt_frames() {
    let mut c = Cluster::start().await;
    let link = DeviceLink::connect_tcp(&c.device_addr.to_string())
        .await
        .unwrap();
    noise_then_ping(&mut c, link, "tcp0").await;
}

/// After a gateway restart a pty device cannot see the port reopen, so it does not say
/// hello again by itself; its next frame (telemetry) gets `HelloRequired`, it says hello,
/// and it is back in the chat. A TCP device just reconnects and says hello.
#[tokio::test]
async fn devices_rejoin_after_a_gateway_restart() {
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev0")).await;
    let mut alice = c.user("alice").await;
    let _pty = c.start_pty_device_with("dev0", &["--telemetry-secs", "1"]);
    alice.expect_line("* dev0 (dev0) joined").await;
    let _tcp = c.start_tcp_device("tcp0");
    alice.expect_line("* tcp0 (tcp0) joined").await;
    ask(&mut alice, "dev0", "ping", "pong").await;
    ask(&mut alice, "tcp0", "ping", "pong").await;

    c.restart_gateway().await;
    let mut bob = c.connect("bob").await;
    bob.timeout = REJOIN;
    bob.login("bob").await;
    // Until a device has rejoined, bob's line to it is queued, not delivered: ask until
    // both answer, each answer proving the device is back.
    for dev in ["tcp0", "dev0"] {
        bob.send_line(&format!("{dev}:echo back")).await;
        bob.expect_line(format!("{dev} ({dev}) -> you: back")).await;
    }
    c.assert_alive();
}
