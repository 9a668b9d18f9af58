//! The chat against a fake gateway: events in, the exact commands and lines out.

mod common;

use common::*;
use protocol::link::{ClientId, ClientInfo, ClientKind, Command, Outbound, Query, Reply};
use protocol::{
    ChatIn, ChatOut, DeviceMsg, ErrorCode, ErrorReport, Hello, HostMsg, Telemetry, PROTOCOL_VERSION,
};

const USER_A: ClientId = ClientId::new(1, 1);
const USER_B: ClientId = ClientId::new(1, 2);
const DEVICE: ClientId = ClientId::new(1, 3);

fn device_frame(from: &str, direct: bool, text: &str) -> Outbound {
    Outbound::Device(Box::new(HostMsg::Chat(ChatIn {
        from: from.try_into().unwrap(),
        direct,
        text: text.try_into().unwrap(),
    })))
}

fn device_error(code: ErrorCode) -> Outbound {
    Outbound::Device(Box::new(HostMsg::Error(ErrorReport { code, seq: 0 })))
}

fn hello(id: &str) -> DeviceMsg {
    DeviceMsg::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        device_id: id.try_into().unwrap(),
        firmware: "0.1.0".try_into().unwrap(),
    })
}

/// Connects `client`, sends `nick`, and returns the session the worker set.
async fn login(link: &mut Link, client: ClientId, nick: &str) -> protocol::link::Session {
    link.handle(connect(client, ClientKind::Telnet)).await;
    let commands = link.handle(line(client, session(&[]), nick)).await;
    commands
        .into_iter()
        .find_map(|c| match c {
            Command::SetSession { session, .. } => Some(session),
            _ => None,
        })
        .expect("no SetSession after the nickname")
}

#[tokio::test]
async fn greeting_nickname_line_and_leaving() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let worker = start_chat(&[&gateway.addr]);
        let mut link = gateway.accept().await;

        let commands = link.handle(connect(USER_A, ClientKind::Telnet)).await;
        assert_eq!(
            commands,
            [to_client(
                USER_A,
                "Welcome to Switchboard chat.\r\nPlease enter your nickname:"
            )],
            "the greeting and the prompt: two lines, one command"
        );

        let commands = link.handle(line(USER_A, session(&[]), "  alice ")).await;
        assert_eq!(
            commands,
            [
                Command::BindUid {
                    client: USER_A,
                    uid: "1".into()
                },
                Command::JoinGroup {
                    client: USER_A,
                    group: "users".into()
                },
                Command::SetSession {
                    client: USER_A,
                    session: session(&[("nick", "alice"), ("uid", "1")])
                },
                to_client(USER_A, "* welcome alice, your uid is 1"),
                to_group("users", "* alice (1) joined", &[USER_A]),
            ]
        );

        // The gateway's copy of the session is stale (sent before it applied SetSession):
        // the worker's cache must still know alice.
        let commands = link.handle(line(USER_A, session(&[]), "hello there")).await;
        assert_eq!(
            commands,
            [
                to_group("users", "alice (1): hello there", &[USER_A]),
                Command::SendToGroup {
                    groups: vec!["devices".into()],
                    body: device_frame("1", false, "hello there"),
                    exclude: vec![USER_A],
                },
            ]
        );

        let commands = link.handle(close(USER_A, Some("1"), session(&[]))).await;
        assert_eq!(commands, [to_group("users", "* alice (1) left", &[])]);

        let (result, _dir, _) = worker.stop().await;
        result.unwrap();
    })
    .await
}

#[tokio::test]
async fn bad_nicknames_are_refused_and_asked_again() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let _worker = start_chat(&[&gateway.addr]);
        let mut link = gateway.accept().await;
        link.handle(connect(USER_A, ClientKind::Telnet)).await;
        for (nick, refusal) in [
            ("", "! nickname must not be empty"),
            ("a:b", "! nickname must not contain ':'"),
            (
                &"x".repeat(33)[..],
                "! nickname is too long (max 32 characters)",
            ),
        ] {
            let commands = link.handle(line(USER_A, session(&[]), nick)).await;
            assert_eq!(
                commands,
                [
                    to_client(USER_A, refusal),
                    to_client(USER_A, "Please enter your nickname:")
                ]
            );
        }
        // Uids are handed out only to accepted nicknames: the first is still 1.
        let session = login(&mut link, USER_B, "bob").await;
        assert_eq!(session.get("uid").map(String::as_str), Some("1"));
    })
    .await
}

#[tokio::test]
async fn private_messages_to_users_and_unknown_uids() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let _worker = start_chat(&[&gateway.addr]);
        let mut link = gateway.accept().await;
        let alice = login(&mut link, USER_A, "alice").await;
        let _bob = login(&mut link, USER_B, "bob").await;

        let mut asked = Vec::new();
        let commands = link
            .handle_answering(line(USER_A, alice.clone(), "2: psst: secret"), |q| {
                asked.push(q.clone());
                Reply::Bool(true)
            })
            .await;
        assert_eq!(asked, [Query::IsUidOnline("2".into())]);
        assert_eq!(
            commands,
            [Command::SendToUid {
                uids: vec!["2".into()],
                body: Outbound::Line("alice (1) -> you: psst: secret".into())
            }]
        );

        let commands = link
            .handle_answering(line(USER_A, alice.clone(), "99:anyone?"), |_| {
                Reply::Bool(false)
            })
            .await;
        assert_eq!(commands, [to_client(USER_A, "! no such uid: 99")]);

        // A word before a colon that names nobody is just part of a line.
        let commands = link
            .handle_answering(line(USER_A, alice.clone(), "note: hi"), |_| {
                Reply::Bool(false)
            })
            .await;
        assert_eq!(
            commands.first(),
            Some(&to_group("users", "alice (1): note: hi", &[USER_A]))
        );

        let commands = link.handle(line(USER_A, alice.clone(), "/nope")).await;
        assert_eq!(
            commands,
            [to_client(USER_A, "! unknown command /nope, try /help")]
        );

        let commands = link.handle(line(USER_A, alice.clone(), "/help")).await;
        assert_eq!(lines_to(&commands, USER_A)[0], "* commands:");

        let commands = link.handle(line(USER_A, alice, "/quit")).await;
        assert_eq!(
            commands,
            [Command::CloseClient {
                client: USER_A,
                farewell: Some(Outbound::Line("* bye".into()))
            }]
        );
    })
    .await
}

#[tokio::test]
async fn who_lists_users_and_devices() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let _worker = start_chat(&[&gateway.addr]);
        let mut link = gateway.accept().await;
        let alice = login(&mut link, USER_A, "alice").await;
        link.handle(connect(DEVICE, ClientKind::DeviceTcp)).await;
        let commands = link
            .handle(frame(DEVICE, session(&[]), hello("dev-1")))
            .await;
        let device_session = commands
            .iter()
            .find_map(|c| match c {
                Command::SetSession { session, .. } => Some(session.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            device_session,
            session(&[("nick", "dev-1"), ("uid", "dev-1"), ("device", "1")])
        );
        link.handle(frame(
            DEVICE,
            session(&[]),
            DeviceMsg::Telemetry(Telemetry {
                name: "temp_mC".try_into().unwrap(),
                value: 21500,
            }),
        ))
        .await;

        let online = vec![
            ClientInfo {
                client: USER_A,
                kind: ClientKind::Telnet,
                uid: Some("1".into()),
                session: alice.clone().into(),
            },
            ClientInfo {
                client: DEVICE,
                kind: ClientKind::DeviceTcp,
                uid: Some("dev-1".into()),
                session: device_session.into(),
            },
            ClientInfo {
                client: USER_B,
                kind: ClientKind::Telnet,
                uid: None,
                session: session(&[]).into(),
            },
        ];
        let commands = link
            .handle_answering(line(USER_A, alice, "/who"), |q| {
                assert_eq!(q, &Query::Sessions(None));
                Reply::Sessions(online.clone())
            })
            .await;
        let lines = lines_to(&commands, USER_A);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], "* online: 1 user, 1 device");
        assert_eq!(lines[1], "  1  alice  user");
        assert!(
            lines[2].starts_with("  dev-1  dev-1  device  fw=0.1.0 last-seen="),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with("s ago  temp_mC=21500"), "{}", lines[2]);
    })
    .await
}

#[tokio::test]
async fn devices_join_talk_and_get_their_offline_messages() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let _worker = start_chat(&[&gateway.addr]);
        let mut link = gateway.accept().await;
        let alice = login(&mut link, USER_A, "alice").await;

        // A frame before hello is refused.
        link.handle(connect(DEVICE, ClientKind::DeviceSerial)).await;
        let chat = DeviceMsg::Chat(ChatOut {
            to: None,
            text: "hi".try_into().unwrap(),
        });
        let commands = link.handle(frame(DEVICE, session(&[]), chat.clone())).await;
        assert_eq!(
            commands,
            [Command::SendToClient {
                client: DEVICE,
                body: device_error(ErrorCode::HelloRequired)
            }]
        );

        let commands = link
            .handle(frame(DEVICE, session(&[]), hello("dev-1")))
            .await;
        assert_eq!(
            commands,
            [
                Command::BindUid {
                    client: DEVICE,
                    uid: "dev-1".into()
                },
                Command::JoinGroup {
                    client: DEVICE,
                    group: "devices".into()
                },
                Command::SetSession {
                    client: DEVICE,
                    session: session(&[("nick", "dev-1"), ("uid", "dev-1"), ("device", "1")])
                },
                to_group("users", "* dev-1 (dev-1) joined", &[]),
            ]
        );
        let dev = session(&[("nick", "dev-1"), ("uid", "dev-1"), ("device", "1")]);

        // A device line reaches users as text and other devices as a non-direct frame.
        let commands = link.handle(frame(DEVICE, dev.clone(), chat)).await;
        assert_eq!(
            commands,
            [
                to_group("users", "dev-1 (dev-1): hi", &[DEVICE]),
                Command::SendToGroup {
                    groups: vec!["devices".into()],
                    body: device_frame("dev-1", false, "hi"),
                    exclude: vec![DEVICE]
                },
            ]
        );

        // A private answer to a user; an unknown peer is an error frame.
        let to_alice = DeviceMsg::Chat(ChatOut {
            to: Some("1".try_into().unwrap()),
            text: "pong".try_into().unwrap(),
        });
        let commands = link
            .handle_answering(frame(DEVICE, dev.clone(), to_alice), |_| Reply::Bool(true))
            .await;
        assert_eq!(
            commands,
            [Command::SendToUid {
                uids: vec!["1".into()],
                body: Outbound::Line("dev-1 (dev-1) -> you: pong".into())
            }]
        );
        let to_nobody = DeviceMsg::Chat(ChatOut {
            to: Some("ghost".try_into().unwrap()),
            text: "x".try_into().unwrap(),
        });
        let commands = link
            .handle_answering(frame(DEVICE, dev.clone(), to_nobody), |_| {
                Reply::Bool(false)
            })
            .await;
        assert_eq!(
            commands,
            [Command::SendToClient {
                client: DEVICE,
                body: device_error(ErrorCode::UnknownPeer)
            }]
        );

        // Online: a user's private message is a direct frame; too long is refused.
        let commands = link
            .handle_answering(line(USER_A, alice.clone(), "dev-1:ping"), |_| {
                Reply::Bool(true)
            })
            .await;
        assert_eq!(
            commands,
            [Command::SendToUid {
                uids: vec!["dev-1".into()],
                body: device_frame("1", true, "ping")
            }]
        );
        let long = format!("dev-1:{}", "x".repeat(201));
        let commands = link
            .handle_answering(line(USER_A, alice.clone(), &long), |_| Reply::Bool(true))
            .await;
        assert_eq!(
            commands,
            [to_client(
                USER_A,
                "! message too long for a device (max 200 bytes)"
            )]
        );

        // The device goes away; messages to it are queued, then delivered on its next hello.
        let commands = link.handle(close(DEVICE, Some("dev-1"), dev.clone())).await;
        assert_eq!(commands, [to_group("users", "* dev-1 (dev-1) left", &[])]);
        for text in ["first", "second"] {
            let commands = link
                .handle_answering(
                    line(USER_A, alice.clone(), &format!("dev-1: {text}")),
                    |_| Reply::Bool(false),
                )
                .await;
            assert_eq!(
                commands,
                [to_client(USER_A, "* dev-1 is offline, message queued")]
            );
        }
        let again = ClientId::new(1, 9);
        link.handle(connect(again, ClientKind::DeviceTcp)).await;
        let commands = link
            .handle(frame(again, session(&[]), hello("dev-1")))
            .await;
        let delivered: Vec<&Command> = commands
            .iter()
            .filter(|c| matches!(c, Command::SendToClient { client, .. } if *client == again))
            .collect();
        assert_eq!(
            delivered,
            [
                &Command::SendToClient {
                    client: again,
                    body: device_frame("1", true, "first")
                },
                &Command::SendToClient {
                    client: again,
                    body: device_frame("1", true, "second")
                },
            ]
        );
        // Delivered means gone: a repeated hello delivers nothing more and announces nothing.
        let dev_again = session(&[("nick", "dev-1"), ("uid", "dev-1"), ("device", "1")]);
        let commands = link.handle(frame(again, dev_again, hello("dev-1"))).await;
        assert_eq!(commands, []);
    })
    .await
}

#[tokio::test]
async fn bad_device_ids_and_error_frames() {
    within(async {
        let gateway = FakeGateway::bind(1).await;
        let _worker = start_chat(&[&gateway.addr]);
        let mut link = gateway.accept().await;
        link.handle(connect(DEVICE, ClientKind::DeviceTcp)).await;
        // All digits would collide with human uids.
        let commands = link.handle(frame(DEVICE, session(&[]), hello("42"))).await;
        assert_eq!(
            commands,
            [Command::SendToClient {
                client: DEVICE,
                body: device_error(ErrorCode::Unsupported)
            }]
        );
        // An error frame before hello is not answered with another error.
        let report = DeviceMsg::Error(ErrorReport {
            code: ErrorCode::Malformed,
            seq: 3,
        });
        assert_eq!(link.handle(frame(DEVICE, session(&[]), report)).await, []);
    })
    .await
}
