//! Chat commands: the text of a direct message in, the reply text out. Pure functions, no
//! I/O and no clock (the caller passes the uptime), so the host tests cover every answer.
//! Who gets the reply and when it is sent is [`crate::device`]'s business.

use core::fmt::Write;

use protocol::Text;

use crate::text::{prefix, write_duration, TextWriter};
use crate::{Board, Config, Stats};

/// The reply to `help`.
pub const HELP: &str = "commands: help, ping, echo TEXT, uptime, led on|off|toggle|status, info";
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

/// The reply to the chat line `line`; every line gets one, an unknown command a hint.
/// `led` commands switch the board's LED before answering.
pub fn answer<B: Board>(line: &str, board: &mut B, env: &Env<'_>) -> Text {
    let line = line.trim();
    let (word, arg) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
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
    fn echo_of_a_full_line_fits_a_frame() {
        let b = &mut Fake::default();
        let line = format!("echo {}", "ü".repeat(MAX_TEXT_LEN));
        let reply = ask(b, &line);
        assert!(reply.len() <= MAX_TEXT_LEN);
        assert!(reply.chars().all(|c| c == 'ü'));
    }
}
