//! A chat user as the load generator plays it: connect (from a chosen source address),
//! log in with the telnet chat contract, then read lines and write lines. Lean on purpose:
//! thousands of these run in the load generator's process.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

/// Longest line read from a server: far past any chat line (the servers cut at 4 KiB), so a
/// server that never ends its line is an error, not an ever-growing buffer.
const MAX_LINE: usize = 64 * 1024;
/// The prompt's text (the last line of the greeting).
pub const PROMPT: &str = "Please enter your nickname:";
/// The welcome line's start; the uid follows.
const WELCOME: &str = "* welcome ";
const YOUR_UID: &str = ", your uid is ";

/// Why a user could not get in.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connect, read or write failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Nothing (or not the expected line) within the time allowed.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The server closed the connection.
    #[error("closed by the server while waiting for {0}")]
    Closed(&'static str),
}

/// Connects to `server`, from `source` if given (spreads many connections over several
/// loopback addresses, past one address's ephemeral ports).
pub async fn connect(server: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = match server {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One connection's halves, reading by line.
pub struct Lines {
    /// Incoming lines.
    pub reader: LineReader,
    /// Outgoing lines.
    pub writer: OwnedWriteHalf,
}

impl Lines {
    /// Wraps a connected stream. The read buffer is small: most lines are short, and idle
    /// connections should cost the generator little too.
    pub fn new(stream: TcpStream) -> Self {
        let (reader, writer) = stream.into_split();
        Self {
            reader: LineReader {
                reader: BufReader::with_capacity(1024, reader),
                buf: Vec::new(),
            },
            writer,
        }
    }

    /// The next line; see [`LineReader::line`].
    pub async fn line(&mut self) -> std::io::Result<Option<String>> {
        self.reader.line().await
    }

    /// Reads lines until one satisfies `want`, within `limit`.
    pub async fn until(
        &mut self,
        what: &'static str,
        limit: Duration,
        mut want: impl FnMut(&str) -> bool,
    ) -> Result<String, ClientError> {
        let wait = async {
            loop {
                match self.line().await? {
                    Some(line) if want(&line) => return Ok(line),
                    Some(_) => continue,
                    None => return Err(ClientError::Closed(what)),
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| ClientError::Timeout(what))?
    }

    /// Sends `text` and a CRLF.
    pub async fn send(&mut self, text: &str) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(text.len() + 2);
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.writer.write_all(&bytes).await
    }

    /// Waits for the prompt, sends `nick`, waits for the welcome; returns the uid.
    pub async fn login(&mut self, nick: &str, limit: Duration) -> Result<String, ClientError> {
        self.until("the nickname prompt", limit, |l| l.contains(PROMPT))
            .await?;
        self.send(nick).await?;
        let welcome = self
            .until("the welcome line", limit, |l| l.starts_with(WELCOME))
            .await?;
        Ok(welcome
            .split_once(YOUR_UID)
            .map(|(_, uid)| uid.trim().to_owned())
            .unwrap_or_default())
    }
}

/// The reading half alone, for a receiver task.
pub struct LineReader {
    reader: BufReader<OwnedReadHalf>,
    buf: Vec<u8>,
}

impl LineReader {
    /// The next line without its end and telnet commands; `None` when the server closed.
    pub async fn line(&mut self) -> std::io::Result<Option<String>> {
        self.buf.clear();
        let mut bounded = (&mut self.reader).take(MAX_LINE as u64);
        let n = bounded.read_until(b'\n', &mut self.buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if n == MAX_LINE && self.buf.last() != Some(&b'\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the server sent a line over {MAX_LINE} bytes"),
            ));
        }
        Ok(Some(text(&self.buf)))
    }
}

/// A line's text: line end trimmed, telnet commands (IAC ...) dropped, UTF-8 lossy.
fn text(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0xFF {
            // IAC WILL/WONT/DO/DONT take an option byte; other commands stand alone.
            let option = matches!(bytes.get(i + 1), Some(0xFB..=0xFE));
            i += if option { 3 } else { 2 };
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    while matches!(out.last(), Some(b'\r' | b'\n')) {
        out.pop();
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::text;

    #[test]
    fn lines_lose_their_ends_and_telnet_commands() {
        assert_eq!(text(b"hi\r\n"), "hi");
        assert_eq!(text(b"\xff\xf1hi\n"), "hi");
        assert_eq!(text(b"a\xff\xfb\x01b\r\n"), "ab");
    }
}
