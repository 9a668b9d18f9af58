//! Turns a device's defmt byte stream into readable log lines, inside the harness.
//!
//! QEMU writes the firmware's semihosting output (defmt frames) to its stdout; a thread
//! keeps the raw bytes (for `defmt-print` by hand) and appends each decoded frame as a
//! line to a text log, stamped with the host's wall clock so it lines up with the
//! gateway's log. No `defmt-print` install is needed. Frames the table cannot decode are
//! logged as such; the stream decoder resynchronises on its own.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use defmt_decoder::{DecodeError, StreamDecoder, Table};

/// Starts a thread copying `input` to `raw` and its decoded frames to `text`, until EOF.
pub fn spawn_decoder(
    input: impl Read + Send + 'static,
    table: Option<&'static Table>,
    raw: &Path,
    text: &Path,
) -> io::Result<JoinHandle<()>> {
    let raw = File::create(raw)?;
    let text = File::options().create(true).append(true).open(text)?;
    std::thread::Builder::new()
        .name("defmt decoder".into())
        .spawn(move || decode_stream(input, table, raw, text))
}

fn decode_stream(mut input: impl Read, table: Option<&Table>, mut raw: File, mut text: File) {
    let mut decoder = table.map(Lines::new);
    let mut buf = [0u8; 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let bytes = buf.get(..n).unwrap_or_default();
        let _ = raw.write_all(bytes);
        let Some(decoder) = decoder.as_mut() else {
            let _ = writeln!(text, "{} [raw] {n} bytes (no defmt table)", stamp());
            continue;
        };
        for line in decoder.feed(bytes) {
            // One write per line: the file is shared with QEMU's own stderr.
            let _ = text.write_all(format!("{} {line}\n", stamp()).as_bytes());
        }
    }
}

/// Decodes a whole recorded stream (a `.defmt` file) into lines.
pub fn decode_all(table: &Table, bytes: &[u8]) -> Vec<String> {
    Lines::new(table).feed(bytes)
}

/// A stream decoder that yields display lines and survives malformed frames.
struct Lines<'t> {
    decoder: Box<dyn StreamDecoder + Send + Sync + 't>,
    /// Raw (unframed) encoding cannot find the next frame after a bad one: give up then.
    lost: bool,
    can_recover: bool,
}

impl<'t> Lines<'t> {
    fn new(table: &'t Table) -> Self {
        Self {
            decoder: table.new_stream_decoder(),
            lost: false,
            can_recover: table.encoding().can_recover(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        if self.lost {
            return lines;
        }
        self.decoder.received(bytes);
        loop {
            match self.decoder.decode() {
                Ok(frame) => lines.push(frame.display(false).to_string()),
                Err(DecodeError::UnexpectedEof) => return lines,
                Err(DecodeError::Malformed) if self.can_recover => {
                    lines.push("[defmt] malformed frame skipped".into());
                }
                Err(DecodeError::Malformed) => {
                    self.lost = true;
                    lines.push(
                        "[defmt] malformed frame; raw encoding cannot resync, decoding stops"
                            .into(),
                    );
                    return lines;
                }
            }
        }
    }
}

/// `HH:MM:SS.mmm` UTC, the gateway log's clock.
fn stamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let s = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        now.subsec_millis()
    )
}
