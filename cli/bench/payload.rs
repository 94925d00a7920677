//! The bench payload: a `google.protobuf.Struct` with the message's index (`i`), its
//! send time in nanoseconds since the epoch (`t`, a string: Struct numbers are doubles
//! and would round nanoseconds) and a padding string (`pad`) that brings the encoded
//! Struct to the requested size. Warm-up messages carry `w` instead. streamd gets the
//! Struct as Publish's `data`; NATS gets its encoded bytes as the message body.

use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use prost_types::{Struct, Value, value::Kind};

/// The smallest payload: the index and send time with empty padding.
pub const MIN_SIZE: usize = 56;

/// What a received payload turns out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// A warm-up message, sent before the clock starts.
    Warmup,
    /// Message `index`, sent at `sent_ns`.
    Data { index: u64, sent_ns: u64 },
}

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn string(s: String) -> Value {
    Value {
        kind: Some(Kind::StringValue(s)),
    }
}

/// Message `index`, stamped `sent_ns`, padded with `padding` bytes.
pub fn data(index: u64, sent_ns: u64, padding: usize) -> Struct {
    let mut s = Struct::default();
    s.fields.insert(
        "i".into(),
        Value {
            kind: Some(Kind::NumberValue(index as f64)),
        },
    );
    // Zero-padded so that the size does not depend on the clock.
    s.fields
        .insert("t".into(), string(format!("{sent_ns:020}")));
    s.fields.insert("pad".into(), string("x".repeat(padding)));
    s
}

/// The warm-up message.
pub fn warmup() -> Struct {
    let mut s = Struct::default();
    s.fields.insert(
        "w".into(),
        Value {
            kind: Some(Kind::BoolValue(true)),
        },
    );
    s
}

/// Reads a payload; `None` for one the bench did not send.
pub fn stamp(s: &Struct) -> Option<Stamp> {
    if s.fields.contains_key("w") {
        return Some(Stamp::Warmup);
    }
    let index = match s.fields.get("i")?.kind {
        Some(Kind::NumberValue(n)) if n >= 0.0 && n.fract() == 0.0 => n as u64,
        _ => return None,
    };
    let sent_ns = match &s.fields.get("t")?.kind {
        Some(Kind::StringValue(t)) => t.parse().ok()?,
        _ => return None,
    };
    Some(Stamp::Data { index, sent_ns })
}

/// Decodes an encoded Struct, as NATS carries it, and reads it.
pub fn stamp_bytes(bytes: &[u8]) -> Option<Stamp> {
    stamp(&Struct::decode(bytes).ok()?)
}

/// The padding that makes an encoded payload exactly `size` bytes, or the nearest
/// below where varint lengths make `size` itself impossible; `None` if `size` is
/// below [`MIN_SIZE`].
pub fn padding_for(size: usize) -> Option<usize> {
    if size < MIN_SIZE {
        return None;
    }
    let len = |padding| data(u64::MAX >> 11, u64::MAX, padding).encoded_len();
    let mut padding = size.saturating_sub(len(0));
    while padding > 0 && len(padding) > size {
        padding -= 1;
    }
    Some(padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact_whatever_the_index_and_time() {
        for size in [MIN_SIZE, 64, 128, 200, 1024, 16 * 1024, 60 * 1024] {
            let padding = padding_for(size).unwrap();
            for (index, sent) in [(0, 0), (1 << 40, now_ns()), (7, u64::MAX)] {
                let len = data(index, sent, padding).encoded_len();
                // Past 127 and 16383 bytes of padding a varint grows by one byte.
                assert!(len == size || len + 1 == size, "{size}: {len}");
            }
        }
        assert_eq!(data(0, 0, padding_for(128).unwrap()).encoded_len(), 128);
        assert_eq!(padding_for(MIN_SIZE - 1), None);
    }

    #[test]
    fn nanoseconds_and_indices_survive_the_round_trip() {
        let sent = 1_764_251_234_567_890_123;
        let bytes = data(123_456_789, sent, 40).encode_to_vec();
        assert_eq!(
            stamp_bytes(&bytes),
            Some(Stamp::Data {
                index: 123_456_789,
                sent_ns: sent
            })
        );
        assert_eq!(stamp(&warmup()), Some(Stamp::Warmup));
    }

    #[test]
    fn foreign_payloads_are_not_mistaken_for_bench_ones() {
        assert_eq!(stamp(&Struct::default()), None);
        let mut s = data(1, 2, 0);
        s.fields.insert("i".into(), string("1".into()));
        assert_eq!(stamp(&s), None);
        assert_eq!(stamp_bytes(b"\xff\xff"), None);
    }
}
