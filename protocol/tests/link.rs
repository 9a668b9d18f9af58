//! The gateway<->worker link messages: every variant survives postcard both ways, and
//! `ClientId` prints, parses and splits as docs/ARCHITECTURE.md says.
#![cfg(feature = "link")]

use std::collections::BTreeSet;

use proptest::prelude::*;
use protocol::link::*;
use protocol::{ChatIn, DeviceMsg, HostMsg, Telemetry};
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let bytes = postcard::to_allocvec(value).unwrap();
    let back: T = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(&back, value);
}

fn session() -> Session {
    [("nick", "ada"), ("room", "lobby")]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

const A: ClientId = ClientId::new(1, 2);
const B: ClientId = ClientId::new(0xFFFF, 0xFFFF_FFFF_FFFF);

fn line(s: &str) -> Outbound {
    Outbound::Line(s.into())
}

fn device_out() -> Outbound {
    Outbound::Device(Box::new(HostMsg::Chat(ChatIn {
        from: "1001".try_into().unwrap(),
        direct: true,
        text: "hi".try_into().unwrap(),
    })))
}

fn events() -> Vec<Event> {
    vec![
        Event::Connect {
            client: A,
            kind: ClientKind::Telnet,
            peer: "127.0.0.1:4000".into(),
        },
        Event::Connect {
            client: B,
            kind: ClientKind::DeviceTcp,
            peer: "[::1]:4001".into(),
        },
        Event::Connect {
            client: B,
            kind: ClientKind::DeviceSerial,
            peer: "/dev/ttyUSB0".into(),
        },
        Event::Message {
            client: A,
            session: session().into(),
            body: Inbound::Line("hello \u{fffd}".into()),
        },
        Event::Message {
            client: B,
            session: Session::new().into(),
            body: Inbound::Device(Box::new(DeviceMsg::Telemetry(Telemetry {
                name: "uptime_s".try_into().unwrap(),
                value: 5,
            }))),
        },
        Event::Close {
            client: A,
            uid: Some("1001".into()),
            session: session().into(),
        },
        Event::Close {
            client: B,
            uid: None,
            session: Session::new().into(),
        },
    ]
}

fn commands() -> Vec<Command> {
    vec![
        Command::SendToClient {
            client: A,
            body: line("hi"),
        },
        Command::SendToAll {
            body: device_out(),
            exclude: vec![A, B],
        },
        Command::SendToUid {
            uids: vec!["1001".into(), "esp-1".into()],
            body: line("x"),
        },
        Command::SendToGroup {
            groups: vec!["lobby".into()],
            body: line("y"),
            exclude: vec![],
        },
        Command::BindUid {
            client: A,
            uid: "1001".into(),
        },
        Command::UnbindUid {
            client: A,
            uid: "1001".into(),
        },
        Command::JoinGroup {
            client: B,
            group: "lobby".into(),
        },
        Command::LeaveGroup {
            client: B,
            group: "lobby".into(),
        },
        Command::Ungroup {
            group: "lobby".into(),
        },
        Command::CloseClient {
            client: A,
            farewell: Some(line("bye")),
        },
        Command::CloseClient {
            client: A,
            farewell: None,
        },
        Command::SetSession {
            client: A,
            session: session(),
        },
        Command::UpdateSession {
            client: B,
            session: Session::new(),
        },
    ]
}

fn queries() -> Vec<Query> {
    vec![
        Query::IsOnline(A),
        Query::IsUidOnline("1001".into()),
        Query::ClientIdsByUid("1001".into()),
        Query::UidByClientId(B),
        Query::ClientCount(None),
        Query::ClientCount(Some("lobby".into())),
        Query::ClientIds(Some("lobby".into())),
        Query::Uids,
        Query::UidCount,
        Query::Groups,
        Query::GetSession(A),
        Query::Sessions(None),
        Query::Stats,
    ]
}

fn replies() -> Vec<Reply> {
    vec![
        Reply::Bool(true),
        Reply::Count(u64::MAX),
        Reply::Clients(vec![A, B]),
        Reply::Uid(Some("1001".into())),
        Reply::Uid(None),
        Reply::Uids(vec!["1001".into()]),
        Reply::Groups(vec![]),
        Reply::Session(Some(session().into())),
        Reply::Session(None),
        Reply::Sessions(vec![ClientInfo {
            client: A,
            kind: ClientKind::Telnet,
            uid: Some("1001".into()),
            session: session().into(),
        }]),
        Reply::Stats(GatewayStats {
            gateway: 3,
            uptime_s: 10,
            dropped: 1,
            ..GatewayStats::default()
        }),
    ]
}

fn worker_to_gateway() -> Vec<WorkerToGateway> {
    let mut all = vec![
        WorkerToGateway::Hello {
            version: LINK_VERSION,
            secret: "s3cret".into(),
            name: "worker-1@host".into(),
        },
        WorkerToGateway::Ack { event: u64::MAX },
        WorkerToGateway::Monitor {
            version: LINK_VERSION,
            secret: "s3cret".into(),
        },
        WorkerToGateway::Leaving,
    ];
    all.extend(commands().into_iter().map(WorkerToGateway::Command));
    all.extend(
        queries()
            .into_iter()
            .enumerate()
            .map(|(id, query)| WorkerToGateway::Query {
                id: id as u64,
                query,
            }),
    );
    all
}

fn gateway_to_worker() -> Vec<GatewayToWorker> {
    let mut all = vec![
        GatewayToWorker::Welcome {
            version: LINK_VERSION,
            gateway: 7,
        },
        GatewayToWorker::Refused {
            reason: "bad secret".into(),
        },
    ];
    all.extend(
        events()
            .into_iter()
            .enumerate()
            .map(|(id, event)| GatewayToWorker::Event {
                id: id as u64,
                event,
            }),
    );
    all.extend(
        replies()
            .into_iter()
            .enumerate()
            .map(|(id, reply)| GatewayToWorker::Reply {
                id: id as u64,
                reply,
            }),
    );
    all.push(GatewayToWorker::Routes {
        changes: vec![
            RouteChange::UidUp("1001".into()),
            RouteChange::UidDown("dev0".into()),
            RouteChange::GroupUp("users".into()),
            RouteChange::GroupDown("devices".into()),
        ],
        synced: true,
    });
    all
}

#[test]
fn every_link_message_round_trips() {
    for msg in worker_to_gateway() {
        round_trip(&msg);
    }
    for msg in gateway_to_worker() {
        round_trip(&msg);
    }
}

/// The samples above cover every variant; a new variant breaks a match here until it has one.
#[test]
fn samples_cover_every_variant() {
    let names = |v: Vec<&'static str>| v.into_iter().collect::<BTreeSet<_>>();
    let w2g = names(
        worker_to_gateway()
            .iter()
            .map(|m| match m {
                WorkerToGateway::Hello { .. } => "Hello",
                WorkerToGateway::Command(_) => "Command",
                WorkerToGateway::Query { .. } => "Query",
                WorkerToGateway::Ack { .. } => "Ack",
                WorkerToGateway::Monitor { .. } => "Monitor",
                WorkerToGateway::Leaving => "Leaving",
            })
            .collect(),
    );
    assert_eq!(w2g.len(), 6);
    let g2w = names(
        gateway_to_worker()
            .iter()
            .map(|m| match m {
                GatewayToWorker::Welcome { .. } => "Welcome",
                GatewayToWorker::Refused { .. } => "Refused",
                GatewayToWorker::Event { .. } => "Event",
                GatewayToWorker::Reply { .. } => "Reply",
                GatewayToWorker::Routes { .. } => "Routes",
            })
            .collect(),
    );
    assert_eq!(g2w.len(), 5);
    let events_seen = names(
        events()
            .iter()
            .flat_map(|e| {
                let kind = match e {
                    Event::Connect { kind, .. } => match kind {
                        ClientKind::Telnet => "Connect/Telnet",
                        ClientKind::DeviceTcp => "Connect/DeviceTcp",
                        ClientKind::DeviceSerial => "Connect/DeviceSerial",
                    },
                    Event::Message { body, .. } => match body {
                        Inbound::Line(_) => "Message/Line",
                        Inbound::Device(_) => "Message/Device",
                    },
                    Event::Close { .. } => "Close",
                };
                [kind]
            })
            .collect(),
    );
    assert_eq!(events_seen.len(), 6);
    let commands_seen = names(
        commands()
            .iter()
            .map(|c| match c {
                Command::SendToClient { .. } => "SendToClient",
                Command::SendToAll { .. } => "SendToAll",
                Command::SendToUid { .. } => "SendToUid",
                Command::SendToGroup { .. } => "SendToGroup",
                Command::BindUid { .. } => "BindUid",
                Command::UnbindUid { .. } => "UnbindUid",
                Command::JoinGroup { .. } => "JoinGroup",
                Command::LeaveGroup { .. } => "LeaveGroup",
                Command::Ungroup { .. } => "Ungroup",
                Command::CloseClient { .. } => "CloseClient",
                Command::SetSession { .. } => "SetSession",
                Command::UpdateSession { .. } => "UpdateSession",
            })
            .collect(),
    );
    assert_eq!(commands_seen.len(), 12);
    let outbound = names(
        commands()
            .iter()
            .filter_map(|c| match c {
                Command::SendToAll { body, .. } | Command::SendToClient { body, .. } => Some(body),
                _ => None,
            })
            .map(|b| match b {
                Outbound::Line(_) => "Line",
                Outbound::Device(_) => "Device",
            })
            .collect(),
    );
    assert_eq!(outbound.len(), 2);
    let queries_seen = names(
        queries()
            .iter()
            .map(|q| match q {
                Query::IsOnline(_) => "IsOnline",
                Query::IsUidOnline(_) => "IsUidOnline",
                Query::ClientIdsByUid(_) => "ClientIdsByUid",
                Query::UidByClientId(_) => "UidByClientId",
                Query::ClientCount(_) => "ClientCount",
                Query::ClientIds(_) => "ClientIds",
                Query::Uids => "Uids",
                Query::UidCount => "UidCount",
                Query::Groups => "Groups",
                Query::GetSession(_) => "GetSession",
                Query::Sessions(_) => "Sessions",
                Query::Stats => "Stats",
            })
            .collect(),
    );
    assert_eq!(queries_seen.len(), 12);
    let replies_seen = names(
        replies()
            .iter()
            .map(|r| match r {
                Reply::Bool(_) => "Bool",
                Reply::Count(_) => "Count",
                Reply::Clients(_) => "Clients",
                Reply::Uid(_) => "Uid",
                Reply::Uids(_) => "Uids",
                Reply::Groups(_) => "Groups",
                Reply::Session(_) => "Session",
                Reply::Sessions(_) => "Sessions",
                Reply::Stats(_) => "Stats",
            })
            .collect(),
    );
    assert_eq!(replies_seen.len(), 9);
}

#[test]
fn event_client() {
    for event in events() {
        let want = match &event {
            Event::Connect { client, .. }
            | Event::Message { client, .. }
            | Event::Close { client, .. } => *client,
        };
        assert_eq!(event.client(), want);
    }
}

#[test]
fn client_kind_is_device() {
    assert!(!ClientKind::Telnet.is_device());
    assert!(ClientKind::DeviceTcp.is_device());
    assert!(ClientKind::DeviceSerial.is_device());
}

#[test]
fn client_id_layout_and_text() {
    assert_eq!(A.gateway(), 1);
    assert_eq!(A.conn(), 2);
    assert_eq!(A.to_string(), "0001000000000002");
    assert_eq!(B.to_string(), "ffffffffffffffff");
    assert_eq!(ClientId(0).to_string(), "0000000000000000");
    assert_eq!("0001000000000002".parse(), Ok(A));
    assert_eq!("FFFFFFFFFFFFFFFF".parse(), Ok(B));
    // A connection counter beyond 48 bits is cut, never spilled into the gateway id.
    let wrapped = ClientId::new(5, 1 << 48 | 3);
    assert_eq!((wrapped.gateway(), wrapped.conn()), (5, 3));
    for bad in ["", "xyz", "0001-0000", "10000000000000000"] {
        assert!(bad.parse::<ClientId>().is_err(), "{bad:?} parsed");
    }
}

proptest! {
    #[test]
    fn client_id_round_trips(gateway: u16, conn in 0u64..1 << 48) {
        let id = ClientId::new(gateway, conn);
        prop_assert_eq!((id.gateway(), id.conn()), (gateway, conn));
        let text = id.to_string();
        prop_assert_eq!(text.len(), 16);
        prop_assert!(text.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        prop_assert_eq!(text.parse::<ClientId>(), Ok(id));
        prop_assert_eq!(ClientId(id.0), id);
    }
}

mod codec {
    //! `link_codec`: the same bytes as the documented framing, in whatever pieces they come.

    use bytes::{BufMut, BytesMut};
    use protocol::link_codec::{EventFrame, LinkCodec, LinkCodecError, LinkWriter};
    use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

    use super::*;

    fn encoded<T: Serialize>(msg: T) -> BytesMut {
        let mut buf = BytesMut::new();
        LinkCodec::<WorkerToGateway>::new()
            .encode(msg, &mut buf)
            .unwrap();
        buf
    }

    #[test]
    fn event_frame_is_the_event_message() {
        for (id, event) in events().into_iter().enumerate() {
            let id = id as u64 * 1000;
            let owned = postcard::to_allocvec(&GatewayToWorker::Event {
                id,
                event: event.clone(),
            })
            .unwrap();
            let borrowed = postcard::to_allocvec(&EventFrame { id, event: &event }).unwrap();
            assert_eq!(borrowed, owned, "{event:?}");
        }
    }

    #[test]
    fn frames_are_length_delimited_postcard() {
        for msg in gateway_to_worker() {
            let mut buf = encoded(&msg);
            let frame = LengthDelimitedCodec::new()
                .decode(&mut buf)
                .unwrap()
                .expect("one whole frame");
            assert_eq!(frame.as_ref(), postcard::to_allocvec(&msg).unwrap());
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_stream_of_messages_decodes_byte_by_byte() {
        let sent = worker_to_gateway();
        let mut wire = BytesMut::new();
        let mut codec = LinkCodec::<WorkerToGateway>::new();
        for msg in &sent {
            codec.encode(msg, &mut wire).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for byte in wire {
            buf.put_u8(byte);
            while let Some(msg) = codec.decode(&mut buf).unwrap() {
                got.push(msg);
            }
        }
        assert_eq!(got, sent);
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_length_is_refused_before_its_bytes_come() {
        let mut buf = BytesMut::new();
        buf.put_u32(MAX_LINK_FRAME as u32 + 1);
        let refused = LinkCodec::<WorkerToGateway>::new().decode(&mut buf);
        assert!(matches!(refused, Err(LinkCodecError::TooBig(n)) if n == MAX_LINK_FRAME + 1));
    }

    #[test]
    fn a_length_alone_does_not_reserve_the_whole_message() {
        let mut buf = BytesMut::new();
        buf.put_u32(MAX_LINK_FRAME as u32);
        let got = LinkCodec::<WorkerToGateway>::new()
            .decode(&mut buf)
            .unwrap();
        assert!(got.is_none());
        assert!(
            buf.capacity() < 1024 * 1024,
            "reserved {} bytes",
            buf.capacity()
        );
    }

    #[tokio::test]
    async fn a_writer_sends_what_was_pushed_in_order_and_skips_what_it_refused() {
        let mut out = Vec::new();
        let mut writer = LinkWriter::new(&mut out);
        writer.push(WorkerToGateway::Leaving).unwrap();
        let huge = WorkerToGateway::Command(Command::SendToAll {
            body: Outbound::Line("x".repeat(MAX_LINK_FRAME)),
            exclude: vec![],
        });
        assert!(matches!(writer.push(&huge), Err(LinkCodecError::TooBig(_))));
        writer.push(WorkerToGateway::Ack { event: 9 }).unwrap();
        assert!(!writer.is_full());
        writer.shutdown().await.unwrap();
        let mut wire = BytesMut::from(&out[..]);
        let mut codec = LinkCodec::<WorkerToGateway>::new();
        let mut got = Vec::new();
        while let Some(msg) = codec.decode(&mut wire).unwrap() {
            got.push(msg);
        }
        assert_eq!(
            got,
            [WorkerToGateway::Leaving, WorkerToGateway::Ack { event: 9 }]
        );
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let mut buf = BytesMut::new();
        buf.put_u32(2);
        buf.put_slice(&[0xff, 0xff]);
        let refused = LinkCodec::<WorkerToGateway>::new().decode(&mut buf);
        assert!(matches!(refused, Err(LinkCodecError::Decode(_))));
    }

    #[test]
    fn an_oversized_message_is_not_written_and_spoils_nothing_around_it() {
        let mut codec = LinkCodec::<WorkerToGateway>::new();
        let mut buf = encoded(WorkerToGateway::Leaving);
        let before = buf.clone();
        let huge = WorkerToGateway::Command(Command::SendToAll {
            body: Outbound::Line("x".repeat(MAX_LINK_FRAME)),
            exclude: vec![],
        });
        let refused = codec.encode(&huge, &mut buf);
        assert!(matches!(refused, Err(LinkCodecError::TooBig(_))));
        assert_eq!(buf, before);
        codec.encode(WorkerToGateway::Leaving, &mut buf).unwrap();
        let mut got = Vec::new();
        while let Some(msg) = codec.decode(&mut buf).unwrap() {
            got.push(msg);
        }
        assert_eq!(got, [WorkerToGateway::Leaving, WorkerToGateway::Leaving]);
    }
}
