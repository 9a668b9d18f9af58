//! Test harness: a gateway run in-process on 127.0.0.1:0, a fake worker speaking the link
//! protocol, a telnet user and a framed device, all over real sockets.
#![allow(dead_code)] // each test file uses a different part

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use gateway::{GatewayConfig, Listeners};
use protocol::link::{
    ClientId, ClientKind, Command, Event, GatewayToWorker, Inbound, Query, Reply, RouteChange,
    WorkerToGateway, LINK_VERSION,
};
use protocol::{DeviceMsg, Frame, HostMsg};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// How long any single expected thing may take.
pub const WAIT: Duration = Duration::from_secs(5);
pub const SECRET: &str = "test-secret";

pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A gateway running in this process.
pub struct Gateway {
    pub telnet: SocketAddr,
    pub device: SocketAddr,
    pub worker: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), gateway::GatewayError>>>,
}

pub fn test_config() -> GatewayConfig {
    GatewayConfig {
        id: 3,
        secret: SECRET.into(),
        ..GatewayConfig::default()
    }
}

impl Gateway {
    pub async fn start() -> Gateway {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: GatewayConfig) -> Gateway {
        let bind = || TcpListener::bind("127.0.0.1:0");
        let listeners = Listeners {
            telnet: bind().await.expect("bind"),
            device: bind().await.expect("bind"),
            worker: bind().await.expect("bind"),
        };
        let telnet = listeners.telnet.local_addr().expect("addr");
        let device = listeners.device.local_addr().expect("addr");
        let worker = listeners.worker.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway::run(config, listeners, async {
            let _ = stopped.await;
        }));
        Gateway {
            telnet,
            device,
            worker,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the gateway and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            within("gateway shutdown", task)
                .await
                .expect("run panicked")
                .expect("run failed");
        }
    }

    pub async fn worker(&self) -> FakeWorker {
        FakeWorker::connect(self.worker, SECRET)
            .await
            .expect("worker accepted")
    }

    pub async fn telnet(&self) -> Telnet {
        Telnet::connect(self.telnet).await
    }

    pub async fn device(&self) -> Device<TcpStream> {
        Device::new(
            TcpStream::connect(self.device)
                .await
                .expect("connect device"),
        )
    }
}

/// A worker speaking the link protocol by hand.
pub struct FakeWorker {
    link: Framed<TcpStream, LengthDelimitedCodec>,
    events: VecDeque<(u64, Event)>,
    next_query: u64,
    pub gateway_id: u16,
    /// Ack each event as the test takes it, like a worker that handles everything at once.
    /// Delivery tests turn it off and ack by hand.
    pub auto_ack: bool,
    /// `Routes` messages received while waiting for something else, oldest first.
    pub routes: Vec<(Vec<RouteChange>, bool)>,
}

impl FakeWorker {
    /// Connects and says Hello; `Err` carries the gateway's refusal (or what came instead).
    pub async fn connect(addr: SocketAddr, secret: &str) -> Result<FakeWorker, GatewayToWorker> {
        Self::handshake(
            addr,
            WorkerToGateway::Hello {
                version: LINK_VERSION,
                secret: secret.into(),
                name: "fake-worker".into(),
            },
        )
        .await
    }

    pub async fn handshake(
        addr: SocketAddr,
        hello: WorkerToGateway,
    ) -> Result<FakeWorker, GatewayToWorker> {
        let stream = TcpStream::connect(addr).await.expect("connect worker link");
        let mut link = Framed::new(stream, LengthDelimitedCodec::new());
        send_link(&mut link, &hello).await;
        let mut worker = FakeWorker {
            link,
            events: VecDeque::new(),
            next_query: 1,
            gateway_id: 0,
            auto_ack: true,
            routes: Vec::new(),
        };
        match worker.recv().await {
            Some(GatewayToWorker::Welcome { version, gateway }) => {
                assert_eq!(version, LINK_VERSION);
                worker.gateway_id = gateway;
                Ok(worker)
            }
            Some(other) => Err(other),
            None => panic!("link closed without an answer to hello"),
        }
    }

    pub async fn send(&mut self, msg: &WorkerToGateway) {
        send_link(&mut self.link, msg).await;
    }

    /// Sends `bytes` as one link frame, whatever they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let frame = Bytes::copy_from_slice(bytes);
        self.link.send(frame).await.expect("send on link");
    }

    /// The next message from the gateway but route changes (kept in `routes`), `None`
    /// when the link closed.
    pub async fn recv(&mut self) -> Option<GatewayToWorker> {
        loop {
            match self.recv_any().await? {
                GatewayToWorker::Routes { changes, synced } => self.routes.push((changes, synced)),
                other => return Some(other),
            }
        }
    }

    /// The next message from the gateway, whatever it is.
    pub async fn recv_any(&mut self) -> Option<GatewayToWorker> {
        let frame = within("a link message", self.link.next()).await?;
        let bytes = frame.ok()?;
        Some(postcard::from_bytes(&bytes).expect("gateway sends valid postcard"))
    }

    /// The next `Routes` message, taking those already seen first; events that arrive
    /// meanwhile are kept for `event`.
    pub async fn routes(&mut self) -> (Vec<RouteChange>, bool) {
        if !self.routes.is_empty() {
            return self.routes.remove(0);
        }
        loop {
            match self.recv_any().await {
                Some(GatewayToWorker::Routes { changes, synced }) => return (changes, synced),
                Some(GatewayToWorker::Event { id, event }) => self.events.push_back((id, event)),
                other => panic!("expected route changes, got {other:?}"),
            }
        }
    }

    /// The next event, with its id; acked if `auto_ack`.
    pub async fn event_with_id(&mut self) -> (u64, Event) {
        let (id, event) = match self.events.pop_front() {
            Some(event) => event,
            None => match self.recv().await {
                Some(GatewayToWorker::Event { id, event }) => (id, event),
                other => panic!("expected an event, got {other:?}"),
            },
        };
        if self.auto_ack {
            self.ack(id).await;
        }
        (id, event)
    }

    /// Acks event `id`: handled, its commands (sent before) done.
    pub async fn ack(&mut self, id: u64) {
        self.send(&WorkerToGateway::Ack { event: id }).await;
    }

    pub async fn event(&mut self) -> Event {
        self.event_with_id().await.1
    }

    /// Expects a Connect event and returns the new client's id.
    pub async fn connected(&mut self, kind: ClientKind) -> ClientId {
        match self.event().await {
            Event::Connect {
                client, kind: k, ..
            } => {
                assert_eq!(k, kind);
                client
            }
            other => panic!("expected Connect, got {other:?}"),
        }
    }

    /// Expects a Message event from `client` and returns its body.
    pub async fn message(&mut self, client: ClientId) -> Inbound {
        match self.event().await {
            Event::Message {
                client: c, body, ..
            } => {
                assert_eq!(c, client);
                body
            }
            other => panic!("expected Message from {client}, got {other:?}"),
        }
    }

    /// Expects a Message with a line from `client`.
    pub async fn line(&mut self, client: ClientId) -> String {
        match self.message(client).await {
            Inbound::Line(text) => text,
            other => panic!("expected a line, got {other:?}"),
        }
    }

    pub async fn command(&mut self, command: Command) {
        self.send(&WorkerToGateway::Command(command)).await;
    }

    /// Asks a query and waits for its reply, keeping events that arrive meanwhile. A query
    /// also proves that every command sent before it was executed.
    pub async fn query(&mut self, query: Query) -> Reply {
        let id = self.next_query;
        self.next_query += 1;
        self.send(&WorkerToGateway::Query { id, query }).await;
        loop {
            match self.recv().await {
                Some(GatewayToWorker::Reply { id: got, reply }) if got == id => return reply,
                Some(GatewayToWorker::Event { id, event }) => self.events.push_back((id, event)),
                other => panic!("expected reply {id}, got {other:?}"),
            }
        }
    }

    /// Asserts that no event arrives for `quiet`.
    pub async fn no_event(&mut self, quiet: Duration) {
        if let Some(event) = self.events.pop_front() {
            panic!("unexpected event {event:?}");
        }
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(msg) = tokio::time::timeout_at(deadline, self.link.next()).await {
            let msg = msg.and_then(|frame| frame.ok());
            let decoded = msg.map(|bytes| postcard::from_bytes::<GatewayToWorker>(&bytes));
            match decoded {
                Some(Ok(GatewayToWorker::Routes { changes, synced })) => {
                    self.routes.push((changes, synced))
                }
                other => panic!("unexpected link message {other:?}"),
            }
        }
    }
}

async fn send_link(link: &mut Framed<TcpStream, LengthDelimitedCodec>, msg: &WorkerToGateway) {
    let bytes = postcard::to_allocvec(msg).expect("encode");
    link.send(Bytes::from(bytes)).await.expect("send on link");
}

/// A telnet user.
pub struct Telnet {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Telnet {
    pub async fn connect(addr: SocketAddr) -> Telnet {
        let stream = TcpStream::connect(addr).await.expect("connect telnet");
        let (rd, writer) = stream.into_split();
        Telnet {
            reader: BufReader::new(rd),
            writer,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("telnet write");
    }

    /// Closes the sending side (the gateway reads end of input), keeps reading.
    pub async fn finish(&mut self) {
        self.writer.shutdown().await.expect("telnet shutdown");
    }

    /// The next line the gateway wrote, which must end in CRLF; returned without it.
    pub async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = within("a telnet line", self.reader.read_until(b'\n', &mut buf))
            .await
            .expect("telnet read");
        assert!(n > 0, "telnet connection closed while a line was expected");
        assert!(buf.ends_with(b"\r\n"), "line not CRLF-terminated: {buf:?}");
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).expect("gateway writes UTF-8")
    }

    /// Whatever bytes arrive next (at least one), raw; for heartbeat tests.
    pub async fn read_some(&mut self) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let n = within("telnet bytes", self.reader.read(&mut buf))
            .await
            .expect("telnet read");
        assert!(n > 0, "telnet connection closed while bytes were expected");
        buf[..n].to_vec()
    }

    /// The raw reading side.
    pub fn reader_mut(&mut self) -> &mut BufReader<OwnedReadHalf> {
        &mut self.reader
    }

    /// Expects the gateway to close the connection with nothing more to read.
    pub async fn closed(&mut self) {
        let mut rest = Vec::new();
        within("telnet close", self.reader.read_to_end(&mut rest))
            .await
            .expect("telnet read");
        assert!(
            rest.is_empty(),
            "unexpected bytes before close: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// A device speaking frames over any byte stream.
pub struct Device<S> {
    pub stream: S,
    decoder: protocol::Decoder<HostMsg>,
    frames: VecDeque<Frame<HostMsg>>,
    seq: u16,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Device<S> {
    pub fn new(stream: S) -> Self {
        Device {
            stream,
            decoder: protocol::Decoder::new(),
            frames: VecDeque::new(),
            seq: 0,
        }
    }

    /// Sends `msg` in a frame; returns the frame's sequence number.
    pub async fn send(&mut self, msg: DeviceMsg) -> u16 {
        self.seq += 1;
        let bytes = protocol::frame::encode_to_vec(&Frame { seq: self.seq, msg }).expect("encode");
        self.send_raw(&bytes).await;
        self.seq
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("device write");
        self.stream.flush().await.expect("device flush");
    }

    /// The next frame from the gateway; any corrupt frame fails the test.
    pub async fn recv(&mut self) -> Frame<HostMsg> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return frame;
            }
            let mut buf = [0u8; 512];
            let n = within("a device frame", self.stream.read(&mut buf))
                .await
                .expect("device read");
            assert!(n > 0, "device connection closed while a frame was expected");
            for item in self.decoder.feed(&buf[..n]) {
                self.frames
                    .push_back(item.expect("gateway sends valid frames"));
            }
        }
    }
}

pub fn hello(device_id: &str) -> DeviceMsg {
    DeviceMsg::Hello(protocol::Hello {
        protocol: protocol::PROTOCOL_VERSION,
        device_id: device_id.try_into().expect("short id"),
        firmware: "0.1.0-test".try_into().expect("short version"),
    })
}

pub fn line(text: &str) -> protocol::link::Outbound {
    protocol::link::Outbound::Line(text.into())
}

pub fn session(pairs: &[(&str, &str)]) -> protocol::link::Session {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub async fn stats(worker: &mut FakeWorker) -> protocol::link::GatewayStats {
    match worker.query(Query::Stats).await {
        Reply::Stats(stats) => stats,
        other => panic!("expected stats, got {other:?}"),
    }
}

/// Polls the gateway's stats until it counts `n` workers (a dropped link takes a moment).
pub async fn wait_for_workers(worker: &mut FakeWorker, n: u64) {
    for _ in 0..100 {
        if stats(worker).await.workers == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the gateway never counted {n} workers");
}
