//! The device hot path never touches the heap: [`encode`] into a caller's buffer,
//! [`encode_to_vec`] (a `heapless` buffer) and [`Decoder`] fed byte chunks, for every message
//! kind in both directions and for the error paths a noisy line takes.
//!
//! A counting global allocator wraps the system one. It counts only on the thread that opened
//! a measured section and only while it is open (thread-local flag and counters), so the test
//! harness's own threads and the set-up outside the section do not blur the figure. The
//! `link` messages (postcard to `Vec`) are host only and not the hot path, so not checked here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use protocol::frame::encode_to_vec;
use protocol::*;
use serde::{de::DeserializeOwned, Serialize};

/// Frames of each message kind per check.
const FRAMES: u16 = 1_000;
/// Read sizes the decoder is fed, cycled: single bytes, odd splits, and reads longer than a frame.
const CHUNKS: &[usize] = &[1, 7, 64, 3, MAX_WIRE_LEN + 5];

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static FREES: Cell<u64> = const { Cell::new(0) };
}

/// [`System`], counting calls made on a thread inside [`heap_calls`].
struct Counting;

impl Counting {
    fn bump(counter: &'static std::thread::LocalKey<Cell<u64>>) {
        // `try_with`: the allocator is also called while a thread's locals are torn down.
        // Const-initialised `Cell`s need no lazy set-up, so this never allocates itself.
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            let _ = counter.try_with(|n| n.set(n.get() + 1));
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only `Cell`s.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::bump(&ALLOCS);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::bump(&ALLOCS);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::bump(&ALLOCS);
        // SAFETY: as for `alloc`; `ptr` came from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::bump(&FREES);
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap calls made by `f` on this thread: (allocations and reallocations, frees).
fn heap_calls<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    ALLOCS.with(|n| n.set(0));
    FREES.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCS.with(Cell::get), FREES.with(Cell::get))
}

/// Asserts that `f` makes no heap call; returns what it returned.
fn assert_no_heap<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let (out, allocs, frees) = heap_calls(f);
    assert_eq!(
        (allocs, frees),
        (0, 0),
        "{what}: (allocations, frees) on the hot path"
    );
    out
}

fn text<const N: usize>(s: &str) -> heapless::String<N> {
    s.try_into().expect("fits")
}

/// One message of every device kind, strings full where that makes the frame biggest.
fn device_msgs() -> Vec<DeviceMsg> {
    let report = ErrorReport {
        code: ErrorCode::Busy,
        seq: 9,
    };
    vec![
        DeviceMsg::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            device_id: text("sensor-kitchen-01"),
            firmware: text("0.1.0+abc123"),
        }),
        DeviceMsg::Chat(ChatOut {
            to: None,
            text: text("temperature 21.5 C, humidity 40 %, ok :)"),
        }),
        DeviceMsg::Chat(ChatOut {
            to: Some(text(&"7".repeat(MAX_ID_LEN))),
            text: text(&"\0é".repeat(MAX_TEXT_LEN / 3)),
        }),
        DeviceMsg::Ack { seq: 41 },
        DeviceMsg::Ping { nonce: 0xdead_beef },
        DeviceMsg::Pong { nonce: 0 },
        DeviceMsg::Telemetry(Telemetry {
            name: text("temp_mC"),
            value: i64::MIN,
        }),
        DeviceMsg::Error(report),
    ]
}

/// One message of every host kind.
fn host_msgs() -> Vec<HostMsg> {
    vec![
        HostMsg::Chat(ChatIn {
            from: text("1001"),
            direct: false,
            text: text("hello devices, anyone near the kitchen?"),
        }),
        HostMsg::Chat(ChatIn {
            from: text(&"9".repeat(MAX_ID_LEN)),
            direct: true,
            text: text(&"x".repeat(MAX_TEXT_LEN)),
        }),
        HostMsg::Ack { seq: u16::MAX },
        HostMsg::Ping { nonce: 1 },
        HostMsg::Pong { nonce: u32::MAX },
        HostMsg::Error(ErrorReport {
            code: ErrorCode::HelloRequired,
            seq: 0,
        }),
    ]
}

/// Feeds `wire` to `decoder` in chunks cycling through [`CHUNKS`], starting at `phase`;
/// returns how many items came out and how many were `expected`. Allocation free itself.
fn feed_chunked<M: DeserializeOwned + PartialEq>(
    decoder: &mut Decoder<M>,
    mut wire: &[u8],
    phase: usize,
    expected: &Frame<M>,
) -> (usize, usize) {
    let (mut items, mut matching) = (0, 0);
    let mut sizes = CHUNKS.iter().cycle().skip(phase);
    while !wire.is_empty() {
        let size = (*sizes.next().unwrap_or(&1)).min(wire.len());
        let (chunk, rest) = wire.split_at(size);
        wire = rest;
        for item in decoder.feed(black_box(chunk)) {
            items += 1;
            matching += usize::from(item.as_ref() == Ok(expected));
        }
    }
    (items, matching)
}

/// Encodes `FRAMES` frames of `msg` (both encoders) and decodes each, inside one measured
/// section; then checks the decoder got every frame back intact.
fn round_trips_without_heap<M>(msg: &M)
where
    M: Serialize + DeserializeOwned + PartialEq + Clone + core::fmt::Debug,
{
    let mut frame = Frame {
        seq: 0,
        msg: msg.clone(),
    };
    let mut decoder = Decoder::<M>::new();
    let (items, matching) = assert_no_heap(&format!("{msg:?}"), || {
        let (mut items, mut matching) = (0, 0);
        let mut buf = [0u8; MAX_WIRE_LEN];
        for seq in 0..FRAMES {
            frame.seq = seq.wrapping_mul(331); // small and 3-byte varints alike
            let n = encode(black_box(&frame), &mut buf).expect("fits");
            let (i, m) = feed_chunked(&mut decoder, &buf[..n], usize::from(seq), &frame);
            let heapless_wire = encode_to_vec(black_box(&frame)).expect("fits");
            let (j, k) = feed_chunked(&mut decoder, &heapless_wire, usize::from(seq) + 1, &frame);
            items += i + j;
            matching += m + k;
        }
        (items, matching)
    });
    let want = 2 * usize::from(FRAMES);
    assert_eq!(
        (items, matching),
        (want, want),
        "{msg:?}: frames decoded intact"
    );
    assert_eq!(decoder.pending(), 0);
}

#[test]
fn device_messages_encode_and_decode_without_heap() {
    for msg in device_msgs() {
        round_trips_without_heap(&msg);
    }
}

#[test]
fn host_messages_encode_and_decode_without_heap() {
    for msg in host_msgs() {
        round_trips_without_heap(&msg);
    }
}

/// A noisy line: every error the decoder reports, and the resynchronisation after it.
#[test]
fn decoder_errors_without_heap() {
    let good = encode_to_vec(&Frame {
        seq: 3,
        msg: DeviceMsg::Ping { nonce: 77 },
    })
    .expect("fits")
    .to_vec();
    let mut bad_crc = good.clone();
    bad_crc[2] ^= 0x10;
    // Valid framing and CRC around a body that is not a `DeviceMsg`: variant tag 200.
    let not_a_msg = encode_to_vec(&Frame {
        seq: 1,
        msg: 200u32,
    })
    .expect("fits")
    .to_vec();
    let mut noisy = Vec::new();
    for _ in 0..100 {
        noisy.extend_from_slice(&bad_crc);
        noisy.extend_from_slice(&not_a_msg);
        noisy.extend_from_slice(&[0x05, 0x01, 0x00]); // COBS code past the end
        noisy.extend_from_slice(&[0x01, 0x00]); // an empty body: truncated
        noisy.extend(std::iter::repeat_n(0x42, MAX_WIRE_LEN + 1));
        noisy.push(0x00); // too long
        noisy.extend_from_slice(&good);
    }
    let mut decoder = Decoder::<DeviceMsg>::new();
    // Counts of Ok and of each error, in `FrameError` order (BufferFull never comes from decoding).
    let counts = assert_no_heap("decoder errors", || {
        let mut counts = [0usize; 6];
        for chunk in noisy.chunks(61) {
            for item in decoder.feed(black_box(chunk)) {
                let slot = match item {
                    Ok(_) => 0,
                    Err(FrameError::TooLong) => 1,
                    Err(FrameError::BadCobs) => 2,
                    Err(FrameError::Truncated) => 3,
                    Err(FrameError::BadCrc) => 4,
                    Err(FrameError::Decode) => 5,
                    Err(FrameError::BufferFull) => unreachable!("decoding never fills a buffer"),
                };
                counts[slot] += 1;
            }
        }
        counts
    });
    assert_eq!(
        counts, [100; 6],
        "[ok, too long, bad COBS, truncated, bad CRC, decode]"
    );
}

/// The counter itself works: a section that does allocate is caught. Without this, a counter
/// broken to always say 0 would make every test above pass.
#[test]
fn an_allocation_in_the_section_is_counted() {
    let (_, allocs, frees) = heap_calls(|| {
        let v: Vec<u8> = black_box(Vec::with_capacity(16));
        drop(black_box(v));
    });
    assert_eq!((allocs, frees), (1, 1));
    // Outside a section nothing is counted.
    let v: Vec<u8> = black_box(Vec::with_capacity(16));
    drop(v);
    let (_, allocs, _) = heap_calls(|| ());
    assert_eq!(allocs, 0);
}
