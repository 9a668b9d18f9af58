//! Chat commands: the text of a direct message in, the reply text out, and what a line asks
//! for ([`parse`]). Pure functions, no I/O and no clock (the caller passes the uptime), so the
//! host tests cover every answer. Who gets the reply, what `send` sends and what a device
//! answers another device is [`crate::device`]'s business.

use core::fmt::Write;

use protocol::{ChatOut, Text, MAX_ID_LEN, MAX_TEXT_LEN};

use crate::text::{prefix, truncated, write_duration, TextWriter};
use crate::{Board, Config, Stats};

/// The reply to `help`.
pub const HELP: &str =
    "commands: help, ping, echo TEXT, uptime, led on|off|toggle|status, info, send PEER TEXT";
const _: () = assert!(HELP.len() <= MAX_TEXT_LEN, "help must fit one chat frame");
/// The reply to a `send` without a peer, without a text, or with a peer id too long to exist.
pub const SEND_USAGE: &str = "usage: send PEER TEXT";
/// Longest part of an unknown command quoted back, so the hint after it always fits.
const QUOTE_MAX: usize = 40;

/// What a command may look at besides the board.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// Seconds since boot.
    pub uptime_s: u64,
    /// The device's configuration (firmware version for `info`).
    pub config: &'a Config,
    /// The link counters (for `info`).
    pub stats: &'a Stats,
}

/// What a chat line asks of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// `send PEER TEXT`: send `text` to `peer`; [`answer`] tells the requester `sent to PEER`.
    Send {
        /// Non-empty and at most [`protocol::MAX_ID_LEN`] bytes: fits a [`protocol::PeerId`].
        peer: &'a str,
        /// Non-empty; as long as the line allows.
        text: &'a str,
    },
    /// A command exactly as [`HELP`] lists it (`ping`, `led on`, `echo TEXT`, but not
    /// `ping now` or `uptime 12s`): what a device answers another device.
    Command,
    /// Anything else, a malformed `send` included: a human gets [`answer`]'s reply (a hint
    /// or the usage), a device's text is not answered.
    Other,
}

/// Splits a trimmed line into its command word and the rest (which may start with spaces).
fn split(line: &str) -> (&str, &str) {
    line.split_once(char::is_whitespace).unwrap_or((line, ""))
}

/// What `line` asks for. Strict where [`answer`] is lenient (`answer` replies `pong` to
/// `ping now`; this calls it [`Request::Other`]) so that replies such as `uptime 12s` are not
/// commands to the device that receives them.
pub fn parse(line: &str) -> Request<'_> {
    let (word, arg) = split(line.trim());
    let arg = arg.trim();
    let is = |name: &str| word.eq_ignore_ascii_case(name);
    let is_arg = |name: &str| arg.eq_ignore_ascii_case(name);
    if is("send") {
        return match send(arg) {
            Some((peer, text)) => Request::Send { peer, text },
            None => Request::Other,
        };
    }
    let command = if is("help") || is("ping") || is("uptime") || is("info") {
        arg.is_empty()
    } else if is("echo") {
        !arg.is_empty()
    } else if is("led") {
        arg.is_empty() || ["on", "off", "toggle", "status"].into_iter().any(is_arg)
    } else {
        false
    };
    if command {
        Request::Command
    } else {
        Request::Other
    }
}

/// `PEER TEXT` (the arguments of `send`), if both are there and PEER is a possible id.
fn send(arg: &str) -> Option<(&str, &str)> {
    let (peer, text) = split(arg.trim());
    let text = text.trim_start();
    let fits = !peer.is_empty() && peer.len() <= MAX_ID_LEN;
    (fits && !text.is_empty()).then_some((peer, text))
}

impl Request<'_> {
    /// The chat a [`Request::Send`] asks for; TEXT cut to a frame on a char boundary (a chat
    /// line always fits anyway).
    pub fn chat_out(&self) -> Option<ChatOut> {
        match *self {
            Request::Send { peer, text } => Some(ChatOut {
                to: Some(truncated::<MAX_ID_LEN>(peer)),
                text: truncated(text),
            }),
            _ => None,
        }
    }
}

/// The reply to the chat line `line`; every line gets one, an unknown command a hint.
/// `led` commands switch the board's LED before answering; `send` only says what it sends
/// (sending is [`crate::device`]'s job, see [`parse`]).
pub fn answer<B: Board>(line: &str, board: &mut B, env: &Env<'_>) -> Text {
    let line = line.trim();
    let (word, arg) = split(line);
    let is = |name: &str| word.eq_ignore_ascii_case(name);
    let mut out = TextWriter::new();
    // Writing to a TextWriter never fails; it truncates.
    let _ = if is("help") {
        out.write_str(HELP)
    } else if is("ping") {
        out.write_str("pong")
    } else if is("echo") {
        out.write_str(if arg.is_empty() {
            "usage: echo TEXT"
        } else {
            arg
        })
    } else if is("uptime") {
        out.write_str("uptime ")
            .and_then(|()| write_duration(&mut out, env.uptime_s))
    } else if is("led") {
        led(arg.trim(), board, &mut out)
    } else if is("info") {
        info(board, env, &mut out)
    } else if is("send") {
        match send(arg) {
            Some((peer, _)) => write!(out, "sent to {peer}"),
            None => out.write_str(SEND_USAGE),
        }
    } else if word.is_empty() {
        out.write_str("empty command; try help")
    } else {
        write!(
            out,
            "unknown command '{}'; try help",
            prefix(word, QUOTE_MAX)
        )
    };
    out.finish()
}

fn led<B: Board>(arg: &str, board: &mut B, out: &mut TextWriter) -> core::fmt::Result {
    let is = |name: &str| arg.eq_ignore_ascii_case(name);
    if is("on") {
        board.set_led(true);
    } else if is("off") {
        board.set_led(false);
    } else if is("toggle") {
        board.set_led(!board.led());
    } else if !(arg.is_empty() || is("status")) {
        return out.write_str("usage: led on|off|toggle|status");
    }
    out.write_str(if board.led() { "led on" } else { "led off" })
}

fn info<B: Board>(board: &B, env: &Env<'_>, out: &mut TextWriter) -> core::fmt::Result {
    let s = env.stats;
    write!(out, "firmware {} on {}, up ", env.config.firmware, B::NAME)?;
    write_duration(out, env.uptime_s)?;
    if let Some(free) = board.free_stack() {
        write!(out, ", stack free {free} B")?;
    }
    write!(
        out,
        ", frames in {} out {} errors {} retransmits {}",
        s.frames_in.get(),
        s.frames_out.get(),
        s.frame_errors.get(),
        s.retransmits.get()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use embassy_time::Duration;
    use protocol::MAX_TEXT_LEN;

    #[derive(Default)]
    struct Fake {
        led: bool,
        stack: Option<u32>,
    }

    impl Board for Fake {
        const NAME: &'static str = "fake";
        fn set_led(&mut self, on: bool) {
            self.led = on;
        }
        fn led(&self) -> bool {
            self.led
        }
        fn free_stack(&self) -> Option<u32> {
            self.stack
        }
    }

    const CONFIG: Config = Config {
        device_id: "dev1",
        firmware: "0.1.0+fake",
        telemetry_every: Duration::from_secs(30),
    };

    fn ask(board: &mut Fake, line: &str) -> Text {
        let stats = Stats::new();
        let env = Env {
            uptime_s: 3_723,
            config: &CONFIG,
            stats: &stats,
        };
        answer(line, board, &env)
    }

    #[test]
    fn simple_commands() {
        let b = &mut Fake::default();
        assert_eq!(ask(b, "ping"), "pong");
        assert_eq!(ask(b, "  PING \r\n"), "pong");
        assert_eq!(ask(b, "help"), HELP);
        assert_eq!(ask(b, "uptime"), "uptime 1h02m03s");
        assert_eq!(ask(b, "echo hello  world"), "hello  world");
        assert_eq!(ask(b, "echo"), "usage: echo TEXT");
        assert_eq!(ask(b, ""), "empty command; try help");
    }

    #[test]
    fn unknown_commands_get_a_hint() {
        let b = &mut Fake::default();
        assert_eq!(ask(b, "frob x"), "unknown command 'frob'; try help");
        let long = "é".repeat(150);
        let reply = ask(b, &long);
        assert!(reply.starts_with("unknown command 'éé"));
        assert!(reply.ends_with("'; try help"), "{reply}");
    }

    #[test]
    fn led_commands() {
        let b = &mut Fake::default();
        assert_eq!(ask(b, "led"), "led off");
        assert_eq!(ask(b, "led on"), "led on");
        assert!(b.led);
        assert_eq!(ask(b, "led status"), "led on");
        assert_eq!(ask(b, "led toggle"), "led off");
        assert!(!b.led);
        assert_eq!(ask(b, "LED Toggle"), "led on");
        assert_eq!(ask(b, "led off"), "led off");
        assert_eq!(ask(b, "led blink"), "usage: led on|off|toggle|status");
        assert!(!b.led);
    }

    #[test]
    fn info_names_firmware_board_and_counters() {
        let b = &mut Fake {
            led: false,
            stack: Some(1234),
        };
        let reply = ask(b, "info");
        assert_eq!(
            reply,
            "firmware 0.1.0+fake on fake, up 1h02m03s, stack free 1234 B, \
             frames in 0 out 0 errors 0 retransmits 0"
        );
        b.stack = None;
        assert!(!ask(b, "info").contains("stack"));
    }

    #[test]
    fn send_names_its_peer_or_shows_the_usage() {
        let b = &mut Fake::default();
        assert_eq!(ask(b, "send devB ping"), "sent to devB");
        assert_eq!(ask(b, "SEND  devB   echo  two"), "sent to devB");
        assert_eq!(ask(b, "send"), SEND_USAGE);
        assert_eq!(ask(b, "send devB"), SEND_USAGE);
        assert_eq!(ask(b, "send devB   "), SEND_USAGE);
        let long_peer = format!("send {} ping", "d".repeat(protocol::MAX_ID_LEN + 1));
        assert_eq!(ask(b, &long_peer), SEND_USAGE);
        let max_peer = "d".repeat(protocol::MAX_ID_LEN);
        assert_eq!(
            ask(b, &format!("send {max_peer} ping")),
            format!("sent to {max_peer}").as_str()
        );
    }

    #[test]
    fn parse_send_keeps_the_text_from_its_first_word() {
        let out = |peer, text| Request::Send { peer, text };
        assert_eq!(parse("send devB ping"), out("devB", "ping"));
        assert_eq!(
            parse(" Send devB  echo  a b \r\n"),
            out("devB", "echo  a b")
        );
        assert_eq!(parse("send 42 hello"), out("42", "hello"));
        for bad in ["send", "send devB", "send  ", "sendx devB ping"] {
            assert_eq!(parse(bad), Request::Other, "{bad:?}");
        }
        let long_peer = format!("send {} ping", "d".repeat(protocol::MAX_ID_LEN + 1));
        assert_eq!(parse(&long_peer), Request::Other);
    }

    #[test]
    fn parse_knows_commands_only_as_help_lists_them() {
        for line in [
            "help",
            "PING",
            " ping ",
            "uptime",
            "info",
            "echo x",
            "led",
            "led on",
            "LED Off",
            "led toggle",
            "led status",
        ] {
            assert_eq!(parse(line), Request::Command, "{line:?}");
        }
        for line in [
            "",
            "pong",
            "ping now",
            "uptime 1h02m03s",
            "info please",
            "echo",
            "led blink",
            "help me",
            "frob",
            "firmware 0.1.0 on fake",
            "usage: echo TEXT",
            "sent to devB",
        ] {
            assert_eq!(parse(line), Request::Other, "{line:?}");
        }
    }

    #[test]
    fn only_echo_and_led_replies_read_as_commands() {
        // What a device would answer if another device sent it the reply: the loop guard in
        // `device` drops exactly these replies to devices.
        let b = &mut Fake::default();
        for line in [
            "help",
            "ping",
            "uptime",
            "info",
            "echo",
            "led blink",
            "send",
            "frob",
        ] {
            assert_eq!(parse(&ask(b, line)), Request::Other, "{line:?}");
        }
        assert_eq!(parse(&ask(b, "led on")), Request::Command);
        assert_eq!(parse(&ask(b, "echo ping")), Request::Command);
    }

    #[test]
    fn echo_of_a_full_line_fits_a_frame() {
        let b = &mut Fake::default();
        let line = format!("echo {}", "ü".repeat(MAX_TEXT_LEN));
        let reply = ask(b, &line);
        assert!(reply.len() <= MAX_TEXT_LEN);
        assert!(reply.chars().all(|c| c == 'ü'));
    }
}
