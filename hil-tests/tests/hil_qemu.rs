//! The real firmware as devices in the chat: QEMU `mps2-an385` boards running the release
//! ELF, over a serial bridge (a pty the gateway opens like a USB adapter) or Ethernet,
//! with the real gateway and worker and telnet users.
//!
//! Never skipped: `qemu-system-arm` and the thumbv7m target are CI prerequisites
//! (`cargo xtask ci` installs them). Every wait is bounded (a line's timeout, a rejoin
//! deadline), so a test cannot hang; each prints its duration to stderr. The ping round
//! trip figures are printed, not asserted.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hil::harness::{Cluster, ClusterOptions, Matcher, TelnetUser};
use hil::qemu::chat::{
    ask, ask_exact, ask_until, counter, expect_all, expect_all_joined, expect_joined,
    ping_until_pong, uptime_secs, Timed, JOIN,
};
use hil::qemu::firmware::{QEMU_ETH, QEMU_UART};
use hil::qemu::{firmware, Direction, QemuDevice};

/// Builds what the tests run (once per process), then starts timing test `name`, so the
/// printed durations are the tests' own and not the first one's build.
fn timed(name: &'static str) -> Timed {
    hil::harness::bins();
    firmware(QEMU_UART);
    firmware(QEMU_ETH);
    Timed::start(name)
}

/// A UART device notices a restarted gateway only when its next telemetry frame (every
/// 10 s by default) is answered `HelloRequired`: that period, plus [`JOIN`] for the rest.
const AFTER_GATEWAY_RESTART: Duration = Duration::from_secs(10).saturating_add(JOIN);

/// Pings timed by [`ping_round_trips_through_qemu`].
const ROUND_TRIPS: usize = 200;

#[tokio::test]
async fn uart_device_joins_and_answers_every_command() {
    let _t = timed("uart_device_joins_and_answers_every_command");
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev1")).await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;
    let mut dev = QemuDevice::uart(&c, "dev1").await;
    expect_joined(&mut alice, "dev1").await;
    expect_joined(&mut bob, "dev1").await;

    alice.send_line("/who").await;
    let who = alice.expect_line(Matcher::contains("dev1")).await.line;
    assert!(
        who.contains("device") && who.contains("qemu-mps2"),
        "/who should list dev1 as a device with its firmware version: {who:?}\n{}",
        alice.history()
    );

    ask_exact(&mut alice, "dev1", "ping", "pong").await;
    ask_exact(&mut bob, "dev1", "echo hi there", "hi there").await;
    for (cmd, state) in [
        ("led on", "led on"),
        ("led status", "led on"),
        ("led off", "led off"),
        ("led status", "led off"),
        ("led toggle", "led on"),
        ("led status", "led on"),
        ("led toggle", "led off"),
    ] {
        ask_exact(&mut alice, "dev1", cmd, state).await;
    }
    let up = ask(&mut alice, "dev1", "uptime").await;
    assert!(
        uptime_secs(&up) <= dev.uptime().as_secs() + 1,
        "uptime {up:?} is longer than QEMU has run ({:?})",
        dev.uptime()
    );
    let info = ask(&mut alice, "dev1", "info").await;
    assert!(
        info.contains("qemu-mps2") && counter(&info, "in") > 0,
        "info should name the board and count frames: {info:?}"
    );
    let help = ask(&mut alice, "dev1", "help").await;
    for cmd in ["ping", "echo", "uptime", "led", "info"] {
        assert!(help.contains(cmd), "help should list {cmd}: {help:?}");
    }
    let unknown = ask(&mut alice, "dev1", "frobnicate").await;
    assert!(
        unknown.contains("frobnicate") && unknown.contains("help"),
        "an unknown command gets a reply naming it and pointing at help: {unknown:?}"
    );

    // A public line is never answered; the device's answers are private to the asker.
    alice.send_line("ping").await;
    let before = ask_exact(&mut alice, "dev1", "echo marker", "marker").await;
    alice.assert_not_among(&before, "pong");
    let before = alice.say_and_wait(&mut bob, "done").await;
    // bob read up to his own `echo` reply before: nothing since was for him.
    for private in ["pong", "led on", "frobnicate", "marker", "-> you"] {
        bob.assert_not_among(&before, private);
    }
    // The harness decoded the firmware's defmt log (semihosting) into readable lines.
    let log = dev.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && l.contains("dev1")),
        "the device log should hold decoded defmt lines naming dev1:\n{log}"
    );
    dev.assert_running();
    c.assert_alive();
}

/// Two devices from one ELF: each answers as itself; one sends to the other (`send PEER
/// TEXT`) and relays the answer to the user who asked; a device can message a user; and no
/// exchange turns into a loop.
#[tokio::test]
async fn two_devices_talk_to_each_other_without_loops() {
    let _t = timed("two_devices_talk_to_each_other_without_loops");
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev1").serial("dev2")).await;
    let mut alice = c.user("alice").await;
    let mut dev1 = QemuDevice::uart(&c, "dev1").await;
    let mut dev2 = QemuDevice::uart(&c, "dev2").await;
    expect_all_joined(&mut alice, &["dev1", "dev2"]).await;

    ask_exact(&mut alice, "dev1", "echo one", "one").await;
    ask_exact(&mut alice, "dev2", "echo two", "two").await;

    // dev1 -> dev2 -> dev1 -> alice.
    alice.send_line("dev1:send dev2 ping").await;
    let lines = ["sent to dev2", "dev2: pong"].map(|t| format!("dev1 (dev1) -> you: {t}"));
    expect_all(&mut alice, &lines, JOIN).await;
    // A command from a device is obeyed even when its answer is not sent back.
    alice.send_line("dev1:send dev2 led on").await;
    alice.expect_line("dev1 (dev1) -> you: sent to dev2").await;
    // `sent to dev2` may reach alice before dev2 has the command.
    ask_until(&mut alice, "dev2", "led status", "led on", JOIN).await;
    ask_exact(&mut alice, "dev1", "led status", "led off").await;
    // A device can message a user.
    let uid = alice.uid().to_owned();
    alice
        .send_line(&format!("dev2:send {uid} hello alice"))
        .await;
    let lines = [
        format!("dev2 (dev2) -> you: sent to {uid}"),
        "dev2 (dev2) -> you: hello alice".to_owned(),
    ];
    expect_all(&mut alice, &lines, JOIN).await;

    // A broadcast reaches both devices; neither answers it.
    alice.send_line("hello devices").await;
    let before = ask_exact(&mut alice, "dev2", "echo after", "after").await;
    alice.assert_not_among(&before, "unknown command");
    // Whatever went between the devices has stopped: their frame counts stand still.
    let outs = |a: &str, b: &str| (counter(a, "out"), counter(b, "out"));
    let first = outs(
        &ask(&mut alice, "dev1", "info").await,
        &ask(&mut alice, "dev2", "info").await,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = outs(
        &ask(&mut alice, "dev1", "info").await,
        &ask(&mut alice, "dev2", "info").await,
    );
    // Asking `info` again costs each device two frames (the ack of the request, the
    // answer); a loop would show as hundreds in that half second.
    assert!(
        second.0 <= first.0 + 2 && second.1 <= first.1 + 2,
        "devices kept sending frames after the exchange ended: {first:?} then {second:?}"
    );
    dev1.assert_running();
    dev2.assert_running();
    c.assert_alive();
}

/// A reset with the serial port kept open (a reset button, a watchdog): the firmware says
/// hello again on the same port and is back.
#[tokio::test]
async fn uart_device_reset_rejoins_on_the_open_port() {
    let _t = timed("uart_device_reset_rejoins_on_the_open_port");
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev1")).await;
    let mut alice = c.user("alice").await;
    let mut dev = QemuDevice::uart(&c, "dev1").await;
    expect_joined(&mut alice, "dev1").await;
    ask_exact(&mut alice, "dev1", "led on", "led on").await;
    // Up for 2 s by its own clock, which a starved QEMU runs slower than the host's.
    let deadline = Instant::now() + JOIN;
    let before = loop {
        let up = uptime_secs(&ask(&mut alice, "dev1", "uptime").await);
        if up >= 2 {
            break up;
        }
        assert!(Instant::now() < deadline, "uptime stuck at {up}s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    dev.reset().await;
    ping_until_pong(&mut alice, "dev1").await;
    // It is a fresh boot: uptime restarted and the LED is off again.
    let after = uptime_secs(&ask(&mut alice, "dev1", "uptime").await);
    assert!(
        after < before,
        "uptime after the reset ({after}s) should restart (it was {before}s)"
    );
    ask_exact(&mut alice, "dev1", "led status", "led off").await;
    dev.assert_running();
    c.assert_alive();
}

/// A power cycle over USB serial: the adapter disappears with the board, the device goes
/// offline, a message sent meanwhile is queued and delivered when it is back.
#[tokio::test]
async fn uart_device_power_cycle_gets_the_message_queued_meanwhile() {
    let _t = timed("uart_device_power_cycle_gets_the_message_queued_meanwhile");
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev1")).await;
    let mut alice = c.user("alice").await;
    let mut dev = QemuDevice::uart(&c, "dev1").await;
    expect_joined(&mut alice, "dev1").await;
    ask_exact(&mut alice, "dev1", "ping", "pong").await;

    dev.power_off().await;
    alice.expect_line("* dev1 (dev1) left").await;
    alice.send_line("dev1:echo sent while you were off").await;
    alice.expect_line("* dev1 is offline, message queued").await;

    dev.power_on().await;
    expect_joined(&mut alice, "dev1").await;
    alice
        .expect_line("dev1 (dev1) -> you: sent while you were off")
        .await;
    ask_exact(&mut alice, "dev1", "ping", "pong").await;
    dev.assert_running();
    c.assert_alive();
}

/// Bursts of noise on `dev`'s link, both ways, between and inside frames; after each the
/// session still works, and the device counts what it could not decode.
async fn noise_both_ways_then_talk(alice: &mut TelnetUser, dev: &QemuDevice) {
    let id = dev.id();
    let errors_before = counter(&ask(alice, id, "info").await, "errors");
    let bursts: [&[u8]; 5] = [
        b"\x13\x37 line noise \xff\xfe\x01\x00",
        &[0x00; 16],
        &[0x05, 0x01, 0x00, 0x00],
        &[0xaa; 700], // longer than any frame, no delimiter: the decoder must resync
        b"\x02\x01\x00\x7f\x00",
    ];
    for (i, burst) in bursts.iter().enumerate() {
        for dir in [Direction::ToDevice, Direction::ToHost] {
            dev.inject(dir, burst)
                .await
                .unwrap_or_else(|e| panic!("injecting burst {i} {dir:?}: {e}"));
        }
        // A frame may be cut by the burst; retransmission covers it.
        let (cmd, answer) = (format!("echo after burst {i}"), format!("after burst {i}"));
        ask_exact(alice, id, &cmd, &answer).await;
    }
    // Noise while a message and its reply are on their way.
    alice
        .send_line(&format!("{id}:echo through the noise"))
        .await;
    dev.inject(Direction::ToDevice, b"\x00\xff\xff\x00")
        .await
        .ok();
    dev.inject(Direction::ToHost, b"\x00\xee\xee\x00")
        .await
        .ok();
    alice
        .expect_line(format!("{id} ({id}) -> you: through the noise"))
        .await;
    ask_exact(alice, id, "ping", "pong").await;

    let errors_after = counter(&ask(alice, id, "info").await, "errors");
    assert!(
        errors_after > errors_before,
        "{id} should count the noise it received as frame errors \
         ({errors_before} before, {errors_after} after)"
    );
    let injected = dev
        .wire_stats()
        .map_or(0, |s| s.injected.load(Ordering::Relaxed));
    assert!(
        injected > 1000,
        "the noise should have gone out: {injected} bytes"
    );
}

/// Noise on the serial line (the bridge between the pty and QEMU's UART).
#[tokio::test]
async fn uart_line_noise_both_ways_does_not_break_the_session() {
    let _t = timed("uart_line_noise_both_ways_does_not_break_the_session");
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev1")).await;
    let mut alice = c.user("alice").await;
    let mut dev = QemuDevice::uart(&c, "dev1").await;
    expect_joined(&mut alice, "dev1").await;
    noise_both_ways_then_talk(&mut alice, &dev).await;
    dev.assert_running();
    c.assert_alive();
}

/// Garbage inside the Ethernet device's TCP stream (through a proxy), both ways.
#[tokio::test]
async fn eth_stream_garbage_both_ways_does_not_break_the_session() {
    let _t = timed("eth_stream_garbage_both_ways_does_not_break_the_session");
    let mut c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let mut dev = QemuDevice::eth_via_proxy(&c, "eth1").await;
    expect_joined(&mut alice, "eth1").await;
    noise_both_ways_then_talk(&mut alice, &dev).await;
    dev.assert_running();
    c.assert_alive();
}

/// A gateway restart under both kinds of device: the Ethernet one reconnects; the UART
/// one cannot see the port reopen, so its next telemetry frame gets `HelloRequired` and it
/// says hello again. A message sent before they are back is queued and delivered.
#[tokio::test]
async fn devices_rejoin_after_a_gateway_restart() {
    let _t = timed("devices_rejoin_after_a_gateway_restart");
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev1")).await;
    let mut alice = c.user("alice").await;
    let mut uart = QemuDevice::uart(&c, "dev1").await;
    expect_joined(&mut alice, "dev1").await;
    let mut eth = QemuDevice::eth(&c, "eth1").await;
    expect_joined(&mut alice, "eth1").await;

    c.restart_gateway().await;
    let mut bob = c.connect("bob").await;
    bob.login("bob").await;
    for dev in ["dev1", "eth1"] {
        bob.send_line(&format!("{dev}:echo back {dev}")).await;
    }
    // Each answer arrives once its device is back, whatever the order.
    let answers = ["dev1", "eth1"].map(|d| format!("{d} ({d}) -> you: back {d}"));
    expect_all(&mut bob, &answers, AFTER_GATEWAY_RESTART).await;
    ask_exact(&mut bob, "dev1", "ping", "pong").await;
    ask_exact(&mut bob, "eth1", "ping", "pong").await;
    uart.assert_running();
    eth.assert_running();
    c.assert_alive();
}

/// The Ethernet build: joins over TCP from QEMU's network, answers, and after a power
/// cycle (its TCP connection dies with it) gets the message queued while it was off.
#[tokio::test]
async fn eth_device_joins_answers_and_rejoins_after_a_power_cycle() {
    let _t = timed("eth_device_joins_answers_and_rejoins_after_a_power_cycle");
    let mut c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let mut dev = QemuDevice::eth(&c, "eth1").await;
    expect_joined(&mut alice, "eth1").await;
    ask_exact(&mut alice, "eth1", "ping", "pong").await;
    ask_exact(&mut alice, "eth1", "echo over ethernet", "over ethernet").await;
    ask_exact(&mut alice, "eth1", "led toggle", "led on").await;
    alice.send_line("/who").await;
    let who = alice.expect_line(Matcher::contains("eth1")).await.line;
    assert!(
        who.contains("device"),
        "/who lists eth1 as a device: {who:?}"
    );

    dev.kill().await;
    alice.expect_line("* eth1 (eth1) left").await;
    alice.send_line("eth1:echo queued for ethernet").await;
    alice.expect_line("* eth1 is offline, message queued").await;
    dev.boot().await;
    expect_joined(&mut alice, "eth1").await;
    alice
        .expect_line("eth1 (eth1) -> you: queued for ethernet")
        .await;
    ask_exact(&mut alice, "eth1", "led status", "led off").await;
    dev.assert_running();
    c.assert_alive();
}

/// Round trips user -> gateway -> worker -> gateway -> QEMU device and back, one at a
/// time; prints p50/p99/max for UART and Ethernet, and for the simulated device on a pty
/// (the same path without QEMU, for comparison). Figures only: nothing is asserted on
/// timing, a loaded CI machine is slow.
#[tokio::test]
async fn ping_round_trips_through_qemu() {
    let _t = timed("ping_round_trips_through_qemu");
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev1").serial("sim1")).await;
    let mut alice = c.user("alice").await;
    let _uart = QemuDevice::uart(&c, "dev1").await;
    expect_joined(&mut alice, "dev1").await;
    let _eth = QemuDevice::eth(&c, "eth1").await;
    expect_joined(&mut alice, "eth1").await;
    let _sim = c.start_pty_device("sim1");
    expect_joined(&mut alice, "sim1").await;
    for dev in ["dev1", "eth1", "sim1"] {
        // Warm up (first frames, caches, the worker's session).
        for _ in 0..10 {
            ask_exact(&mut alice, dev, "ping", "pong").await;
        }
        let mut rtts: Vec<Duration> = Vec::with_capacity(ROUND_TRIPS);
        for _ in 0..ROUND_TRIPS {
            let t = Instant::now();
            ask_exact(&mut alice, dev, "ping", "pong").await;
            rtts.push(t.elapsed());
        }
        rtts.sort();
        let pct = |p: usize| rtts[(rtts.len() * p / 100).min(rtts.len() - 1)];
        let _ = writeln!(
            std::io::stderr(),
            "hil_qemu ping round trip ({dev}, {ROUND_TRIPS} pings, telnet -> device -> telnet): \
             p50 {:?}  p99 {:?}  max {:?}",
            pct(50),
            pct(99),
            rtts[rtts.len() - 1]
        );
    }
    c.assert_alive();
}
