//! Devices and users chatting: device i (a simulated board on a pty the gateway opens as a
//! serial port, or on the device TCP port) and user i exchange private chat frames both
//! ways. A device sends `ChatOut { to: uid, text: "<seq> <µs>" }` as fast as the link's
//! stop-and-wait acks allow (or at a rate) and user i times each `ID (ID) -> you: <seq> <µs>`
//! line; user i writes `ID:<seq> <µs>` within a window and device i times each `ChatIn`.
//!
//! Besides frames/s, latency and CPU per frame, it reports what the serial framing costs:
//! the bytes on the wire of each chat frame (postcard, CRC, COBS, delimiter: re-encoded
//! exactly as sent) against its text, and the ack each chat frame needs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hil::device::{DeviceLink, LinkError, Responder, SIM_FIRMWARE};
use protocol::frame::{encode_to_vec, Frame};
use protocol::message::{ChatOut, DeviceMsg, HostMsg, PeerId, Text};
use protocol::reliable::{ACK_TIMEOUT_MS, MAX_RETRIES};
use tokio::sync::{watch, Semaphore};

use super::private::{self, Counts};
use super::{finish, login_all, micros, senders_done, time_deliveries, Common, LOGIN_TIMEOUT};
use crate::procstat::{Snapshot, Usage};
use crate::report::{Counted, Report};

/// How the simulated devices reach the gateway.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Device `i` publishes a pty at `DIR/dev<i>`; the gateway must list those paths as
    /// serial ports (it retries opening them until they exist).
    Pty(PathBuf),
    /// Devices connect to the gateway's device TCP port.
    Tcp(String),
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Devices {
    /// Device-user pairs.
    pub devices: usize,
    /// Seconds of sending.
    pub secs: f64,
    /// Frames per second each way in all; 0: as fast as acks (devices) and the window
    /// (users) allow.
    pub rate: f64,
    /// Messages in flight from each user to its device, at most.
    pub window: usize,
    /// Seconds to wait for stragglers after sending stops.
    pub drain_secs: f64,
    /// The devices' link.
    pub transport: Transport,
}

/// Byte counts of the frames the devices saw (chat frames both ways, and their acks).
#[derive(Default)]
struct Wire {
    chat_frames: AtomicU64,
    chat_bytes: AtomicU64,
    text_bytes: AtomicU64,
    ack_frames: AtomicU64,
    ack_bytes: AtomicU64,
    retransmits: AtomicU64,
}

impl Wire {
    fn chat(&self, wire: usize, text: usize) {
        self.chat_frames.fetch_add(1, Ordering::Relaxed);
        self.chat_bytes.fetch_add(wire as u64, Ordering::Relaxed);
        self.text_bytes.fetch_add(text as u64, Ordering::Relaxed);
    }

    fn ack(&self, wire: usize) {
        self.ack_frames.fetch_add(1, Ordering::Relaxed);
        self.ack_bytes.fetch_add(wire as u64, Ordering::Relaxed);
    }

    fn per_frame(&self, bytes: &AtomicU64, frames: &AtomicU64) -> f64 {
        bytes.load(Ordering::Relaxed) as f64 / frames.load(Ordering::Relaxed).max(1) as f64
    }
}

/// Everything the tasks count.
#[derive(Default)]
struct Tally {
    /// Devices to users.
    up: Arc<Counts>,
    /// Users to devices.
    down: Arc<Counts>,
    /// Both directions' deliveries, for the drain.
    delivered: AtomicU64,
    wire: Wire,
}

/// Runs the scenario.
pub async fn run(common: &Common, cfg: &Devices) -> anyhow::Result<Report> {
    anyhow::ensure!(cfg.devices >= 1, "at least one device");
    anyhow::ensure!(cfg.window >= 1, "the window must be at least 1");
    let users = login_all(common, cfg.devices).await?;
    let ids: Vec<String> = (0..cfg.devices)
        .map(|i| format!("{}d{i}", common.prefix))
        .collect();
    // Every link first, then every hello's ack at once: a gateway retrying its serial ports
    // with backoff opens them all within one backoff period, not one period per device.
    let joins = ids
        .iter()
        .enumerate()
        .map(|(i, id)| join(&cfg.transport, i, id));
    let links: Vec<DeviceLink> = futures::future::try_join_all(joins).await?;
    // A user's private message needs the device bound: the join line every user gets says so.
    let mut users = users;
    for (i, (lines, _)) in users.iter_mut().enumerate() {
        let id = ids[i].as_str();
        lines
            .until("the device's join line", LOGIN_TIMEOUT, |l| {
                l.starts_with(&format!("* {id} ("))
            })
            .await
            .with_context(|| format!("{id} never joined"))?;
    }

    let n = cfg.devices;
    let tally = Arc::new(Tally::default());
    let windows: Vec<Arc<Semaphore>> = (0..n)
        .map(|_| Arc::new(Semaphore::new(cfg.window)))
        .collect();
    let per_pair_rate = cfg.rate / n as f64;
    let (done_tx, done_rx) = watch::channel(false);
    let before = Snapshot::take(&common.watch)?;
    let clock = Instant::now();
    let end = clock + Duration::from_secs_f64(cfg.secs);
    let mut readers = Vec::with_capacity(2 * n);
    let mut writers = Vec::with_capacity(n);
    for (i, ((lines, uid), link)) in users.into_iter().zip(links).enumerate() {
        let (got, refused) = (tally.clone(), tally.clone());
        readers.push(tokio::spawn(time_deliveries(
            lines.reader,
            " -> you: ",
            clock,
            done_rx.clone(),
            move || {
                got.up.delivered.fetch_add(1, Ordering::Relaxed);
                got.delivered.fetch_add(1, Ordering::Relaxed);
            },
            move || {
                refused.up.errors.fetch_add(1, Ordering::Relaxed);
            },
        )));
        let pair = Pair {
            uid,
            window: windows[i].clone(),
            tally: tally.clone(),
            clock,
            end,
            period: (per_pair_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / per_pair_rate)),
        };
        readers.push(tokio::spawn(pair.device(link, done_rx.clone())));
        writers.push(tokio::spawn(private::send(
            lines.writer,
            ids[i].clone(),
            windows[i].clone(),
            tally.down.clone(),
            clock,
            cfg.secs,
            per_pair_rate,
        )));
    }
    let (open, sending) = senders_done(writers, clock).await?;
    let expected =
        || tally.up.sent.load(Ordering::Relaxed) + tally.down.sent.load(Ordering::Relaxed);
    let (after, latencies) = finish(
        common,
        cfg.drain_secs,
        &tally.delivered,
        expected,
        done_tx,
        readers,
    )
    .await?;
    drop(open);

    let sent = expected();
    let delivered = tally.delivered.load(Ordering::Relaxed);
    let errors =
        tally.up.errors.load(Ordering::Relaxed) + tally.down.errors.load(Ordering::Relaxed);
    let counted = Counted {
        sent,
        delivered,
        lost: sent.saturating_sub(delivered + errors),
        errors,
    };
    let server = Usage::between(&before, &after);
    let per_s =
        |count: &AtomicU64| count.load(Ordering::Relaxed) as f64 / sending.as_secs_f64().max(1e-9);
    let wire = &tally.wire;
    Ok(Report {
        frames_up_per_s: per_s(&tally.up.delivered),
        frames_down_per_s: per_s(&tally.down.delivered),
        wire_bytes_per_chat_frame: wire.per_frame(&wire.chat_bytes, &wire.chat_frames),
        text_bytes_per_chat_frame: wire.per_frame(&wire.text_bytes, &wire.chat_frames),
        wire_bytes_per_ack: wire.per_frame(&wire.ack_bytes, &wire.ack_frames),
        retransmits: wire.retransmits.load(Ordering::Relaxed),
        ..Report::messages(
            "devices",
            &common.label,
            n,
            sending,
            counted,
            server,
            &latencies,
        )
    })
}

/// Opens device `i`'s link and says hello until the gateway acks it.
async fn join(transport: &Transport, i: usize, id: &str) -> anyhow::Result<DeviceLink> {
    let mut link = match transport {
        Transport::Pty(dir) => DeviceLink::open_pty(&dir.join(format!("dev{i}"))),
        Transport::Tcp(addr) => DeviceLink::connect_tcp(addr).await,
    }
    .with_context(|| format!("{id}: opening its link"))?;
    let hello = Responder::new(id, SIM_FIRMWARE)
        .map_err(|e| anyhow::anyhow!("{id}: {e:?}"))?
        .hello();
    let seq = link.send(hello.clone()).await?;
    // The gateway may open the pty seconds from now (it retries with backoff); the hello
    // waits in the pty meanwhile.
    let acked = async {
        loop {
            match link.recv_frame().await {
                Ok(Frame {
                    msg: HostMsg::Ack { seq: s },
                    ..
                }) if s == seq => return Ok(()),
                Ok(_) | Err(LinkError::Frame(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(LOGIN_TIMEOUT, acked)
        .await
        .with_context(|| format!("{id}: hello not acknowledged within {LOGIN_TIMEOUT:?}"))??;
    Ok(link)
}

/// What device i's task needs about its pair.
struct Pair {
    uid: String,
    window: Arc<Semaphore>,
    tally: Arc<Tally>,
    clock: Instant,
    end: Instant,
    period: Option<Duration>,
}

/// The chat frame in flight, kept for retransmission.
struct InFlight {
    bytes: heapless::Vec<u8, { protocol::frame::MAX_WIRE_LEN }>,
    seq: u16,
    retries: u8,
    due: tokio::time::Instant,
}

impl Pair {
    /// Device side: sends timestamped chat frames to the user one at a time (stop-and-wait),
    /// acks and times what the user sends; returns the user-to-device latencies.
    async fn device(
        self,
        mut link: DeviceLink,
        mut done: watch::Receiver<bool>,
    ) -> hdrhistogram::Histogram<u64> {
        let mut latencies = crate::report::histogram();
        let to = PeerId::try_from(self.uid.as_str()).unwrap_or_default();
        let ack_timeout = Duration::from_millis(ACK_TIMEOUT_MS);
        let mut next = tokio::time::Instant::now();
        let mut in_flight: Option<InFlight> = None;
        // The hello went out as frame 0.
        let mut seq: u16 = 1;
        let mut count: u64 = 0;
        loop {
            let may_send = in_flight.is_none() && Instant::now() < self.end;
            let due = in_flight.as_ref().map(|f| f.due);
            let result = tokio::select! {
                // The guard `wait_for` returns is not Send: drop it inside.
                _ = async { drop(done.wait_for(|d| *d).await) } => break,
                frame = link.recv_frame() => self.on_frame(&mut link, frame, &mut in_flight, &mut latencies).await,
                _ = tokio::time::sleep_until(next), if may_send => {
                    let text = format!("{count} {}", micros(self.clock));
                    let msg = DeviceMsg::Chat(ChatOut {
                        to: Some(to.clone()),
                        text: Text::try_from(text.as_str()).unwrap_or_default(),
                    });
                    let frame = Frame { seq, msg };
                    match encode_to_vec(&frame) {
                        Ok(bytes) => {
                            self.tally.wire.chat(bytes.len(), text.len());
                            self.tally.up.sent.fetch_add(1, Ordering::Relaxed);
                            let sent = link.send_raw(&bytes).await;
                            in_flight = Some(InFlight {
                                bytes,
                                seq,
                                retries: 0,
                                due: tokio::time::Instant::now() + ack_timeout,
                            });
                            seq = seq.wrapping_add(1);
                            count += 1;
                            next = match self.period {
                                Some(p) => next + p,
                                None => tokio::time::Instant::now(),
                            };
                            sent
                        }
                        Err(e) => Err(LinkError::Encode(e)),
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    // No ack in time: send the identical frame again, as firmware does.
                    let Some(f) = in_flight.as_mut() else { continue };
                    if f.retries >= MAX_RETRIES {
                        in_flight = None;
                        Ok(())
                    } else {
                        f.retries += 1;
                        f.due = tokio::time::Instant::now() + ack_timeout;
                        self.tally.wire.retransmits.fetch_add(1, Ordering::Relaxed);
                        link.send_raw(&f.bytes).await
                    }
                }
            };
            if let Err(e) = result {
                tracing::warn!(cause = %e, "device link failed");
                break;
            }
        }
        latencies
    }

    /// One frame from the gateway: ack and time chat, clear the frame in flight on its ack,
    /// answer pings.
    async fn on_frame(
        &self,
        link: &mut DeviceLink,
        frame: Result<Frame<HostMsg>, LinkError>,
        in_flight: &mut Option<InFlight>,
        latencies: &mut hdrhistogram::Histogram<u64>,
    ) -> Result<(), LinkError> {
        let frame = match frame {
            Ok(frame) => frame,
            Err(LinkError::Frame(_)) => {
                self.tally.down.errors.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match &frame.msg {
            HostMsg::Chat(chat) => {
                let wire = encode_to_vec(&frame).map(|b| b.len()).unwrap_or(0);
                self.tally.wire.chat(wire, chat.text.len());
                let ack = encode_to_vec(&Frame {
                    seq: 0,
                    msg: DeviceMsg::Ack { seq: frame.seq },
                })
                .map_err(LinkError::Encode)?;
                self.tally.wire.ack(ack.len());
                link.send_raw(&ack).await?;
                if let Some(sent_us) = private::timestamp(&chat.text, "") {
                    latencies.saturating_record(micros(self.clock).saturating_sub(sent_us).max(1));
                    self.tally.down.delivered.fetch_add(1, Ordering::Relaxed);
                    self.tally.delivered.fetch_add(1, Ordering::Relaxed);
                    self.window.add_permits(1);
                }
            }
            HostMsg::Ack { seq } => {
                if in_flight.as_ref().is_some_and(|f| f.seq == *seq) {
                    let wire = encode_to_vec(&frame).map(|b| b.len()).unwrap_or(0);
                    self.tally.wire.ack(wire);
                    *in_flight = None;
                }
            }
            HostMsg::Ping { nonce } => {
                let pong = Frame {
                    seq: 0,
                    msg: DeviceMsg::Pong { nonce: *nonce },
                };
                link.send_frame(&pong).await?;
            }
            // The chat refused a frame (unknown peer, busy): not lost, not delivered.
            HostMsg::Error(_) => {
                self.tally.up.errors.fetch_add(1, Ordering::Relaxed);
            }
            HostMsg::Pong { .. } => {}
        }
        Ok(())
    }
}
