//! The bench payload: a `google.protobuf.Struct` with the message's number (`i` for a
//! measured message, `w` for a warm-up one), its intended send time in nanoseconds
//! since the epoch (`t`, a string: Struct numbers are doubles and would round
//! nanoseconds) and a padding string (`pad`) that brings the encoded Struct to the
//! requested size. streamd gets these bytes as Publish's `data`; NATS gets them as the
//! message body.
//!
//! Both are written and read straight from the wire format: the bench client shares
//! the machine's cores with the servers, so building or decoding the Struct's maps and
//! strings for each event would take CPU from what is being measured.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{
    DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint,
    encoded_len_varint, skip_field,
};

/// The smallest payload: the number and send time with empty padding.
pub const MIN_SIZE: usize = 56;

/// `google.protobuf.Struct.fields`, a map: each entry is a message of a key and a Value.
const STRUCT_FIELDS: u32 = 1;
const ENTRY_KEY: u32 = 1;
const ENTRY_VALUE: u32 = 2;
/// The `google.protobuf.Value` kinds the bench writes.
const VALUE_NUMBER: u32 = 2;
const VALUE_STRING: u32 = 3;
/// Digits of the send time: enough for any u64, so the size does not depend on it.
const TIME_DIGITS: usize = 20;

/// Whether a payload is measured or only keeps the streams busy before the clock runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Measured,
    Warmup,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Measured => "i",
            Kind::Warmup => "w",
        }
    }
}

/// What a received payload turns out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// A readiness ping, or a message of the warm-up phase.
    Warmup,
    /// Measured message `index`, meant to be sent at `sent_ns`.
    Data { index: u64, sent_ns: u64 },
}

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The encoded Struct `{kind's key: number, "t": sent_ns, "pad": "x" × padding}`.
pub fn encode(kind: Kind, number: u64, sent_ns: u64, padding: usize) -> Bytes {
    let mut buf = Vec::with_capacity(MIN_SIZE + padding + 4);
    put_entry(&mut buf, kind.key(), 9, |buf| {
        encode_key(VALUE_NUMBER, WireType::SixtyFourBit, buf);
        buf.put_f64_le(number as f64);
    });
    let mut digits = [b'0'; TIME_DIGITS];
    let mut rest = sent_ns;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    put_string_entry(&mut buf, "t", &digits);
    put_entry(&mut buf, "pad", string_value_len(padding), |buf| {
        encode_key(VALUE_STRING, WireType::LengthDelimited, buf);
        encode_varint(padding as u64, buf);
        buf.resize(buf.len() + padding, b'x');
    });
    buf.into()
}

fn string_value_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn put_string_entry(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    put_entry(buf, key, string_value_len(value.len()), |buf| {
        encode_key(VALUE_STRING, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.put_slice(value);
    });
}

/// Appends one map entry: `key` and a Value of `value_len` bytes that `value` writes.
fn put_entry(buf: &mut Vec<u8>, key: &str, value_len: usize, value: impl FnOnce(&mut Vec<u8>)) {
    let entry_len = 1
        + encoded_len_varint(key.len() as u64)
        + key.len()
        + 1
        + encoded_len_varint(value_len as u64)
        + value_len;
    encode_key(STRUCT_FIELDS, WireType::LengthDelimited, buf);
    encode_varint(entry_len as u64, buf);
    encode_key(ENTRY_KEY, WireType::LengthDelimited, buf);
    encode_varint(key.len() as u64, buf);
    buf.put_slice(key.as_bytes());
    encode_key(ENTRY_VALUE, WireType::LengthDelimited, buf);
    encode_varint(value_len as u64, buf);
    let start = buf.len();
    value(buf);
    debug_assert_eq!(buf.len() - start, value_len);
}

/// Reads an encoded Struct without decoding what the bench does not need; `None` for
/// a payload the bench did not send. Reads as prost's decoding would: a later entry
/// for the same key wins, and so does a Value's later kind.
pub fn read(mut buf: &[u8]) -> Option<Stamp> {
    let (mut warmup, mut index, mut sent) = (false, None, None);
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf).ok()?;
        if tag != STRUCT_FIELDS {
            skip_field(wire_type, tag, &mut buf, DecodeContext::default()).ok()?;
            continue;
        }
        let (key, value) = entry(length_delimited(wire_type, &mut buf)?)?;
        match key {
            b"w" => warmup = true,
            b"i" => index = Some(scalar(value)?),
            b"t" => sent = Some(scalar(value)?),
            _ => {}
        }
    }
    if warmup {
        return Some(Stamp::Warmup);
    }
    let index = match index? {
        Scalar::Number(n) if n >= 0.0 && n.fract() == 0.0 => n as u64,
        _ => return None,
    };
    let sent_ns = match sent? {
        Scalar::String(t) => std::str::from_utf8(t).ok()?.parse().ok()?,
        _ => return None,
    };
    Some(Stamp::Data { index, sent_ns })
}

/// The next length-delimited field's bytes, if that is what the field is.
fn length_delimited<'a>(wire_type: WireType, buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    if wire_type != WireType::LengthDelimited {
        return None;
    }
    let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
    if len > buf.len() {
        return None;
    }
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Some(field)
}

/// A map entry's key and encoded Value.
fn entry(mut buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut key, mut value): (&[u8], &[u8]) = (b"", b"");
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf).ok()?;
        match tag {
            ENTRY_KEY => key = length_delimited(wire_type, &mut buf)?,
            ENTRY_VALUE => value = length_delimited(wire_type, &mut buf)?,
            _ => skip_field(wire_type, tag, &mut buf, DecodeContext::default()).ok()?,
        }
    }
    Some((key, value))
}

/// A Value as far as the bench cares: a number, a string's bytes, or anything else.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Number(f64),
    String(&'a [u8]),
    Other,
}

fn scalar(mut buf: &[u8]) -> Option<Scalar<'_>> {
    let mut kind = Scalar::Other;
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf).ok()?;
        match tag {
            VALUE_NUMBER if wire_type == WireType::SixtyFourBit && buf.len() >= 8 => {
                kind = Scalar::Number(buf.get_f64_le());
            }
            VALUE_STRING => kind = Scalar::String(length_delimited(wire_type, &mut buf)?),
            _ => {
                skip_field(wire_type, tag, &mut buf, DecodeContext::default()).ok()?;
                kind = Scalar::Other;
            }
        }
    }
    Some(kind)
}

/// The padding that makes an encoded payload exactly `size` bytes, or the nearest
/// below where varint lengths make `size` itself impossible; `None` if `size` is
/// below [`MIN_SIZE`].
pub fn padding_for(size: usize) -> Option<usize> {
    if size < MIN_SIZE {
        return None;
    }
    let len = |padding| encode(Kind::Measured, 0, 0, padding).len();
    let mut padding = size.saturating_sub(len(0));
    while padding > 0 && len(padding) > size {
        padding -= 1;
    }
    Some(padding)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;
    use prost_types::{ListValue, Struct, Value, value::Kind as ValueKind};

    use super::*;

    /// The reading the raw reader must agree with, on the decoded Struct.
    fn stamp(s: &Struct) -> Option<Stamp> {
        if s.fields.contains_key("w") {
            return Some(Stamp::Warmup);
        }
        let index = match s.fields.get("i")?.kind {
            Some(ValueKind::NumberValue(n)) if n >= 0.0 && n.fract() == 0.0 => n as u64,
            _ => return None,
        };
        let sent_ns = match &s.fields.get("t")?.kind {
            Some(ValueKind::StringValue(t)) => t.parse().ok()?,
            _ => return None,
        };
        Some(Stamp::Data { index, sent_ns })
    }

    fn string(s: &str) -> Value {
        Value {
            kind: Some(ValueKind::StringValue(s.into())),
        }
    }

    #[test]
    fn sizes_are_exact_whatever_the_number_and_time() {
        for size in [MIN_SIZE, 64, 128, 200, 1024, 16 * 1024, 60 * 1024] {
            let padding = padding_for(size).unwrap();
            for (number, sent) in [(0, 0), (1 << 40, now_ns()), (7, u64::MAX)] {
                for kind in [Kind::Measured, Kind::Warmup] {
                    let len = encode(kind, number, sent, padding).len();
                    // Past 127 and 16383 bytes of padding a varint grows by one byte.
                    assert!(len == size || len + 1 == size, "{size}: {len}");
                }
            }
        }
        assert_eq!(
            encode(Kind::Measured, 0, 0, padding_for(128).unwrap()).len(),
            128
        );
        assert_eq!(padding_for(MIN_SIZE - 1), None);
    }

    #[test]
    fn the_hand_encoding_is_the_struct_prost_would_encode() {
        let bytes = encode(Kind::Measured, 42, 1_764_251_234_567_890_123, 3);
        let decoded = Struct::decode(bytes.clone()).unwrap();
        assert_eq!(decoded.fields["i"].kind, Some(ValueKind::NumberValue(42.0)));
        assert_eq!(decoded.fields["t"], string("01764251234567890123"));
        assert_eq!(decoded.fields["pad"], string("xxx"));
        assert_eq!(decoded.encoded_len(), bytes.len());
        assert_eq!(
            read(&bytes),
            Some(Stamp::Data {
                index: 42,
                sent_ns: 1_764_251_234_567_890_123
            })
        );
        assert_eq!(read(&encode(Kind::Warmup, 7, 0, 0)), Some(Stamp::Warmup));
    }

    #[test]
    fn foreign_payloads_are_not_mistaken_for_bench_ones() {
        assert_eq!(read(&Struct::default().encode_to_vec()), None);
        let mut s = Struct::decode(encode(Kind::Measured, 1, 2, 0)).unwrap();
        s.fields.insert("i".into(), string("1"));
        assert_eq!(read(&s.encode_to_vec()), None);
        assert_eq!(read(b"\xff\xff"), None);
        assert_eq!(read(b"\x0a\x05ab"), None);
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value { kind: None }),
            any::<f64>().prop_map(|n| Value {
                kind: Some(ValueKind::NumberValue(n))
            }),
            (0u64..1 << 53).prop_map(|n| Value {
                kind: Some(ValueKind::NumberValue(n as f64))
            }),
            "[0-9+]{0,21}|[a-z]{0,4}".prop_map(|s| string(&s)),
            any::<bool>().prop_map(|b| Value {
                kind: Some(ValueKind::BoolValue(b))
            }),
            Just(Value {
                kind: Some(ValueKind::ListValue(ListValue {
                    values: vec![string("t")]
                }))
            }),
        ]
    }

    proptest! {
        #[test]
        fn the_raw_reader_agrees_with_prost(
            fields in proptest::collection::btree_map("i|t|w|pad|x|", value(), 0..5)
        ) {
            let s = Struct { fields };
            prop_assert_eq!(read(&s.encode_to_vec()), stamp(&s));
        }

        #[test]
        fn what_is_encoded_reads_back(
            number in 0u64..1 << 53, sent in any::<u64>(), padding in 0usize..300
        ) {
            let bytes = encode(Kind::Measured, number, sent, padding);
            let expected = Stamp::Data { index: number, sent_ns: sent };
            prop_assert_eq!(read(&bytes), Some(expected));
            prop_assert_eq!(stamp(&Struct::decode(bytes).unwrap()), Some(expected));
        }

        #[test]
        fn no_bytes_make_the_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = read(&bytes);
        }
    }
}
