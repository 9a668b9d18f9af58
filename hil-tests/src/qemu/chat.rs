//! Chat checks shared by the QEMU and real-board tests: ask a device something in a
//! private message and read its answer the way a telnet user would, parse the answers
//! that carry numbers (`info`, `uptime`), and time a test.
//!
//! Like the rest of the harness it asserts by panicking with what the user saw.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::harness::{Matcher, TelnetUser};

/// From QEMU's start to the device in the chat: boot, hello, ack; a DHCP lease and a TCP
/// connect over Ethernet; the gateway reopening a replugged port (its backoff) over UART.
pub const JOIN: Duration = Duration::from_secs(15);

/// Prints how long a test took when it ends, passed or failed. Written to the process's
/// stderr directly, which the test runner does not capture.
pub struct Timed {
    name: &'static str,
    started: Instant,
}

impl Timed {
    /// Starts timing test `name`.
    pub fn start(name: &'static str) -> Self {
        Self {
            name,
            started: Instant::now(),
        }
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        let verdict = if std::thread::panicking() {
            "FAILED"
        } else {
            "ok"
        };
        let _ = writeln!(
            std::io::stderr(),
            "hil timing: {:<58} {:>6.2} s  {verdict}",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// What the device says to `user` in a private message: `DEV (DEV) -> you: TEXT`.
pub fn reply_prefix(dev: &str) -> String {
    format!("{dev} ({dev}) -> you: ")
}

/// Sends `DEV:cmd` and returns the device's private reply, whatever it is.
pub async fn ask(user: &mut TelnetUser, dev: &str, cmd: &str) -> String {
    user.send_line(&format!("{dev}:{cmd}")).await;
    let prefix = reply_prefix(dev);
    let line = user.expect_line(Matcher::starts_with(&prefix)).await.line;
    line[prefix.len()..].to_owned()
}

/// Sends `DEV:cmd` and expects exactly `answer`.
pub async fn ask_exact(user: &mut TelnetUser, dev: &str, cmd: &str, answer: &str) -> Vec<String> {
    user.send_line(&format!("{dev}:{cmd}")).await;
    user.expect_line(format!("{}{answer}", reply_prefix(dev)))
        .await
        .skipped
}

pub async fn expect_joined(user: &mut TelnetUser, dev: &str) {
    user.expect_line_within(format!("* {dev} ({dev}) joined"), JOIN)
        .await;
}

/// Waits until every device in `devs` has joined, in any order (devices booted together
/// race to say hello).
pub async fn expect_all_joined(user: &mut TelnetUser, devs: &[&str]) {
    let joins: Vec<String> = devs.iter().map(|d| format!("* {d} ({d}) joined")).collect();
    expect_all(user, &joins, JOIN).await;
}

/// Reads lines until each of `lines` has been seen, in any order, within `limit`.
pub async fn expect_all(user: &mut TelnetUser, lines: &[String], limit: Duration) {
    let mut missing: Vec<&String> = lines.iter().collect();
    let deadline = Instant::now() + limit;
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match user.read_line(left).await {
            Ok(Some(line)) => missing.retain(|m| **m != line),
            _ => panic!(
                "{}: no {missing:?} within {limit:?}\n{}",
                user.name,
                user.history()
            ),
        }
    }
}

/// Asks `cmd` until the answer is `answer`, for state another peer changes on its own
/// schedule (a device obeying another device). Panics after `limit`.
pub async fn ask_until(user: &mut TelnetUser, dev: &str, cmd: &str, answer: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        last = ask(user, dev, cmd).await;
        if last == answer {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{dev} still answers {cmd:?} with {last:?}, not {answer:?}, after {limit:?}\n{}",
        user.history()
    );
}

/// Pings until the device answers, for after a reset whose rejoin the chat may not
/// announce (a UART reset keeps the port open). Panics after [`JOIN`].
pub async fn ping_until_pong(user: &mut TelnetUser, dev: &str) {
    let deadline = Instant::now() + JOIN;
    let pong = format!("{}pong", reply_prefix(dev));
    while Instant::now() < deadline {
        user.send_line(&format!("{dev}:ping")).await;
        if user
            .try_expect_line(pong.as_str(), Duration::from_secs(1))
            .await
            .is_ok()
        {
            return;
        }
    }
    panic!(
        "{dev} did not answer a ping within {JOIN:?} of its reset\n{}",
        user.history()
    );
}

/// The number after `label ` in an `info` reply (`... errors 3 ...`).
pub fn counter(info: &str, label: &str) -> u64 {
    let after = info
        .split_once(&format!("{label} "))
        .unwrap_or_else(|| panic!("no {label:?} counter in info reply {info:?}"))
        .1;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{label:?} is not a number in info reply {info:?}"))
}

/// Seconds in an `uptime` reply: `uptime 12s`, `uptime 3m04s`, `uptime 1h02m03s`.
pub fn uptime_secs(reply: &str) -> u64 {
    let text = reply
        .strip_prefix("uptime ")
        .unwrap_or_else(|| panic!("not an uptime reply: {reply:?}"));
    let (mut total, mut num) = (0u64, 0u64);
    for c in text.chars() {
        match c {
            '0'..='9' => num = num * 10 + u64::from(c as u8 - b'0'),
            'h' => (total, num) = (total + num * 3600, 0),
            'm' => (total, num) = (total + num * 60, 0),
            's' => (total, num) = (total + num, 0),
            _ => panic!("unexpected {c:?} in uptime reply {reply:?}"),
        }
    }
    total
}
