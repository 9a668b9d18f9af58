//! The chat history in sled: a ring of blocks of [`BLOCK_LINES`] lines, written to sled a
//! block at a time.
//!
//! sled copies a leaf (up to 16 keys) on every insert and touches the header of every value
//! in it; a key per line cost the worker about 2 µs a line in place (perf, broadcast past
//! saturation: 40% of its CPU), so lines are packed. The block being filled lives in memory
//! (readers see it) and goes to sled when it is full, [`WRITE_BEHIND`] after its first
//! unwritten line at the latest (a background thread), on the store's flush and when the
//! store is dropped. A crash loses at most that much more than sled's own flush interval.
//!
//! A stored block: its number (8 bytes, big-endian), then its lines, postcard one after
//! another; its key is `number % BLOCKS`, so each block overwrites one [`BLOCKS`] older. A
//! block damaged part-way keeps the lines before the damage, with a warning: history is not
//! worth failing for. The layouts before this one (tree `history`, a key per line in arrival
//! order; tree `history_ring`, a ring of single lines; rings of blocks of another size) move
//! in when the store opens.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use sled::{Db, IVec, Tree};

use super::super::{HistoryEntry, StoreError, MAX_HISTORY};
use crate::throttle::Throttle;

/// Lines in a block.
pub(super) const BLOCK_LINES: usize = 64;
/// Blocks in the ring: enough for [`MAX_HISTORY`] full lines besides the block being filled.
const BLOCKS: u64 = MAX_HISTORY.div_ceil(BLOCK_LINES) as u64 + 1;
const _: () = assert!(BLOCKS <= 1 << 16, "a slot is 16 bits");
/// The longest a line waits in memory before sled has it.
pub(super) const WRITE_BEHIND: Duration = Duration::from_millis(100);
/// The tree of this layout, named after its geometry: a ring written with other
/// `BLOCK_LINES` or `BLOCKS` is an older layout under another name, moved in at open.
fn tree_name() -> String {
    format!("history_{BLOCK_LINES}x{BLOCKS}")
}

/// Whether tree `name` is a ring of blocks of another geometry (or the first one, 16 lines
/// a block, named `history_blocks`).
fn is_other_block_ring(name: &[u8]) -> bool {
    let Some(geometry) = name.strip_prefix(b"history_") else {
        return false;
    };
    let numbers = |part: &[u8]| !part.is_empty() && part.iter().all(u8::is_ascii_digit);
    let other_geometry = match geometry.iter().position(|&b| b == b'x') {
        Some(x) => numbers(&geometry[..x]) && numbers(&geometry[x + 1..]),
        None => false,
    };
    (geometry == b"blocks" || other_geometry) && name != tree_name().as_bytes()
}
/// Marks a ring the older layouts' lines were moved into, until their trees are dropped: an
/// open cut short between the two does not move them twice. Not a slot (3 bytes).
const MOVED_KEY: &[u8] = b"old";

/// The history: stored blocks plus the one being filled.
pub(super) struct HistoryRing {
    tree: Tree,
    filling: Mutex<Block>,
}

/// A block being filled.
struct Block {
    number: u64,
    lines: usize,
    /// What sled is to store: the number, then the lines.
    bytes: Vec<u8>,
    /// Holds lines sled does not have yet.
    dirty: bool,
}

impl Block {
    fn empty(number: u64) -> Block {
        Block {
            number,
            lines: 0,
            bytes: number.to_be_bytes().to_vec(),
            dirty: false,
        }
    }
}

/// The key of block `number`.
fn slot(number: u64) -> [u8; 2] {
    ((number % BLOCKS) as u16).to_be_bytes()
}

/// A stored value's block number and lines, and how many of its bytes hold whole lines.
/// `None` for a value too short for its number (damaged, skipped with a warning). `at` says
/// where it was, for the warnings (a slot, or an older ring's tree name).
fn parse(at: &[u8], value: &[u8]) -> Option<(u64, Vec<HistoryEntry>, usize)> {
    let Some((number, mut rest)) = value.split_first_chunk::<8>() else {
        tracing::warn!(at = ?at, "damaged history block skipped");
        return None;
    };
    let mut lines = Vec::with_capacity(BLOCK_LINES);
    while !rest.is_empty() {
        match postcard::take_from_bytes::<HistoryEntry>(rest) {
            Ok((line, after)) => {
                lines.push(line);
                rest = after;
            }
            Err(err) => {
                tracing::warn!(at = ?at, kept = lines.len(), cause = %err, "damaged history block: the lines after the damage skipped");
                break;
            }
        }
    }
    Some((u64::from_be_bytes(*number), lines, value.len() - rest.len()))
}

/// The stored blocks of `tree` as `(number, value)`, newest first. With `in_slot`, a block
/// is only taken from its own slot (this ring; a block elsewhere is damaged and skipped
/// with a warning); without, from any (a ring of another geometry being moved in).
fn stored(tree: &Tree, in_slot: bool) -> Result<Vec<(u64, IVec)>, StoreError> {
    let mut blocks = Vec::with_capacity(BLOCKS as usize);
    for item in tree.iter() {
        let (key, value) = item?;
        if key.len() != 2 {
            continue; // MOVED_KEY
        }
        match value.first_chunk::<8>().map(|n| u64::from_be_bytes(*n)) {
            Some(number) if !in_slot || slot(number) == key[..] => blocks.push((number, value)),
            _ => tracing::warn!(slot = ?&key[..], "damaged history block skipped"),
        }
    }
    blocks.sort_unstable_by_key(|(number, _)| std::cmp::Reverse(*number));
    Ok(blocks)
}

impl HistoryRing {
    /// Opens the ring in `db`, moving in the lines of the layouts before it, and starts the
    /// thread that writes a block being filled within [`WRITE_BEHIND`].
    pub(super) fn open(db: &Db) -> Result<Arc<HistoryRing>, StoreError> {
        let tree = db.open_tree(tree_name())?;
        move_older_layouts(db, &tree)?;
        let filling = Mutex::new(resume(&tree)?);
        let ring = Arc::new(HistoryRing { tree, filling });
        let weak = Arc::downgrade(&ring);
        let spawned = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || write_behind(weak));
        if let Err(err) = spawned {
            // Blocks still go to sled when full, on flush and on drop.
            tracing::warn!(cause = %err, "no history writer thread: a partial block waits for the next flush");
        }
        Ok(ring)
    }

    fn filling(&self) -> MutexGuard<'_, Block> {
        // A panic cannot leave a block torn: a line is appended with one `extend`.
        self.filling.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a line; a full block goes to sled now. If sled fails, the error is returned
    /// and the full block's lines are lost to the store (memory stays bounded).
    pub(super) fn append(&self, entry: &HistoryEntry) -> Result<(), StoreError> {
        let mut block = self.filling();
        let before = block.bytes.len();
        if let Err(err) = postcard::to_io(entry, &mut block.bytes) {
            block.bytes.truncate(before);
            return Err(err.into());
        }
        block.lines += 1;
        block.dirty = true;
        if block.lines < BLOCK_LINES {
            return Ok(());
        }
        let written = self.write(&block);
        *block = Block::empty(block.number.saturating_add(1));
        written
    }

    /// Gives sled the lines of the block being filled that it does not have yet.
    pub(super) fn write_pending(&self) -> Result<(), StoreError> {
        let mut block = self.filling();
        if block.dirty {
            self.write(&block)?;
            block.dirty = false;
        }
        Ok(())
    }

    fn write(&self, block: &Block) -> Result<(), StoreError> {
        self.tree
            .insert(slot(block.number), block.bytes.as_slice())?;
        Ok(())
    }

    /// The last `n` lines (at most [`MAX_HISTORY`]), oldest first.
    pub(super) fn recent(&self, n: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        let n = n.min(MAX_HISTORY);
        // Newest block first; the one being filled stands in for its stored copy.
        let (filling, mut newest_first) = {
            let block = self.filling();
            let lines = parse(&slot(block.number), &block.bytes).map(|(_, lines, _)| lines);
            (block.number, vec![lines.unwrap_or_default()])
        };
        let mut count = newest_first[0].len();
        for (number, value) in stored(&self.tree, true)? {
            if count >= n {
                break;
            }
            if number >= filling {
                continue;
            }
            if let Some((_, lines, _)) = parse(&slot(number), &value) {
                count += lines.len();
                newest_first.push(lines);
            }
        }
        let mut lines: Vec<HistoryEntry> = newest_first.into_iter().rev().flatten().collect();
        lines.drain(..lines.len().saturating_sub(n));
        Ok(lines)
    }
}

impl Drop for HistoryRing {
    fn drop(&mut self) {
        if let Err(err) = self.write_pending() {
            tracing::warn!(cause = %err, "the last history lines were not stored");
        }
    }
}

/// Writes the block being filled every [`WRITE_BEHIND`] while the ring lives.
fn write_behind(ring: Weak<HistoryRing>) {
    let failed = Throttle::new();
    loop {
        std::thread::sleep(WRITE_BEHIND);
        let Some(ring) = ring.upgrade() else { return };
        if let Err(err) = ring.write_pending() {
            if let Some(also) = failed.admit() {
                tracing::warn!(cause = %err, failed_since_last_warning = also, "history not stored yet; trying again");
            }
        }
    }
}

/// The block to fill next: the newest stored one if it has room, else a fresh one after it.
fn resume(tree: &Tree) -> Result<Block, StoreError> {
    let Some((number, value)) = stored(tree, true)?.into_iter().next() else {
        return Ok(Block::empty(0));
    };
    match parse(&slot(number), &value) {
        Some((number, lines, whole)) if lines.len() < BLOCK_LINES => Ok(Block {
            number,
            lines: lines.len(),
            bytes: value[..whole].to_vec(),
            dirty: false,
        }),
        _ => Ok(Block::empty(number.saturating_add(1))),
    }
}

/// Moves the newest [`MAX_HISTORY`] lines of the older layouts into `ring` after what it
/// holds, in one batch, then drops their trees: tree `history` (key = the line's sequence
/// number), tree `history_ring` (a slot per line, its value the sequence number then the
/// line) and rings of blocks of another geometry. Lines are decoded and encoded again;
/// those that do not decode are skipped with a warning.
fn move_older_layouts(db: &Db, ring: &Tree) -> Result<(), StoreError> {
    let names = db.tree_names();
    let exists = |name: &str| names.iter().any(|n| n == name.as_bytes());
    let (per_line, line_ring) = (exists("history"), exists("history_ring"));
    let block_rings: Vec<IVec> = names
        .iter()
        .filter(|name| is_other_block_ring(name))
        .cloned()
        .collect();
    if !per_line && !line_ring && block_rings.is_empty() {
        // A marker left by an open cut short after the old trees were dropped.
        ring.remove(MOVED_KEY)?;
        return Ok(());
    }
    if ring.get(MOVED_KEY)?.is_none() {
        let mut lines: Vec<HistoryEntry> = Vec::new();
        let single = line_ring
            .then(|| db.open_tree("history_ring"))
            .transpose()?;
        // The single-line ring marked its own move from `history` the same way.
        let per_line_moved = match &single {
            Some(tree) => tree.get(MOVED_KEY)?.is_some(),
            None => false,
        };
        if per_line && !per_line_moved {
            // The newest MAX_HISTORY, read once from the end (`len` walks the whole tree).
            let old = db.open_tree("history")?;
            let newest = old.iter().values().rev().take(MAX_HISTORY);
            let mut newest = newest.collect::<Result<Vec<_>, _>>()?;
            newest.reverse();
            lines.extend(newest.iter().filter_map(|line| whole_line(line)));
        }
        if let Some(tree) = &single {
            lines.extend(
                single_lines(tree)?
                    .iter()
                    .filter_map(|line| whole_line(line)),
            );
        }
        for name in &block_rings {
            let blocks = stored(&db.open_tree(name)?, false)?;
            let oldest_first = blocks.iter().rev();
            let blocks = oldest_first.filter_map(|(_, value)| parse(name, value));
            lines.extend(blocks.flat_map(|(_, lines, _)| lines));
        }
        lines.drain(..lines.len().saturating_sub(MAX_HISTORY));
        let mut next = resume(ring)?;
        let mut batch = sled::Batch::default();
        for line in &lines {
            postcard::to_io(line, &mut next.bytes)?;
            next.lines += 1;
            if next.lines == BLOCK_LINES {
                batch.insert(&slot(next.number), next.bytes);
                next = Block::empty(next.number.saturating_add(1));
            }
        }
        if next.lines > 0 {
            batch.insert(&slot(next.number), next.bytes);
        }
        batch.insert(MOVED_KEY, &[][..]);
        ring.apply_batch(batch)?;
        ring.flush()?;
    }
    for (name, existed) in [("history", per_line), ("history_ring", line_ring)] {
        if existed {
            db.drop_tree(name)?;
        }
    }
    for name in &block_rings {
        db.drop_tree(name)?;
    }
    ring.remove(MOVED_KEY)?;
    Ok(())
}

/// One line of an older layout, if it decodes to its last byte (a damaged line is skipped
/// with a warning).
fn whole_line(bytes: &[u8]) -> Option<HistoryEntry> {
    match postcard::take_from_bytes::<HistoryEntry>(bytes) {
        Ok((line, [])) => Some(line),
        Ok(_) => {
            tracing::warn!("damaged history line not moved: bytes after its end");
            None
        }
        Err(err) => {
            tracing::warn!(cause = %err, "damaged history line not moved");
            None
        }
    }
}

/// The lines of the single-line ring, oldest first (values too short for their sequence
/// number skipped with a warning).
fn single_lines(tree: &Tree) -> Result<Vec<IVec>, StoreError> {
    let mut lines = Vec::with_capacity(MAX_HISTORY);
    for item in tree.iter() {
        let (key, value) = item?;
        if key.len() != 2 {
            continue; // its MOVED_KEY
        }
        match value.first_chunk::<8>() {
            Some(seq) => lines.push((u64::from_be_bytes(*seq), value.subslice(8, value.len() - 8))),
            None => tracing::warn!(slot = ?&key[..], "damaged history line not moved"),
        }
    }
    lines.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(lines.into_iter().map(|(_, line)| line).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::encode;

    fn line(n: usize) -> HistoryEntry {
        HistoryEntry {
            at: n as u64,
            uid: "1".into(),
            nick: "a".into(),
            text: n.to_string(),
        }
    }

    fn texts(lines: Vec<HistoryEntry>) -> Vec<String> {
        lines.into_iter().map(|line| line.text).collect()
    }

    fn numbers(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|n| n.to_string()).collect()
    }

    /// A value of the single-line ring: the sequence number, then the line.
    fn single(seq: u64, n: usize) -> Vec<u8> {
        postcard::to_extend(&line(n), seq.to_be_bytes().to_vec()).unwrap()
    }

    fn single_slot(seq: u64) -> [u8; 2] {
        ((seq % MAX_HISTORY as u64) as u16).to_be_bytes()
    }

    /// Opens the database at `dir`, waiting for sled's background threads to let go of
    /// the file lock of a handle dropped a moment ago (a reopen right after a drop
    /// sometimes found it still held).
    fn open_db(dir: &std::path::Path) -> Db {
        crate::store::sled::open_db(dir).unwrap()
    }

    fn open(dir: &std::path::Path) -> (Db, Arc<HistoryRing>) {
        let db = open_db(dir);
        let ring = HistoryRing::open(&db).unwrap();
        (db, ring)
    }

    /// Opens the store over older layouts holding lines 0 to 4, adds line 5, and checks all
    /// six come back in order and the trees `gone` were dropped.
    fn lines_0_to_4_moved_in(dir: &std::path::Path, gone: &[&[u8]]) {
        let (db, ring) = open(dir);
        ring.append(&line(5)).unwrap();
        assert_eq!(texts(ring.recent(10).unwrap()), numbers(0..6));
        let names = db.tree_names();
        assert!(!names.iter().any(|n| gone.contains(&&n[..])));
    }

    #[test]
    fn history_goes_on_in_order_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_db, ring) = open(dir.path());
            for n in 0..MAX_HISTORY + 3 {
                ring.append(&line(n)).unwrap();
            }
        }
        let (_db, ring) = open(dir.path());
        for n in MAX_HISTORY + 3..MAX_HISTORY + 5 {
            ring.append(&line(n)).unwrap();
        }
        assert_eq!(
            texts(ring.recent(usize::MAX).unwrap()),
            numbers(5..MAX_HISTORY + 5),
            "the oldest went, in order, the partial block resumed"
        );
        assert_eq!(
            texts(ring.recent(3).unwrap()),
            numbers(MAX_HISTORY + 2..MAX_HISTORY + 5)
        );
    }

    #[test]
    fn a_partial_block_reaches_sled_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (db, ring) = open(dir.path());
        for n in 0..BLOCK_LINES + 3 {
            ring.append(&line(n)).unwrap();
        }
        let tree = db.open_tree(tree_name()).unwrap();
        let full = tree
            .get(slot(0))
            .unwrap()
            .expect("a full block is written at once");
        let (_, lines, _) = parse(&slot(0), &full).unwrap();
        assert_eq!(texts(lines), numbers(0..BLOCK_LINES));
        let deadline = std::time::Instant::now() + WRITE_BEHIND * 50;
        loop {
            let stored = tree.get(slot(1)).unwrap();
            let lines = stored
                .and_then(|value| parse(&slot(1), &value))
                .map(|p| p.1);
            if lines.as_ref().map(Vec::len) == Some(3) {
                assert_eq!(texts(lines.unwrap()), numbers(BLOCK_LINES..BLOCK_LINES + 3));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the block being filled never reached sled"
            );
            std::thread::sleep(WRITE_BEHIND / 4);
        }
    }

    #[test]
    fn the_older_layouts_move_in_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(dir.path());
            let per_line = db.open_tree("history").unwrap();
            for n in 0..3 {
                let seq = 1_000_000 + n as u64; // sled's generate_id, after a restart
                per_line
                    .insert(seq.to_be_bytes(), encode(&line(n)).unwrap())
                    .unwrap();
            }
            let single_ring = db.open_tree("history_ring").unwrap();
            for n in 3..5 {
                let seq = MAX_HISTORY as u64 * 2 + n as u64; // went round the ring twice
                single_ring
                    .insert(single_slot(seq), single(seq, n))
                    .unwrap();
            }
            db.flush().unwrap();
        }
        lines_0_to_4_moved_in(dir.path(), &[b"history", b"history_ring"]);
    }

    #[test]
    fn a_long_old_history_moves_only_its_newest_lines() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(dir.path());
            let old = db.open_tree("history").unwrap();
            for n in 0..MAX_HISTORY + 10 {
                old.insert((n as u64).to_be_bytes(), encode(&line(n)).unwrap())
                    .unwrap();
            }
            db.flush().unwrap();
        }
        let (_db, ring) = open(dir.path());
        assert_eq!(
            texts(ring.recent(usize::MAX).unwrap()),
            numbers(10..MAX_HISTORY + 10)
        );
    }

    #[test]
    fn damaged_history_never_keeps_the_store_from_opening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(dir.path());
            let old = db.open_tree("history").unwrap();
            old.insert(1u64.to_be_bytes(), encode(&line(0)).unwrap())
                .unwrap();
            old.insert(2u64.to_be_bytes(), &[0xff, 0xff][..]).unwrap();
            let single_ring = db.open_tree("history_ring").unwrap();
            // Too short to hold its sequence number.
            single_ring.insert(single_slot(999), &[1u8, 2][..]).unwrap();
            db.flush().unwrap();
        }
        let (db, ring) = open(dir.path());
        for n in 1..BLOCK_LINES + 4 {
            ring.append(&line(n)).unwrap();
        }
        assert_eq!(
            texts(ring.recent(100).unwrap()),
            numbers(0..BLOCK_LINES + 4)
        );
        // Block 0 (stored, full) damaged after its first line; a stray value too short for
        // a block number in another slot: the lines before the damage are still read.
        let tree = db.open_tree(tree_name()).unwrap();
        let mut damaged = 0u64.to_be_bytes().to_vec();
        damaged.extend(encode(&line(0)).unwrap());
        damaged.extend([0xff, 0xff, 0xff]);
        tree.insert(slot(0), damaged).unwrap();
        tree.insert(slot(7), &[1u8][..]).unwrap();
        let expected: Vec<String> = ["0".to_string()]
            .into_iter()
            .chain(numbers(BLOCK_LINES..BLOCK_LINES + 4))
            .collect();
        assert_eq!(texts(ring.recent(100).unwrap()), expected);
        drop((ring, tree, db));
        // The newest block damaged too: the store still opens and goes on after what reads.
        {
            let db = open_db(dir.path());
            let tree = db.open_tree(tree_name()).unwrap();
            let mut damaged = 1u64.to_be_bytes().to_vec();
            damaged.extend(encode(&line(BLOCK_LINES)).unwrap());
            damaged.push(0xff);
            tree.insert(slot(1), damaged).unwrap();
            db.flush().unwrap();
        }
        let (_db, ring) = open(dir.path());
        ring.append(&line(99)).unwrap();
        assert_eq!(
            texts(ring.recent(100).unwrap()),
            ["0", &BLOCK_LINES.to_string(), "99"]
        );
    }

    #[test]
    fn an_open_cut_short_after_moving_the_older_layouts_does_not_move_them_twice() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(dir.path());
            let old = db.open_tree("history").unwrap();
            let blocks = db.open_tree(tree_name()).unwrap();
            let mut block = Block::empty(0);
            for n in 0..2 {
                old.insert((n as u64).to_be_bytes(), encode(&line(n)).unwrap())
                    .unwrap();
                block.bytes.extend(encode(&line(n)).unwrap());
            }
            blocks.insert(slot(0), block.bytes).unwrap();
            // Moved and marked, then the process died before dropping the old tree.
            blocks.insert(MOVED_KEY, &[][..]).unwrap();
            db.flush().unwrap();
        }
        let (db, ring) = open(dir.path());
        ring.append(&line(2)).unwrap();
        assert_eq!(texts(ring.recent(10).unwrap()), numbers(0..3));
        assert!(db
            .open_tree(tree_name())
            .unwrap()
            .get(MOVED_KEY)
            .unwrap()
            .is_none());
        assert!(!db.tree_names().iter().any(|n| n == b"history"));
    }

    #[test]
    fn a_ring_of_another_geometry_moves_in_and_damaged_lines_stay_out() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(dir.path());
            // The first block layout: 16 lines a block, 64 slots, tree `history_blocks`.
            let first = db.open_tree("history_blocks").unwrap();
            for (number, range) in [(7u64, 0..3), (8, 3..5)] {
                let mut block = number.to_be_bytes().to_vec();
                for n in range {
                    block.extend(encode(&line(n)).unwrap());
                }
                first
                    .insert(((number % 64) as u16).to_be_bytes(), block)
                    .unwrap();
            }
            // A per-line tree whose line has a byte after its end: not moved.
            let per_line = db.open_tree("history").unwrap();
            let mut trailing = encode(&line(99)).unwrap();
            trailing.push(0);
            per_line.insert(1u64.to_be_bytes(), trailing).unwrap();
            db.flush().unwrap();
        }
        lines_0_to_4_moved_in(dir.path(), &[b"history_blocks", b"history"]);
        assert!(is_other_block_ring(b"history_16x64"));
        assert!(!is_other_block_ring(tree_name().as_bytes()));
        assert!(!is_other_block_ring(b"history_ring"));
    }

    #[test]
    fn a_block_in_the_wrong_slot_is_skipped_and_a_stray_marker_removed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, ring) = open(dir.path());
            ring.append(&line(0)).unwrap();
            drop(ring);
            let tree = db.open_tree(tree_name()).unwrap();
            // Block 1's value under block 2's slot (a damaged number), and the move's marker
            // left by an open cut short after the old trees were dropped.
            let mut wrong = 1u64.to_be_bytes().to_vec();
            wrong.extend(encode(&line(7)).unwrap());
            tree.insert(slot(2), wrong).unwrap();
            tree.insert(MOVED_KEY, &[][..]).unwrap();
            db.flush().unwrap();
        }
        let (db, ring) = open(dir.path());
        ring.append(&line(1)).unwrap();
        assert_eq!(texts(ring.recent(10).unwrap()), numbers(0..2));
        let tree = db.open_tree(tree_name()).unwrap();
        assert!(tree.get(MOVED_KEY).unwrap().is_none());
    }
}
