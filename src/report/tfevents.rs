//! TensorBoard's event-file format, written (and read back) by hand.
//!
//! A file is a sequence of records, each `u64 length (LE) | masked crc32c of the length
//! bytes | data | masked crc32c of data`, where data is an `Event` protobuf
//! (tensorflow/core/util/event.proto, tensorflow/core/lib/io/record_writer.cc). We write the
//! few fields TensorBoard's scalar dashboard reads rather than take a crate: the one we know
//! of (`tensorboard-rs`) has had no release in years and pulls in protobuf 2 and image codecs
//! for what is ~100 lines here. The reader is the same format the other way, so the writer's
//! round-trip test does not depend on Python; `scripts/check_tensorboard.py` checks the files
//! with TensorBoard's own reader.
//!
//! The fields, by number: `Event { wall_time: double = 1, step: int64 = 2, file_version:
//! string = 3, summary: Summary = 5 }`, `Summary { value: repeated Value = 1 }`, `Value { tag:
//! string = 1, simple_value: float = 2 }`.

/// What the first event of every file says: the format version readers check.
pub const FILE_VERSION: &str = "brain.Event:2";

/// One event: a step's scalars (or, first in a file, the file version).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    /// `(tag, simple_value)`.
    pub scalars: Vec<(String, f32)>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReadError {
    #[error("record at byte {0}: truncated")]
    Truncated(usize),
    #[error("record at byte {0}: {1} crc does not match")]
    Crc(usize, &'static str),
    #[error("record at byte {0}: malformed protobuf ({1})")]
    Protobuf(usize, &'static str),
}

/// A whole event file: the file-version event at `wall_time`, then `events` in order.
pub fn encode(wall_time: f64, events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    let version = Event {
        wall_time,
        step: 0,
        file_version: Some(FILE_VERSION.to_string()),
        scalars: vec![],
    };
    for e in std::iter::once(&version).chain(events) {
        write_record(&mut out, &event_bytes(e));
    }
    out
}

/// Every event of a file, each record's two checksums verified.
pub fn decode(bytes: &[u8]) -> Result<Vec<Event>, ReadError> {
    let mut events = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let header = bytes.get(at..at + 12).ok_or(ReadError::Truncated(start))?;
        let (len, len_crc) = header.split_at(8);
        if u32_le(len_crc) != masked_crc(len) {
            return Err(ReadError::Crc(start, "length"));
        }
        let len = usize::try_from(u64::from_le_bytes(len.try_into().unwrap_or_default()))
            .map_err(|_| ReadError::Truncated(start))?;
        at += 12;
        let end = at.checked_add(len).ok_or(ReadError::Truncated(start))?;
        let data = bytes.get(at..end).ok_or(ReadError::Truncated(start))?;
        let crc = bytes.get(end..end + 4).ok_or(ReadError::Truncated(start))?;
        if u32_le(crc) != masked_crc(data) {
            return Err(ReadError::Crc(start, "data"));
        }
        events.push(parse_event(data).map_err(|m| ReadError::Protobuf(start, m))?);
        at = end + 4;
    }
    Ok(events)
}

fn write_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap_or_default())
}

// --- protobuf, the wire types these messages use: varint (0), 64-bit (1), bytes (2),
// 32-bit (5) ---

/// The event as protobuf serialises it: fields in number order, and (proto3) a zero
/// `wall_time` or `step` left out, so the bytes are those TensorBoard's own writer makes.
fn event_bytes(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    if e.wall_time.to_bits() != 0 {
        key(&mut out, 1, 1);
        out.extend_from_slice(&e.wall_time.to_le_bytes());
    }
    if e.step != 0 {
        key(&mut out, 2, 0);
        varint(&mut out, e.step as u64);
    }
    if let Some(v) = &e.file_version {
        bytes_field(&mut out, 3, v.as_bytes());
    }
    if !e.scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in &e.scalars {
            let mut v = Vec::new();
            bytes_field(&mut v, 1, tag.as_bytes());
            key(&mut v, 2, 5);
            v.extend_from_slice(&value.to_le_bytes());
            bytes_field(&mut summary, 1, &v);
        }
        bytes_field(&mut out, 5, &summary);
    }
    out
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One field as read: its number and value (unknown fields are skipped, as protobuf does).
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

/// The fields of one message, in order.
fn fields(mut b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, &'static str> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let k = read_varint(&mut b)?;
        let field = match k & 7 {
            0 => Field::Varint(read_varint(&mut b)?),
            1 => Field::Fixed64(take(&mut b, 8)?.try_into().map_err(|_| "fixed64")?),
            2 => {
                let n = usize::try_from(read_varint(&mut b)?).map_err(|_| "length")?;
                Field::Bytes(take(&mut b, n)?)
            }
            5 => Field::Fixed32(take(&mut b, 4)?.try_into().map_err(|_| "fixed32")?),
            _ => return Err("unsupported wire type"),
        };
        out.push((k >> 3, field));
    }
    Ok(out)
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if b.len() < n {
        return Err("field runs past the message");
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn read_varint(b: &mut &[u8]) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&byte, rest)) = b.split_first() else {
            return Err("truncated varint");
        };
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes")
}

fn text(b: &[u8]) -> Result<String, &'static str> {
    String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8")
}

fn parse_event(data: &[u8]) -> Result<Event, &'static str> {
    let mut e = Event {
        wall_time: 0.0,
        step: 0,
        file_version: None,
        scalars: vec![],
    };
    for (number, field) in fields(data)? {
        match (number, field) {
            (1, Field::Fixed64(b)) => e.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => e.step = v as i64,
            (3, Field::Bytes(b)) => e.file_version = Some(text(b)?),
            (5, Field::Bytes(summary)) => {
                for (n, value) in fields(summary)? {
                    if let (1, Field::Bytes(value)) = (n, value) {
                        e.scalars.extend(parse_value(value)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(e)
}

/// A summary value's tag and simple_value; `None` for values of other kinds.
fn parse_value(b: &[u8]) -> Result<Option<(String, f32)>, &'static str> {
    let (mut tag, mut value) = (None, None);
    for (n, field) in fields(b)? {
        match (n, field) {
            (1, Field::Bytes(t)) => tag = Some(text(t)?),
            (2, Field::Fixed32(v)) => value = Some(f32::from_le_bytes(v)),
            _ => {}
        }
    }
    Ok(tag.zip(value))
}

// --- CRC-32C (Castagnoli), masked as TensorFlow's crc32c::Mask ---

/// The byte-at-a-time table of the reflected polynomial 0x82F63B78.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TensorFlow masks stored CRCs so that a CRC of data that itself holds CRCs stays useful:
/// `((crc >> 15) | (crc << 17)) + 0xa282ead8` (tensorflow/core/lib/hash/crc32c.h, `Mask`).
fn masked_crc(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // RFC 3720's CRC-32C of "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    /// The same events through TensorBoard 2.21's `RecordWriter` and its `Event` protobuf
    /// (`event_pb2.Event(...).SerializeToString()`).
    #[test]
    fn bytes_equal_tensorboards_own_writer() {
        const TENSORBOARD: &str = "1800000000000000a37f4b220900002040fc54d9411a0d627261696e2e\
            4576656e743a322b35311039000000000000008b0737f10900005040fc54d94110ac022a2b0a110a0a\
            747261696e2f6c6f7373150000003f0a160a0f6576616c2f746f792f70617373403415cdcc76421124\
            3975";
        let events = [Event {
            wall_time: 1_700_000_001.25,
            step: 300,
            file_version: None,
            scalars: vec![("train/loss".into(), 0.5), ("eval/toy/pass@4".into(), 61.7)],
        }];
        let hex: String = encode(1_700_000_000.5, &events)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, TENSORBOARD);
    }

    #[test]
    fn events_round_trip_with_checked_records() {
        let events = vec![
            Event {
                wall_time: 1_700_000_000.25,
                step: 1,
                file_version: None,
                scalars: vec![("train/loss".into(), 2.5), ("train/lr".into(), 1e-4)],
            },
            Event {
                wall_time: 1_700_000_001.5,
                step: 300,
                file_version: None,
                scalars: vec![("eval/toy/accuracy".into(), 44.5)],
            },
        ];
        let bytes = encode(1_699_999_999.0, &events);
        let back = decode(&bytes).unwrap();
        assert_eq!(back[0].file_version.as_deref(), Some(FILE_VERSION));
        assert_eq!(back[0].wall_time, 1_699_999_999.0);
        assert!(back[0].scalars.is_empty());
        assert_eq!(&back[1..], &events[..]);
    }

    #[test]
    fn a_damaged_or_cut_file_is_an_error() {
        let events = [Event {
            wall_time: 0.0,
            step: 7,
            file_version: None,
            scalars: vec![("x".into(), 1.0)],
        }];
        let bytes = encode(0.0, &events);
        let last = bytes.len() - (12 + event_bytes(&events[0]).len() + 4);
        let flipped = |at: usize| {
            let mut b = bytes.clone();
            b[at] ^= 0x40;
            decode(&b)
        };
        assert_eq!(flipped(last), Err(ReadError::Crc(last, "length")));
        assert_eq!(flipped(last + 14), Err(ReadError::Crc(last, "data")));
        assert_eq!(flipped(bytes.len() - 1), Err(ReadError::Crc(last, "data")));
        assert_eq!(
            decode(&bytes[..bytes.len() - 1]),
            Err(ReadError::Truncated(last))
        );
    }
}
