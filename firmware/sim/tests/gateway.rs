//! The real `switchboard-sim` binary against a stand-in gateway on a loopback socket: the
//! bytes a gateway sees (Hello, acks, replies) and the reconnect after a dropped link.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protocol::{encode, ChatIn, Decoder, DeviceMsg, Frame, HostMsg, MAX_WIRE_LEN};

/// Kills the simulator when the test ends, passed or not.
struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Gateway {
    stream: TcpStream,
    decoder: Decoder<DeviceMsg>,
    pending: Vec<Frame<DeviceMsg>>,
    seq: u16,
}

impl Gateway {
    /// The simulator's next connection, within 5 s.
    fn accept(listener: &TcpListener) -> Self {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(err) => panic!("the simulator did not connect: {err}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Self {
            stream,
            decoder: Decoder::new(),
            pending: Vec::new(),
            seq: 0,
        }
    }

    fn send(&mut self, msg: HostMsg) -> u16 {
        self.seq += 1;
        let mut buf = [0u8; MAX_WIRE_LEN];
        let n = encode(&Frame { seq: self.seq, msg }, &mut buf).unwrap();
        self.stream.write_all(&buf[..n]).unwrap();
        self.seq
    }

    /// The next frame that is not telemetry, within 5 s.
    fn next(&mut self) -> Frame<DeviceMsg> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pos) = self
                .pending
                .iter()
                .position(|f| !matches!(f.msg, DeviceMsg::Telemetry(_)))
            {
                let frame = self.pending.remove(pos);
                self.pending.drain(..pos);
                return frame;
            }
            assert!(Instant::now() < deadline, "no frame from the simulator");
            let mut buf = [0u8; 512];
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("simulator closed the link"),
                Ok(n) => {
                    for item in self.decoder.feed(&buf[..n]) {
                        self.pending.push(item.expect("well-formed frames"));
                    }
                }
                Err(_) => {} // timeout: look again
            }
        }
    }

    fn expect_hello(&mut self, id: &str) -> u16 {
        let frame = self.next();
        match &frame.msg {
            DeviceMsg::Hello(hello) => {
                assert_eq!(hello.device_id, id);
                assert!(hello.firmware.ends_with("+sim"), "{}", hello.firmware);
            }
            other => panic!("expected Hello, got {other:?}"),
        }
        frame.seq
    }
}

fn start_sim(id: &str, listener: &TcpListener) -> Sim {
    let addr = listener.local_addr().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard-sim"))
        .args(["--id", id, "--tcp", &addr.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start switchboard-sim");
    Sim(child)
}

#[test]
fn joins_answers_a_direct_ping_and_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _sim = start_sim("sim-test", &listener);

    let mut gw = Gateway::accept(&listener);
    let hello = gw.expect_hello("sim-test");
    gw.send(HostMsg::Ack { seq: hello });

    let chat = gw.send(HostMsg::Chat(ChatIn {
        from: "42".try_into().unwrap(),
        direct: true,
        text: "ping".try_into().unwrap(),
    }));
    assert_eq!(gw.next().msg, DeviceMsg::Ack { seq: chat });
    let reply = gw.next();
    match &reply.msg {
        DeviceMsg::Chat(out) => {
            assert_eq!(out.to.as_deref(), Some("42"));
            assert_eq!(out.text, "pong");
        }
        other => panic!("expected the reply, got {other:?}"),
    }
    gw.send(HostMsg::Ack { seq: reply.seq });
    gw.send(HostMsg::Ping { nonce: 9 });
    assert_eq!(gw.next().msg, DeviceMsg::Pong { nonce: 9 });

    // The gateway goes away; the simulator comes back with a fresh Hello.
    drop(gw);
    let mut gw = Gateway::accept(&listener);
    gw.expect_hello("sim-test");
}

#[test]
fn refuses_an_id_the_chat_would_take_for_a_user() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard-sim"))
        .args(["--id", "1234"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not all digits"));
}
