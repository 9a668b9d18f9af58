//! Telnet line decoding: bytes from a telnet client in, text lines out.
//!
//! Strips option negotiation (the gateway negotiates nothing and answers none of it),
//! accepts CRLF, LF and CR NUL line ends, and turns invalid UTF-8 into U+FFFD. Memory is
//! bounded by `max_line`: a longer line yields [`TelnetItem::TooLong`] once and is skipped up
//! to the next line end. Writing to the client is not here; see `telnet_conn.rs`.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// "Interpret as command": starts every telnet command; doubled it is a literal 0xFF.
const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TelnetItem {
    /// A complete line, without its terminator.
    Line(String),
    /// The current line passed `max_line`; its bytes up to the next line end are dropped.
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ordinary text.
    Data,
    /// After IAC.
    Iac,
    /// After IAC WILL/WONT/DO/DONT: the next byte is the option.
    Option,
    /// Inside IAC SB ... IAC SE; the bytes are skipped.
    Sub,
    /// After IAC inside a subnegotiation.
    SubIac,
}

/// A [`Decoder`] of telnet lines.
#[derive(Debug)]
pub struct TelnetDecoder {
    max_line: usize,
    line: Vec<u8>,
    state: State,
    /// The previous data byte was CR: a following LF or NUL belongs to the same line end.
    after_cr: bool,
    /// The current line overflowed; skip to the next line end.
    discarding: bool,
}

impl TelnetDecoder {
    /// A decoder that refuses lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            line: Vec::new(),
            state: State::Data,
            after_cr: false,
            discarding: false,
        }
    }

    /// Consumes bytes from `input` up to and including the first that completes an item,
    /// and returns that item; `None` when `input` ran out first (it is then empty, and a
    /// partial line waits inside the decoder). Reads straight from any buffer: a connection
    /// needs none of its own while idle.
    pub fn next_item(&mut self, input: &mut &[u8]) -> Option<TelnetItem> {
        loop {
            self.take_text(input);
            let (&byte, rest) = input.split_first()?;
            *input = rest;
            if let Some(item) = self.push(byte) {
                return Some(item);
            }
        }
    }

    /// The common case in one step: a run of ordinary text that fits the line is copied at
    /// once (one allocation for a typical line, not one per doubling). Anything else (a
    /// command, a line end, a byte after CR, an overflow) is left to [`Self::push`].
    fn take_text(&mut self, input: &mut &[u8]) {
        if self.state != State::Data || self.after_cr || self.discarding {
            return;
        }
        let run = input
            .iter()
            .position(|b| matches!(*b, IAC | b'\r' | b'\n'))
            .unwrap_or(input.len());
        if run == 0 || self.line.len() + run > self.max_line {
            return;
        }
        let (text, rest) = input.split_at(run);
        self.line.extend_from_slice(text);
        *input = rest;
    }

    /// At the end of the input: a last line without a terminator still counts, unless it
    /// was too long.
    pub fn finish(&mut self) -> Option<TelnetItem> {
        if self.line.is_empty() || self.discarding {
            return None;
        }
        self.end_line()
    }

    /// Handles one byte; returns an item when the byte completes one.
    fn push(&mut self, byte: u8) -> Option<TelnetItem> {
        match self.state {
            State::Data => {}
            State::Iac => {
                self.state = match byte {
                    IAC => {
                        self.state = State::Data;
                        return self.data(IAC);
                    }
                    WILL..=DONT => State::Option,
                    SB => State::Sub,
                    _ => State::Data, // a 2-byte command (NOP, AYT, GA, ...): ignored
                };
                return None;
            }
            State::Option => {
                self.state = State::Data;
                return None;
            }
            State::Sub => {
                if byte == IAC {
                    self.state = State::SubIac;
                }
                return None;
            }
            State::SubIac => {
                self.state = if byte == SE { State::Data } else { State::Sub };
                return None;
            }
        }
        if byte == IAC {
            self.state = State::Iac;
            return None;
        }
        self.data(byte)
    }

    /// Handles one byte of text.
    fn data(&mut self, byte: u8) -> Option<TelnetItem> {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        match byte {
            b'\n' | 0 if after_cr => None,
            b'\r' => {
                self.after_cr = true;
                self.end_line()
            }
            b'\n' => self.end_line(),
            _ if self.discarding => None,
            _ if self.line.len() >= self.max_line => {
                self.discarding = true;
                self.line = Vec::new();
                Some(TelnetItem::TooLong)
            }
            _ => {
                self.line.push(byte);
                None
            }
        }
    }

    fn end_line(&mut self) -> Option<TelnetItem> {
        if std::mem::replace(&mut self.discarding, false) {
            return None;
        }
        let line = std::mem::take(&mut self.line);
        // Valid UTF-8 (nearly always) becomes the String without a copy.
        let text = String::from_utf8(line)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Some(TelnetItem::Line(text))
    }
}

impl Decoder for TelnetDecoder {
    type Item = TelnetItem;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<TelnetItem>, std::io::Error> {
        let mut input: &[u8] = src;
        let item = self.next_item(&mut input);
        let used = src.len() - input.len();
        src.advance(used);
        Ok(item)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<TelnetItem>, std::io::Error> {
        if let Some(item) = self.decode(src)? {
            return Ok(Some(item));
        }
        Ok(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(max_line: usize, chunks: &[&[u8]]) -> Vec<TelnetItem> {
        let mut decoder = TelnetDecoder::new(max_line);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(item) = decoder.decode(&mut buf).expect("never fails") {
                out.push(item);
            }
        }
        while let Some(item) = decoder.decode_eof(&mut buf).expect("never fails") {
            out.push(item);
        }
        out
    }

    fn line(text: &str) -> TelnetItem {
        TelnetItem::Line(text.to_owned())
    }

    #[test]
    fn line_ends() {
        let items = decode_all(100, &[b"a\r\nb\nc\r\0d\r\n"]);
        assert_eq!(items, vec![line("a"), line("b"), line("c"), line("d")]);
    }

    #[test]
    fn crlf_split_across_reads_is_one_line_end() {
        let items = decode_all(100, &[b"a\r", b"\nb\r", b"\0", b"\n"]);
        assert_eq!(items, vec![line("a"), line("b"), line("")]);
    }

    #[test]
    fn negotiation_is_stripped() {
        // IAC DO ECHO, IAC WILL SGA, IAC SB TTYPE IS "xterm" IAC SE, IAC NOP, IAC IAC.
        let bytes: &[u8] =
            b"\xff\xfd\x01he\xff\xfb\x03llo\xff\xfa\x18\x00xterm\xff\xf0 w\xff\xf1o\xff\xffx\r\n";
        let items = decode_all(100, &[bytes]);
        assert_eq!(items, vec![line("hello wo\u{fffd}x")]);
    }

    #[test]
    fn negotiation_split_across_reads() {
        let items = decode_all(
            100,
            &[b"a\xff", b"\xfd", b"\x01b\xff\xfa", b"xx\xff", b"\xf0c\n"],
        );
        assert_eq!(items, vec![line("abc")]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let items = decode_all(100, &[b"caf\xc3\xa9 \xc3\x28 \x80\n"]);
        assert_eq!(items, vec![line("café \u{fffd}( \u{fffd}")]);
    }

    #[test]
    fn too_long_line_is_reported_once_and_skipped() {
        let long = vec![b'x'; 50];
        let items = decode_all(10, &[b"ok\n", &long, &long, b"\r\nnext\n"]);
        assert_eq!(items, vec![line("ok"), TelnetItem::TooLong, line("next")]);
    }

    #[test]
    fn line_of_exactly_max_is_accepted() {
        let items = decode_all(3, &[b"abc\nabcd\n"]);
        assert_eq!(items, vec![line("abc"), TelnetItem::TooLong]);
    }

    #[test]
    fn unterminated_last_line_counts_at_eof() {
        assert_eq!(decode_all(10, &[b"a\nbye"]), vec![line("a"), line("bye")]);
    }

    proptest! {
        #[test]
        fn the_text_fast_path_decodes_as_byte_by_byte(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(IAC), Just(0u8), Just(b'a')],
                0..300,
            ),
            max in 1usize..40,
        ) {
            let (mut fast, mut slow) = (TelnetDecoder::new(max), TelnetDecoder::new(max));
            let mut input = &bytes[..];
            let mut got = Vec::new();
            while let Some(item) = fast.next_item(&mut input) {
                got.push(item);
            }
            let want: Vec<TelnetItem> = bytes.iter().filter_map(|&b| slow.push(b)).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(fast.line, slow.line);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..32),
        ) {
            let mut decoder = TelnetDecoder::new(16);
            let mut buf = BytesMut::new();
            for chunk in &chunks {
                buf.extend_from_slice(chunk);
                while let Some(item) = decoder.decode(&mut buf).expect("never fails") {
                    if let TelnetItem::Line(text) = item {
                        // 16 bytes at most, each at worst one U+FFFD (3 bytes).
                        prop_assert!(text.len() <= 48);
                    }
                }
                prop_assert!(buf.is_empty());
                prop_assert!(decoder.line.len() <= 16);
            }
        }

        #[test]
        fn lines_round_trip(
            lines in proptest::collection::vec("[^\r\n\u{0}]{0,40}", 0..8),
            ends in proptest::collection::vec(0usize..3, 8),
            cut in 0usize..400,
        ) {
            let mut wire = Vec::new();
            for (text, end) in lines.iter().zip(&ends) {
                wire.extend_from_slice(b"\xff\xfb\x01"); // IAC WILL ECHO between lines
                wire.extend_from_slice(text.as_bytes());
                wire.extend_from_slice([&b"\r\n"[..], b"\n", b"\r\0"][*end]);
            }
            let cut = cut.min(wire.len());
            let (a, b) = wire.split_at(cut);
            let items = decode_all(1000, &[a, b]);
            let expected: Vec<TelnetItem> = lines.iter().map(|l| line(l)).collect();
            prop_assert_eq!(items, expected);
        }
    }
}
