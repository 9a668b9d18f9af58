//! The real firmware on a real board on the bench, in the chat through the real gateway.
//!
//! Runs only when `SWITCHBOARD_HIL_CHIP` (probe-rs chip name, e.g. `nRF52840_xxAA` or
//! `RP2040`), `SWITCHBOARD_HIL_BOARD` (`nrf52840` or `rp2040`) and `SWITCHBOARD_HIL_PORT`
//! (the board's serial port, e.g. `/dev/ttyACM0`) are set; otherwise it says so and
//! passes. It builds that board's firmware, flashes it with `probe-rs download` and
//! `probe-rs reset`, and runs the same chat checks as the QEMU tests.

use std::io::Write;

use hil::harness::{Cluster, ClusterOptions, Matcher};
use hil::qemu::board::{bench_board, ENV_VARS};
use hil::qemu::chat::{ask, ask_exact, counter, ping_until_pong, uptime_secs, Timed, JOIN};
use hil::qemu::firmware;

/// The serial port's name in the cluster: a symlink to the real port.
const PORT: &str = "board";

#[tokio::test]
async fn real_board_joins_answers_and_rejoins_after_a_reset() {
    let bench = match bench_board() {
        Ok(Some(bench)) => bench,
        Ok(None) => {
            let _ = writeln!(
                std::io::stderr(),
                "hil_board skipped: set {} (probe-rs chip name, e.g. nRF52840_xxAA), {} \
                 (nrf52840|rp2040) and {} (serial port) to run against a real board",
                ENV_VARS[0],
                ENV_VARS[1],
                ENV_VARS[2]
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let _t = Timed::start("real_board_joins_answers_and_rejoins_after_a_reset");
    let fw = firmware(bench.board);
    let mut c = Cluster::start_with(ClusterOptions::default().serial(PORT)).await;
    // The gateway opens the cluster's port path; point it at the real port.
    std::os::unix::fs::symlink(&bench.port, c.serial_path(PORT))
        .unwrap_or_else(|e| panic!("linking {}: {e}", bench.port.display()));
    let mut alice = c.user("alice").await;
    bench.flash(fw).unwrap_or_else(|e| panic!("{e}"));

    // The board's id is its firmware's business (a default or its chip id): learn it.
    let joined = alice
        .expect_line_within(
            Matcher::pred("a device joining", |l| {
                l.starts_with("* ") && l.ends_with(") joined")
            }),
            JOIN,
        )
        .await
        .line;
    let dev = joined
        .trim_start_matches("* ")
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_owned();

    ask_exact(&mut alice, &dev, "ping", "pong").await;
    ask_exact(&mut alice, &dev, "echo hi there", "hi there").await;
    for (cmd, state) in [
        ("led on", "led on"),
        ("led status", "led on"),
        ("led toggle", "led off"),
        ("led status", "led off"),
    ] {
        ask_exact(&mut alice, &dev, cmd, state).await;
    }
    let info = ask(&mut alice, &dev, "info").await;
    assert!(
        counter(&info, "in") > 0,
        "info should count frames: {info:?}"
    );
    let help = ask(&mut alice, &dev, "help").await;
    assert!(help.contains("ping"), "help lists ping: {help:?}");
    let unknown = ask(&mut alice, &dev, "frobnicate").await;
    assert!(
        unknown.contains("help"),
        "unknown command hint: {unknown:?}"
    );
    // Up long enough that a restarted uptime is visibly shorter.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let before = uptime_secs(&ask(&mut alice, &dev, "uptime").await);

    bench.reset().unwrap_or_else(|e| panic!("{e}"));
    ping_until_pong(&mut alice, &dev).await;
    let after = uptime_secs(&ask(&mut alice, &dev, "uptime").await);
    assert!(
        after < before,
        "uptime after a reset should restart ({before}s before, {after}s after)"
    );
    c.assert_alive();
}
