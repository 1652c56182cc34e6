//! [`KeyMap`]: the ordered map from keys to values and revisions that the state machine
//! keeps, packed tightly, because it holds every key in memory.
//!
//! A `BTreeMap<Bytes, Value>` costs about 270 bytes for a 10-byte key and a 100-byte value:
//! 88 bytes in the tree node (two 32-byte `Bytes`, three `u64`), tree nodes about two thirds
//! full, and two heap allocations with their allocator headers and rounding. Here the keys
//! live in *blocks*: byte vectors of up to about [`BLOCK_BYTES`] holding consecutive
//! records (`record.rs`: varint lengths and revisions, then key and value) in key order,
//! with no gaps and no spare capacity. A key costs its record (its bytes plus about 7)
//! and a share of its block's overhead (a tree slot, a bound and an allocation, about
//! 100 bytes among some 30 records).
//!
//! The price is time: a lookup scans its block (about 30 records), and a write moves up to
//! a block's bytes and reallocates the block. Both are far below the cost of a Raft round
//! trip and an fsync, which every write pays anyway.
//!
//! Copy on write: the tree and each block are behind an `Arc`, so a clone of the map (a
//! *view*, read on another thread while writes go on) costs one reference count. A write
//! while no view is alive changes the tree and the block in place (`Arc::make_mut` finds
//! them unshared); the first write after a view was taken copies the tree (its bounds and
//! block pointers, not the blocks: about 6,000 slots for 200,000 keys), and each write
//! copies the one block it changes if a view still shares it. A view never sees a write.
//!
//! Invariants (checked by [`KeyMap::check`] in tests):
//! - no block is empty; each holds whole records, keys strictly increasing;
//! - each block's *bound* (its key in `blocks`) is at most its first key, and every key in
//!   it is below the next block's bound; the first block's bound is the empty key, so that
//!   every key has a block to go in;
//! - a block passes `block_bytes` only when it holds a single record;
//! - `len` is the number of records.

mod record;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Bound;
use std::sync::Arc;

#[cfg(test)]
use record::decode;
pub use record::{Entry, Layout, Meta, invalid, put_varint};
use record::{Header, decode_stored, encode, encoded_len, read_varint, stored_key};

/// The size a block is split at. Larger blocks cost less memory (fewer blocks) and more
/// time per operation (longer scans and moves).
pub const BLOCK_BYTES: usize = 4096;

/// A block merges with a neighbour when a removal leaves it below this fraction of
/// `block_bytes` and the two fit in one block.
const MERGE_BELOW_DIVISOR: usize = 4;

/// Spare capacity a block may keep after it shrank, before it is reallocated to fit.
const MAX_SPARE_BYTES: usize = 64;

/// A block's bound: shared, so that copying the tree copies no key.
type BlockBound = Arc<[u8]>;

/// The blocks by their bound, shared between the map and its views.
type Blocks = BTreeMap<BlockBound, Arc<Vec<u8>>>;

/// An ordered map from byte-string keys to values with revisions, in packed blocks. A clone
/// is a view: it shares every block, and writes to either copy what they change.
#[derive(Clone)]
pub struct KeyMap {
    /// Blocks by their bound (see the invariants above).
    blocks: Arc<Blocks>,
    /// The number of keys.
    len: usize,
    /// The bytes of every key and value (not of the record headers): what a keyspace quota
    /// counts. The same on every replica, as it depends only on the entries.
    data_bytes: u64,
    /// The size a block is split at: [`BLOCK_BYTES`], smaller in tests to exercise splits
    /// and merges.
    block_bytes: usize,
}

impl Default for KeyMap {
    fn default() -> KeyMap {
        KeyMap::with_block_bytes(BLOCK_BYTES)
    }
}

/// Where a key is, or would go, in a block.
struct Position {
    /// The offset of the key's record, or of the first record after the key.
    offset: usize,
    /// The length of the key's record, if it is there.
    found: Option<usize>,
}

/// Scans `block` for `key`. Blocks hold only what [`encode`] wrote, so they are read
/// without the checks of [`decode`] (`record::decode_stored`): a failure there is a bug in
/// this module, not bad input.
fn search(block: &[u8], key: &[u8]) -> Position {
    let mut offset = 0;
    while offset < block.len() {
        let (found, len) = stored_key(&block[offset..]);
        match found.cmp(key) {
            std::cmp::Ordering::Less => offset += len,
            std::cmp::Ordering::Equal => return Position { offset, found: Some(len) },
            std::cmp::Ordering::Greater => break,
        }
    }
    Position { offset, found: None }
}

/// Replaces `block[range]` with `bytes`, growing the block to exactly the size it needs
/// (a `Vec`'s usual doubling would leave up to half of every block unused). Bytes of the
/// same length are overwritten in place; otherwise the block's tail moves once.
fn splice_exact(block: &mut Vec<u8>, range: std::ops::Range<usize>, bytes: &[u8]) {
    let old_len = block.len();
    let new_len = old_len - range.len() + bytes.len();
    let tail_to = range.start + bytes.len();
    if new_len > old_len {
        block.reserve_exact(new_len - old_len);
        block.resize(new_len, 0);
        block.copy_within(range.end..old_len, tail_to);
    } else if new_len < old_len {
        block.copy_within(range.end..old_len, tail_to);
        block.truncate(new_len);
    }
    block[range.start..tail_to].copy_from_slice(bytes);
    if block.capacity() - block.len() > MAX_SPARE_BYTES {
        block.shrink_to_fit();
    }
}

impl KeyMap {
    /// An empty map whose blocks split at `block_bytes` (at least 1).
    pub fn with_block_bytes(block_bytes: usize) -> KeyMap {
        assert!(block_bytes > 0, "a key map block must hold at least a byte");
        KeyMap { blocks: Arc::default(), len: 0, data_bytes: 0, block_bytes }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes of every key and value.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// The block `key` belongs in: the one with the greatest bound at most `key`.
    fn block_for(&self, key: &[u8]) -> Option<(&[u8], &Vec<u8>)> {
        let (bound, block) = self.blocks.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back()?;
        Some((bound, block))
    }

    pub fn get(&self, key: &[u8]) -> Option<Entry<'_>> {
        let (_, block) = self.block_for(key)?;
        let position = search(block, key);
        position.found.map(|_| decode_stored(&block[position.offset..]).0)
    }

    /// Sets `key` to `value` and `meta`, replacing what it had.
    pub fn insert(&mut self, key: &[u8], value: &[u8], meta: Meta) {
        self.upsert(key, value, |_| (meta, ()));
    }

    /// Sets `key` to `value`, with the metadata `meta_of` makes from what the key holds now
    /// (`None`: nothing), and returns what `meta_of` returns beside it: a write that depends
    /// on the key's revisions (a create index kept, the value it replaces) costs one lookup.
    /// A record of the same length as the one it replaces (a value overwritten by one of the
    /// same size, the common case) is written over it in place.
    pub fn upsert<R>(&mut self, key: &[u8], value: &[u8], meta_of: impl FnOnce(Option<Entry<'_>>) -> (Meta, R)) -> R {
        let added = (key.len() + value.len()) as u64;
        let blocks = Arc::make_mut(&mut self.blocks);
        let Some((_, block)) = blocks.range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back() else {
            // The map is empty: the first block, bound by the empty key.
            assert!(blocks.is_empty() && self.len == 0, "a non-empty key map has a block for every key");
            let (meta, result) = meta_of(None);
            let mut record = Vec::with_capacity(encoded_len(key, value, meta));
            encode(&mut record, key, value, meta);
            blocks.insert(Arc::default(), Arc::new(record));
            self.len = 1;
            self.data_bytes = added;
            return result;
        };
        let block = Arc::make_mut(block);
        let position = search(block, key);
        let old = position.found.map(|_| decode_stored(&block[position.offset..]).0);
        let old_bytes = old.map(|old| (old.key.len() + old.value.len()) as u64);
        let (meta, result) = meta_of(old);
        let mut record = Vec::with_capacity(encoded_len(key, value, meta));
        encode(&mut record, key, value, meta);
        match old_bytes {
            Some(old_bytes) => self.data_bytes -= old_bytes,
            None => self.len += 1,
        }
        self.data_bytes += added;
        let replaced = position.found.unwrap_or(0);
        splice_exact(block, position.offset..position.offset + replaced, &record);
        if record.len() != replaced {
            for piece in split(block, self.block_bytes) {
                let bound = decode_stored(&piece).0.key.into();
                blocks.insert(bound, Arc::new(piece));
            }
        }
        result
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        // Look before changing anything: removing a missing key copies nothing a view shares.
        let Some((_, block)) = self.block_for(key) else { return false };
        let position = search(block, key);
        let Some(len) = position.found else { return false };
        let old = decode_stored(&block[position.offset..]).0;
        let old_bytes = (old.key.len() + old.value.len()) as u64;
        self.data_bytes -= old_bytes;
        let blocks = Arc::make_mut(&mut self.blocks);
        let Some((bound, block)) = blocks.range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back()
        else {
            unreachable!("the block found above is still there");
        };
        let block = Arc::make_mut(block);
        splice_exact(block, position.offset..position.offset + len, &[]);
        self.len -= 1;
        if block.is_empty() || block.len() < self.block_bytes / MERGE_BELOW_DIVISOR {
            let bound = bound.clone();
            self.merge_or_drop(bound);
        }
        true
    }

    /// After a removal left the block at `bound` small: drops it if empty, else merges it
    /// into a neighbour when the two fit in one block.
    fn merge_or_drop(&mut self, bound: BlockBound) {
        let Some(block) = self.blocks.get(&bound) else { return };
        let size = block.len();
        if size == 0 {
            let blocks = Arc::make_mut(&mut self.blocks);
            blocks.remove(&bound);
            // The first block's bound is the empty key: the next block takes it over.
            if bound.is_empty()
                && let Some((_, next)) = blocks.pop_first()
            {
                blocks.insert(Arc::default(), next);
            }
            return;
        }
        let next = self.blocks.range::<[u8], _>((Bound::Excluded(&*bound), Bound::Unbounded)).next();
        if let Some((next_bound, next)) = next
            && size + next.len() <= self.block_bytes
        {
            let next_bound = next_bound.clone();
            self.merge_blocks(&bound, &next_bound);
            return;
        }
        let previous = self.blocks.range::<[u8], _>((Bound::Unbounded, Bound::Excluded(&*bound))).next_back();
        if let Some((previous_bound, previous)) = previous
            && size + previous.len() <= self.block_bytes
        {
            let previous_bound = previous_bound.clone();
            self.merge_blocks(&previous_bound, &bound);
        }
    }

    /// Moves the records of the block at `second` to the end of the block at `first`, its
    /// neighbour before it (so the records stay in key order), and drops `second`.
    fn merge_blocks(&mut self, first: &[u8], second: &[u8]) {
        let blocks = Arc::make_mut(&mut self.blocks);
        let Some(records) = blocks.remove(second) else { return };
        if let Some(block) = blocks.get_mut(first) {
            let block = Arc::make_mut(block);
            block.reserve_exact(records.len());
            block.extend_from_slice(&records);
        }
    }

    /// The entries from `start` on, in key order.
    pub fn range_from<'a>(&'a self, start: Bound<&[u8]>) -> Iter<'a> {
        let (first_bound, skip_to) = match start {
            Bound::Unbounded => (None, None),
            Bound::Included(key) | Bound::Excluded(key) => match self.block_for(key) {
                Some((bound, block)) => {
                    let position = search(block, key);
                    let skip = match (start, position.found) {
                        (Bound::Excluded(_), Some(len)) => position.offset + len,
                        _ => position.offset,
                    };
                    (Some(bound), Some(skip))
                }
                None => (None, None),
            },
        };
        let mut blocks = match first_bound {
            Some(bound) => self.blocks.range::<[u8], _>((Bound::Included(bound), Bound::Unbounded)),
            None => self.blocks.range::<[u8], _>(..),
        };
        let block = match skip_to {
            Some(skip) => blocks.next().map_or(&[][..], |(_, block)| &block[skip..]),
            None => &[],
        };
        Iter { blocks, block }
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> Iter<'_> {
        self.range_from(Bound::Unbounded)
    }

    /// The records of every key, in key order, as [`record::encode`] writes them, in
    /// pieces: what a snapshot stores.
    pub fn encoded(&self) -> impl Iterator<Item = &[u8]> {
        self.blocks.values().map(|block| block.as_slice())
    }

    /// Checks the invariants in the module's doc; panics with the first that fails.
    #[cfg(test)]
    pub fn check(&self) {
        let mut count = 0;
        let mut data_bytes = 0;
        let mut previous: Option<&[u8]> = None;
        let bounds: Vec<&[u8]> = self.blocks.keys().map(|bound| &bound[..]).collect();
        if let Some(first) = bounds.first() {
            assert!(first.is_empty(), "the first bound is the empty key");
        }
        for (number, (bound, block)) in self.blocks.iter().enumerate() {
            assert!(!block.is_empty(), "block {number} is empty");
            let mut offset = 0;
            let mut records = 0;
            while offset < block.len() {
                let (entry, len) = decode(&block[offset..]).expect("every record in a block decodes");
                assert!(entry.key >= &bound[..], "a key below its block's bound");
                if let Some(next) = bounds.get(number + 1) {
                    assert!(entry.key < *next, "a key at or past the next block's bound");
                }
                assert!(previous.is_none_or(|previous| previous < entry.key), "keys out of order");
                previous = Some(entry.key);
                data_bytes += (entry.key.len() + entry.value.len()) as u64;
                offset += len;
                records += 1;
            }
            assert!(block.len() <= self.block_bytes || records == 1, "an oversized block of {records} records");
            count += records;
        }
        assert_eq!(count, self.len, "len counts the records");
        assert_eq!(data_bytes, self.data_bytes, "data_bytes counts the keys' and values' bytes");
    }
}

/// Splits a block past `block_bytes` in halves, and those again, until every piece fits
/// or holds one record; `block` keeps the first piece, the others are returned in order.
fn split(block: &mut Vec<u8>, block_bytes: usize) -> Vec<Vec<u8>> {
    if block.len() <= block_bytes {
        return Vec::new();
    }
    let Some(mut right) = split_in_two(block) else { return Vec::new() };
    let mut pieces = split(block, block_bytes);
    let right_pieces = split(&mut right, block_bytes);
    pieces.push(right);
    pieces.extend(right_pieces);
    pieces
}

/// Splits a block in two at the record boundary nearest its middle; returns the right
/// half, or None if it holds one record.
fn split_in_two(block: &mut Vec<u8>) -> Option<Vec<u8>> {
    let half = block.len() / 2;
    let mut previous_end = 0;
    let mut offset = 0;
    while offset < block.len() {
        let (_, len) = decode_stored(&block[offset..]);
        offset += len;
        if offset >= half {
            break;
        }
        previous_end = offset;
    }
    // `offset` is the first boundary at or past the middle; if that is the end, cut before
    // the last record instead.
    let at = if offset < block.len() { offset } else { previous_end };
    if at == 0 {
        return None;
    }
    let right = block.split_off(at);
    block.shrink_to_fit();
    Some(right)
}

/// An iterator over a [`KeyMap`]'s entries, in key order.
pub struct Iter<'a> {
    blocks: std::collections::btree_map::Range<'a, BlockBound, Arc<Vec<u8>>>,
    /// What is left of the current block.
    block: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        while self.block.is_empty() {
            self.block = self.blocks.next()?.1.as_slice();
        }
        let (entry, len) = decode_stored(self.block);
        self.block = &self.block[len..];
        Some(entry)
    }
}

impl PartialEq for KeyMap {
    /// Equal entries; how they are split into blocks does not matter.
    fn eq(&self, other: &KeyMap) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for KeyMap {}

impl fmt::Debug for KeyMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Builds a [`KeyMap`] from records in strictly increasing key order, filling each block
/// to `block_bytes`: how a snapshot is restored, without searching or moving anything.
pub struct Builder {
    map: KeyMap,
    /// The block being filled (its bound is its first key; the empty key for the first).
    block: Vec<u8>,
    last_key: Option<Vec<u8>>,
}

impl Builder {
    pub fn new(block_bytes: usize) -> Builder {
        Builder { map: KeyMap::with_block_bytes(block_bytes), block: Vec::new(), last_key: None }
    }

    /// Appends a key after every key so far; refuses one that is not.
    pub fn push(&mut self, key: &[u8], value: &[u8], meta: Meta) -> io::Result<()> {
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(invalid("the keys are not in strictly increasing order"));
        }
        let len = encoded_len(key, value, meta);
        if !self.block.is_empty() && self.block.len() + len > self.map.block_bytes {
            self.finish_block();
        }
        encode(&mut self.block, key, value, meta);
        self.map.len += 1;
        self.map.data_bytes += (key.len() + value.len()) as u64;
        match &mut self.last_key {
            Some(last) => {
                last.clear();
                last.extend_from_slice(key);
            }
            None => self.last_key = Some(key.to_vec()),
        }
        Ok(())
    }

    fn finish_block(&mut self) {
        let mut block = std::mem::take(&mut self.block);
        block.shrink_to_fit();
        let bound = if self.map.blocks.is_empty() { Arc::default() } else { decode_stored(&block).0.key.into() };
        Arc::make_mut(&mut self.map.blocks).insert(bound, Arc::new(block));
    }

    pub fn finish(mut self) -> KeyMap {
        if !self.block.is_empty() {
            self.finish_block();
        }
        self.map
    }
}

/// Reads `count` records from `reader` into a map: the inverse of writing
/// [`KeyMap::encoded`]. Validates everything: the bytes come from a disk or a peer.
pub fn read_records(
    reader: &mut impl io::BufRead,
    count: u64,
    block_bytes: usize,
    layout: Layout,
) -> io::Result<KeyMap> {
    let mut builder = Builder::new(block_bytes);
    let mut buffer = Vec::new();
    for _ in 0..count {
        let header = Header::read(
            &mut || {
                let mut byte = [0u8];
                reader.read_exact(&mut byte)?;
                Ok(byte[0])
            },
            layout,
        )?;
        // Read through `take` rather than allocating the claimed length up front: a corrupt
        // length fails at the end of the input instead of asking for exabytes.
        // The two lengths are checked: their sum must not wrap (two lengths near 2^64 would
        // sum to a small number), and the key must lie within what was read.
        buffer.clear();
        let wanted = (header.key_len as u64)
            .checked_add(header.value_len as u64)
            .ok_or_else(|| invalid("a record's key and value lengths add up past 2^64"))?;
        io::Read::read_to_end(&mut io::Read::take(&mut *reader, wanted), &mut buffer)?;
        if buffer.len() as u64 != wanted {
            return Err(invalid(format!(
                "a record is cut short: it claims {wanted} bytes of key and value, {} are left",
                buffer.len()
            )));
        }
        let (key, value) = buffer
            .split_at_checked(header.key_len)
            .ok_or_else(|| invalid("a record's key is longer than the record"))?;
        builder.push(key, value, header.meta)?;
    }
    Ok(builder.finish())
}

/// Writes a map's record count and records: what [`read_records`] reads (after the count).
pub fn write_records(map: &KeyMap, out: &mut impl io::Write) -> io::Result<()> {
    let mut count = Vec::new();
    put_varint(&mut count, map.len() as u64);
    out.write_all(&count)?;
    for piece in map.encoded() {
        out.write_all(piece)?;
    }
    Ok(())
}

/// Reads a varint from a reader (a length or count in a snapshot).
pub fn read_varint_from(reader: &mut impl io::Read) -> io::Result<u64> {
    read_varint(&mut || {
        let mut byte = [0u8];
        reader.read_exact(&mut byte)?;
        Ok(byte[0])
    })
}

#[cfg(test)]
mod tests;
