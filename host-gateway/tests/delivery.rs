//! Delivery to workers end to end (see `delivery.rs`): unacked events go to the next worker
//! in order and acked ones do not, one client's order holds across the change, `Leaving`,
//! poison events, the in-flight window, and nothing accepted lost while no worker is there.

mod common;

use std::time::Duration;

use common::*;
use protocol::link::{ClientId, Command, Event, WorkerToGateway, LINK_VERSION};

/// Long enough for an event that should not come to have come.
const QUIET: Duration = Duration::from_millis(300);

/// A worker that acks only what the test acks.
async fn manual(gw: &Gateway) -> FakeWorker {
    let mut worker = gw.worker().await;
    worker.auto_ack = false;
    worker
}

/// Expects a Connect and acks it.
async fn connected(worker: &mut FakeWorker) -> ClientId {
    match worker.event_with_id().await {
        (id, Event::Connect { client, .. }) => {
            worker.ack(id).await;
            client
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}

/// Expects a line from `client`; returns its event id.
async fn line_id(worker: &mut FakeWorker, client: ClientId, text: &str) -> u64 {
    match worker.event_with_id().await {
        (
            id,
            Event::Message {
                client: c, body, ..
            },
        ) => {
            assert_eq!(
                (c, body),
                (client, protocol::link::Inbound::Line(text.into()))
            );
            id
        }
        other => panic!("expected {text:?} from {client}, got {other:?}"),
    }
}

/// Expects these lines from `client`, in this order.
async fn lines(worker: &mut FakeWorker, client: ClientId, texts: &[&str]) {
    for text in texts {
        assert_eq!(&worker.line(client).await, text);
    }
}

async fn monitor(gw: &Gateway) -> FakeWorker {
    let hello = WorkerToGateway::Monitor {
        version: LINK_VERSION,
        secret: SECRET.into(),
    };
    FakeWorker::handshake(gw.worker, hello)
        .await
        .expect("monitor")
}

#[tokio::test]
async fn unacked_events_go_to_the_next_worker_in_order_and_acked_ones_do_not() {
    let gw = Gateway::start().await;
    let mut a = manual(&gw).await;
    let mut user = gw.telnet().await;
    let id = connected(&mut a).await;
    user.send(b"one\ntwo\nthree\n").await;
    let one = line_id(&mut a, id, "one").await;
    line_id(&mut a, id, "two").await;
    line_id(&mut a, id, "three").await;
    a.ack(one).await;

    let mut b = gw.worker().await;
    wait_for_workers(&mut b, 2).await;
    // The client stays on the worker that has its unacked events.
    user.send(b"four\n").await;
    line_id(&mut a, id, "four").await;
    b.no_event(QUIET).await;

    drop(a);
    lines(&mut b, id, &["two", "three", "four"]).await;
    b.no_event(QUIET).await;
    user.send(b"five\n").await;
    assert_eq!(b.line(id).await, "five");
    assert_eq!(stats(&mut b).await.dropped, 0);
    gw.stop().await;
}

#[tokio::test]
async fn a_leaving_worker_gets_no_new_events_and_its_acks_and_commands_still_count() {
    let gw = Gateway::start().await;
    let mut a = manual(&gw).await;
    let mut user1 = gw.telnet().await;
    let id1 = connected(&mut a).await;
    let mut user2 = gw.telnet().await;
    let id2 = connected(&mut a).await;
    user1.send(b"x\n").await;
    let x = line_id(&mut a, id1, "x").await;
    let mut b = gw.worker().await;
    wait_for_workers(&mut b, 2).await;

    a.send(&WorkerToGateway::Leaving).await;
    // A reply proves the gateway read everything the link sent before it.
    stats(&mut a).await;
    // A client with nothing unacked on the leaving worker moves at once.
    user2.send(b"y\n").await;
    assert_eq!(b.line(id2).await, "y");
    // One with an unacked event there waits, so it is not handled before "x".
    user1.send(b"z\n").await;
    b.no_event(QUIET).await;
    a.command(Command::SendToClient {
        client: id1,
        body: line("still executing"),
    })
    .await;
    assert_eq!(user1.line().await, "still executing");
    a.ack(x).await;
    assert_eq!(b.line(id1).await, "z");
    a.no_event(QUIET).await;

    // "x" was acked: closing the link redelivers nothing.
    drop(a);
    wait_for_workers(&mut b, 1).await;
    b.no_event(QUIET).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_leaving_workers_unacked_events_come_first_in_order_when_it_closes() {
    let gw = Gateway::start().await;
    let mut a = manual(&gw).await;
    let mut user = gw.telnet().await;
    let id = connected(&mut a).await;
    user.send(b"a1\na2\n").await;
    line_id(&mut a, id, "a1").await;
    line_id(&mut a, id, "a2").await;
    let mut b = gw.worker().await;
    wait_for_workers(&mut b, 2).await;
    a.send(&WorkerToGateway::Leaving).await;
    stats(&mut a).await;
    user.send(b"a3\n").await;
    b.no_event(QUIET).await;

    drop(a);
    lines(&mut b, id, &["a1", "a2", "a3"]).await;
    b.no_event(QUIET).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_poison_event_is_dropped_after_max_redeliveries_and_the_next_one_survives() {
    let config = gateway::GatewayConfig {
        max_redeliveries: 2,
        ..test_config()
    };
    let gw = Gateway::start_with(config).await;
    let mut w = manual(&gw).await;
    let mut user = gw.telnet().await;
    let id = connected(&mut w).await;
    user.send(b"poison\nafter\n").await;
    // The first delivery: both go; the worker dies on "poison" before acking either.
    line_id(&mut w, id, "poison").await;
    line_id(&mut w, id, "after").await;
    drop(w);
    // Two redeliveries on trial: "poison" alone, and each worker dies on it again.
    for _ in 0..2 {
        w = manual(&gw).await;
        line_id(&mut w, id, "poison").await;
        w.no_event(QUIET).await;
        drop(w);
    }
    // "after" was never the one a worker died on: it stays.
    let mut w = gw.worker().await;
    assert_eq!(w.line(id).await, "after");
    w.no_event(QUIET).await;
    assert_eq!(stats(&mut w).await.dropped, 1);
    gw.stop().await;
}

/// Acks go out in batches, so a worker that dies on an event can leave a good event it
/// handled just before unacked, and that one looks like the poison. On trial, alone, it is
/// acked and cleared, and only the real poison event is dropped.
#[tokio::test]
async fn a_good_event_handled_just_before_the_poison_one_is_cleared_on_trial_not_dropped() {
    let config = gateway::GatewayConfig {
        max_redeliveries: 1,
        ..test_config()
    };
    let gw = Gateway::start_with(config).await;
    let mut w = manual(&gw).await;
    let mut user = gw.telnet().await;
    let id = connected(&mut w).await;
    let mut other = gw.telnet().await;
    let other_id = connected(&mut w).await;
    user.send(b"good\npoison\n").await;
    line_id(&mut w, id, "good").await;
    line_id(&mut w, id, "poison").await;
    // Handled "good", died on "poison" with the batch's ack not yet written.
    drop(w);

    let mut w = manual(&gw).await;
    let good = line_id(&mut w, id, "good").await;
    // On trial: the only worker gets nothing else until it acks "good".
    other.send(b"meanwhile\n").await;
    w.no_event(QUIET).await;
    w.ack(good).await;
    line_id(&mut w, id, "poison").await;
    drop(w);

    let mut w = manual(&gw).await;
    line_id(&mut w, id, "poison").await;
    w.no_event(QUIET).await;
    drop(w);

    let mut w = gw.worker().await;
    assert_eq!(w.line(other_id).await, "meanwhile");
    w.no_event(QUIET).await;
    assert_eq!(stats(&mut w).await.dropped, 1);
    gw.stop().await;
}

#[tokio::test]
async fn redelivered_events_are_held_past_the_limit_and_none_is_lost_without_workers() {
    let config = gateway::GatewayConfig {
        pending_events: 2,
        ..test_config()
    };
    let gw = Gateway::start_with(config).await;
    let mut a = manual(&gw).await;
    let mut user = gw.telnet().await;
    let id = connected(&mut a).await;
    user.send(b"l1\nl2\nl3\nl4\nl5\n").await;
    for text in ["l1", "l2", "l3", "l4", "l5"] {
        line_id(&mut a, id, text).await;
    }
    drop(a);
    let mut probe = monitor(&gw).await;
    wait_for_workers(&mut probe, 0).await;

    // Five accepted events wait for a buffer of two; a new message is refused, not them.
    user.send(b"l6\n").await;
    assert_eq!(user.line().await, "! server busy, message not accepted");
    let mut b = gw.worker().await;
    lines(&mut b, id, &["l1", "l2", "l3", "l4", "l5"]).await;
    b.no_event(QUIET).await;
    user.send(b"l7\n").await;
    assert_eq!(b.line(id).await, "l7");
    assert_eq!(stats(&mut b).await.dropped, 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_full_window_holds_a_workers_events_until_it_acks() {
    let config = gateway::GatewayConfig {
        max_in_flight: 2,
        ..test_config()
    };
    let gw = Gateway::start_with(config).await;
    let mut a = manual(&gw).await;
    let mut user = gw.telnet().await;
    // The Connect stays unacked: it takes one of the two places.
    let (connect, id) = match a.event_with_id().await {
        (n, Event::Connect { client, .. }) => (n, client),
        other => panic!("expected Connect, got {other:?}"),
    };
    user.send(b"l1\nl2\nl3\n").await;
    let l1 = line_id(&mut a, id, "l1").await;
    a.no_event(QUIET).await;
    a.ack(connect).await;
    line_id(&mut a, id, "l2").await;
    a.no_event(QUIET).await;
    a.ack(l1).await;
    line_id(&mut a, id, "l3").await;
    gw.stop().await;
}
