//! Feeds arbitrary bytes, in arbitrary chunk splits, to `Decoder<DeviceMsg>` and
//! `Decoder<HostMsg>`. Checks that nothing panics, that the buffer stays within
//! `MAX_WIRE_LEN`, that chunking never changes the results, and that every frame the decoder
//! accepts re-encodes and decodes to the same frame.
//!
//! Input layout: the first byte's low 4 bits say how many of the next bytes are chunk sizes
//! (cycled; 0 means 1); everything after them is the byte stream.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use protocol::{encode, Decoder, DeviceMsg, Frame, FrameError, HostMsg, MAX_WIRE_LEN};
use serde::{de::DeserializeOwned, Serialize};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = rest.split_at(usize::from(head & 0x0f).min(rest.len()));
    check::<DeviceMsg>(sizes, stream);
    check::<HostMsg>(sizes, stream);
});

type Results<M> = Vec<Result<Frame<M>, FrameError>>;

fn check<M>(sizes: &[u8], stream: &[u8])
where
    M: Serialize + DeserializeOwned + PartialEq + Clone + Debug,
{
    let mut whole = Decoder::<M>::new();
    let expected: Results<M> = whole.feed(stream).collect();
    assert!(whole.pending() <= MAX_WIRE_LEN);

    let mut chunked = Decoder::<M>::new();
    let mut got: Results<M> = Vec::new();
    let mut rest = stream;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(usize::from(size).clamp(1, rest.len()));
        rest = tail;
        got.extend(chunked.feed(chunk));
        assert!(chunked.pending() <= MAX_WIRE_LEN);
    }
    if sizes.is_empty() {
        got.extend(chunked.feed(rest));
    }
    assert_eq!(got, expected);
    assert_eq!(chunked.pending(), whole.pending());

    for frame in expected.iter().flatten() {
        let mut wire = [0u8; MAX_WIRE_LEN];
        let n = encode(frame, &mut wire).expect("a decoded frame fits a frame again");
        let again: Results<M> = Decoder::<M>::new().feed(&wire[..n]).collect();
        assert_eq!(again, [Ok(frame.clone())]);
    }
}
