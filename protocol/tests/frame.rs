//! Framing properties: round trips of arbitrary messages through `encode` and `Decoder` in
//! arbitrary chunks, no panic on arbitrary bytes, resynchronisation, TooLong, bit flips, and
//! the size bound of the largest messages. The pinned bytes live in `protocol::golden`.

use proptest::collection::vec;
use proptest::prelude::*;
use protocol::frame::encode_to_vec;
use protocol::*;
use serde::{de::DeserializeOwned, Serialize};

// ---- strategies ----

/// A string of at most `N` bytes: arbitrary chars cut at the bound, or exactly `N` ASCII bytes
/// so the maximum length is hit often.
fn string<const N: usize>() -> impl Strategy<Value = heapless::String<N>> {
    prop_oneof![
        vec(any::<char>(), 0..=N).prop_map(|chars| {
            let mut s = heapless::String::new();
            for c in chars {
                if s.push(c).is_err() {
                    break;
                }
            }
            s
        }),
        vec(0x20u8..0x7f, N).prop_map(|bytes| {
            let mut s = heapless::String::new();
            for b in bytes {
                let _ = s.push(char::from(b));
            }
            s
        }),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::Malformed),
        Just(ErrorCode::TooLong),
        Just(ErrorCode::UnknownPeer),
        Just(ErrorCode::Busy),
        Just(ErrorCode::Unsupported),
        Just(ErrorCode::HelloRequired),
    ]
}

fn error_report() -> impl Strategy<Value = ErrorReport> {
    (error_code(), any::<u16>()).prop_map(|(code, seq)| ErrorReport { code, seq })
}

fn device_msg() -> impl Strategy<Value = DeviceMsg> {
    prop_oneof![
        (any::<u8>(), string(), string()).prop_map(|(protocol, device_id, firmware)| {
            DeviceMsg::Hello(Hello {
                protocol,
                device_id,
                firmware,
            })
        }),
        (proptest::option::of(string()), string())
            .prop_map(|(to, text)| DeviceMsg::Chat(ChatOut { to, text })),
        any::<u16>().prop_map(|seq| DeviceMsg::Ack { seq }),
        any::<u32>().prop_map(|nonce| DeviceMsg::Ping { nonce }),
        any::<u32>().prop_map(|nonce| DeviceMsg::Pong { nonce }),
        (string(), any::<i64>())
            .prop_map(|(name, value)| DeviceMsg::Telemetry(Telemetry { name, value })),
        error_report().prop_map(DeviceMsg::Error),
    ]
}

fn host_msg() -> impl Strategy<Value = HostMsg> {
    prop_oneof![
        (string(), any::<bool>(), string())
            .prop_map(|(from, direct, text)| HostMsg::Chat(ChatIn { from, direct, text })),
        any::<u16>().prop_map(|seq| HostMsg::Ack { seq }),
        any::<u32>().prop_map(|nonce| HostMsg::Ping { nonce }),
        any::<u32>().prop_map(|nonce| HostMsg::Pong { nonce }),
        error_report().prop_map(HostMsg::Error),
    ]
}

fn frame<M: std::fmt::Debug>(msg: impl Strategy<Value = M>) -> impl Strategy<Value = Frame<M>> {
    (any::<u16>(), msg).prop_map(|(seq, msg)| Frame { seq, msg })
}

// ---- helpers ----

fn wire<M: Serialize>(frame: &Frame<M>) -> Vec<u8> {
    encode_to_vec(frame)
        .expect("every message fits a frame")
        .to_vec()
}

/// Feeds `bytes` in chunks whose sizes cycle through `chunks` (each at least 1), checking the
/// decoder's buffer bound after every chunk; returns every result in order.
fn feed_chunked<M: DeserializeOwned>(
    decoder: &mut Decoder<M>,
    bytes: &[u8],
    chunks: &[usize],
) -> Vec<Result<Frame<M>, FrameError>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
        rest = tail;
        out.extend(decoder.feed(chunk));
        assert!(decoder.pending() <= MAX_WIRE_LEN);
    }
    out
}

fn decode_all<M: DeserializeOwned>(bytes: &[u8]) -> Vec<Result<Frame<M>, FrameError>> {
    Decoder::<M>::new().feed(bytes).collect()
}

/// Offsets of the COBS code bytes in one encoded frame (without its delimiter).
fn cobs_code_offsets(wire: &[u8]) -> Vec<usize> {
    let mut codes = Vec::new();
    let mut i = 0;
    while i < wire.len() && wire[i] != 0 {
        codes.push(i);
        i += usize::from(wire[i]);
    }
    codes
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(1usize..80, 1..16)
}

// ---- properties ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn device_frame_round_trips(frame in frame(device_msg())) {
        let wire = wire(&frame);
        prop_assert!(wire.len() <= MAX_WIRE_LEN);
        prop_assert_eq!(wire.iter().position(|&b| b == 0), Some(wire.len() - 1));
        prop_assert_eq!(decode_all::<DeviceMsg>(&wire), vec![Ok(frame)]);
    }

    #[test]
    fn host_frame_round_trips(frame in frame(host_msg())) {
        let wire = wire(&frame);
        prop_assert!(wire.len() <= MAX_WIRE_LEN);
        prop_assert_eq!(wire.iter().position(|&b| b == 0), Some(wire.len() - 1));
        prop_assert_eq!(decode_all::<HostMsg>(&wire), vec![Ok(frame)]);
    }

    /// `encode` needs exactly the frame's length: one byte less is `BufferFull`, not a panic.
    #[test]
    fn encode_into_short_buffers(frame in frame(device_msg())) {
        let wire = wire(&frame);
        let mut out = vec![0u8; wire.len()];
        prop_assert_eq!(encode(&frame, &mut out), Ok(wire.len()));
        prop_assert_eq!(&out, &wire);
        for len in 0..wire.len() {
            prop_assert_eq!(encode(&frame, &mut out[..len]), Err(FrameError::BufferFull));
        }
    }

    /// Many frames back to back, with idle delimiters between some, fed in arbitrary chunks.
    #[test]
    fn stream_of_frames_in_chunks(
        frames in vec((frame(device_msg()), 0usize..3), 0..24),
        chunks in chunk_sizes(),
    ) {
        let mut stream = Vec::new();
        for (frame, idle) in &frames {
            stream.extend(std::iter::repeat_n(0u8, *idle));
            stream.extend(wire(frame));
        }
        let mut decoder = Decoder::<DeviceMsg>::new();
        let got = feed_chunked(&mut decoder, &stream, &chunks);
        let want: Vec<_> = frames.into_iter().map(|(f, _)| Ok(f)).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn host_stream_in_chunks(
        frames in vec(frame(host_msg()), 0..24),
        chunks in chunk_sizes(),
    ) {
        let stream: Vec<u8> = frames.iter().flat_map(wire).collect();
        let got = feed_chunked(&mut Decoder::<HostMsg>::new(), &stream, &chunks);
        let want: Vec<_> = frames.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
    }

    /// Arbitrary bytes never panic either decoder; the buffer stays bounded and tracks the bytes
    /// since the last delimiter; the chunking does not change the results.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..2000),
            // Mostly non-zero, so long runs and the TooLong path are exercised too.
            vec(prop_oneof![20 => 1u8..=255, 1 => Just(0u8)], 0..2000),
        ],
        chunks in chunk_sizes(),
    ) {
        let mut device = Decoder::<DeviceMsg>::new();
        let got = feed_chunked(&mut device, &bytes, &chunks);
        prop_assert_eq!(&got, &decode_all::<DeviceMsg>(&bytes));
        let since_delimiter = bytes.iter().rev().take_while(|&&b| b != 0).count();
        prop_assert_eq!(device.pending(), since_delimiter.min(MAX_WIRE_LEN));

        let mut host = Decoder::<HostMsg>::new();
        let got = feed_chunked(&mut host, &bytes, &chunks);
        prop_assert_eq!(&got, &decode_all::<HostMsg>(&bytes));
        prop_assert_eq!(host.pending(), since_delimiter.min(MAX_WIRE_LEN));
    }

    /// Garbage, a delimiter, then a valid frame: the frame comes out, whatever came before.
    #[test]
    fn resynchronises_after_garbage(
        garbage in vec(any::<u8>(), 0..1000),
        frame in frame(device_msg()),
        chunks in chunk_sizes(),
    ) {
        let mut stream = garbage;
        stream.push(0);
        stream.extend(wire(&frame));
        let got = feed_chunked(&mut Decoder::<DeviceMsg>::new(), &stream, &chunks);
        prop_assert_eq!(got.last(), Some(&Ok(frame)));
    }

    /// More than MAX_WIRE_LEN bytes without a delimiter: exactly one TooLong at the delimiter,
    /// then the next frame decodes.
    #[test]
    fn too_long_once_then_continues(
        long in vec(1u8..=255, MAX_WIRE_LEN + 1..4 * MAX_WIRE_LEN),
        frame in frame(device_msg()),
        chunks in chunk_sizes(),
    ) {
        let mut stream = long;
        stream.push(0);
        stream.extend(wire(&frame));
        let got = feed_chunked(&mut Decoder::<DeviceMsg>::new(), &stream, &chunks);
        prop_assert_eq!(got, vec![Err(FrameError::TooLong), Ok(frame)]);
    }

    /// A single bit flipped inside a COBS data byte is a single-bit error in the CRC'd body:
    /// always exactly one BadCrc. (Unless the flip makes the byte 0x00, which splits the frame.)
    #[test]
    fn data_bit_flip_is_bad_crc(frame in frame(device_msg()), pick: prop::sample::Index, bit in 0u8..8) {
        let mut wire = wire(&frame);
        let codes = cobs_code_offsets(&wire);
        let data: Vec<usize> = (0..wire.len() - 1).filter(|i| !codes.contains(i)).collect();
        prop_assume!(!data.is_empty());
        let at = data[pick.index(data.len())];
        wire[at] ^= 1 << bit;
        prop_assume!(wire[at] != 0);
        prop_assert_eq!(decode_all::<DeviceMsg>(&wire), vec![Err(FrameError::BadCrc)]);
    }
}

proptest! {
    // A flip in a COBS code byte (or one that adds or removes a 0x00) restructures the frame;
    // the CRC then rejects it with probability 1 - 2^-16, not with certainty. A fixed seed keeps
    // this test deterministic; the golden vectors are checked for every bit exhaustively.
    #![proptest_config(ProptestConfig {
        cases: 2048,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5b_0a_4d),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_bit_flip_is_rejected(frame in frame(device_msg()), pick: prop::sample::Index, bit in 0u8..8) {
        let mut wire = wire(&frame);
        let at = pick.index(wire.len());
        wire[at] ^= 1 << bit;
        wire.push(0); // ends the frame if the flip hit the delimiter
        let got = decode_all::<DeviceMsg>(&wire);
        prop_assert!(!got.is_empty());
        for result in got {
            prop_assert!(
                matches!(
                    result,
                    Err(FrameError::BadCrc | FrameError::BadCobs | FrameError::Decode | FrameError::Truncated)
                ),
                "flip at byte {} bit {}: {:?}", at, bit, result
            );
        }
    }
}

// ---- fixed cases ----

/// The largest value of every message: all strings full, every integer at its longest varint.
fn largest_device_msgs() -> Vec<DeviceMsg> {
    let full = |n: usize| "x".repeat(n);
    vec![
        DeviceMsg::Hello(Hello {
            protocol: u8::MAX,
            device_id: full(MAX_ID_LEN).as_str().try_into().unwrap(),
            firmware: full(MAX_VERSION_LEN).as_str().try_into().unwrap(),
        }),
        DeviceMsg::Chat(ChatOut {
            to: Some(full(MAX_ID_LEN).as_str().try_into().unwrap()),
            text: full(MAX_TEXT_LEN).as_str().try_into().unwrap(),
        }),
        DeviceMsg::Ack { seq: u16::MAX },
        DeviceMsg::Ping { nonce: u32::MAX },
        DeviceMsg::Pong { nonce: u32::MAX },
        DeviceMsg::Telemetry(Telemetry {
            name: full(MAX_NAME_LEN).as_str().try_into().unwrap(),
            value: i64::MIN,
        }),
        DeviceMsg::Error(ErrorReport {
            code: ErrorCode::HelloRequired,
            seq: u16::MAX,
        }),
    ]
}

fn largest_host_msgs() -> Vec<HostMsg> {
    let full = |n: usize| "x".repeat(n);
    vec![
        HostMsg::Chat(ChatIn {
            from: full(MAX_ID_LEN).as_str().try_into().unwrap(),
            direct: true,
            text: full(MAX_TEXT_LEN).as_str().try_into().unwrap(),
        }),
        HostMsg::Ack { seq: u16::MAX },
        HostMsg::Ping { nonce: u32::MAX },
        HostMsg::Pong { nonce: u32::MAX },
        HostMsg::Error(ErrorReport {
            code: ErrorCode::HelloRequired,
            seq: u16::MAX,
        }),
    ]
}

/// Body (postcard + CRC) length of a frame, before COBS.
fn body_len<M: Serialize>(frame: &Frame<M>) -> usize {
    let mut buf = [0u8; 2 * MAX_FRAME_LEN];
    postcard::to_slice(frame, &mut buf).unwrap().len() + 2
}

#[test]
fn largest_messages_fit_max_frame_len() {
    let mut largest = 0;
    for msg in largest_device_msgs() {
        let frame = Frame { seq: u16::MAX, msg };
        let len = body_len(&frame);
        assert!(len <= MAX_FRAME_LEN, "{frame:?} is {len} bytes");
        assert_eq!(decode_all::<DeviceMsg>(&wire(&frame)), vec![Ok(frame)]);
        largest = largest.max(len);
    }
    for msg in largest_host_msgs() {
        let frame = Frame { seq: u16::MAX, msg };
        let len = body_len(&frame);
        assert!(len <= MAX_FRAME_LEN, "{frame:?} is {len} bytes");
        assert_eq!(decode_all::<HostMsg>(&wire(&frame)), vec![Ok(frame)]);
        largest = largest.max(len);
    }
    // The figure quoted in frame.rs and docs/PROTOCOL.md.
    assert_eq!(largest, 234);
}

#[test]
fn too_long_boundary() {
    let frame = Frame {
        seq: 1,
        msg: DeviceMsg::Ping { nonce: 2 },
    };
    // MAX_WIRE_LEN non-zero bytes still fit the buffer: decoded (and rejected) as a frame.
    let mut stream = vec![0x01; MAX_WIRE_LEN];
    stream.push(0);
    stream.extend(wire(&frame));
    let got = decode_all::<DeviceMsg>(&stream);
    assert_eq!(got.len(), 2);
    assert_ne!(got[0], Err(FrameError::TooLong));
    assert_eq!(got[1], Ok(frame.clone()));

    // One more is TooLong, reported once however long the run.
    for extra in [1, 2, 10 * MAX_WIRE_LEN] {
        let mut stream = vec![0x01; MAX_WIRE_LEN + extra];
        stream.push(0);
        stream.extend(wire(&frame));
        let mut decoder = Decoder::<DeviceMsg>::new();
        assert_eq!(
            decoder.feed(&stream).collect::<Vec<_>>(),
            vec![Err(FrameError::TooLong), Ok(frame.clone())]
        );
    }
}

#[test]
fn each_error_kind() {
    let crc = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);
    let framed = |body: &[u8]| {
        let mut raw = body.to_vec();
        raw.extend(crc.checksum(body).to_le_bytes());
        let mut out = vec![0u8; cobs::max_encoding_length(raw.len())];
        let n = cobs::encode(&raw, &mut out);
        out.truncate(n);
        out.push(0);
        out
    };
    // A code byte pointing past the end of the frame.
    assert_eq!(
        decode_all::<DeviceMsg>(&[0x05, 0x01, 0x00]),
        vec![Err(FrameError::BadCobs)]
    );
    // Two bytes after COBS: a CRC and no message.
    assert_eq!(
        decode_all::<DeviceMsg>(&[0x03, 0x01, 0x02, 0x00]),
        vec![Err(FrameError::Truncated)]
    );
    // Valid CRC, unknown variant tag 7.
    assert_eq!(
        decode_all::<DeviceMsg>(&framed(&[0x00, 0x07])),
        vec![Err(FrameError::Decode)]
    );
    // Valid CRC, a whole message and a byte left over.
    assert_eq!(
        decode_all::<DeviceMsg>(&framed(&[0x00, 0x02, 0x07, 0x00])),
        vec![Err(FrameError::Decode)]
    );
    // Valid CRC, a string over its bound (telemetry name of 17 bytes).
    let mut body = vec![0x00, 0x05, 17];
    body.extend([b'n'; 17]);
    body.push(0x00);
    assert_eq!(
        decode_all::<DeviceMsg>(&framed(&body)),
        vec![Err(FrameError::Decode)]
    );
    // The same body with a wrong CRC.
    let mut wire = wire(&Frame {
        seq: 0,
        msg: DeviceMsg::Ack { seq: 7 },
    });
    let crc_at = wire.len() - 2;
    wire[crc_at] ^= 0x10;
    assert_eq!(
        decode_all::<DeviceMsg>(&wire),
        vec![Err(FrameError::BadCrc)]
    );
}

#[test]
fn idle_delimiters_and_reset() {
    assert!(decode_all::<DeviceMsg>(&[0, 0, 0]).is_empty());
    let frame = Frame {
        seq: 9,
        msg: DeviceMsg::Pong { nonce: 9 },
    };
    let wire = wire(&frame);
    let mut decoder = Decoder::<DeviceMsg>::new();
    assert_eq!(decoder.feed(&wire[..3]).count(), 0);
    assert_eq!(decoder.pending(), 3);
    decoder.reset();
    assert_eq!(decoder.pending(), 0);
    assert_eq!(decoder.feed(&wire).collect::<Vec<_>>(), vec![Ok(frame)]);
}

#[test]
fn crc_is_ibm_sdlc() {
    let crc = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);
    assert_eq!(crc.checksum(b"123456789"), 0x906E);
}
