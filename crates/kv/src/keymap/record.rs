//! The byte layout of one key with its value and revisions: the unit [`super::KeyMap`]
//! packs into its blocks and the key-value snapshot streams.
//!
//! A record is six unsigned LEB128 varints, then the key and the value:
//!
//! ```text
//! key length | value length | create index | modify index - create index | flags | expires | key | value
//! ```
//!
//! `expires` is the key's deadline on the cluster clock in milliseconds, 0 for none (one byte
//! for a key without a TTL). Snapshots of version 2 wrote records without it
//! ([`Layout::V2`]); they are still read.
//!
//! Varints because the numbers are mostly small (a 10-byte key, a 100-byte value, flags 0)
//! and a fixed `u64` each would cost 40 bytes a key where the varints take about 8. The
//! modify index is stored as its distance from the create index (often 0: most keys are
//! written once), which also makes `modify >= create` hold by construction.

use std::io;

/// One stored key, borrowed from the map (or from a buffer being decoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// The index of the write that created the key.
    pub create_index: u64,
    /// The index of the last write to the key; at least `create_index`.
    pub modify_index: u64,
    /// An opaque number stored with the value (Consul's `flags`).
    pub flags: u64,
    /// The key's deadline on the cluster clock, in milliseconds; 0 for none.
    pub expires: u64,
}

/// The revisions, flags and deadline of a record: an [`Entry`] without its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub create_index: u64,
    /// At least `create_index`.
    pub modify_index: u64,
    pub flags: u64,
    /// The deadline on the cluster clock in milliseconds; 0 for none.
    pub expires: u64,
}

/// Which record layout a reader expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Five varints, no `expires` (snapshots of version 2).
    V2,
    /// Six varints: the layout written now, in memory and in snapshots.
    V3,
}

/// The most bytes a `u64` takes as a varint (7 bits a byte).
pub const MAX_VARINT_BYTES: usize = 10;

/// Appends `number` as an unsigned LEB128 varint: 7 bits a byte, low bits first, the high
/// bit set on every byte but the last.
pub fn put_varint(out: &mut Vec<u8>, mut number: u64) {
    while number >= 0x80 {
        out.push((number as u8) | 0x80);
        number >>= 7;
    }
    out.push(number as u8);
}

/// How many bytes [`put_varint`] writes for `number`.
pub fn varint_len(number: u64) -> usize {
    // 1 byte up to 7 significant bits, one more per further 7 (0 counts as 1 bit).
    let bits = 64 - (number | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads one varint, a byte at a time from `next`. Refuses a varint longer than 10 bytes,
/// one whose value does not fit in 64 bits, and an over-long one (a trailing zero byte):
/// each number has exactly one encoding, so equal states snapshot to equal bytes.
pub fn read_varint(next: &mut impl FnMut() -> io::Result<u8>) -> io::Result<u64> {
    let mut number: u64 = 0;
    for position in 0..MAX_VARINT_BYTES {
        let byte = next()?;
        let bits = u64::from(byte & 0x7f);
        if position == MAX_VARINT_BYTES - 1 && byte > 1 {
            return Err(invalid("a varint does not fit in 64 bits"));
        }
        number |= bits << (7 * position);
        if byte & 0x80 == 0 {
            if byte == 0 && position > 0 {
                return Err(invalid("a varint has a redundant trailing zero byte"));
            }
            return Ok(number);
        }
    }
    Err(invalid("a varint is longer than 10 bytes"))
}

pub fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// A record's lengths and metadata: what comes before its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub key_len: usize,
    pub value_len: usize,
    pub meta: Meta,
}

impl Header {
    /// Reads the varints of a header in `layout` from `next`, validating them.
    pub fn read(next: &mut impl FnMut() -> io::Result<u8>, layout: Layout) -> io::Result<Header> {
        let length =
            |number: u64| usize::try_from(number).map_err(|_| invalid("a record length does not fit in memory"));
        let key_len = length(read_varint(next)?)?;
        let value_len = length(read_varint(next)?)?;
        let create_index = read_varint(next)?;
        let distance = read_varint(next)?;
        let modify_index =
            create_index.checked_add(distance).ok_or_else(|| invalid("a record's modify index passes 2^64"))?;
        let flags = read_varint(next)?;
        let expires = match layout {
            Layout::V2 => 0,
            Layout::V3 => read_varint(next)?,
        };
        Ok(Header { key_len, value_len, meta: Meta { create_index, modify_index, flags, expires } })
    }
}

/// The bytes [`encode`] writes for this record.
pub fn encoded_len(key: &[u8], value: &[u8], meta: Meta) -> usize {
    let distance = meta.modify_index - meta.create_index;
    varint_len(key.len() as u64)
        + varint_len(value.len() as u64)
        + varint_len(meta.create_index)
        + varint_len(distance)
        + varint_len(meta.flags)
        + varint_len(meta.expires)
        + key.len()
        + value.len()
}

/// Appends one record to `out`.
///
/// Panics if `meta.modify_index < meta.create_index`: a key cannot change before it exists.
pub fn encode(out: &mut Vec<u8>, key: &[u8], value: &[u8], meta: Meta) {
    assert!(
        meta.modify_index >= meta.create_index,
        "modify index {} before create index {}",
        meta.modify_index,
        meta.create_index
    );
    put_varint(out, key.len() as u64);
    put_varint(out, value.len() as u64);
    put_varint(out, meta.create_index);
    put_varint(out, meta.modify_index - meta.create_index);
    put_varint(out, meta.flags);
    put_varint(out, meta.expires);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Decodes the record at the start of `bytes`, checking every length; returns it and its
/// length in bytes. The reference the unchecked [`decode_stored`] is tested against, and
/// what [`super::KeyMap::check`] reads blocks with (snapshots are read by [`Header::read`]).
#[cfg(test)]
pub fn decode(bytes: &[u8]) -> io::Result<(Entry<'_>, usize)> {
    let mut at = 0;
    let header = Header::read(
        &mut || {
            let byte = bytes.get(at).copied().ok_or_else(|| invalid("a record header is cut short"))?;
            at += 1;
            Ok(byte)
        },
        Layout::V3,
    )?;
    let key_end = at.checked_add(header.key_len).filter(|&end| end <= bytes.len());
    let value_end = key_end.and_then(|end| end.checked_add(header.value_len)).filter(|&end| end <= bytes.len());
    let (Some(key_end), Some(value_end)) = (key_end, value_end) else {
        return Err(invalid("a record's key or value is cut short"));
    };
    let entry = Entry {
        key: &bytes[at..key_end],
        value: &bytes[key_end..value_end],
        create_index: header.meta.create_index,
        modify_index: header.meta.modify_index,
        flags: header.meta.flags,
        expires: header.meta.expires,
    };
    Ok((entry, value_end))
}

/// Reads the varint at `bytes[*at..]`, advancing `at`: for records [`encode`] wrote into a
/// key map's blocks, which are trusted (they never come from outside: a snapshot's records
/// are checked by [`Header::read`] first). Not validated; panics past the end of `bytes`.
#[inline]
fn stored_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut number = 0;
    for shift in (0..64).step_by(7) {
        let byte = bytes[*at];
        *at += 1;
        number |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return number;
        }
    }
    panic!("a stored varint is longer than 10 bytes: the key map is corrupt")
}

/// Decodes a record [`encode`] wrote into a key map's block: what `decode` returns, without
/// its checks (a key map looks at some 15 records for every lookup, so this is its hot path).
/// Panics if the bytes are not such a record.
#[inline]
pub fn decode_stored(bytes: &[u8]) -> (Entry<'_>, usize) {
    let mut at = 0;
    let key_len = stored_varint(bytes, &mut at) as usize;
    let value_len = stored_varint(bytes, &mut at) as usize;
    let create_index = stored_varint(bytes, &mut at);
    let modify_index = create_index + stored_varint(bytes, &mut at);
    let flags = stored_varint(bytes, &mut at);
    let expires = stored_varint(bytes, &mut at);
    let key_end = at + key_len;
    let value_end = key_end + value_len;
    let entry = Entry {
        key: &bytes[at..key_end],
        value: &bytes[key_end..value_end],
        create_index,
        modify_index,
        flags,
        expires,
    };
    (entry, value_end)
}

/// The key of the record [`encode`] wrote at the start of `bytes`, and the record's length:
/// what a scan for a key needs, without reading the rest of the header. Panics as
/// [`decode_stored`].
#[inline]
pub fn stored_key(bytes: &[u8]) -> (&[u8], usize) {
    let mut at = 0;
    let key_len = stored_varint(bytes, &mut at) as usize;
    let value_len = stored_varint(bytes, &mut at) as usize;
    for _ in 0..4 {
        while bytes[at] & 0x80 != 0 {
            at += 1;
        }
        at += 1;
    }
    let key_end = at + key_len;
    (&bytes[at..key_end], key_end + value_len)
}

impl Entry<'_> {
    pub fn meta(&self) -> Meta {
        Meta {
            create_index: self.create_index,
            modify_index: self.modify_index,
            flags: self.flags,
            expires: self.expires,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(number: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, number);
        out
    }

    fn read(bytes: &[u8]) -> io::Result<u64> {
        let mut iter = bytes.iter().copied();
        read_varint(&mut || iter.next().ok_or_else(|| invalid("end")))
    }

    #[test]
    fn varints_round_trip_at_every_length_boundary() {
        let mut numbers = vec![0, 1, u64::MAX, u64::MAX - 1];
        for bits in 1..64 {
            numbers.extend([(1u64 << bits) - 1, 1u64 << bits, (1u64 << bits) + 1]);
        }
        for number in numbers {
            let bytes = varint(number);
            assert_eq!(bytes.len(), varint_len(number), "length of {number}");
            assert!(bytes.len() <= MAX_VARINT_BYTES);
            assert_eq!(read(&bytes).expect("decodes"), number);
        }
        assert_eq!(varint(0), [0]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(128), [0x80, 0x01]);
        assert_eq!(varint(u64::MAX).len(), 10);
    }

    #[test]
    fn malformed_varints_are_refused() {
        // 2^64 does not fit: the tenth byte may only be 0 or 1.
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert!(read(&too_big).is_err());
        // Eleven bytes.
        assert!(read(&[0x80; 11]).is_err());
        // 1 written over-long, as 0x81 0x00: the same number twice would not snapshot deterministically.
        assert!(read(&[0x81, 0x00]).is_err());
        // Cut short.
        assert!(read(&[0x80]).is_err());
        assert!(read(&[]).is_err());
    }

    #[test]
    fn records_round_trip_and_report_their_length() {
        let cases: [(&[u8], &[u8], Meta); 4] = [
            (b"", b"", Meta { create_index: 0, modify_index: 0, flags: 0, expires: 0 }),
            (b"key-1", &[7; 100], Meta { create_index: 3, modify_index: 3, flags: 0, expires: 0 }),
            (b"k", &[0; 300], Meta { create_index: 1, modify_index: u64::MAX, flags: u64::MAX, expires: 0 }),
            (&[0xff; 200], b"v", Meta { create_index: u64::MAX, modify_index: u64::MAX, flags: 42, expires: 0 }),
        ];
        for (key, value, meta) in cases {
            let mut bytes = vec![9, 9];
            encode(&mut bytes, key, value, meta);
            assert_eq!(bytes.len() - 2, encoded_len(key, value, meta));
            bytes.push(0xaa); // whatever follows is not part of the record
            let (entry, len) = decode(&bytes[2..]).expect("decodes");
            assert_eq!(len, encoded_len(key, value, meta));
            assert_eq!((entry.key, entry.value, entry.meta()), (key, value, meta));
        }
    }

    #[test]
    fn a_small_record_costs_its_bytes_and_eight_more() {
        let meta = Meta { create_index: 85_000, modify_index: 85_000, flags: 0, expires: 0 };
        // 1 + 1 + 3 + 1 + 1 + 1 header bytes.
        assert_eq!(encoded_len(b"key-999999", &[0; 100], meta), 110 + 8);
    }

    #[test]
    fn the_stored_decoders_agree_with_decode() {
        let mut numbers = vec![0, 1, 127, 128, 16_383, 16_384, u64::MAX / 2, u64::MAX];
        numbers.extend((1..64).map(|bits| 1u64 << bits));
        for &number in &numbers {
            let meta = Meta { create_index: number / 3, modify_index: number, flags: number, expires: number / 2 };
            let key = vec![b'k'; (number % 300) as usize];
            let value = vec![b'v'; (number % 1000) as usize];
            let mut bytes = Vec::new();
            encode(&mut bytes, &key, &value, meta);
            bytes.extend_from_slice(b"next record");
            let checked = decode(&bytes).expect("decodes");
            assert_eq!(decode_stored(&bytes), checked, "{number}");
            assert_eq!(stored_key(&bytes), (checked.0.key, checked.1), "{number}");
        }
    }

    #[test]
    fn cut_or_corrupt_records_are_refused() {
        let mut bytes = Vec::new();
        encode(&mut bytes, b"key", b"value", Meta { create_index: 1, modify_index: 2, flags: 3, expires: 0 });
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A key length far past the end.
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0]).is_err());
        // A modify index past 2^64.
        let mut overflow = vec![0, 0];
        put_varint(&mut overflow, u64::MAX);
        put_varint(&mut overflow, 1);
        overflow.push(0);
        assert!(decode(&overflow).is_err());
    }

    #[test]
    #[should_panic(expected = "before create index")]
    fn a_modify_index_before_the_create_index_is_a_bug() {
        encode(&mut Vec::new(), b"k", b"v", Meta { create_index: 5, modify_index: 4, flags: 0, expires: 0 });
    }
}
