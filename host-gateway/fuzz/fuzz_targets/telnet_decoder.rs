//! Feeds arbitrary bytes, in arbitrary chunk splits, to the gateway's `TelnetDecoder` the way
//! `FramedRead` does (`decode` until `None` after each read, `decode_eof` at the end). Checks
//! that nothing panics or errors, that chunking never changes the items, that no line holds a
//! line end or more characters than `max_line` (one input byte makes at most one character,
//! U+FFFD included), and, for streams without IAC (0xFF), that the items are what a plain
//! split at CRLF / CR NUL / CR / LF gives.
//!
//! Input layout: byte 0 is `max_line` (small, so `TooLong` is common); byte 1's low 4 bits say
//! how many of the next bytes are chunk sizes (cycled; 0 means 1); the rest is the stream.
#![no_main]

use bytes::BytesMut;
use gateway::telnet::{TelnetDecoder, TelnetItem};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// "Interpret as command": the byte that starts telnet negotiation.
const IAC: u8 = 255;

fuzz_target!(|data: &[u8]| {
    let [max_line, head, rest @ ..] = data else {
        return;
    };
    let max_line = usize::from(*max_line);
    let (sizes, stream) = rest.split_at(usize::from(head & 0x0f).min(rest.len()));

    let whole = decode(max_line, &[stream]);
    let chunks = chunked(sizes, stream);
    assert_eq!(
        decode(max_line, &chunks),
        whole,
        "chunking changed the items"
    );
    for item in &whole {
        if let TelnetItem::Line(line) = item {
            assert!(!line.contains(['\r', '\n']), "a line end inside {line:?}");
            assert!(
                line.chars().count() <= max_line,
                "{line:?} is over {max_line}"
            );
        }
    }
    if !stream.contains(&IAC) {
        assert_eq!(whole, split_lines(max_line, stream));
    }
});

/// Every item the decoder yields for `chunks` arriving one read at a time, then at EOF.
fn decode(max_line: usize, chunks: &[&[u8]]) -> Vec<TelnetItem> {
    let mut decoder = TelnetDecoder::new(max_line);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(item) = decoder.decode(&mut buf).expect("decode never fails") {
            items.push(item);
        }
    }
    while let Some(item) = decoder
        .decode_eof(&mut buf)
        .expect("decode_eof never fails")
    {
        items.push(item);
    }
    assert!(buf.is_empty(), "{} bytes left undecoded at EOF", buf.len());
    items
}

/// `stream` cut into pieces of the sizes in `sizes`, cycled (0 counts as 1).
fn chunked<'a>(sizes: &[u8], stream: &'a [u8]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![stream];
    }
    let mut chunks = Vec::new();
    let mut rest = stream;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(usize::from(size).clamp(1, rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// The items for an IAC-free stream, written as a split rather than a state machine: lines
/// end at CRLF, CR NUL, a lone CR or a lone LF; a line reaching its `max_line + 1`th byte is
/// `TooLong` once and skipped to its end; an unterminated last line counts unless too long.
fn split_lines(max_line: usize, stream: &[u8]) -> Vec<TelnetItem> {
    let mut items = Vec::new();
    let mut line = Vec::new();
    let mut too_long = false;
    let mut bytes = stream.iter().copied().peekable();
    while let Some(byte) = bytes.next() {
        match byte {
            b'\r' | b'\n' => {
                if byte == b'\r' {
                    bytes.next_if(|b| matches!(b, b'\n' | 0));
                }
                if !too_long {
                    items.push(TelnetItem::Line(lossy(&line)));
                }
                line.clear();
                too_long = false;
            }
            _ if too_long => {}
            _ if line.len() == max_line => {
                too_long = true;
                line.clear();
                items.push(TelnetItem::TooLong);
            }
            _ => line.push(byte),
        }
    }
    if !line.is_empty() && !too_long {
        items.push(TelnetItem::Line(lossy(&line)));
    }
    items
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
