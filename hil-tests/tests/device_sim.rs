//! The simulated device on its own, against a fake host made of the protocol crate: what a
//! gateway sees on the pty or the socket. Needs neither the gateway nor the worker.

use std::path::Path;
use std::time::Duration;

use hil::device::{run_device, DeviceConfig, DeviceLink, Transport, HELP_TEXT, SIM_FIRMWARE};
use protocol::frame::{encode_to_vec, Decoder, Frame};
use protocol::message::{ChatIn, ChatOut, DeviceMsg, Hello, HostMsg, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(5);

/// The host end of a link: frames out, decoded device messages in.
struct FakeHost<S> {
    io: S,
    decoder: Decoder<DeviceMsg>,
    ready: std::collections::VecDeque<Frame<DeviceMsg>>,
    seq: u16,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FakeHost<S> {
    fn new(io: S) -> Self {
        Self {
            io,
            decoder: Decoder::new(),
            ready: Default::default(),
            seq: 100,
        }
    }

    async fn send(&mut self, msg: HostMsg) -> u16 {
        self.seq += 1;
        let bytes = encode_to_vec(&Frame { seq: self.seq, msg }).unwrap();
        self.io.write_all(&bytes).await.unwrap();
        self.seq
    }

    /// The next frame; panics on a bad frame (an echo of our own bytes would be one) or
    /// after [`WAIT`].
    async fn recv(&mut self) -> DeviceMsg {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(f) = self.ready.pop_front() {
                return f.msg;
            }
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut buf))
                .await
                .expect("no frame from the device in time")
                .expect("reading from the device");
            assert!(n > 0, "device closed the link");
            for item in self.decoder.feed(&buf[..n]) {
                self.ready
                    .push_back(item.unwrap_or_else(|e| panic!("bad frame from device: {e}")));
            }
        }
    }
}

fn chat(from: &str, text: &str, direct: bool) -> HostMsg {
    HostMsg::Chat(ChatIn {
        from: from.try_into().unwrap(),
        direct,
        text: text.try_into().unwrap(),
    })
}

fn reply(to: &str, text: &str) -> DeviceMsg {
    DeviceMsg::Chat(ChatOut {
        to: Some(to.try_into().unwrap()),
        text: text.try_into().unwrap(),
    })
}

fn hello(id: &str) -> DeviceMsg {
    DeviceMsg::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        device_id: id.try_into().unwrap(),
        firmware: SIM_FIRMWARE.try_into().unwrap(),
    })
}

async fn wait_for_path(p: &Path) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::fs::symlink_metadata(p).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never appeared",
            p.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The gateway's view of a pty device: it opens the link path with tokio-serial, late, and
/// still gets the hello; frames go both ways without echo; a stopped device removes its link.
#[tokio::test]
async fn pty_device_speaks_frames_without_echo() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("dev0");
    let (stop, stopped) = oneshot::channel::<()>();
    let device = tokio::spawn(run_device(
        DeviceConfig::new("dev0", Transport::Pty(link.clone())),
        async move {
            let _ = stopped.await;
        },
    ));
    wait_for_path(&link).await;
    // Open late, like a gateway retrying with backoff: the hello must have waited for us.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let port =
        tokio_serial::SerialStream::open(&tokio_serial::new(link.to_str().unwrap(), 115_200))
            .expect("opening the pty link like the gateway does");
    let mut host = FakeHost::new(port);
    assert_eq!(host.recv().await, hello("dev0"));

    let seq = host.send(chat("7", "ping", true)).await;
    assert_eq!(host.recv().await, DeviceMsg::Ack { seq });
    assert_eq!(host.recv().await, reply("7", "pong"));

    // A broadcast is acked but never answered; the next answer proves nothing came between.
    let seq = host.send(chat("7", "ping", false)).await;
    assert_eq!(host.recv().await, DeviceMsg::Ack { seq });
    let seq = host.send(chat("8", "echo hi there", true)).await;
    assert_eq!(host.recv().await, DeviceMsg::Ack { seq });
    assert_eq!(host.recv().await, reply("8", "hi there"));

    let seq = host.send(chat("8", "help", true)).await;
    assert_eq!(host.recv().await, DeviceMsg::Ack { seq });
    assert_eq!(host.recv().await, reply("8", HELP_TEXT));

    host.send(HostMsg::Ping { nonce: 77 }).await;
    assert_eq!(host.recv().await, DeviceMsg::Pong { nonce: 77 });

    // Noise from the host side does not kill the device.
    host.io
        .write_all(b"\x01\x02garbage\x00\x05\x00")
        .await
        .unwrap();
    let seq = host.send(chat("7", "frob", true)).await;
    assert_eq!(host.recv().await, DeviceMsg::Ack { seq });
    assert_eq!(
        host.recv().await,
        reply("7", "unknown command: frob; try help")
    );

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, device)
        .await
        .expect("device did not stop")
        .unwrap()
        .expect("device failed");
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "a stopped device must remove its link"
    );
}

/// Over TCP the device waits for an absent gateway, says hello when it connects, and says
/// hello again after the gateway drops the connection.
#[tokio::test]
async fn tcp_device_reconnects_and_says_hello_again() {
    // A port nobody listens on yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut cfg = DeviceConfig::new("tcp0", Transport::Tcp(vec![addr.to_string()]));
    cfg.telemetry = Some(Duration::from_millis(100));
    let device = tokio::spawn(run_device(cfg, async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();

    for round in 0..2 {
        let (sock, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap_or_else(|_| panic!("device did not connect (round {round})"))
            .unwrap();
        let mut host = FakeHost::new(sock);
        assert_eq!(host.recv().await, hello("tcp0"), "round {round}");
        match host.recv().await {
            DeviceMsg::Telemetry(t) => assert_eq!(t.name.as_str(), "uptime_s"),
            other => panic!("expected telemetry, got {other:?}"),
        }
        let seq = host.send(chat("3", "echo round", true)).await;
        assert_eq!(host.recv().await, DeviceMsg::Ack { seq });
        match host.recv().await {
            DeviceMsg::Telemetry(_) => assert_eq!(host.recv().await, reply("3", "round")),
            other => assert_eq!(other, reply("3", "round")),
        }
        // Dropping `host` closes the connection; the device must come back.
    }
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, device)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A device that knows two gateways, the first dead (its port refuses) and the second live,
/// reaches the live one; when that link closes it goes round, from the first: once the first
/// gateway is up it gets the device, and after it closes the second gets it back.
#[tokio::test]
async fn tcp_device_fails_over_between_gateways_in_turn() {
    let first = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let second = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateways = vec![first.to_string(), second.local_addr().unwrap().to_string()];
    let (stop, stopped) = oneshot::channel::<()>();
    let device = tokio::spawn(run_device(
        DeviceConfig::new("fo0", Transport::Tcp(gateways)),
        async move {
            let _ = stopped.await;
        },
    ));

    // Past the dead first gateway to the second; then, that link closed, round again to it.
    let mut host = None;
    for round in 0..2 {
        drop(host.take());
        let (sock, _) = tokio::time::timeout(WAIT, second.accept())
            .await
            .unwrap_or_else(|_| panic!("device never reached the live gateway (round {round})"))
            .unwrap();
        let mut h = FakeHost::new(sock);
        assert_eq!(h.recv().await, hello("fo0"), "round {round}");
        let seq = h.send(chat("3", "ping", true)).await;
        assert_eq!(h.recv().await, DeviceMsg::Ack { seq });
        assert_eq!(h.recv().await, reply("3", "pong"));
        host = Some(h);
    }

    // The first gateway comes up, then the second closes: next in turn is the first, not the
    // second again.
    let first = tokio::net::TcpListener::bind(first).await.unwrap();
    drop(host);
    let (sock, _) = tokio::time::timeout(WAIT, first.accept())
        .await
        .expect("device did not go round to the first gateway")
        .unwrap();
    let mut host = FakeHost::new(sock);
    assert_eq!(host.recv().await, hello("fo0"));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), second.accept())
            .await
            .is_err(),
        "device connected to the second gateway while linked to the first"
    );

    // The first closes: back to the second.
    drop(host);
    let (sock, _) = tokio::time::timeout(WAIT, second.accept())
        .await
        .expect("device did not come back to the second gateway")
        .unwrap();
    assert_eq!(FakeHost::new(sock).recv().await, hello("fo0"));

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, device)
        .await
        .expect("device did not stop")
        .unwrap()
        .expect("device failed");
}

/// The link path is replaced even if something is there, and only the owner removes it.
#[tokio::test]
async fn pty_link_replaces_an_existing_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ttyX");
    std::fs::write(&path, b"stale").unwrap();
    let first = DeviceLink::open_pty(&path).unwrap();
    let first_slave = first.pty().unwrap().slave_path().to_owned();
    assert_eq!(std::fs::read_link(&path).unwrap(), first_slave);

    let second = DeviceLink::open_pty(&path).unwrap();
    let second_slave = second.pty().unwrap().slave_path().to_owned();
    assert_ne!(first_slave, second_slave);
    assert_eq!(std::fs::read_link(&path).unwrap(), second_slave);

    drop(first); // no longer the owner: must leave the link alone
    assert_eq!(std::fs::read_link(&path).unwrap(), second_slave);
    drop(second);
    assert!(std::fs::symlink_metadata(&path).is_err());
}
