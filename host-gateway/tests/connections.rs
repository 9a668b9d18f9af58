//! Telnet users and TCP devices end to end: lines, negotiation, UTF-8, over-long lines,
//! frames, pings, resync after garbage, slow clients and shutdown.

mod common;

use std::time::Duration;

use common::*;
use protocol::link::{ClientKind, Command, Event, Inbound, Outbound, PackedSession};
use protocol::{ChatIn, DeviceMsg, ErrorCode, ErrorReport, HostMsg};

#[tokio::test]
async fn a_last_line_without_its_terminator_still_counts() {
    let gw = Gateway::start().await;
    let mut worker = gw.worker().await;
    let mut user = gw.telnet().await;
    let id = worker.connected(ClientKind::Telnet).await;
    user.send(b"first\r\nlast words").await;
    user.finish().await;
    assert_eq!(worker.line(id).await, "first");
    assert_eq!(worker.line(id).await, "last words");
    match worker.event().await {
        Event::Close { client, .. } => assert_eq!(client, id),
        other => panic!("expected Close, got {other:?}"),
    }
    gw.stop().await;
}

#[tokio::test]
async fn telnet_connect_lines_negotiation_and_utf8() {
    let gw = Gateway::start().await;
    let mut worker = gw.worker().await;
    let mut user = gw.telnet().await;
    let (id, peer) = match worker.event().await {
        Event::Connect {
            client,
            kind: ClientKind::Telnet,
            peer,
        } => (client, peer),
        other => panic!("expected a telnet Connect, got {other:?}"),
    };
    assert_eq!(id.gateway(), 3);
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");

    user.send(b"hello\r\n").await;
    match worker.event().await {
        Event::Message {
            client,
            session,
            body,
        } => {
            assert_eq!(client, id);
            assert!(session.is_empty());
            assert_eq!(body, Inbound::Line("hello".into()));
        }
        other => panic!("expected Message, got {other:?}"),
    }
    // IAC DO ECHO, IAC SB NAWS ... IAC SE, IAC IAC (a literal 0xFF: invalid UTF-8 alone).
    user.send(b"\xff\xfd\x01a\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0b\xff\xff\n")
        .await;
    assert_eq!(worker.line(id).await, "ab\u{fffd}");
    user.send(b"caf\xc3\xa9 \xc3\r\0bare lf\n").await;
    assert_eq!(worker.line(id).await, "café \u{fffd}");
    assert_eq!(worker.line(id).await, "bare lf");

    drop(user);
    match worker.event().await {
        Event::Close {
            client,
            uid,
            session,
        } => {
            assert_eq!((client, uid, session), (id, None, PackedSession::new()));
        }
        other => panic!("expected Close, got {other:?}"),
    }
    gw.stop().await;
}

#[tokio::test]
async fn over_long_line_is_refused_and_the_connection_goes_on() {
    let gw = Gateway::start().await;
    let mut worker = gw.worker().await;
    let mut user = gw.telnet().await;
    let id = worker.connected(ClientKind::Telnet).await;
    let long = vec![b'x'; 10_000];
    user.send(&long).await;
    user.send(b"\r\nstill here\r\n").await;
    assert_eq!(user.line().await, "! line too long (max 4096 bytes)");
    assert_eq!(worker.line(id).await, "still here");
    let stats = stats(&mut worker).await;
    assert_eq!((stats.input_errors, stats.messages_in), (1, 1));
    gw.stop().await;
}

#[tokio::test]
async fn tcp_device_frames_ping_and_resync() {
    let gw = Gateway::start().await;
    let mut worker = gw.worker().await;
    let mut dev = gw.device().await;
    let id = worker.connected(ClientKind::DeviceTcp).await;

    let hello_seq = dev.send(hello("dev-1")).await;
    assert_eq!(
        worker.message(id).await,
        Inbound::Device(Box::new(hello("dev-1")))
    );
    // Hello needs an ack (protocol::reliable).
    let ack = dev.recv().await;
    assert_eq!(ack.msg, HostMsg::Ack { seq: hello_seq });
    assert_eq!(ack.seq, 1);

    // Ping is answered by the gateway itself and never reaches the worker.
    dev.send(DeviceMsg::Ping { nonce: 0xdead_beef }).await;
    let pong = dev.recv().await;
    assert_eq!(pong.msg, HostMsg::Pong { nonce: 0xdead_beef });
    assert_eq!(pong.seq, 2);

    // Garbage (bad COBS/CRC) then a valid frame in the same write: the frame still arrives.
    let telemetry = DeviceMsg::Telemetry(protocol::Telemetry {
        name: "temp_mC".try_into().unwrap(),
        value: 21_500,
    });
    let mut bytes = vec![0x13, 0x37, 0x42, 0x00, 0xff, 0xff, 0x01, 0x00];
    bytes.extend_from_slice(
        &protocol::frame::encode_to_vec(&protocol::Frame {
            seq: 9,
            msg: telemetry.clone(),
        })
        .unwrap(),
    );
    dev.send_raw(&bytes).await;
    assert_eq!(
        worker.message(id).await,
        Inbound::Device(Box::new(telemetry))
    );
    let report = dev.recv().await;
    assert_eq!(
        report.msg,
        HostMsg::Error(ErrorReport {
            code: ErrorCode::Malformed,
            seq: 0
        })
    );
    assert_eq!(report.seq, 3);

    // A line for a device is dropped; the device sees only the chat frame after it.
    worker
        .command(Command::SendToClient {
            client: id,
            body: line("nope"),
        })
        .await;
    let chat = HostMsg::Chat(ChatIn {
        from: "x".try_into().unwrap(),
        direct: false,
        text: "hey".try_into().unwrap(),
    });
    worker
        .command(Command::SendToClient {
            client: id,
            body: Outbound::Device(Box::new(chat.clone())),
        })
        .await;
    assert_eq!(dev.recv().await.msg, chat);

    let s = stats(&mut worker).await;
    assert_eq!(s.input_errors, 2, "two corrupt frames counted");
    assert_eq!(s.messages_in, 3, "hello, ping, telemetry");
    worker.no_event(Duration::from_millis(100)).await;

    drop(dev);
    assert!(matches!(worker.event().await, Event::Close { client, .. } if client == id));
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_client_is_disconnected_and_others_carry_on() {
    let config = gateway::GatewayConfig {
        client_queue: 4,
        ..test_config()
    };
    let gw = Gateway::start_with(config).await;
    let mut worker = gw.worker().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let slow = socket.connect(gw.telnet).await.unwrap();
    let slow_id = worker.connected(ClientKind::Telnet).await;
    let mut fast = gw.telnet().await;
    let fast_id = worker.connected(ClientKind::Telnet).await;
    // The slow user never reads: its socket buffers fill, then its queue, then it is cut.
    let text = "y".repeat(4000);
    for _ in 0..5000 {
        worker
            .command(Command::SendToClient {
                client: slow_id,
                body: line(&text),
            })
            .await;
    }
    worker
        .command(Command::SendToClient {
            client: fast_id,
            body: line("fine"),
        })
        .await;
    assert_eq!(fast.line().await, "fine");
    match worker.event().await {
        Event::Close { client, .. } => assert_eq!(client, slow_id),
        other => panic!("expected the slow client's Close, got {other:?}"),
    }
    assert!(stats(&mut worker).await.dropped > 0);
    drop(slow);
    gw.stop().await;
}
#[tokio::test]
async fn shutdown_says_goodbye_to_telnet_users() {
    let gw = Gateway::start().await;
    let mut worker = gw.worker().await;
    let mut user = gw.telnet().await;
    worker.connected(ClientKind::Telnet).await;
    gw.stop().await;
    assert_eq!(user.line().await, "! server shutting down");
    user.closed().await;
}

#[tokio::test]
async fn device_chat_is_acked_deduplicated_and_retransmitted() {
    let gw = Gateway::start().await;
    let mut worker = gw.worker().await;
    let mut dev = gw.device().await;
    let id = worker.connected(ClientKind::DeviceTcp).await;
    let hello_seq = dev.send(hello("dev-2")).await;
    worker.message(id).await;
    assert_eq!(dev.recv().await.msg, HostMsg::Ack { seq: hello_seq });

    // The device's chat frame is acked; sent again (its ack was "lost"), it is acked again
    // but reaches the worker once.
    let said = DeviceMsg::Chat(protocol::ChatOut {
        to: None,
        text: "hi all".try_into().unwrap(),
    });
    let frame = protocol::frame::encode_to_vec(&protocol::Frame {
        seq: 40,
        msg: said.clone(),
    })
    .unwrap();
    dev.send_raw(&frame).await;
    assert_eq!(dev.recv().await.msg, HostMsg::Ack { seq: 40 });
    dev.send_raw(&frame).await;
    assert_eq!(dev.recv().await.msg, HostMsg::Ack { seq: 40 });
    assert_eq!(worker.message(id).await, Inbound::Device(Box::new(said)));
    worker.no_event(Duration::from_millis(100)).await;

    // Two chat frames for the device: the second waits until the first is acked, and the
    // first is sent again while no ack comes.
    let chat = |text: &str| {
        HostMsg::Chat(ChatIn {
            from: "1".try_into().unwrap(),
            direct: true,
            text: text.try_into().unwrap(),
        })
    };
    for text in ["one", "two"] {
        worker
            .command(Command::SendToClient {
                client: id,
                body: Outbound::Device(Box::new(chat(text))),
            })
            .await;
    }
    let first = dev.recv().await;
    assert_eq!(first.msg, chat("one"));
    let again = dev.recv().await;
    assert_eq!(again, first, "retransmitted unchanged, and before \"two\"");
    dev.send(DeviceMsg::Ack { seq: first.seq }).await;
    let second = dev.recv().await;
    assert_eq!(second.msg, chat("two"));
    dev.send(DeviceMsg::Ack { seq: second.seq }).await;
    gw.stop().await;
}
