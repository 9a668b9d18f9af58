//! The worker link end to end: handshake and refusals, monitoring links, events held
//! while no worker is connected, and clients that outlive a worker.

mod common;

use std::time::Duration;

use common::*;
use protocol::link::{
    ClientKind, Command, Event, GatewayToWorker, Inbound, Query, Reply, WorkerToGateway,
    LINK_VERSION,
};
use protocol::{ErrorCode, ErrorReport, HostMsg};

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
    // Received intact (acked at the link level), then refused: the device must resend later.
    assert_eq!(dev.recv().await.msg, HostMsg::Ack { seq });
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
    wait_for_workers(&mut probe, 0).await;
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
async fn a_misbehaving_worker_loses_its_link_and_clients_stay() {
    let gw = Gateway::start().await;
    // Not a Hello first: refused.
    let first = WorkerToGateway::Command(Command::Ungroup { group: "g".into() });
    match FakeWorker::handshake(gw.worker, first).await {
        Err(GatewayToWorker::Refused { reason }) => assert!(reason.contains("Hello"), "{reason}"),
        Err(other) => panic!("expected Refused, got {other:?}"),
        Ok(_) => panic!("a link without Hello accepted"),
    }

    let mut worker = gw.worker().await;
    let mut user = gw.telnet().await;
    let id = worker.connected(ClientKind::Telnet).await;
    // Bytes that are no WorkerToGateway message: the link is closed, nothing else happens.
    worker.send_raw(&[0xff, 0xff, 0xff]).await;
    assert!(
        worker.recv().await.is_none(),
        "the gateway closes a link that sends garbage"
    );

    let mut worker = gw.worker().await;
    user.send(b"still connected\n").await;
    assert_eq!(worker.line(id).await, "still connected");
    wait_for_workers(&mut worker, 1).await;
    gw.stop().await;
}
