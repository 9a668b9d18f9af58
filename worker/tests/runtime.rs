//! The runtime and links against fake gateways: routing by client id, aggregation across
//! gateways, reconnecting, refusals, handler failures, shutdown.

mod common;

use std::time::Duration;

use common::*;
use protocol::link::{
    ClientId, Command, GatewayToWorker, Outbound, Query, Reply, WorkerToGateway, LINK_VERSION,
};
use worker::{Context, Handler, HandlerResult, SledStore};

/// Echoes lines, with a few lines that exercise failures and the gateway API.
struct Echo;

impl Handler for Echo {
    async fn on_message(&mut self, cx: &Context, client: ClientId, line: String) -> HandlerResult {
        let gateway = cx.gateway();
        match line.as_str() {
            "boom" => panic!("handler panic on purpose"),
            "err" => Err("handler error on purpose".into()),
            "count" => {
                let n = gateway.client_count().await?;
                gateway
                    .send_to_client(client, Outbound::Line(n.to_string()))
                    .await?;
                Ok(())
            }
            "all" => {
                gateway
                    .send_to_all(Outbound::Line("to all".into()), &[client])
                    .await?;
                Ok(())
            }
            "remember" => {
                cx.update_session(session(&[("seen", "yes")])).await?;
                Ok(())
            }
            "recall" => {
                let seen = cx.session().get("seen").unwrap_or_default().to_string();
                gateway
                    .send_to_client(client, Outbound::Line(format!("seen={seen}")))
                    .await?;
                Ok(())
            }
            _ => {
                gateway
                    .send_to_client(client, Outbound::Line(format!("echo {line}")))
                    .await?;
                Ok(())
            }
        }
    }
}

#[tokio::test]
async fn a_failing_or_panicking_handler_does_not_stop_the_worker() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let _worker = start_with(&[&gateway.addr], Echo);
        let mut link = gateway.accept().await;
        let c = ClientId::new(1, 1);
        // Each failed event is still acked, and the next one is handled.
        assert_eq!(link.handle(line(c, session(&[]), "boom")).await, []);
        assert_eq!(link.handle(line(c, session(&[]), "err")).await, []);
        assert_eq!(
            link.handle(line(c, session(&[]), "still here")).await,
            [to_client(c, "echo still here")]
        );
    })
    .await
}

#[tokio::test]
async fn session_updates_are_seen_by_the_next_event() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let _worker = start_with(&[&gateway.addr], Echo);
        let mut link = gateway.accept().await;
        let c = ClientId::new(1, 1);
        let commands = link
            .handle(line(c, session(&[("a", "1")]), "remember"))
            .await;
        assert_eq!(
            commands,
            [Command::UpdateSession {
                client: c,
                session: session(&[("seen", "yes")])
            }]
        );
        // The gateway sends its old copy; the worker's cache wins.
        assert_eq!(
            link.handle(line(c, session(&[("a", "1")]), "recall")).await,
            [to_client(c, "seen=yes")]
        );
        // After the close, the cache entry is gone.
        link.handle(close(c, None, session(&[]))).await;
        assert_eq!(
            link.handle(line(c, session(&[]), "recall")).await,
            [to_client(c, "seen=")]
        );
    })
    .await
}

#[tokio::test]
async fn commands_follow_the_client_id_and_queries_span_all_gateways() {
    within(async {
        let one = FakeGateway::bind(1).await;
        let two = FakeGateway::bind(2).await;
        let worker = start_with(&[&one.addr, &two.addr], Echo);
        let mut link1 = one.accept().await;
        let mut link2 = two.accept().await;
        let hello = ClientId::new(2, 7);

        // An event from gateway 1 about a client of gateway 2: the reply goes on link 2,
        // the ack on link 1.
        let id = link1.event(line(hello, session(&[]), "hi")).await;
        assert_eq!(link1.until_ack(id).await, []);
        assert_eq!(
            link2.recv().await,
            WorkerToGateway::Command(to_client(hello, "echo hi"))
        );

        // A broadcast goes to both.
        let id = link2.event(line(hello, session(&[]), "all")).await;
        let expected = Command::SendToAll {
            body: Outbound::Line("to all".into()),
            exclude: vec![hello],
        };
        assert_eq!(link2.until_ack(id).await, std::slice::from_ref(&expected));
        assert_eq!(link1.recv().await, WorkerToGateway::Command(expected));

        // A count asks both and sums. Link 1 is answered from a task while link 2 handles
        // the event, since the worker waits for both replies.
        let id = link2.event(line(hello, session(&[]), "count")).await;
        let answer1 = tokio::spawn(async move {
            match link1.recv().await {
                WorkerToGateway::Query {
                    id,
                    query: Query::ClientCount(None),
                } => {
                    write(
                        &mut link1.transport,
                        &GatewayToWorker::Reply {
                            id,
                            reply: Reply::Count(3),
                        },
                    )
                    .await;
                }
                other => panic!("expected a count query, got {other:?}"),
            }
            link1
        });
        let commands = link2
            .until_ack_answering(id, |q| {
                assert_eq!(q, &Query::ClientCount(None));
                Reply::Count(4)
            })
            .await;
        assert_eq!(commands, [to_client(hello, "7")]);
        let _link1 = answer1.await.unwrap();

        let (result, _dir, _) = worker.stop().await;
        result.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_gateway_that_is_down_at_start_is_linked_when_it_comes_up() {
    within(async {
        // Find a free port, then leave it closed for a while.
        let addr = FakeGateway::bind(1).await.addr;
        let _worker = start_with(&[&addr], Echo);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        let gateway = FakeGateway {
            listener,
            addr,
            id: 1,
        };
        let mut link = gateway.accept().await;
        let c = ClientId::new(1, 1);
        assert_eq!(
            link.handle(line(c, session(&[]), "up")).await,
            [to_client(c, "echo up")]
        );
    })
    .await
}

#[tokio::test]
async fn a_dropped_link_is_reconnected() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let _worker = start_with(&[&gateway.addr], Echo);
        let link = gateway.accept().await;
        drop(link);
        let mut link = gateway.accept().await;
        let c = ClientId::new(1, 1);
        assert_eq!(
            link.handle(line(c, session(&[]), "again")).await,
            [to_client(c, "echo again")]
        );
    })
    .await
}

#[tokio::test]
async fn a_refused_worker_says_who_it_is_and_retries() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let _worker = start_with(&[&gateway.addr], Echo);
        let (mut transport, hello) = gateway.accept_raw().await;
        assert_eq!(
            hello,
            WorkerToGateway::Hello {
                version: LINK_VERSION,
                secret: SECRET.into(),
                name: "test-worker".into()
            }
        );
        write(
            &mut transport,
            &GatewayToWorker::Refused {
                reason: "bad secret".into(),
            },
        )
        .await;
        drop(transport);
        // Retried after REFUSED_RETRY (5 s), within the accept's wait.
        let mut link = gateway.accept().await;
        let c = ClientId::new(1, 1);
        assert_eq!(
            link.handle(line(c, session(&[]), "in")).await,
            [to_client(c, "echo in")]
        );
    })
    .await
}

#[tokio::test]
async fn shutdown_closes_the_links_and_releases_the_store() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let mut worker = start_with(&[&gateway.addr], Echo);
        let mut link = gateway.accept().await;
        let c = ClientId::new(1, 1);
        link.handle(line(c, session(&[]), "x")).await;
        worker.signal();
        assert_eq!(link.recv().await, WorkerToGateway::Leaving);
        link.finish_sending().await;
        let started = std::time::Instant::now();
        let (result, _dir, data_dir) = worker.stop().await;
        result.unwrap();
        assert!(
            started.elapsed() < worker::runtime::LEAVE_GRACE,
            "the worker waited out the grace although the gateway was done"
        );
        assert_eq!(
            read(&mut link.transport).await,
            None,
            "link still open after shutdown"
        );
        SledStore::open(&data_dir).expect("store still locked after shutdown");
    })
    .await
}

/// A reload: the worker says `Leaving`, then handles what was queued and what the gateway
/// sent before it saw `Leaving`, acks each after its commands, and closes.
#[tokio::test]
async fn a_leaving_worker_handles_and_acks_what_the_gateway_already_sent() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let mut worker = start_with(&[&gateway.addr], Echo);
        let mut link = gateway.accept().await;
        let c = ClientId::new(1, 1);
        assert_eq!(
            link.handle(line(c, session(&[]), "before")).await,
            [to_client(c, "echo before")]
        );
        worker.signal();
        assert_eq!(link.recv().await, WorkerToGateway::Leaving);
        // In flight when the gateway saw Leaving: one that works, one that panics, one after.
        let late = link.event(line(c, session(&[]), "late")).await;
        let boom = link.event(line(c, session(&[]), "boom")).await;
        let last = link.event(line(c, session(&[]), "last")).await;
        link.finish_sending().await;
        // The panic is acked like the rest (possibly in one ack with its neighbours).
        let mut commands = link.until_ack(late).await;
        commands.extend(link.until_ack(boom).await);
        commands.extend(link.until_ack(last).await);
        assert_eq!(
            commands,
            [to_client(c, "echo late"), to_client(c, "echo last")]
        );
        assert_eq!(read(&mut link.transport).await, None, "link not closed");
        let (result, _dir, data_dir) = worker.stop().await;
        result.unwrap();
        SledStore::open(&data_dir).expect("store still locked after shutdown");
    })
    .await
}

/// A gateway that keeps its side open after `Leaving` (it just sends nothing new): the
/// worker handles what came, then closes once the link is quiet, well within the grace.
#[tokio::test]
async fn a_leaving_worker_closes_a_quiet_link_without_waiting_out_the_grace() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let mut worker = start_with(&[&gateway.addr], Echo);
        let mut link = gateway.accept().await;
        let c = ClientId::new(1, 1);
        link.handle(line(c, session(&[]), "linked")).await;
        worker.signal();
        assert_eq!(link.recv().await, WorkerToGateway::Leaving);
        let id = link.event(line(c, session(&[]), "still")).await;
        assert_eq!(link.until_ack(id).await, [to_client(c, "echo still")]);
        let started = std::time::Instant::now();
        let (result, _dir, _) = worker.stop().await;
        result.unwrap();
        assert!(started.elapsed() < worker::runtime::LEAVE_GRACE);
        assert_eq!(read(&mut link.transport).await, None, "link not closed");
    })
    .await
}

/// No gateway linked: a leaving worker has nothing to wait for.
#[tokio::test]
async fn a_worker_without_links_stops_at_once() {
    within(async {
        let addr = FakeGateway::bind(1).await.addr; // closed again: nothing listens
        let mut worker = start_with(&[&addr], Echo);
        tokio::time::sleep(Duration::from_millis(200)).await;
        worker.signal();
        let started = std::time::Instant::now();
        let (result, _dir, _) = worker.stop().await;
        result.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
    })
    .await
}

#[tokio::test]
async fn no_gateways_is_an_error() {
    let worker = start_with(&[], Echo);
    let (result, _dir, _) = worker.stop().await;
    assert!(
        matches!(result, Err(worker::WorkerError::NoGateways)),
        "{result:?}"
    );
}
