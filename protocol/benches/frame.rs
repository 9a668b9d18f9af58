//! Cost of one device frame on the hot path: [`encode`] into a caller's stack buffer, and
//! [`Decoder`] turning wire bytes back into a frame, for a small frame (an ack), a typical
//! chat line (40 bytes of text) and the largest frame; plus a stream of back-to-back frames
//! fed in 64-byte chunks, as they arrive from a socket. Each reported time is per frame.
//!
//! Whether the hot path allocates is not measured here but asserted in `tests/no_alloc.rs`.
//! Kept short (about 25 s in all) so `cargo bench -p switchboard-protocol` stays quick on a
//! 2-core machine; pass `--measurement-time` for steadier figures.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use protocol::{encode, ChatIn, ChatOut, Decoder, DeviceMsg, Frame, HostMsg, MAX_WIRE_LEN};
use protocol::{MAX_ID_LEN, MAX_TEXT_LEN};
use serde::{de::DeserializeOwned, Serialize};

/// A typical chat line: 40 bytes, about what a person types or a device reports.
const CHAT_TEXT: &str = "temperature 21.5 C, humidity 40 %, ok :)";
/// Frames in the stream bench: enough that the per-frame figure is not one frame's noise.
const STREAM_FRAMES: usize = 100;
/// Read size in the stream bench: frames straddle reads, as they do on a socket.
const STREAM_CHUNK: usize = 64;

/// Smallest frame worth sending: an ack.
fn ack() -> Frame<DeviceMsg> {
    Frame {
        seq: 7,
        msg: DeviceMsg::Ack { seq: 6 },
    }
}

/// A device's chat line to everyone.
fn chat() -> Frame<DeviceMsg> {
    assert_eq!(CHAT_TEXT.len(), 40);
    Frame {
        seq: 1234,
        msg: DeviceMsg::Chat(ChatOut {
            to: None,
            text: CHAT_TEXT.try_into().expect("fits"),
        }),
    }
}

/// The largest frame: a direct chat line to a device with every field full and a 3-byte seq.
fn chat_max() -> Frame<HostMsg> {
    let from: String = "9".repeat(MAX_ID_LEN);
    let text: String = "x".repeat(MAX_TEXT_LEN);
    Frame {
        seq: u16::MAX,
        msg: HostMsg::Chat(ChatIn {
            from: from.as_str().try_into().expect("fits"),
            direct: true,
            text: text.as_str().try_into().expect("fits"),
        }),
    }
}

fn wire<M: Serialize>(frame: &Frame<M>) -> Vec<u8> {
    let mut buf = [0u8; MAX_WIRE_LEN];
    let n = encode(frame, &mut buf).expect("every message fits a frame");
    buf[..n].to_vec()
}

fn bench_encode<M: Serialize>(c: &mut Criterion, name: &str, frame: &Frame<M>) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_with_input(BenchmarkId::from_parameter(name), frame, |b, frame| {
        let mut buf = [0u8; MAX_WIRE_LEN];
        b.iter(|| encode(black_box(frame), black_box(&mut buf)).expect("fits"))
    });
    group.finish();
}

fn bench_decode<M: Serialize + DeserializeOwned>(c: &mut Criterion, name: &str, frame: &Frame<M>) {
    let wire = wire(frame);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_with_input(BenchmarkId::from_parameter(name), &wire, |b, wire| {
        // One decoder for all iterations, as a connection keeps one: a delimiter leaves it empty.
        let mut decoder = Decoder::<M>::new();
        b.iter(|| {
            decoder
                .feed(black_box(wire))
                .next()
                .expect("one frame")
                .expect("valid frame")
        })
    });
    group.finish();
}

fn single_frames(c: &mut Criterion) {
    let (ack, chat, max) = (ack(), chat(), chat_max());
    // Pin what is measured: a change to the messages that changes these sizes changes the figures.
    assert_eq!(wire(&ack).len(), 7, "ack frame on the wire");
    assert_eq!(wire(&chat).len(), 49, "40-byte chat frame on the wire");
    assert_eq!(
        wire(&max).len(),
        236,
        "largest frame on the wire (234-byte body)"
    );

    bench_encode(c, "ack", &ack);
    bench_encode(c, "chat_40B", &chat);
    bench_encode(c, "chat_max", &max);
    bench_decode(c, "ack", &ack);
    bench_decode(c, "chat_40B", &chat);
    bench_decode(c, "chat_max", &max);
}

fn stream(c: &mut Criterion) {
    let template = chat();
    let stream: Vec<u8> = (0..STREAM_FRAMES)
        .flat_map(|seq| {
            let frame = Frame {
                seq: seq as u16,
                msg: template.msg.clone(),
            };
            wire(&frame)
        })
        .collect();

    let mut group = c.benchmark_group("decode_stream");
    // Per element = per frame, so criterion's time per element is ns/frame.
    group.throughput(Throughput::Elements(STREAM_FRAMES as u64));
    let id = format!("{STREAM_FRAMES}x_chat_40B_in_{STREAM_CHUNK}B_chunks");
    group.bench_with_input(BenchmarkId::from_parameter(id), &stream, |b, stream| {
        let mut decoder = Decoder::<DeviceMsg>::new();
        b.iter(|| {
            let mut frames = 0usize;
            for chunk in black_box(stream).chunks(STREAM_CHUNK) {
                for item in decoder.feed(chunk) {
                    black_box(item.expect("valid frame"));
                    frames += 1;
                }
            }
            assert_eq!(frames, STREAM_FRAMES);
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = single_frames, stream
}
criterion_main!(benches);
