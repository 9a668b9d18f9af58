//! Workers' commands and queries end to end, with GatewayWorker's semantics: sends to
//! clients, uids and groups, closing clients, sessions, and every query.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use protocol::link::{ClientId, ClientKind, Command, Event, Outbound, Query, Reply, Session};
use protocol::{ChatIn, HostMsg};

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
            body: Outbound::Device(Box::new(chat.clone())),
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
                (idb, Some("bob".into()), session(&[("nick", "bo")]).into())
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
        Reply::Session(Some(expected.clone().into()))
    );
    user.send(b"x\n").await;
    match worker.event().await {
        Event::Message { session, .. } => assert_eq!(session.to_map(), expected),
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
        Reply::Session(Some(expected.into()))
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
                .map(|i| (i.client, i.kind, i.uid.clone(), i.session.to_map()))
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

/// Every worker's routing table follows the gateway: the whole table when it links, then
/// each uid's and group's first connection and last one gone, in order with the events.
#[tokio::test]
async fn route_changes_keep_every_workers_table() {
    use protocol::link::RouteChange::*;
    let gw = Gateway::start().await;
    let mut first = gw.worker().await;
    assert_eq!(first.routes().await, (vec![], true), "empty table, synced");
    let _a = gw.telnet().await;
    let ida = first.connected(ClientKind::Telnet).await;
    let b = gw.telnet().await;
    let idb = first.connected(ClientKind::Telnet).await;
    for (client, uid) in [(ida, "alice"), (idb, "alice")] {
        first
            .command(Command::BindUid {
                client,
                uid: uid.into(),
            })
            .await;
    }
    first
        .command(Command::JoinGroup {
            client: idb,
            group: "room".into(),
        })
        .await;
    first.query(Query::UidCount).await;
    first.no_event(Duration::from_millis(100)).await;
    let seen: Vec<_> = first.routes.drain(..).collect();
    assert_eq!(
        seen,
        [(vec![UidUp("alice".into()), GroupUp("room".into())], true)],
        "a second connection of alice is no news"
    );

    // A worker linking now gets the table as it is.
    let mut second = gw.worker().await;
    let (mut table, synced) = second.routes().await;
    table.sort_by_key(|change| format!("{change:?}"));
    assert_eq!(table, [GroupUp("room".into()), UidUp("alice".into())]);
    assert!(synced);

    // b leaves: the room is empty here, alice still has a connection.
    drop(b);
    for worker in [&mut first, &mut second] {
        let (changes, synced) = worker.routes().await;
        assert_eq!(changes, [GroupDown("room".into())]);
        assert!(synced);
    }
    gw.stop().await;
}
