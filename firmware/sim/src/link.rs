//! A std `TcpStream` as `embedded_io_async::{Read, Write}` halves for `app::run`.
//!
//! Reads: a thread blocks on the socket and fills a bounded inbox that [`TcpRx`] drains;
//! reading is cancel-safe (bytes wait in the inbox) and a full inbox stops the thread, so
//! TCP pushes back on the gateway. Writes block the executor: to the loopback gateway they
//! finish at once, and a gateway that stops reading fails them after [`WRITE_TIMEOUT`].
//! Dropping [`TcpRx`] shuts the socket down and ends the thread.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::thread;
use std::time::Duration;

use embedded_io_async::ErrorKind;

/// Inbox bound: a few dozen frames; beyond it the reader thread waits.
const INBOX: usize = 4096;
/// Longest a write may block before the link counts as failed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    bytes: VecDeque<u8>,
    waker: Option<Waker>,
    /// Set by the thread when the socket ended: `None` for EOF, else the error.
    ended: Option<Option<ErrorKind>>,
    /// Set when [`TcpRx`] is dropped: the thread stops.
    closed: bool,
}

#[derive(Default)]
struct Inbox {
    state: Mutex<State>,
    room: Condvar,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: take it anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receiving half.
pub struct TcpRx {
    inbox: Arc<Inbox>,
    stream: TcpStream,
}

/// The sending half.
pub struct TcpTx {
    stream: TcpStream,
}

/// Splits a connected stream into halves and starts the reader thread.
pub fn split(stream: TcpStream) -> io::Result<(TcpRx, TcpTx)> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let inbox = Arc::new(Inbox::default());
    let reader = stream.try_clone()?;
    let tx = TcpTx {
        stream: stream.try_clone()?,
    };
    let pump_inbox = Arc::clone(&inbox);
    thread::Builder::new()
        .name("sim-tcp-rx".into())
        .spawn(move || pump(reader, &pump_inbox))?;
    Ok((TcpRx { inbox, stream }, tx))
}

/// The reader thread: socket to inbox until EOF, an error, or the receiver is dropped.
fn pump(mut stream: TcpStream, inbox: &Inbox) {
    let mut buf = [0u8; 1024];
    loop {
        let read = stream.read(&mut buf);
        let mut state = inbox.lock();
        match read {
            Ok(0) => state.ended = Some(None),
            Ok(n) => {
                while state.bytes.len() + n > INBOX && !state.closed {
                    state = inbox
                        .room
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                state.bytes.extend(buf.get(..n).unwrap_or_default());
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => state.ended = Some(Some(kind(&err))),
        }
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        if state.closed || state.ended.is_some() {
            return;
        }
    }
}

fn kind(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::ConnectionReset => ErrorKind::ConnectionReset,
        io::ErrorKind::ConnectionAborted => ErrorKind::ConnectionAborted,
        io::ErrorKind::BrokenPipe => ErrorKind::BrokenPipe,
        io::ErrorKind::NotConnected => ErrorKind::NotConnected,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::TimedOut,
        _ => ErrorKind::Other,
    }
}

impl Drop for TcpRx {
    fn drop(&mut self) {
        self.inbox.lock().closed = true;
        self.inbox.room.notify_all();
        // Unblocks the thread's read; the socket may be gone already.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl embedded_io_async::ErrorType for TcpRx {
    type Error = ErrorKind;
}

impl embedded_io_async::ErrorType for TcpTx {
    type Error = ErrorKind;
}

impl embedded_io_async::Read for TcpRx {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| {
            let mut state = self.inbox.lock();
            if !state.bytes.is_empty() {
                let n = buf.len().min(state.bytes.len());
                for (slot, byte) in buf.iter_mut().zip(state.bytes.drain(..n)) {
                    *slot = byte;
                }
                self.inbox.room.notify_all();
                return Poll::Ready(Ok(n));
            }
            match state.ended {
                Some(None) => Poll::Ready(Ok(0)),
                Some(Some(kind)) => Poll::Ready(Err(kind)),
                None => {
                    state.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl embedded_io_async::Write for TcpTx {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        loop {
            match self.stream.write(buf) {
                Ok(n) => return Ok(n),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(kind(&err)),
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}
