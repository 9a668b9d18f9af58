//! A fake gateway for the worker's tests: a real TCP listener on 127.0.0.1:0 speaking the
//! link protocol (length-delimited postcard), plus a worker started on a temporary store.
#![allow(dead_code)] // each test file uses a different part

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use protocol::link::{
    ClientId, ClientKind, Command, Event, GatewayToWorker, Inbound, Outbound, Query, Reply,
    Session, WorkerToGateway, LINK_VERSION, MAX_LINK_FRAME,
};
use protocol::DeviceMsg;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use worker::{Chat, Handler, SledStore, WorkerConfig, WorkerError};

pub const SECRET: &str = "test-secret";
/// Longer than any wait the worker should make us do, shorter than a hung test run.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Transport = Framed<TcpStream, LengthDelimitedCodec>;

pub struct FakeGateway {
    pub listener: TcpListener,
    pub addr: String,
    pub id: u16,
}

impl FakeGateway {
    pub async fn bind(id: u16) -> FakeGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        FakeGateway { listener, addr, id }
    }

    /// Accepts a worker and returns its transport and its `Hello`, without answering.
    pub async fn accept_raw(&self) -> (Transport, WorkerToGateway) {
        let (stream, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("worker did not connect")
            .unwrap();
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(MAX_LINK_FRAME)
            .new_codec();
        let mut transport = Framed::new(stream, codec);
        let hello = read(&mut transport)
            .await
            .expect("link closed before hello");
        (transport, hello)
    }

    /// Accepts a worker, checks its `Hello` and welcomes it.
    pub async fn accept(&self) -> Link {
        let (mut transport, hello) = self.accept_raw().await;
        match hello {
            WorkerToGateway::Hello {
                version, secret, ..
            } => {
                assert_eq!(version, LINK_VERSION);
                assert_eq!(secret, SECRET);
            }
            other => panic!("expected Hello, got {other:?}"),
        }
        write(
            &mut transport,
            &GatewayToWorker::Welcome {
                version: LINK_VERSION,
                gateway: self.id,
            },
        )
        .await;
        Link {
            transport,
            next_event: 1,
            id: self.id,
            acked: 0,
        }
    }
}

pub async fn read(transport: &mut Transport) -> Option<WorkerToGateway> {
    let frame = tokio::time::timeout(WAIT, transport.next())
        .await
        .expect("worker went silent")?;
    Some(postcard::from_bytes(&frame.ok()?).expect("worker sent an undecodable message"))
}

pub async fn write(transport: &mut Transport, msg: &GatewayToWorker) {
    transport
        .send(Bytes::from(postcard::to_allocvec(msg).unwrap()))
        .await
        .unwrap();
}

/// One accepted, welcomed worker link.
pub struct Link {
    pub transport: Transport,
    pub next_event: u64,
    pub id: u16,
    /// Every event up to this one is acked.
    pub acked: u64,
}

impl Link {
    /// Sends an event; returns its id.
    pub async fn event(&mut self, event: Event) -> u64 {
        let id = self.next_event;
        self.next_event += 1;
        write(&mut self.transport, &GatewayToWorker::Event { id, event }).await;
        id
    }

    pub async fn recv(&mut self) -> WorkerToGateway {
        read(&mut self.transport)
            .await
            .expect("worker closed the link")
    }

    /// Collects the commands sent before the ack that covers event `id` (acks are
    /// cumulative: one may cover several events, and then the next calls for those return
    /// at once with nothing), answering queries with `answer`.
    pub async fn until_ack_answering(
        &mut self,
        id: u64,
        mut answer: impl FnMut(&Query) -> Reply,
    ) -> Vec<Command> {
        let mut commands = Vec::new();
        if self.acked >= id {
            return commands;
        }
        loop {
            match self.recv().await {
                WorkerToGateway::Command(command) => commands.push(command),
                WorkerToGateway::Ack { event } if event >= id => {
                    self.acked = event;
                    return commands;
                }
                WorkerToGateway::Query {
                    id: query_id,
                    query,
                } => {
                    let reply = answer(&query);
                    write(
                        &mut self.transport,
                        &GatewayToWorker::Reply {
                            id: query_id,
                            reply,
                        },
                    )
                    .await;
                }
                other => panic!("unexpected {other:?} while waiting for ack {id}"),
            }
        }
    }

    /// Collects the commands sent before the ack of event `id`; a query fails the test.
    pub async fn until_ack(&mut self, id: u64) -> Vec<Command> {
        self.until_ack_answering(id, |query| panic!("unexpected query {query:?}"))
            .await
    }

    /// Closes our sending side, as a gateway does once it has seen `Leaving`: no more
    /// events, but acks can still come back.
    pub async fn finish_sending(&mut self) {
        use tokio::io::AsyncWriteExt;
        self.transport.get_mut().shutdown().await.unwrap();
    }

    /// Sends an event and returns the commands it caused.
    pub async fn handle(&mut self, event: Event) -> Vec<Command> {
        let id = self.event(event).await;
        self.until_ack(id).await
    }

    /// Sends an event and returns the commands it caused, answering queries.
    pub async fn handle_answering(
        &mut self,
        event: Event,
        answer: impl FnMut(&Query) -> Reply,
    ) -> Vec<Command> {
        let id = self.event(event).await;
        self.until_ack_answering(id, answer).await
    }
}

pub fn session(pairs: &[(&str, &str)]) -> Session {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn connect(client: ClientId, kind: ClientKind) -> Event {
    Event::Connect {
        client,
        kind,
        peer: "127.0.0.1:40000".into(),
    }
}

pub fn line(client: ClientId, session: Session, text: &str) -> Event {
    Event::Message {
        client,
        session: session.into(),
        body: Inbound::Line(text.into()),
    }
}

pub fn frame(client: ClientId, session: Session, msg: DeviceMsg) -> Event {
    Event::Message {
        client,
        session: session.into(),
        body: Inbound::Device(Box::new(msg)),
    }
}

pub fn close(client: ClientId, uid: Option<&str>, session: Session) -> Event {
    Event::Close {
        client,
        uid: uid.map(String::from),
        session: session.into(),
    }
}

pub fn to_client(client: ClientId, text: &str) -> Command {
    Command::SendToClient {
        client,
        body: Outbound::Line(text.into()),
    }
}

pub fn to_group(group: &str, text: &str, exclude: &[ClientId]) -> Command {
    Command::SendToGroup {
        groups: vec![group.into()],
        body: Outbound::Line(text.into()),
        exclude: exclude.to_vec(),
    }
}

/// The lines of the `SendToClient` commands addressed to `client`.
pub fn lines_to(commands: &[Command], client: ClientId) -> Vec<String> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::SendToClient {
                client: c,
                body: Outbound::Line(text),
            } if *c == client => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// A worker running in the background on a temporary sled store.
pub struct Worker {
    shutdown: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), WorkerError>>,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn config(gateways: &[&str], data_dir: PathBuf) -> WorkerConfig {
    WorkerConfig {
        gateways: gateways.iter().map(|g| g.to_string()).collect(),
        secret: SECRET.into(),
        data_dir,
        name: "test-worker".into(),
        ..WorkerConfig::default()
    }
}

pub fn start_with<H: Handler>(gateways: &[&str], handler: H) -> Worker {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let store = Arc::new(SledStore::open(&data_dir).unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let config = config(gateways, data_dir.clone());
    let task = tokio::spawn(worker::run(config, store, handler, async {
        let _ = rx.await;
    }));
    Worker {
        shutdown: Some(tx),
        task,
        data_dir,
        _dir: dir,
    }
}

pub fn start_chat(gateways: &[&str]) -> Worker {
    start_with(gateways, Chat::new())
}

impl Worker {
    /// Signals shutdown (SIGTERM in the binary) without waiting: the worker starts leaving.
    pub fn signal(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown (if not yet) and waits for `run` to return.
    pub async fn stop(mut self) -> (Result<(), WorkerError>, tempfile::TempDir, PathBuf) {
        self.signal();
        let result = tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("worker did not stop")
            .unwrap();
        (result, self._dir, self.data_dir)
    }
}

/// Runs `f` with a deadline so a hung worker fails the test instead of hanging it.
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test took too long")
}
