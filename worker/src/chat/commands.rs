//! What a chat line means, and the exact text of every line the chat sends: pure
//! functions, no I/O, so the contract can be read and tested in one place.

use protocol::{MAX_ID_LEN, MAX_TEXT_LEN};

/// Longest nickname, in characters; keeps `/who` and chat lines readable.
pub const MAX_NICK_CHARS: usize = 32;

/// First line a telnet user gets.
pub const GREETING: &str = "Welcome to Switchboard chat.";
/// Asks for the nickname (again after a refusal).
pub const ASK_NICK: &str = "Please enter your nickname:";
/// Refusal for a text a device frame cannot carry.
pub const TOO_LONG_FOR_DEVICE: &str = "! message too long for a device (max 200 bytes)";
/// Answer to `/quit`, sent just before the gateway closes the connection.
pub const BYE: &str = "* bye";
/// `/help`.
pub const HELP: &[&str] = &[
    "* commands:",
    "*   /who        who is online (users and devices)",
    "*   /help       this list",
    "*   /quit       leave the chat",
    "*   UID:TEXT    private message to UID (a user's number or a device id)",
    "*   TEXT        message to everyone",
];

const _: () = assert!(MAX_TEXT_LEN == 200, "TOO_LONG_FOR_DEVICE names the limit");

/// A line typed after the nickname was accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Only whitespace: ignored.
    Empty,
    /// `/name args`; `name` includes the slash.
    Command {
        /// `/who`, `/help`, ...
        name: &'a str,
        /// The rest of the line, trimmed.
        args: &'a str,
    },
    /// `UID:TEXT` with a uid-shaped prefix. When `to` is not all digits and names nobody the
    /// chat knows, the chat treats the whole line as [`Input::Say`] instead (`note: ...`).
    Private {
        /// Recipient uid or device id.
        to: &'a str,
        /// Text after the first `:`, trimmed.
        text: &'a str,
    },
    /// Text for everyone (the trimmed line).
    Say(&'a str),
}

/// Splits a line into what it means.
pub fn parse(line: &str) -> Input<'_> {
    let line = line.trim();
    if line.is_empty() {
        return Input::Empty;
    }
    if line.starts_with('/') {
        let (name, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        return Input::Command {
            name,
            args: args.trim(),
        };
    }
    if let Some((to, text)) = line.split_once(':') {
        if is_uid_shape(to) {
            return Input::Private {
                to,
                text: text.trim(),
            };
        }
    }
    Input::Say(line)
}

/// Could `s` be a uid or a device id: 1..=24 bytes, printable, no whitespace, no `:`.
pub fn is_uid_shape(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
}

/// Human uids are decimal numbers; anything else is a device id.
pub fn is_user_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_digit())
}

/// A device id must be uid-shaped and not all digits (those are human uids).
pub fn is_device_id(s: &str) -> bool {
    is_uid_shape(s) && !is_user_uid(s)
}

/// Checks a nickname (already trimmed); `Err` is the `!` line to send back.
pub fn check_nick(nick: &str) -> Result<(), &'static str> {
    if nick.is_empty() {
        Err("! nickname must not be empty")
    } else if nick.chars().count() > MAX_NICK_CHARS {
        Err("! nickname is too long (max 32 characters)")
    } else if nick.contains(':') {
        Err("! nickname must not contain ':'")
    } else if nick.starts_with('/') {
        Err("! nickname must not start with '/'")
    } else if nick.chars().any(char::is_control) {
        Err("! nickname must not contain control characters")
    } else {
        Ok(())
    }
}

const _: () = assert!(MAX_NICK_CHARS == 32, "check_nick names the limit");

/// To the newcomer.
pub fn welcome(nick: &str, uid: &str) -> String {
    format!("* welcome {nick}, your uid is {uid}")
}

/// To everyone else when someone joins.
pub fn joined(nick: &str, uid: &str) -> String {
    format!("* {nick} ({uid}) joined")
}

/// To everyone else when someone leaves.
pub fn left(nick: &str, uid: &str) -> String {
    format!("* {nick} ({uid}) left")
}

/// A line said to everyone.
pub fn said(nick: &str, uid: &str, text: &str) -> String {
    // One allocation of the exact size, as in `whispered`.
    [nick, " (", uid, "): ", text].concat()
}

/// A private line, as its recipient sees it.
pub fn whispered(nick: &str, uid: &str, text: &str) -> String {
    // One allocation of the exact size; `format!` grows its buffer two or three times.
    [nick, " (", uid, ") -> you: ", text].concat()
}

/// The recipient does not exist (or is a user who left).
pub fn no_such_uid(uid: &str) -> String {
    format!("! no such uid: {uid}")
}

/// The message waits in the device's offline queue.
pub fn queued(device: &str) -> String {
    format!("* {device} is offline, message queued")
}

/// The device's offline queue is full.
pub fn queue_full(device: &str) -> String {
    format!("! offline queue of {device} is full, message not queued")
}

/// A `/x` the chat does not know.
pub fn unknown_command(name: &str) -> String {
    format!("! unknown command {name}, try /help")
}

/// `UID:` with nothing after it.
pub const EMPTY_PRIVATE: &str = "! empty message";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicknames_are_validated() {
        assert_eq!(check_nick("alice"), Ok(()));
        assert_eq!(check_nick("Ünïcödé name"), Ok(()));
        assert_eq!(check_nick(&"é".repeat(32)), Ok(()));
        assert_eq!(check_nick(""), Err("! nickname must not be empty"));
        assert_eq!(
            check_nick(&"x".repeat(33)),
            Err("! nickname is too long (max 32 characters)")
        );
        assert_eq!(check_nick("a:b"), Err("! nickname must not contain ':'"));
        assert_eq!(
            check_nick("/who"),
            Err("! nickname must not start with '/'")
        );
        assert_eq!(
            check_nick("a\u{7}b"),
            Err("! nickname must not contain control characters")
        );
    }

    #[test]
    fn private_messages_split_at_the_first_colon() {
        assert_eq!(
            parse("12:hello"),
            Input::Private {
                to: "12",
                text: "hello"
            }
        );
        assert_eq!(
            parse("  dev-1: a:b  "),
            Input::Private {
                to: "dev-1",
                text: "a:b"
            }
        );
        assert_eq!(parse("7:"), Input::Private { to: "7", text: "" });
        // A prefix with a space, or none at all, is not a uid.
        assert_eq!(parse("see this: x"), Input::Say("see this: x"));
        assert_eq!(parse(":x"), Input::Say(":x"));
        assert_eq!(
            parse(&format!("{}:x", "a".repeat(25))),
            Input::Say(&format!("{}:x", "a".repeat(25)))
        );
    }

    #[test]
    fn commands_and_plain_lines() {
        assert_eq!(
            parse("/who"),
            Input::Command {
                name: "/who",
                args: ""
            }
        );
        assert_eq!(
            parse("/nick  bob "),
            Input::Command {
                name: "/nick",
                args: "bob"
            }
        );
        assert_eq!(parse("hello world"), Input::Say("hello world"));
        assert_eq!(parse("   "), Input::Empty);
        assert_eq!(parse("\u{FFFD}\u{FFFD}"), Input::Say("\u{FFFD}\u{FFFD}"));
    }

    #[test]
    fn uid_kinds() {
        assert!(is_user_uid("42"));
        assert!(!is_user_uid("dev-42"));
        assert!(is_device_id("dev-42"));
        assert!(!is_device_id("42"));
        assert!(!is_device_id("a b"));
        assert!(!is_device_id(""));
    }

    #[test]
    fn lines_read_as_documented() {
        assert_eq!(welcome("al", "1"), "* welcome al, your uid is 1");
        assert_eq!(joined("al", "1"), "* al (1) joined");
        assert_eq!(left("al", "1"), "* al (1) left");
        assert_eq!(said("al", "1", "hi"), "al (1): hi");
        assert_eq!(whispered("al", "1", "hi"), "al (1) -> you: hi");
        assert_eq!(no_such_uid("9"), "! no such uid: 9");
        assert_eq!(queued("d1"), "* d1 is offline, message queued");
        assert_eq!(unknown_command("/x"), "! unknown command /x, try /help");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(line in ".*") {
            let _ = parse(&line);
            let _ = check_nick(line.trim());
        }
    }
}
