//! THE REFERENCE server (`chat-reference`) on the wire: the binary started on a free loopback
//! port, telnet users as plain TCP sockets, every line compared byte for byte with the text
//! Switchboard sends (the load generator drives both).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

/// Longer than any line should take on a loaded CI machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running `chat-reference`, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// Started with `extra` arguments (`--echo`, `--relay ADDR`).
    fn start_with(extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-reference"))
            .args(["--listen", "127.0.0.1:0", "--threads", "2"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("chat-reference starts");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            let n = stderr.read_line(&mut line).expect("stderr readable");
            assert!(n > 0, "chat-reference exited before listening");
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                break addr.parse().expect("an address after `listening on`");
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Server { child, addr }
    }

    /// A user who got the greeting and the prompt.
    async fn connect(&self) -> User {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let mut user = User::new(stream);
        user.expect("Welcome to Switchboard chat.").await;
        user.expect("Please enter your nickname:").await;
        user
    }

    /// A user logged in as `nick`, expected to get `uid`.
    async fn login(&self, nick: &str, uid: u64) -> User {
        let mut user = self.connect().await;
        user.send(&format!("{nick}\r\n")).await;
        user.expect(&format!("* welcome {nick}, your uid is {uid}"))
            .await;
        user
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct User {
    rd: tokio::io::BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl User {
    fn new(stream: TcpStream) -> User {
        stream.set_nodelay(true).expect("nodelay");
        let (rd, wr) = stream.into_split();
        User {
            rd: tokio::io::BufReader::new(rd),
            wr,
        }
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.expect("send");
    }

    async fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes()).await;
    }

    /// The next line, which must end with CRLF, without it.
    async fn line(&mut self) -> String {
        let mut raw = Vec::new();
        tokio::time::timeout(PATIENCE, self.rd.read_until(b'\n', &mut raw))
            .await
            .expect("a line in time")
            .expect("readable");
        let text = String::from_utf8(raw).expect("UTF-8 from the server");
        text.strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("line not ended by CRLF: {text:?}"))
            .to_string()
    }

    async fn expect(&mut self, want: &str) {
        assert_eq!(self.line().await, want);
    }

    /// Reads until the server closes the connection.
    async fn closed(&mut self) {
        let mut rest = Vec::new();
        tokio::time::timeout(PATIENCE, self.rd.read_to_end(&mut rest))
            .await
            .expect("closed in time")
            .expect("readable");
    }
}

#[tokio::test]
async fn private_broadcast_unknown_uid_and_quit() {
    let server = Server::start();
    let mut alice = server.login("alice", 1).await;
    // LF alone ends a line too.
    let mut bob = server.connect().await;
    bob.send("bob\n").await;
    bob.expect("* welcome bob, your uid is 2").await;
    alice.expect("* bob (2) joined").await;

    alice.send("2:  hello bob \r\n").await;
    bob.expect("alice (1) -> you: hello bob").await;
    alice.send("99:anyone?\r\n2:\r\n").await;
    alice.expect("! no such uid: 99").await;
    alice.expect("! empty message").await;

    // Neither the sender nor a private message's bystander hears it.
    bob.send("hi all\n").await;
    alice.expect("bob (2): hi all").await;
    alice.send("note: a colon after a word is no uid\r\n").await;
    bob.expect("alice (1): note: a colon after a word is no uid")
        .await;
    bob.send("1:psst\n").await;
    alice.expect("bob (2) -> you: psst").await;

    bob.send("/who\n").await;
    bob.expect("* online: 2 users, 0 devices").await;
    bob.send("/quit\n").await;
    bob.expect("* bye").await;
    bob.closed().await;
    alice.expect("* bob (2) left").await;
    alice.send("2:still there?\r\n").await;
    alice.expect("! no such uid: 2").await;
}

#[tokio::test]
async fn nicknames_telnet_long_lines_and_bad_utf8() {
    let server = Server::start();
    let mut carol = server.connect().await;
    for (nick, refusal) in [
        ("", "! nickname must not be empty"),
        ("a:b", "! nickname must not contain ':'"),
        ("/x", "! nickname must not start with '/'"),
    ] {
        carol.send(&format!("  {nick}\r\n")).await;
        carol.expect(refusal).await;
        carol.expect("Please enter your nickname:").await;
    }
    // Negotiation (IAC DO ECHO, IAC SB TTYPE ... IAC SE, IAC NOP) is stripped, even when a
    // sequence or a CRLF is split across reads.
    let wire: &[u8] = b"\xff\xfd\x01ca\xff\xfa\x18\x00xterm\xff\xf0ro\xff\xf1l\r\n";
    for piece in wire.chunks(3) {
        carol.send_bytes(piece).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    carol.expect("* welcome carol, your uid is 1").await;
    let mut dave = server.login("dave", 2).await;
    carol.expect("* dave (2) joined").await;

    let long = "x".repeat(5000);
    carol.send(&format!("{long}\r\n")).await;
    carol.expect("! line too long (max 4096 bytes)").await;
    let exact = "y".repeat(4096 - "z ".len());
    carol.send(&format!("z {exact}\r\n")).await;
    dave.expect(&format!("carol (1): z {exact}")).await;

    carol.send_bytes(b"caf\xc3\xa9 \xc3\x28\r\n").await;
    dave.expect("carol (1): café \u{fffd}(").await;
    // CR NUL and a bare CR end a line too (old telnet clients).
    carol.send_bytes(b"one\r\0two\rthree\n").await;
    for text in ["one", "two", "three"] {
        dave.expect(&format!("carol (1): {text}")).await;
    }
}

#[tokio::test]
async fn sigterm_tells_everyone_and_exits_cleanly() {
    let mut server = Server::start();
    let mut erin = server.login("erin", 1).await;
    let mut waiting = server.connect().await;
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.expect("kill runs").success());
    erin.expect("! server shutting down").await;
    erin.closed().await;
    waiting.expect("! server shutting down").await;
    waiting.closed().await;
    let status = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .expect("joined")
        .expect("waited");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn a_reader_whose_queue_overflows_is_disconnected() {
    let server = Server::start();
    // A user with a tiny receive window who never reads after logging in.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut slow = User::new(socket.connect(server.addr).await.expect("connect"));
    slow.expect("Welcome to Switchboard chat.").await;
    slow.expect("Please enter your nickname:").await;
    slow.send("slow\r\n").await;
    slow.expect("* welcome slow, your uid is 1").await;

    let User { rd, mut wr } = server.login("flood", 2).await;
    let mut flood = rd;
    let chunk = format!("{}\r\n", "f".repeat(998)).repeat(64);
    let writer = tokio::spawn(async move {
        // Megabytes: more than the kernel buffers, the output buffer and the queue hold.
        for _ in 0..2000 {
            if wr.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        wr
    });
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, flood.read_line(&mut line))
        .await
        .expect("the slow reader is dropped in time")
        .expect("readable");
    assert_eq!(line, "* slow (1) left\r\n");
    writer.abort();
    slow.closed().await;
}

#[tokio::test]
async fn through_the_relay_lines_arrive_as_they_do_without_it() {
    let echo = Server::start_with(&["--echo"]);
    let server = Server::start_with(&["--relay", &echo.addr.to_string()]);
    let mut ann = server.login("ann", 1).await;
    let mut bob = server.login("bob", 2).await;
    ann.expect("* bob (2) joined").await;
    ann.send("2:hi bob\r\n").await;
    bob.expect("ann (1) -> you: hi bob").await;
    bob.send("hello all\r\n").await;
    ann.expect("bob (2): hello all").await;
    ann.send("9:anyone?\r\n").await;
    ann.expect("! no such uid: 9").await;
    // Killing the echo process stops the relay: nothing is delivered any more.
    drop(echo);
    ann.send("2:lost\r\n").await;
    let silence = tokio::time::timeout(Duration::from_millis(300), bob.line()).await;
    assert!(silence.is_err(), "delivered without the relay: {silence:?}");
}
