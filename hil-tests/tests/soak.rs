//! Soak: worker reloads lose nothing (issue #4).
//!
//! Thirty telnet users and three simulated devices (two over TCP, one on a pty serial port)
//! chat at a steady rate for 45 s while the worker is replaced every few seconds: by
//! SIGTERM and a fresh start (a reload), and once by SIGKILL (a crash). Every message is
//! unique and tracked by a [`Ledger`]; after a drain the test prints one line of counts and
//! holds the run to the delivery guarantee (docs/ARCHITECTURE.md, "Delivery"):
//! - no telnet connection is dropped;
//! - every accepted message arrives, to its recipient (a `!` line refuses a message: it
//!   was not accepted and is counted apart);
//! - a message arrives twice only around the SIGKILL (or a reload whose worker had to be
//!   killed after all); graceful reloads hand over without duplicates.
//!
//! Sized for a 2-core CI machine running debug builds: about 200 lines a second in all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hil::harness::{Cluster, ClusterOptions, Disruption, Ledger, Matcher, Proc, TelnetUser};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::Instant;

/// Users logged in; each sends to random others and to the devices.
const USERS: usize = 30;
/// Devices over TCP; each answers `echo X` with `X`.
const TCP_DEVICES: [&str; 2] = ["soak-tcp1", "soak-tcp2"];
/// A device on a pty, opened by the gateway as a serial port.
const PTY_DEVICE: &str = "soak-pty";
/// How long the users send.
const LOAD: Duration = Duration::from_secs(45);
/// Each user sends one message per period (150 ms: ~200 messages/s from 30 users).
const PERIOD: Duration = Duration::from_millis(150);
/// Every this many messages of a user, one goes to a device instead of a user.
const DEVICE_EVERY: u64 = 5;
/// Time between the end of one worker replacement and the start of the next.
const RELOAD_EVERY: Duration = Duration::from_secs(4);
/// Which replacement (counted from 1) is a SIGKILL instead of a reload: mid-run, so there is
/// load before and after it.
const KILL_AT: usize = 4;
/// The last replacement starts at least this long before the load ends, so messages sent
/// into it have a working worker to go to while the load still runs.
const QUIET_END: Duration = Duration::from_secs(3);
/// How long messages still in flight at the end may take.
const DRAIN: Duration = Duration::from_secs(15);

type Shared = Arc<Mutex<Ledger>>;

fn lock(l: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_reloads_and_a_crash_lose_no_message() {
    let setup = Instant::now();
    let mut c = Cluster::start_with(ClusterOptions::default().serial(PTY_DEVICE)).await;
    let (_devices, users) = start_devices_and_users(&mut c).await;
    let setup = setup.elapsed();
    let uids: Arc<Vec<String>> = Arc::new(users.iter().map(|u| u.uid().to_owned()).collect());

    let clock = Instant::now();
    let ledger: Shared = Arc::new(Mutex::new(Ledger::new(clock)));
    let seq = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = watch::channel(false);
    let load_end = clock + LOAD;
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for (i, user) in users.into_iter().enumerate() {
        let (reader, writer, _, _) = user.into_split();
        readers.push(tokio::spawn(read(
            i,
            reader,
            ledger.clone(),
            done_rx.clone(),
        )));
        let sender = Sender {
            me: i,
            uids: uids.clone(),
            seq: seq.clone(),
            ledger: ledger.clone(),
        };
        senders.push(tokio::spawn(sender.run(writer, load_end)));
    }

    disrupt(&mut c, &ledger, load_end).await;

    // Writers stay open to the end: a closed one would log its user out mid-drain.
    let mut writers = Vec::new();
    for s in senders {
        writers.push(s.await.expect("a sender task panicked"));
    }
    let drain_start = Instant::now();
    let drain_end = drain_start + DRAIN;
    while lock(&ledger).outstanding() > 0 && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = drain_start.elapsed();
    // A duplicate may trail its first copy: give stragglers a moment before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = done_tx.send(true);
    for r in readers {
        r.await.expect("a reader task panicked");
    }
    c.assert_alive();
    drop(writers);

    let ledger = lock(&ledger);
    let r = ledger.report();
    println!("{r}");
    println!(
        "soak: setup {:.1}s, load {}s, drain {:.1}s",
        setup.as_secs_f64(),
        LOAD.as_secs(),
        drain.as_secs_f64()
    );
    let why = || format!("{r}\n{}", ledger.details());
    assert!(
        r.kills == 1 && r.reloads >= 3,
        "too few disruptions: {}",
        why()
    );
    let floor = (USERS as u64) * LOAD.as_millis() as u64 / PERIOD.as_millis() as u64 / 2;
    assert!(r.sent >= floor, "sent under {floor}: {}", why());
    assert_eq!(
        r.forced_reloads,
        0,
        "a worker did not exit cleanly on SIGTERM: {}",
        why()
    );
    assert_eq!(r.reconnects, 0, "telnet connections dropped: {}", why());
    assert_eq!(r.misrouted + r.unexpected, 0, "surprise lines: {}", why());
    assert_eq!(r.lost, 0, "accepted messages lost: {}", why());
    assert_eq!(
        r.duplicates_unexcused,
        0,
        "duplicates away from the kill: {}",
        why()
    );
}

/// Starts the devices, waits until all joined, then logs in every user.
async fn start_devices_and_users(c: &mut Cluster) -> (Vec<Proc>, Vec<TelnetUser>) {
    let mut first = c.user("soak1").await;
    let mut devices: Vec<Proc> = TCP_DEVICES.iter().map(|d| c.start_tcp_device(d)).collect();
    devices.push(c.start_pty_device(PTY_DEVICE));
    let mut waiting: Vec<String> = all_devices()
        .map(|d| format!("* {d} ({d}) joined"))
        .collect();
    while !waiting.is_empty() {
        let names = waiting.clone();
        let found = first
            .expect_line(Matcher::pred("a device joining", move |l| {
                names.iter().any(|n| n == l)
            }))
            .await;
        waiting.retain(|w| *w != found.line);
    }
    let c: &Cluster = c;
    let rest = futures::future::join_all((2..=USERS).map(|i| async move {
        let nick = format!("soak{i}");
        c.user(&nick).await
    }));
    let mut users = vec![first];
    users.extend(rest.await);
    (devices, users)
}

fn all_devices() -> impl Iterator<Item = &'static str> {
    TCP_DEVICES.into_iter().chain([PTY_DEVICE])
}

/// Replaces the worker every [`RELOAD_EVERY`] until the load is about to end: reloads, and
/// one SIGKILL.
async fn disrupt(c: &mut Cluster, ledger: &Shared, load_end: Instant) {
    let mut n = 0;
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        if Instant::now() + QUIET_END >= load_end {
            break;
        }
        n += 1;
        let start = Instant::now();
        let kind = if n == KILL_AT {
            c.kill_worker().await;
            Disruption::Kill
        } else {
            let worker = c.worker().expect("a worker runs between disruptions");
            let status = worker.stop().await;
            c.stop_worker().await; // already exited: only forgets it
            if status.success() {
                Disruption::Reload
            } else {
                Disruption::ForcedReload
            }
        };
        c.start_worker().await;
        lock(ledger).disruption(kind, start, Instant::now());
    }
    tokio::time::sleep_until(load_end).await;
}

/// One user's sending half.
struct Sender {
    me: usize,
    uids: Arc<Vec<String>>,
    /// Numbers every message of the run, so every text is unique.
    seq: Arc<AtomicU64>,
    ledger: Shared,
}

impl Sender {
    /// Sends one message per [`PERIOD`] until `end`; every [`DEVICE_EVERY`]th goes to a
    /// device, the others to a random other user. Returns the writer, still open.
    async fn run(self, mut writer: OwnedWriteHalf, end: Instant) -> OwnedWriteHalf {
        let n = self.uids.len();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (self.me as u64 + 1));
        // Spread the users over the period instead of sending in bursts.
        let offset = PERIOD * self.me as u32 / n as u32;
        let mut pace = tokio::time::interval_at(Instant::now() + offset, PERIOD);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let devices: Vec<&str> = all_devices().collect();
        let mut count = 0u64;
        loop {
            pace.tick().await;
            if Instant::now() >= end {
                return writer;
            }
            count += 1;
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let (to, text, line) = if count.is_multiple_of(DEVICE_EVERY) {
                let device = devices[(rng.next() % devices.len() as u64) as usize];
                let text = format!("seq-{seq}");
                // The device's answer comes back to the asker.
                (self.me, text.clone(), format!("{device}:echo {text}"))
            } else {
                let to = (self.me + 1 + (rng.next() % (n as u64 - 1)) as usize) % n;
                let text = format!("seq-{seq} from-{}", self.me);
                (to, text.clone(), format!("{}:{text}", self.uids[to]))
            };
            lock(&self.ledger).sent(self.me, to, text);
            if writer
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .is_err()
            {
                // The reader sees the close and counts it.
                return writer;
            }
        }
    }
}

/// Reads user `me`'s lines until `done`: private messages and device answers are
/// deliveries, `!` lines refusals, everything else (joins, notices) is ignored.
async fn read(me: usize, reader: OwnedReadHalf, ledger: Shared, mut done: watch::Receiver<bool>) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = tokio::select! {
            r = reader.read_until(b'\n', &mut buf) => r,
            _ = done.wait_for(|d| *d) => return,
        };
        if !matches!(read, Ok(n) if n > 0) {
            lock(&ledger).dropped(me);
            return;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some((_, text)) = line.split_once(" -> you: ") {
            lock(&ledger).delivered(me, text);
        } else if line.starts_with('!') {
            lock(&ledger).refused(me, line);
        }
    }
}

/// A tiny deterministic generator: the targets need spread, not quality.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
