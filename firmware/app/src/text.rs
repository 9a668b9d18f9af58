//! Bounded strings: cutting text to a protocol field on a char boundary, and a
//! `core::fmt::Write` sink that truncates instead of failing, so a long reply is cut, not lost.

use core::fmt;

use protocol::{Text, MAX_TEXT_LEN};

/// The longest prefix of `s` that fits `max` bytes and ends on a char boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1; // terminates: 0 is always a boundary
    }
    s.get(..end).unwrap_or_default()
}

/// `s` cut to `N` bytes on a char boundary.
pub fn truncated<const N: usize>(s: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    // Cannot fail: the prefix is at most N bytes.
    let _ = out.push_str(prefix(s, N));
    out
}

/// A chat text being written; whatever does not fit [`MAX_TEXT_LEN`] is dropped.
#[derive(Debug, Default)]
pub struct TextWriter(Text);

impl TextWriter {
    /// An empty text.
    pub fn new() -> Self {
        Self(Text::new())
    }

    /// The text written so far.
    pub fn finish(self) -> Text {
        self.0
    }
}

impl fmt::Write for TextWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = MAX_TEXT_LEN - self.0.len();
        // Cannot fail: the prefix fits the room left.
        let _ = self.0.push_str(prefix(s, room));
        Ok(())
    }
}

/// Writes a duration as `12s`, `4m05s`, `1h02m03s` or `3d04h05m06s`.
pub fn write_duration(w: &mut impl fmt::Write, secs: u64) -> fmt::Result {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        write!(w, "{d}d{h:02}h{m:02}m{s:02}s")
    } else if h > 0 {
        write!(w, "{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        write!(w, "{m}m{s:02}s")
    } else {
        write!(w, "{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn prefix_respects_char_boundaries() {
        assert_eq!(prefix("héllo", 2), "h");
        assert_eq!(prefix("héllo", 3), "hé");
        assert_eq!(prefix("abc", 10), "abc");
        assert_eq!(prefix("€", 2), "");
        assert_eq!(truncated::<4>("abcdef").as_str(), "abcd");
    }

    #[test]
    fn writer_truncates_at_max_text_len() {
        let mut w = TextWriter::new();
        for _ in 0..100 {
            write!(w, "ü€").unwrap();
        }
        let text = w.finish();
        assert!(text.len() <= MAX_TEXT_LEN);
        assert!(text.len() > MAX_TEXT_LEN - 4);
        assert!(text.ends_with('€') || text.ends_with('ü'));
    }

    #[test]
    fn durations() {
        let show = |secs| {
            let mut w = TextWriter::new();
            write_duration(&mut w, secs).unwrap();
            w.finish()
        };
        assert_eq!(show(0), "0s");
        assert_eq!(show(12), "12s");
        assert_eq!(show(245), "4m05s");
        assert_eq!(show(3_723), "1h02m03s");
        assert_eq!(show(273_906), "3d04h05m06s");
    }
}
