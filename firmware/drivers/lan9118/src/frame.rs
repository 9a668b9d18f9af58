//! Pure arithmetic of the LAN9118's FIFO formats: what an RX status word says about the frame
//! behind it, the TX command words for a frame, and packing bytes into and out of the
//! little-endian 32-bit FIFO words. No register access, so it is unit-tested on the host.

/// The largest frame this driver moves: a 14-byte Ethernet header and a 1500-byte payload,
/// without the FCS (the MAC adds it on TX and the driver strips it on RX). Both buffers are this
/// size, so nothing from the wire can overrun them.
pub const MAX_FRAME: usize = 1514;
/// An Ethernet header; anything shorter is not a frame.
pub const MIN_FRAME: usize = 14;
/// The frame check sequence the MAC leaves at the end of each received frame.
pub const FCS_LEN: usize = 4;

// RX status word bits.
const RX_STS_LEN_SHIFT: u32 = 16;
const RX_STS_LEN_MASK: u32 = 0x3fff;
/// Error summary: CRC error, runt, too long, collision, ... (the details are not needed to drop).
const RX_STS_ERROR: u32 = 1 << 15;
/// The frame failed the address filter (only delivered when the MAC is told to receive all).
const RX_STS_FILTER_FAIL: u32 = 1 << 30;

// TX command A bits.
const TX_CMD_A_FIRST: u32 = 1 << 13;
const TX_CMD_A_LAST: u32 = 1 << 12;
const TX_CMD_A_LEN_MASK: u32 = 0x7ff;

/// Why a received frame was dropped instead of handed to the stack.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RxDrop {
    /// The MAC flagged it (bad CRC, runt, collision, filter failure).
    Error,
    /// Longer than [`MAX_FRAME`].
    TooLong,
    /// Shorter than an Ethernet header.
    TooShort,
}

/// One received frame as its RX status word describes it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RxFrame {
    /// How many words of the RX data FIFO belong to this frame, FCS included; they must all be
    /// read (or the FIFO dumped) whatever the verdict, or the next frame starts mid-way.
    pub words: usize,
    /// The frame's length without FCS if it is to be delivered.
    pub verdict: Result<usize, RxDrop>,
}

/// Decodes an RX status word (with `RX_CFG` offset and end-alignment both zero, as configured).
pub fn rx_frame(status: u32) -> RxFrame {
    let wire_len = ((status >> RX_STS_LEN_SHIFT) & RX_STS_LEN_MASK) as usize;
    let words = wire_len.div_ceil(4);
    let verdict = if status & (RX_STS_ERROR | RX_STS_FILTER_FAIL) != 0 {
        Err(RxDrop::Error)
    } else if wire_len < MIN_FRAME + FCS_LEN {
        Err(RxDrop::TooShort)
    } else if wire_len - FCS_LEN > MAX_FRAME {
        Err(RxDrop::TooLong)
    } else {
        Ok(wire_len - FCS_LEN)
    };
    RxFrame { words, verdict }
}

/// TX command words A and B for a frame of `len` bytes sent as one buffer, tagged `tag` (the tag
/// comes back in the TX status word). `len` must be at most [`MAX_FRAME`].
pub fn tx_commands(len: usize, tag: u16) -> (u32, u32) {
    let len = len as u32 & TX_CMD_A_LEN_MASK;
    let a = TX_CMD_A_FIRST | TX_CMD_A_LAST | len;
    let b = (u32::from(tag) << 16) | len;
    (a, b)
}

/// Fills `dst` from FIFO words (little-endian: the first byte is the word's low byte), calling
/// `next_word` exactly `dst.len().div_ceil(4)` times.
pub fn unpack_words(dst: &mut [u8], mut next_word: impl FnMut() -> u32) {
    for chunk in dst.chunks_mut(4) {
        let bytes = next_word().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// Packs `src` into FIFO words, the last one zero-padded, calling `push_word` exactly
/// `src.len().div_ceil(4)` times.
pub fn pack_words(src: &[u8], mut push_word: impl FnMut(u32)) {
    for chunk in src.chunks(4) {
        let mut bytes = [0u8; 4];
        bytes[..chunk.len()].copy_from_slice(chunk);
        push_word(u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(wire_len: u32, flags: u32) -> u32 {
        (wire_len << 16) | flags
    }

    #[test]
    fn a_good_frame_is_delivered_without_its_fcs() {
        // A 60-byte ARP frame: 64 bytes on the wire with the FCS, 16 words.
        let f = rx_frame(status(64, 0));
        assert_eq!(
            f,
            RxFrame {
                words: 16,
                verdict: Ok(60)
            }
        );
        // Odd lengths round the word count up (QEMU pushes the FCS right after the last byte).
        assert_eq!(
            rx_frame(status(67, 0)),
            RxFrame {
                words: 17,
                verdict: Ok(63)
            }
        );
        // The largest frame fits the buffer exactly.
        assert_eq!(rx_frame(status(1518, 0)).verdict, Ok(MAX_FRAME));
    }

    #[test]
    fn odd_frames_are_dropped_but_their_words_still_counted() {
        assert_eq!(
            rx_frame(status(1519, 0)),
            RxFrame {
                words: 380,
                verdict: Err(RxDrop::TooLong)
            }
        );
        // The length field's maximum (16383) cannot overrun anything either.
        assert_eq!(
            rx_frame(u32::MAX & !(1 << 30) & !(1 << 15)).verdict,
            Err(RxDrop::TooLong)
        );
        assert_eq!(
            rx_frame(status(17, 0)),
            RxFrame {
                words: 5,
                verdict: Err(RxDrop::TooShort)
            }
        );
        assert_eq!(
            rx_frame(status(0, 0)),
            RxFrame {
                words: 0,
                verdict: Err(RxDrop::TooShort)
            }
        );
        assert_eq!(rx_frame(status(64, 1 << 15)).verdict, Err(RxDrop::Error));
        assert_eq!(rx_frame(status(64, 1 << 30)).verdict, Err(RxDrop::Error));
    }

    #[test]
    fn tx_commands_mark_a_single_buffer_frame() {
        let (a, b) = tx_commands(42, 7);
        assert_eq!(a, 0x0000_302a);
        assert_eq!(b, 0x0007_002a);
    }

    #[test]
    fn words_round_trip_little_endian() {
        let src = [1u8, 2, 3, 4, 5, 6, 7];
        let mut words = [0u32; 2];
        let mut n = 0;
        pack_words(&src, |w| {
            words[n] = w;
            n += 1;
        });
        assert_eq!(n, 2);
        assert_eq!(words, [0x0403_0201, 0x0007_0605]);

        let mut dst = [0u8; 7];
        let mut it = words.iter().copied();
        let mut calls = 0;
        unpack_words(&mut dst, || {
            calls += 1;
            it.next().unwrap_or(0)
        });
        assert_eq!(calls, 2);
        assert_eq!(dst, src);
    }
}
