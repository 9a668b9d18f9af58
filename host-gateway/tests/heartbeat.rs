//! Heartbeats end to end (`ping_interval_ms`, `ping_not_response_limit`, `telnet_idle_limit`):
//! silent devices are pinged and closed, answering ones stay; telnet users get IAC NOP and
//! are closed when idle only if a telnet idle limit is set. Intervals are 100 ms here.

mod common;

use std::time::{Duration, Instant};

use common::*;
use protocol::link::{ClientKind, Command, Event, Inbound};
use protocol::{DeviceMsg, HostMsg};
use tokio::io::AsyncReadExt;

const INTERVAL: Duration = Duration::from_millis(100);
const IAC_NOP: [u8; 2] = [0xff, 0xf1];

fn config(device_limit: u32, telnet_limit: u32) -> gateway::GatewayConfig {
    gateway::GatewayConfig {
        ping_interval_ms: 100,
        ping_not_response_limit: device_limit,
        telnet_idle_limit: telnet_limit,
        ..test_config()
    }
}

/// Reads raw bytes until the gateway closes the connection.
async fn read_to_close(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut all = Vec::new();
    within(
        "the gateway to close the connection",
        stream.read_to_end(&mut all),
    )
    .await
    .expect("read");
    all
}

async fn expect_close(worker: &mut FakeWorker, id: protocol::link::ClientId) {
    match worker.event().await {
        Event::Close { client, .. } => assert_eq!(client, id),
        other => panic!("expected Close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_device_that_never_answers_is_pinged_then_closed() {
    let gw = Gateway::start_with(config(3, 0)).await;
    let mut worker = gw.worker().await;
    let mut dev = gw.device().await;
    let id = worker.connected(ClientKind::DeviceTcp).await;
    let hello_seq = dev.send(hello("mute")).await;
    let heard = Instant::now();
    assert_eq!(
        worker.message(id).await,
        Inbound::Device(Box::new(hello("mute")))
    );
    assert_eq!(dev.recv().await.msg, HostMsg::Ack { seq: hello_seq });

    // Silent from here on: two pings (after 1 and 2 intervals), closed at the third.
    let bytes = read_to_close(&mut dev.stream).await;
    let silent = heard.elapsed();
    let frames: Vec<HostMsg> = protocol::Decoder::<HostMsg>::new()
        .feed(&bytes)
        .map(|item| item.expect("valid frame").msg)
        .collect();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(
        frames.iter().all(|m| matches!(m, HostMsg::Ping { .. })),
        "{frames:?}"
    );
    assert_ne!(frames[0], frames[1], "each ping has its own nonce");
    // Closed at the third silent interval, not the second. The gateway's clock starts when
    // it reads the hello, ours when we sent it, and timers round to the millisecond: allow
    // half an interval of slack rather than demand 300 ms to the microsecond.
    assert!(
        silent >= 2 * INTERVAL + INTERVAL / 2,
        "closed after {silent:?}"
    );
    expect_close(&mut worker, id).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_device_that_answers_pings_stays_connected() {
    let gw = Gateway::start_with(config(2, 0)).await;
    let mut worker = gw.worker().await;
    let mut dev = gw.device().await;
    let id = worker.connected(ClientKind::DeviceTcp).await;
    let hello_seq = dev.send(hello("chatty")).await;
    assert_eq!(
        worker.message(id).await,
        Inbound::Device(Box::new(hello("chatty")))
    );
    assert_eq!(dev.recv().await.msg, HostMsg::Ack { seq: hello_seq });

    // Six intervals, three times the limit, answering each ping with its pong.
    let mut pings = 0;
    let until = Instant::now() + 6 * INTERVAL;
    while Instant::now() < until {
        match dev.recv().await.msg {
            HostMsg::Ping { nonce } => {
                pings += 1;
                dev.send(DeviceMsg::Pong { nonce }).await;
            }
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    assert!(pings >= 4, "{pings} pings in six intervals");
    // Still connected: the worker saw no Close, and a message still reaches the device.
    worker.no_event(Duration::from_millis(10)).await;
    let chat = HostMsg::Chat(protocol::ChatIn {
        from: "x".try_into().unwrap(),
        direct: true,
        text: "still there?".try_into().unwrap(),
    });
    worker
        .command(Command::SendToClient {
            client: id,
            body: protocol::link::Outbound::Device(Box::new(chat.clone())),
        })
        .await;
    loop {
        match dev.recv().await.msg {
            HostMsg::Ping { nonce } => {
                dev.send(DeviceMsg::Pong { nonce }).await;
            }
            msg => {
                assert_eq!(msg, chat);
                break;
            }
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_telnet_user_gets_nops_and_stays_when_the_idle_limit_is_zero() {
    let gw = Gateway::start_with(config(1, 0)).await;
    let mut worker = gw.worker().await;
    let mut user = gw.telnet().await;
    let id = worker.connected(ClientKind::Telnet).await;

    // Ten intervals of silence, ten times the device limit: only NOPs arrive.
    let mut got = Vec::new();
    let until = tokio::time::Instant::now() + 10 * INTERVAL;
    while let Ok(read) = tokio::time::timeout_at(until, user.read_some()).await {
        got.extend_from_slice(&read);
    }
    assert!(got.len() >= 2 * 5, "{got:?}");
    assert!(got.chunks(2).all(|c| c == IAC_NOP), "{got:?}");
    worker.no_event(Duration::from_millis(10)).await;

    // Still connected both ways.
    user.send(b"hi\r\n").await;
    assert_eq!(worker.line(id).await, "hi");
    worker
        .command(Command::SendToClient {
            client: id,
            body: line("hello"),
        })
        .await;
    let mut text = Vec::new();
    while !text.ends_with(b"\r\n") {
        text.extend(user.read_some().await);
    }
    text.retain(|b| !IAC_NOP.contains(b));
    assert_eq!(text, b"hello\r\n");
    gw.stop().await;
}

#[tokio::test]
async fn a_telnet_user_idle_past_the_limit_is_told_and_closed() {
    let gw = Gateway::start_with(config(0, 2)).await;
    let mut worker = gw.worker().await;

    // Typing keeps a user connected, even without finishing a line.
    let mut typist = gw.telnet().await;
    let typist_id = worker.connected(ClientKind::Telnet).await;
    for _ in 0..6 {
        typist.send(b"x").await;
        tokio::time::sleep(INTERVAL).await;
    }
    worker.no_event(Duration::from_millis(10)).await;

    // Silence does not: one NOP after an interval, then the last line and the close.
    let start = Instant::now();
    let mut idle = gw.telnet().await;
    let idle_id = worker.connected(ClientKind::Telnet).await;
    let bytes = read_to_close(idle.reader_mut()).await;
    assert!(start.elapsed() >= 2 * INTERVAL, "{:?}", start.elapsed());
    assert_eq!(bytes, b"\xff\xf1! disconnected: idle\r\n");

    // The typist, silent meanwhile, is closed too; the chat never saw its half line.
    let bytes = read_to_close(typist.reader_mut()).await;
    assert!(bytes.ends_with(b"! disconnected: idle\r\n"), "{bytes:?}");
    let mut closed = Vec::new();
    for _ in 0..2 {
        match worker.event().await {
            Event::Close { client, .. } => closed.push(client),
            other => panic!("expected Close, got {other:?}"),
        }
    }
    closed.sort();
    let mut expected = vec![typist_id, idle_id];
    expected.sort();
    assert_eq!(closed, expected);
    gw.stop().await;
}
