//! The WAL's record format: how an entry or a hard state becomes checksummed bytes, and
//! back.
//!
//! ```text
//! record   = length: u32 LE | crc: u32 LE | body (length bytes)
//!            crc = CRC32C(length bytes ++ body)
//! body     = 1 | index: u64 LE | term: u64 LE | payload        (a log entry)
//!          | 2 | hard state (HARD_STATE_BYTES - 1 bytes)        (term, vote, commit)
//! payload  = 0                                                  (Payload::Empty)
//!          | 1 | command bytes (the rest of the body)            (Payload::Command)
//!          | 3 | postcard(Membership)                           (Payload::Membership)
//!          | 2 | postcard(voters, learners)                      (one without addresses,
//!                                                                 written before 0.2; read only)
//! hard state = seq: u64 | term: u64 | has_vote: u8 | vote: u64 | commit: u64   (LE)
//! ```
//!
//! Eight zero bytes where a header should be mark the end of the written part of a
//! (preallocated) segment: a real header is never all zero, since its length is at least 1.

use bytes::Bytes;
use skiff_raft::{Entry, HardState, Index, LogId, Membership, NodeId, Payload, Term};

use crate::error::{Error, Result};

/// The bytes before a record's body.
pub(crate) const HEADER_BYTES: usize = 8;
/// The largest body accepted: a bigger length field is corruption (or a torn write).
pub(crate) const MAX_BODY_BYTES: usize = 256 << 20;
/// The size of a hard state body, kind byte included.
pub(crate) const HARD_STATE_BYTES: usize = 1 + 8 + 8 + 1 + 8 + 8;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const PAYLOAD_EMPTY: u8 = 0;
const PAYLOAD_COMMAND: u8 = 1;
/// A membership without addresses, as directories made before addresses existed hold.
const PAYLOAD_MEMBERSHIP_V1: u8 = 2;
const PAYLOAD_MEMBERSHIP: u8 = 3;
/// Body bytes of an entry before its payload's tag: kind, index, term.
const ENTRY_PREFIX_BYTES: usize = 1 + 8 + 8;

/// A decoded record header and the parts of its body the scan needs.
#[derive(Debug)]
pub(crate) enum Record<'a> {
    /// A log entry; `payload` is still encoded (decoded only when the entry is read).
    Entry { log_id: LogId, payload: &'a [u8] },
    /// A hard state, with its sequence number (the highest one is the latest).
    HardState { seq: u64, hard_state: HardState },
}

/// What is at some offset of a segment.
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// A whole, valid record of `size` bytes (header included).
    Record { record: Record<'a>, size: usize },
    /// Eight zero bytes: the end of what was written.
    End,
    /// The bytes end inside a record: `needed` bytes from this offset would hold all of it.
    Incomplete { needed: usize },
    /// Not a valid record.
    Bad(String),
}

/// Appends an entry record to `buffer`.
pub(crate) fn encode_entry(buffer: &mut Vec<u8>, entry: &Entry) -> Result<()> {
    let start = begin(buffer);
    buffer.push(KIND_ENTRY);
    buffer.extend_from_slice(&entry.log_id.index.0.to_le_bytes());
    buffer.extend_from_slice(&entry.log_id.term.0.to_le_bytes());
    match &entry.payload {
        Payload::Empty => buffer.push(PAYLOAD_EMPTY),
        Payload::Command(data) => {
            buffer.push(PAYLOAD_COMMAND);
            buffer.extend_from_slice(data);
        }
        Payload::Membership(membership) => {
            buffer.push(PAYLOAD_MEMBERSHIP);
            let encoded = postcard::to_extend(membership, std::mem::take(buffer));
            *buffer = encoded.map_err(|error| Error::InvalidInput(format!("cannot encode a membership: {error}")))?;
        }
    }
    finish(buffer, start, entry.log_id.index)
}

/// Appends a hard state record to `buffer`.
pub(crate) fn encode_hard_state(buffer: &mut Vec<u8>, seq: u64, hard_state: &HardState) -> Result<()> {
    let start = begin(buffer);
    buffer.push(KIND_HARD_STATE);
    buffer.extend_from_slice(&hard_state_bytes(seq, hard_state));
    finish(buffer, start, Index(0))
}

/// The fixed-size encoding of a hard state (without the kind byte); also the body of the
/// `hardstate` file.
pub(crate) fn hard_state_bytes(seq: u64, hard_state: &HardState) -> [u8; HARD_STATE_BYTES - 1] {
    let mut bytes = [0u8; HARD_STATE_BYTES - 1];
    bytes[0..8].copy_from_slice(&seq.to_le_bytes());
    bytes[8..16].copy_from_slice(&hard_state.term.0.to_le_bytes());
    bytes[16] = u8::from(hard_state.vote.is_some());
    bytes[17..25].copy_from_slice(&hard_state.vote.map_or(0, |id| id.0).to_le_bytes());
    bytes[25..33].copy_from_slice(&hard_state.commit.0.to_le_bytes());
    bytes
}

/// Decodes [`hard_state_bytes`].
pub(crate) fn decode_hard_state(bytes: &[u8]) -> Option<(u64, HardState)> {
    if bytes.len() != HARD_STATE_BYTES - 1 || bytes[16] > 1 {
        return None;
    }
    let vote = (bytes[16] == 1).then(|| NodeId(u64_at(bytes, 17)));
    let hard_state = HardState { term: Term(u64_at(bytes, 8)), vote, commit: Index(u64_at(bytes, 25)) };
    Some((u64_at(bytes, 0), hard_state))
}

fn begin(buffer: &mut Vec<u8>) -> usize {
    let start = buffer.len();
    buffer.extend_from_slice(&[0u8; HEADER_BYTES]);
    start
}

/// Fills in the header of the record that starts at `start`.
fn finish(buffer: &mut [u8], start: usize, index: Index) -> Result<()> {
    let body_len = buffer.len() - start - HEADER_BYTES;
    if body_len > MAX_BODY_BYTES {
        return Err(Error::InvalidInput(format!(
            "entry {index} is {body_len} bytes; the WAL takes records of at most {MAX_BODY_BYTES} bytes"
        )));
    }
    let length = (body_len as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&length), &buffer[start + HEADER_BYTES..]);
    buffer[start..start + 4].copy_from_slice(&length);
    buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Reads the record at the start of `bytes`.
pub(crate) fn parse(bytes: &[u8]) -> Parsed<'_> {
    if bytes.len() < HEADER_BYTES {
        return Parsed::Incomplete { needed: HEADER_BYTES };
    }
    let length = u32_at(bytes, 0) as usize;
    let stored_crc = u32_at(bytes, 4);
    if length == 0 && stored_crc == 0 {
        return Parsed::End;
    }
    if length == 0 || length > MAX_BODY_BYTES {
        return Parsed::Bad(format!("record length {length} is out of range"));
    }
    let size = HEADER_BYTES + length;
    if bytes.len() < size {
        return Parsed::Incomplete { needed: size };
    }
    let body = &bytes[HEADER_BYTES..size];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..4]), body);
    if crc != stored_crc {
        return Parsed::Bad(format!("checksum mismatch: stored {stored_crc:#010x}, computed {crc:#010x}"));
    }
    match decode_body(body) {
        Ok(record) => Parsed::Record { record, size },
        Err(reason) => Parsed::Bad(reason),
    }
}

fn decode_body(body: &[u8]) -> Result<Record<'_>, String> {
    match body[0] {
        KIND_ENTRY if body.len() > ENTRY_PREFIX_BYTES => {
            let log_id = LogId::new(Term(u64_at(body, 9)), Index(u64_at(body, 1)));
            Ok(Record::Entry { log_id, payload: &body[ENTRY_PREFIX_BYTES..] })
        }
        KIND_HARD_STATE if body.len() == HARD_STATE_BYTES => {
            let (seq, hard_state) = decode_hard_state(&body[1..]).ok_or("a malformed hard state")?;
            Ok(Record::HardState { seq, hard_state })
        }
        kind => Err(format!("unknown record kind {kind} with {} body bytes", body.len())),
    }
}

/// Decodes an entry's payload (the part after index and term).
pub(crate) fn decode_payload(payload: &[u8]) -> Result<Payload, String> {
    match payload.split_first() {
        Some((&PAYLOAD_EMPTY, [])) => Ok(Payload::Empty),
        Some((&PAYLOAD_COMMAND, data)) => Ok(Payload::Command(Bytes::copy_from_slice(data))),
        Some((&PAYLOAD_MEMBERSHIP, data)) => decode_membership(data, false).map(Payload::Membership),
        Some((&PAYLOAD_MEMBERSHIP_V1, data)) => decode_membership(data, true).map(Payload::Membership),
        _ => Err("an unknown payload".to_string()),
    }
}

/// The membership of a directory made before members had addresses.
#[derive(serde::Deserialize)]
struct MembershipV1 {
    voters: std::collections::BTreeSet<NodeId>,
    learners: std::collections::BTreeSet<NodeId>,
}

/// Decodes a membership from a file (`v1`: the format without addresses), and checks its
/// invariant: the bytes are untrusted.
pub(crate) fn decode_membership(data: &[u8], v1: bool) -> Result<Membership, String> {
    let decoded = if v1 {
        postcard::from_bytes::<MembershipV1>(data).map(|old| Membership {
            voters: old.voters,
            learners: old.learners,
            ..Membership::default()
        })
    } else {
        postcard::from_bytes::<Membership>(data)
    };
    let membership = decoded.map_err(|error| format!("a malformed membership: {error}"))?;
    if !membership.is_valid() {
        return Err(format!(
            "an impossible membership ({membership}: a node both voter and learner, or a stray address)"
        ));
    }
    Ok(membership)
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(entry: Entry) {
        let mut buffer = Vec::new();
        encode_entry(&mut buffer, &entry).unwrap();
        let Parsed::Record { record: Record::Entry { log_id, payload }, size } = parse(&buffer) else {
            panic!("not an entry record")
        };
        assert_eq!(size, buffer.len());
        assert_eq!(log_id, entry.log_id);
        assert_eq!(decode_payload(payload).unwrap(), entry.payload);
    }

    #[test]
    fn entries_roundtrip() {
        let log_id = LogId::new(Term(3), Index(7));
        roundtrip(Entry { log_id, payload: Payload::Empty });
        roundtrip(Entry { log_id, payload: Payload::Command(Bytes::from_static(b"")) });
        roundtrip(Entry { log_id, payload: Payload::Command(Bytes::from_static(b"hello")) });
        let mut membership = Membership::with_voters([NodeId(1), NodeId(2)]);
        roundtrip(Entry { log_id, payload: Payload::Membership(membership.clone()) });
        membership.addresses.insert(NodeId(2), "raft=10.0.0.2:7001 http=10.0.0.2:8001".into());
        roundtrip(Entry { log_id, payload: Payload::Membership(membership) });
    }

    #[test]
    fn a_membership_written_before_addresses_existed_still_reads() {
        let voters: std::collections::BTreeSet<NodeId> = [NodeId(1), NodeId(2)].into();
        let learners: std::collections::BTreeSet<NodeId> = [NodeId(3)].into();
        let mut payload = vec![PAYLOAD_MEMBERSHIP_V1];
        payload.extend(postcard::to_allocvec(&(&voters, &learners)).unwrap());
        let expected = Membership { voters, learners, ..Membership::default() };
        assert_eq!(decode_payload(&payload).unwrap(), Payload::Membership(expected));
    }

    #[test]
    fn an_impossible_membership_on_disk_is_damage() {
        let mut membership = Membership::with_voters([NodeId(1)]);
        membership.addresses.insert(NodeId(7), "raft=stray:1".into());
        let mut payload = vec![PAYLOAD_MEMBERSHIP];
        payload.extend(postcard::to_allocvec(&membership).unwrap());
        let error = decode_payload(&payload).unwrap_err();
        assert!(error.contains("impossible membership"), "{error}");
    }

    #[test]
    fn hard_state_roundtrips() {
        let hard_state = HardState { term: Term(4), vote: Some(NodeId(2)), commit: Index(9) };
        let mut buffer = Vec::new();
        encode_hard_state(&mut buffer, 17, &hard_state).unwrap();
        let Parsed::Record { record: Record::HardState { seq, hard_state: decoded }, .. } = parse(&buffer) else {
            panic!("not a hard state record")
        };
        assert_eq!((seq, decoded), (17, hard_state));
    }

    #[test]
    fn zero_header_is_the_end_and_damage_is_detected() {
        assert!(matches!(parse(&[0u8; 16]), Parsed::End));
        let mut buffer = Vec::new();
        let entry =
            Entry { log_id: LogId::new(Term(1), Index(1)), payload: Payload::Command(Bytes::from_static(b"x")) };
        encode_entry(&mut buffer, &entry).unwrap();
        assert!(matches!(parse(&buffer[..buffer.len() - 1]), Parsed::Incomplete { .. }));
        for at in 0..buffer.len() {
            let mut damaged = buffer.clone();
            damaged[at] ^= 0x40;
            assert!(!matches!(parse(&damaged), Parsed::Record { .. } | Parsed::End), "flip at {at} undetected");
        }
    }
}
