//! The gateway end to end over loopback sockets: worker handshake, telnet users, TCP
//! devices, every command and query, and events held while no worker is connected.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use protocol::link::{
    ClientId, ClientKind, Command, Event, GatewayToWorker, Inbound, Outbound, Query, Reply,
    Session, WorkerToGateway, LINK_VERSION,
};
use protocol::{ChatIn, DeviceMsg, ErrorCode, ErrorReport, HostMsg};

fn session(pairs: &[(&str, &str)]) -> Session {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn stats(worker: &mut FakeWorker) -> protocol::link::GatewayStats {
    match worker.query(Query::Stats).await {
        Reply::Stats(stats) => stats,
        other => panic!("expected stats, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_secret_and_bad_version_are_refused() {
    let gw = Gateway::start().await;
    match FakeWorker::connect(gw.worker, "wrong").await {
        Err(GatewayToWorker::Refused { reason }) => assert!(reason.contains("secret"), "{reason}"),
        Err(other) => panic!("expected Refused, got {other:?}"),
        Ok(_) => panic!("bad secret accepted"),
    }
    let hello = WorkerToGateway::Hello {
        version: LINK_VERSION + 1,
        secret: SECRET.into(),
        name: "future".into(),
    };
    match FakeWorker::handshake(gw.worker, hello).await {
        Err(GatewayToWorker::Refused { reason }) => assert!(reason.contains("version"), "{reason}"),
        Err(other) => panic!("expected Refused, got {other:?}"),
        Ok(_) => panic!("bad version accepted"),
    }
    // A good worker still gets in, and a refused one never counted.
    let mut worker = gw.worker().await;
    assert_eq!(worker.gateway_id, 3);
    assert_eq!(stats(&mut worker).await.workers, 1);
    gw.stop().await;
}

#[tokio::test]
async fn monitor_link_answers_queries_but_gets_no_events() {
    let gw = Gateway::start().await;
    let mut worker = gw.worker().await;
    let monitor = WorkerToGateway::Monitor {
        version: LINK_VERSION,
        secret: SECRET.into(),
    };
    let mut monitor = FakeWorker::handshake(gw.worker, monitor)
        .await
        .expect("monitor accepted");
    let mut user = gw.telnet().await;
    let id = worker.connected(ClientKind::Telnet).await;
    user.send(b"hi\n").await;
    assert_eq!(worker.line(id).await, "hi");
    let stats = match monitor.query(Query::Stats).await {
        Reply::Stats(stats) => stats,
        other => panic!("{other:?}"),
    };
    assert_eq!((stats.workers, stats.telnet_clients), (1, 1));
    monitor.no_event(Duration::from_millis(200)).await;
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
            assert_eq!((client, uid, session), (id, None, Session::new()));
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
async fn send_commands_reach_the_right_users() {
    let gw = Gateway::start().await;
    let mut worker = gw.worker().await;
    let mut a = gw.telnet().await;
    let ida = worker.connected(ClientKind::Telnet).await;
    let mut b = gw.telnet().await;
    let idb = worker.connected(ClientKind::Telnet).await;
    let mut dev = gw.device().await;
    let idd = worker.connected(ClientKind::DeviceTcp).await;

    worker
        .command(Command::SendToClient {
            client: ida,
            body: line("to a"),
        })
        .await;
    assert_eq!(a.line().await, "to a");

    // Everyone but a; the device does not take lines and is skipped.
    worker
        .command(Command::SendToAll {
            body: line("all but a"),
            exclude: vec![ida],
        })
        .await;
    worker
        .command(Command::SendToAll {
            body: line("all"),
            exclude: vec![],
        })
        .await;
    assert_eq!(b.line().await, "all but a");
    assert_eq!(b.line().await, "all");
    assert_eq!(a.line().await, "all");

    worker
        .command(Command::BindUid {
            client: ida,
            uid: "alice".into(),
        })
        .await;
    worker
        .command(Command::BindUid {
            client: idd,
            uid: "alice".into(),
        })
        .await;
    let chat = HostMsg::Chat(ChatIn {
        from: "bob".try_into().unwrap(),
        direct: true,
        text: "hi alice".try_into().unwrap(),
    });
    worker
        .command(Command::SendToUid {
            uids: vec!["alice".into()],
            body: Outbound::Device(chat.clone()),
        })
        .await;
    worker
        .command(Command::SendToUid {
            uids: vec!["alice".into(), "nobody".into()],
            body: line("uid"),
        })
        .await;
    assert_eq!(a.line().await, "uid");
    let frame = dev.recv().await;
    assert_eq!((frame.seq, frame.msg), (1, chat));

    worker
        .command(Command::JoinGroup {
            client: ida,
            group: "room".into(),
        })
        .await;
    worker
        .command(Command::JoinGroup {
            client: idb,
            group: "room".into(),
        })
        .await;
    worker
        .command(Command::SendToGroup {
            groups: vec!["room".into()],
            body: line("room, not b"),
            exclude: vec![idb],
        })
        .await;
    worker
        .command(Command::LeaveGroup {
            client: ida,
            group: "room".into(),
        })
        .await;
    worker
        .command(Command::SendToGroup {
            groups: vec!["room".into()],
            body: line("room"),
            exclude: vec![],
        })
        .await;
    assert_eq!(a.line().await, "room, not b");
    assert_eq!(b.line().await, "room");
    worker
        .command(Command::SendToClient {
            client: ida,
            body: line("a again"),
        })
        .await;
    assert_eq!(a.line().await, "a again"); // a got nothing from the second group send

    worker
        .command(Command::UpdateSession {
            client: idb,
            session: session(&[("nick", "bo")]),
        })
        .await;
    worker
        .command(Command::BindUid {
            client: idb,
            uid: "bob".into(),
        })
        .await;
    worker
        .command(Command::CloseClient {
            client: idb,
            farewell: Some(line("bye")),
        })
        .await;
    assert_eq!(b.line().await, "bye");
    b.closed().await;
    match worker.event().await {
        Event::Close {
            client,
            uid,
            session: s,
        } => {
            assert_eq!(
                (client, uid, s),
                (idb, Some("bob".into()), session(&[("nick", "bo")]))
            );
        }
        other => panic!("expected Close, got {other:?}"),
    }
    // The closed client's uid and group are gone.
    assert_eq!(
        worker.query(Query::IsUidOnline("bob".into())).await,
        Reply::Bool(false)
    );
    assert_eq!(
        worker.query(Query::ClientCount(Some("room".into()))).await,
        Reply::Count(0)
    );
    assert_eq!(worker.query(Query::Groups).await, Reply::Groups(vec![]));
    gw.stop().await;
}

#[tokio::test]
async fn sessions_travel_with_messages_and_are_bounded() {
    let gw = Gateway::start().await;
    let mut worker = gw.worker().await;
    let mut user = gw.telnet().await;
    let id = worker.connected(ClientKind::Telnet).await;

    worker
        .command(Command::SetSession {
            client: id,
            session: session(&[("a", "1"), ("b", "2")]),
        })
        .await;
    worker
        .command(Command::UpdateSession {
            client: id,
            session: session(&[("b", "3"), ("c", "4")]),
        })
        .await;
    let expected = session(&[("a", "1"), ("b", "3"), ("c", "4")]);
    assert_eq!(
        worker.query(Query::GetSession(id)).await,
        Reply::Session(Some(expected.clone()))
    );
    user.send(b"x\n").await;
    match worker.event().await {
        Event::Message { session, .. } => assert_eq!(session, expected),
        other => panic!("expected Message, got {other:?}"),
    }

    // Too big: refused whole, the session stays as it was.
    let big: Session = (0..100)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    worker
        .command(Command::UpdateSession {
            client: id,
            session: big.clone(),
        })
        .await;
    worker
        .command(Command::SetSession {
            client: id,
            session: big,
        })
        .await;
    let huge = session(&[("blob", &"z".repeat(5000))]);
    worker
        .command(Command::UpdateSession {
            client: id,
            session: huge,
        })
        .await;
    assert_eq!(
        worker.query(Query::GetSession(id)).await,
        Reply::Session(Some(expected))
    );
    gw.stop().await;
}

#[tokio::test]
async fn queries_answer_like_gatewayworker() {
    let gw = Gateway::start().await;
    let mut worker = gw.worker().await;
    let mut a = gw.telnet().await;
    let ida = worker.connected(ClientKind::Telnet).await;
    let _b = gw.telnet().await;
    let idb = worker.connected(ClientKind::Telnet).await;
    let _dev = gw.device().await;
    let idd = worker.connected(ClientKind::DeviceTcp).await;
    let gone = ClientId::new(3, 999);

    worker
        .command(Command::BindUid {
            client: ida,
            uid: "u1".into(),
        })
        .await;
    worker
        .command(Command::BindUid {
            client: idb,
            uid: "u1".into(),
        })
        .await;
    worker
        .command(Command::BindUid {
            client: idd,
            uid: "dev".into(),
        })
        .await;
    worker
        .command(Command::BindUid {
            client: idd,
            uid: "dev2".into(),
        })
        .await; // rebinding replaces
    worker
        .command(Command::JoinGroup {
            client: ida,
            group: "g".into(),
        })
        .await;
    worker
        .command(Command::JoinGroup {
            client: idd,
            group: "g".into(),
        })
        .await;
    worker
        .command(Command::SetSession {
            client: ida,
            session: session(&[("k", "v")]),
        })
        .await;

    assert_eq!(worker.query(Query::IsOnline(ida)).await, Reply::Bool(true));
    assert_eq!(
        worker.query(Query::IsOnline(gone)).await,
        Reply::Bool(false)
    );
    assert_eq!(
        worker.query(Query::IsUidOnline("u1".into())).await,
        Reply::Bool(true)
    );
    assert_eq!(
        worker.query(Query::IsUidOnline("dev".into())).await,
        Reply::Bool(false)
    );
    assert_eq!(
        worker.query(Query::ClientIdsByUid("u1".into())).await,
        Reply::Clients(vec![ida, idb])
    );
    assert_eq!(
        worker.query(Query::UidByClientId(idd)).await,
        Reply::Uid(Some("dev2".into()))
    );
    assert_eq!(
        worker.query(Query::UidByClientId(gone)).await,
        Reply::Uid(None)
    );
    assert_eq!(
        worker.query(Query::ClientCount(None)).await,
        Reply::Count(3)
    );
    assert_eq!(
        worker.query(Query::ClientCount(Some("g".into()))).await,
        Reply::Count(2)
    );
    assert_eq!(
        worker.query(Query::ClientIds(None)).await,
        Reply::Clients(vec![ida, idb, idd])
    );
    assert_eq!(
        worker.query(Query::ClientIds(Some("g".into()))).await,
        Reply::Clients(vec![ida, idd])
    );
    assert_eq!(
        worker.query(Query::Uids).await,
        Reply::Uids(vec!["dev2".into(), "u1".into()])
    );
    assert_eq!(worker.query(Query::UidCount).await, Reply::Count(2));
    assert_eq!(
        worker.query(Query::Groups).await,
        Reply::Groups(vec!["g".into()])
    );
    assert_eq!(
        worker.query(Query::GetSession(gone)).await,
        Reply::Session(None)
    );
    match worker.query(Query::Sessions(Some("g".into()))).await {
        Reply::Sessions(infos) => {
            let got: Vec<_> = infos
                .iter()
                .map(|i| (i.client, i.kind, i.uid.clone(), i.session.clone()))
                .collect();
            assert_eq!(
                got,
                vec![
                    (
                        ida,
                        ClientKind::Telnet,
                        Some("u1".into()),
                        session(&[("k", "v")])
                    ),
                    (
                        idd,
                        ClientKind::DeviceTcp,
                        Some("dev2".into()),
                        BTreeMap::new()
                    ),
                ]
            );
        }
        other => panic!("expected Sessions, got {other:?}"),
    }
    match worker.query(Query::Sessions(None)).await {
        Reply::Sessions(infos) => assert_eq!(infos.len(), 3),
        other => panic!("expected Sessions, got {other:?}"),
    }

    a.send(b"one\ntwo\n").await;
    assert_eq!(worker.line(ida).await, "one");
    assert_eq!(worker.line(ida).await, "two");
    worker
        .command(Command::SendToClient {
            client: ida,
            body: line("out"),
        })
        .await;
    assert_eq!(a.line().await, "out");
    // Wrong kind for the client, and a client that does not exist: both dropped.
    worker
        .command(Command::SendToClient {
            client: idd,
            body: line("not for devices"),
        })
        .await;
    worker
        .command(Command::SendToClient {
            client: gone,
            body: line("nobody"),
        })
        .await;
    let s = stats(&mut worker).await;
    assert_eq!(s.gateway, 3);
    assert_eq!((s.telnet_clients, s.device_clients, s.workers), (2, 1, 1));
    assert_eq!(
        (s.connections_total, s.messages_in, s.messages_out),
        (3, 2, 1)
    );
    assert_eq!((s.input_errors, s.dropped), (0, 2));

    worker.command(Command::Ungroup { group: "g".into() }).await;
    assert_eq!(worker.query(Query::Groups).await, Reply::Groups(vec![]));
    assert_eq!(
        worker.query(Query::ClientCount(Some("g".into()))).await,
        Reply::Count(0)
    );
    gw.stop().await;
}

#[tokio::test]
async fn tcp_device_frames_ping_and_resync() {
    let gw = Gateway::start().await;
    let mut worker = gw.worker().await;
    let mut dev = gw.device().await;
    let id = worker.connected(ClientKind::DeviceTcp).await;

    dev.send(hello("dev-1")).await;
    assert_eq!(worker.message(id).await, Inbound::Device(hello("dev-1")));

    // Ping is answered by the gateway itself and never reaches the worker.
    dev.send(DeviceMsg::Ping { nonce: 0xdead_beef }).await;
    let pong = dev.recv().await;
    assert_eq!(pong.msg, HostMsg::Pong { nonce: 0xdead_beef });
    assert_eq!(pong.seq, 1);

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
    assert_eq!(worker.message(id).await, Inbound::Device(telemetry));
    let report = dev.recv().await;
    assert_eq!(
        report.msg,
        HostMsg::Error(ErrorReport {
            code: ErrorCode::Malformed,
            seq: 0
        })
    );
    assert_eq!(report.seq, 2);

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
            body: Outbound::Device(chat.clone()),
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
async fn events_are_held_until_a_worker_connects_and_refused_past_the_limit() {
    let config = gateway::GatewayConfig {
        pending_events: 4,
        ..test_config()
    };
    let gw = Gateway::start_with(config).await;
    let mut user = gw.telnet().await;
    let mut dev = gw.device().await;
    // Connect x2 + two lines fill the queue; the third line and the device frame are refused.
    user.send(b"first\nsecond\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    user.send(b"third\n").await;
    assert_eq!(user.line().await, "! server busy, message not accepted");
    let seq = dev.send(hello("late")).await;
    let busy = dev.recv().await;
    assert_eq!(
        busy.msg,
        HostMsg::Error(ErrorReport {
            code: ErrorCode::Busy,
            seq
        })
    );

    let mut worker = gw.worker().await;
    let mut connects = Vec::new();
    let mut lines = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (id, event) = worker.event_with_id().await;
        ids.push(id);
        match event {
            Event::Connect { kind, .. } => connects.push(kind),
            Event::Message {
                body: Inbound::Line(text),
                ..
            } => lines.push(text),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ids, vec![1, 2, 3, 4], "event ids increase per link");
    assert_eq!(lines, vec!["first", "second"]);
    assert_eq!(connects.len(), 2);
    worker.no_event(Duration::from_millis(200)).await;
    assert_eq!(stats(&mut worker).await.dropped, 2);

    // Once a worker is there, new messages flow directly.
    user.send(b"fourth\n").await;
    match worker.event().await {
        Event::Message { body, .. } => assert_eq!(body, Inbound::Line("fourth".into())),
        other => panic!("unexpected {other:?}"),
    }
    gw.stop().await;
}

#[tokio::test]
async fn clients_survive_a_worker_restart() {
    let gw = Gateway::start().await;
    let mut worker = gw.worker().await;
    let mut user = gw.telnet().await;
    let id = worker.connected(ClientKind::Telnet).await;
    worker
        .command(Command::BindUid {
            client: id,
            uid: "u".into(),
        })
        .await;
    drop(worker);
    // Wait until the gateway noticed the worker is gone, then talk.
    let mut probe = FakeWorker::handshake(
        gw.worker,
        WorkerToGateway::Monitor {
            version: LINK_VERSION,
            secret: SECRET.into(),
        },
    )
    .await
    .expect("monitor");
    for _ in 0..50 {
        if matches!(probe.query(Query::Stats).await, Reply::Stats(s) if s.workers == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    user.send(b"while away\n").await;
    let mut worker = gw.worker().await;
    assert_eq!(worker.line(id).await, "while away");
    assert_eq!(
        worker.query(Query::UidByClientId(id)).await,
        Reply::Uid(Some("u".into()))
    );
    worker
        .command(Command::SendToUid {
            uids: vec!["u".into()],
            body: line("welcome back"),
        })
        .await;
    assert_eq!(user.line().await, "welcome back");
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
