//! The floor of a two-process design — a benchmark yardstick, NOT Switchboard either.
//!
//! With `--relay ADDR`, the reference hands every chat line (to one user or to everyone) to
//! another process over one TCP connection and delivers it only when that process sends it
//! back; `--echo` makes a reference process that other process: a no-op "worker" that sends
//! back every byte it gets. Everything else stays the single-process reference's.
//!
//! What this pair costs over the plain reference is about the least any design that keeps
//! the business logic out of the connection-holding process can cost (one hop there and
//! back per message, batched, nothing decided on the other side). Switchboard's split is
//! measured against it as well as against the reference.
//!
//! Wire format, one record per line: `P TO FROM\t` or `B FROM\t`, then the chat line with
//! its CRLF (chat lines never hold a LF). Overflow policy: records wait in a bounded queue
//! ([`QUEUE`]); a line that finds it full is refused with `! server busy`, as Switchboard
//! refuses a message it cannot hand to a worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{shared, Chat, Line};

/// Records waiting for the relay connection.
const QUEUE: usize = 16 * 1024;
/// Longest record accepted back from the relay: a chat line (4 KiB at most) and its header.
const MAX_RECORD: usize = 8 * 1024;
/// Bytes gathered into one write to the relay.
const BATCH: usize = 64 * 1024;
/// How long to keep trying to reach the relay at start.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);
/// Told to a user whose line found the relay queue full.
pub const BUSY: &str = "! server busy, message not accepted";

/// The reference's end of the relay.
pub struct Relay {
    tx: mpsc::Sender<Vec<u8>>,
}

impl Relay {
    /// Connects to the echo process at `addr` and starts delivering what comes back.
    pub async fn connect(addr: SocketAddr, chat: Arc<Chat>) -> anyhow::Result<Relay> {
        let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
        let stream = loop {
            match TcpStream::connect(addr).await {
                Ok(stream) => break stream,
                Err(err) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(cause = %err, "relay not up yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => return Err(err).with_context(|| format!("connecting to relay {addr}")),
            }
        };
        stream.set_nodelay(true)?;
        let (rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(record) = rx.recv().await {
                buf.extend_from_slice(&record);
                while buf.len() < BATCH {
                    match rx.try_recv() {
                        Ok(record) => buf.extend_from_slice(&record),
                        Err(_) => break,
                    }
                }
                if let Err(err) = wr.write_all(&buf).await {
                    tracing::error!(cause = %err, "relay write failed");
                    return;
                }
                buf.clear();
            }
        });
        tokio::spawn(async move {
            let mut rd = BufReader::new(rd);
            let mut record = Vec::new();
            loop {
                record.clear();
                // Bounded: a record is one chat line and its header.
                let mut line = (&mut rd).take(MAX_RECORD as u64);
                match line.read_until(b'\n', &mut record).await {
                    Ok(0) | Err(_) => {
                        tracing::error!("relay closed");
                        return;
                    }
                    Ok(_) if record.last() != Some(&b'\n') => {
                        tracing::error!(len = record.len(), "relay record too long; relay dropped");
                        return;
                    }
                    Ok(_) => deliver(&chat, &record),
                }
            }
        });
        Ok(Relay { tx })
    }

    /// Sends `line` from `from` to `to` by way of the relay; `false` if the queue is full.
    pub fn private(&self, to: &str, from: u64, line: &str) -> bool {
        self.send(format!("P {to} {from}\t{line}"))
    }

    /// Sends `line` from `from` to everyone else by way of the relay; `false` if full.
    pub fn broadcast(&self, from: u64, line: &str) -> bool {
        self.send(format!("B {from}\t{line}"))
    }

    fn send(&self, record: String) -> bool {
        self.tx.try_send(record.into_bytes()).is_ok()
    }
}

/// Delivers one record that came back.
fn deliver(chat: &Chat, record: &[u8]) {
    let text = String::from_utf8_lossy(record);
    let Some((head, line)) = text.split_once('\t') else {
        return;
    };
    let line: Line = line.into();
    let mut fields = head.split(' ');
    match (fields.next(), fields.next(), fields.next()) {
        (Some("P"), Some(to), Some(from)) => {
            let from = from.parse().unwrap_or(0);
            let uid = to.parse().ok().filter(|_| !to.starts_with('0'));
            if !uid.is_some_and(|uid| chat.send_to(uid, &line)) {
                chat.send_to(from, &shared(&["! no such uid: ", to]));
            }
        }
        (Some("B"), Some(from), None) => chat.broadcast(from.parse().unwrap_or(0), &line),
        _ => tracing::warn!(record = %text, "unknown relay record"),
    }
}

/// The other process: sends back every byte on every connection, until the peer closes.
pub async fn echo(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let (mut rd, mut wr) = stream.into_split();
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
        });
    }
}
