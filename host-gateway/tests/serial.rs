//! A serial device on a real pty: the gateway opens the configured path (a symlink to the
//! pty's slave, like `/dev/serial/by-id/...`), sees it go away when the pty's master closes,
//! and reopens it when a new pty appears at the same path.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use gateway::{GatewayConfig, SerialConfig};
use protocol::link::{ClientKind, Command, Event, Inbound, Outbound};
use protocol::{ChatIn, DeviceMsg, HostMsg};
use tokio_serial::{SerialPort, SerialStream};

/// A new pty; returns its master and points `link` at its slave.
fn new_pty(link: &Path) -> SerialStream {
    let (master, slave) = SerialStream::pair().expect("pty pair");
    let slave_path = slave.name().expect("slave has a path");
    drop(slave); // the gateway opens the path itself
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&slave_path, link).expect("symlink");
    master
}

#[tokio::test]
async fn serial_device_on_a_pty_connects_talks_goes_offline_and_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("ttyTEST0");
    let master = new_pty(&link);

    let config = GatewayConfig {
        serial: vec![SerialConfig {
            path: link.clone(),
            baud: 115_200,
        }],
        ..test_config()
    };
    let gw = Gateway::start_with(config).await;
    let mut worker = gw.worker().await;
    let first = match worker.event().await {
        Event::Connect {
            client,
            kind: ClientKind::DeviceSerial,
            peer,
        } => {
            assert_eq!(peer, link.display().to_string());
            client
        }
        other => panic!("expected a serial Connect, got {other:?}"),
    };

    let mut dev = Device::new(master);
    let hello_seq = dev.send(hello("pty-dev")).await;
    assert_eq!(
        worker.message(first).await,
        Inbound::Device(Box::new(hello("pty-dev")))
    );
    assert_eq!(dev.recv().await.msg, HostMsg::Ack { seq: hello_seq });
    dev.send(DeviceMsg::Ping { nonce: 5 }).await;
    assert_eq!(dev.recv().await.msg, HostMsg::Pong { nonce: 5 });
    let chat = HostMsg::Chat(ChatIn {
        from: "alice".try_into().unwrap(),
        direct: true,
        text: "over serial".try_into().unwrap(),
    });
    worker
        .command(Command::SendToClient {
            client: first,
            body: Outbound::Device(Box::new(chat.clone())),
        })
        .await;
    assert_eq!(dev.recv().await.msg, chat);

    // Unplug: the pty's master goes away; the device goes offline.
    drop(dev);
    match worker.event().await {
        Event::Close { client, .. } => assert_eq!(client, first),
        other => panic!("expected Close, got {other:?}"),
    }

    // Let the gateway fail a few reopen attempts (backoff grows), then plug a new pty in.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let master = new_pty(&link);
    let second = match worker.event().await {
        Event::Connect {
            client,
            kind: ClientKind::DeviceSerial,
            ..
        } => client,
        other => panic!("expected a serial Connect, got {other:?}"),
    };
    assert_ne!(first, second, "a reopen is a new connection");
    let mut dev = Device::new(master);
    dev.send(hello("pty-dev")).await;
    assert_eq!(
        worker.message(second).await,
        Inbound::Device(Box::new(hello("pty-dev")))
    );
    gw.stop().await;
}
