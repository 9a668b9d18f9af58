//! Strips telnet commands (RFC 854: IAC sequences, option negotiation, subnegotiation)
//! from what a server sends, so tests compare only the text a user would see.

/// Telnet command parser state (RFC 854): strips IAC sequences from the server's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Iac {
    Data,
    /// After IAC.
    Command,
    /// After IAC WILL/WONT/DO/DONT: one option byte follows.
    Option,
    /// Inside IAC SB ... IAC SE.
    Sub,
    /// After IAC inside a subnegotiation.
    SubCommand,
}

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;

impl Iac {
    /// Feeds one byte; returns it if it is data.
    pub(super) fn feed(&mut self, b: u8) -> Option<u8> {
        let (next, out) = match (*self, b) {
            (Iac::Data, IAC) => (Iac::Command, None),
            (Iac::Data, b) => (Iac::Data, Some(b)),
            (Iac::Command, IAC) => (Iac::Data, Some(IAC)),
            (Iac::Command, SB) => (Iac::Sub, None),
            (Iac::Command, 251..=254) => (Iac::Option, None),
            (Iac::Command, _) => (Iac::Data, None),
            (Iac::Option, _) => (Iac::Data, None),
            (Iac::Sub, IAC) => (Iac::SubCommand, None),
            (Iac::Sub, _) => (Iac::Sub, None),
            (Iac::SubCommand, SE) => (Iac::Data, None),
            (Iac::SubCommand, _) => (Iac::Sub, None),
        };
        *self = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iac_sequences_are_stripped() {
        let input = b"a\xff\xfb\x01b\xff\xff\xff\xfa\x18\x01\xff\xf0c\xff\xf1d";
        let mut s = Iac::Data;
        let out: Vec<u8> = input.iter().filter_map(|&b| s.feed(b)).collect();
        assert_eq!(out, b"ab\xffcd");
    }
}
