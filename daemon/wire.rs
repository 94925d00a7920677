//! Messages the daemon handles in their encoded form, so that the hot path neither
//! decodes nor re-encodes what it only passes along: events are encoded once, at
//! publish time, and the data of a client's Publish (a `google.protobuf.Struct`) goes
//! into its event as the bytes the client sent, after a check that decodes nothing.

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{self, DecodeContext, WireType},
};

use crate::pb;

/// A `streamhandler.v1.Event`, already encoded. The daemon's Subscribe stream yields
/// these, so the bytes are copied to each subscriber's connection but encoded only once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedEvent(Bytes);

/// The Event fields written by hand for pass-through data; see `pb::Event`.
const EVENT_TOPIC: u32 = 1;
const EVENT_SEQ: u32 = 2;
const EVENT_TIME: u32 = 3;
const EVENT_DATA: u32 = 12;

impl EncodedEvent {
    pub fn new(event: &pb::Event) -> Self {
        Self(event.encode_to_vec().into())
    }

    /// The topic and sequence number, read off the front of an event the bus numbered
    /// (where [`Draft::finish`] puts them); None for anything else.
    pub fn topic_and_seq(&self) -> Option<(&str, u64)> {
        fn key(buf: &mut &[u8], tag: u32) -> Option<()> {
            matches!(encoding::decode_key(buf), Ok((t, _)) if t == tag).then_some(())
        }
        let mut buf = self.0.as_ref();
        key(&mut buf, EVENT_TOPIC)?;
        let len = usize::try_from(encoding::decode_varint(&mut buf).ok()?).ok()?;
        let topic = std::str::from_utf8(buf.get(..len)?).ok()?;
        buf = &buf[len..];
        key(&mut buf, EVENT_SEQ)?;
        let seq = encoding::decode_varint(&mut buf).ok()?;
        Some((topic, seq))
    }

    /// An encoded `Event` message, as [`EncodedEvent::bytes`] gave it.
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The encoded `Event` message.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// Written by hand so that encoding is a copy of the stored bytes. The daemon never
// decodes an EncodedEvent; decoding one skips every field.
impl Message for EncodedEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// An event encoded but for its sequence number, which the bus gives it under its
/// topic's lock. Room is left for the number, so that under the lock only the number is
/// written: no payload is ever encoded while a lock is held.
#[derive(Debug)]
pub struct Draft {
    /// The topic field, [`SEQ_ROOM`] bytes of room, then the time and the payload.
    buf: Vec<u8>,
    /// Where the room starts.
    topic_end: usize,
}

/// Room for the sequence number field: its key and the longest varint.
const SEQ_ROOM: usize = 1 + 10;

impl Draft {
    /// A service's event.
    pub fn new(topic: &str, time: &prost_types::Timestamp, payload: &pb::event::Payload) -> Self {
        Self::build(topic, time, payload.encoded_len(), |buf| {
            payload.encode(buf)
        })
    }

    /// The event a client's Publish becomes: the same bytes as encoding a `pb::Event`
    /// whose payload is the decoded data, without decoding it.
    pub fn with_data(topic: &str, time: &prost_types::Timestamp, data: &EncodedStruct) -> Self {
        let field_len = encoding::key_len(EVENT_DATA)
            + encoding::encoded_len_varint(data.0.len() as u64)
            + data.0.len();
        Self::build(topic, time, field_len, |buf| {
            encoding::encode_key(EVENT_DATA, WireType::LengthDelimited, buf);
            encoding::encode_varint(data.0.len() as u64, buf);
            buf.put_slice(&data.0);
        })
    }

    fn build(
        topic: &str,
        time: &prost_types::Timestamp,
        payload_len: usize,
        encode_payload: impl FnOnce(&mut Vec<u8>),
    ) -> Self {
        let topic_len = encoding::key_len(EVENT_TOPIC)
            + encoding::encoded_len_varint(topic.len() as u64)
            + topic.len();
        let time_len = encoding::message::encoded_len(EVENT_TIME, time);
        let mut buf = Vec::with_capacity(topic_len + SEQ_ROOM + time_len + payload_len);
        encoding::encode_key(EVENT_TOPIC, WireType::LengthDelimited, &mut buf);
        encoding::encode_varint(topic.len() as u64, &mut buf);
        buf.put_slice(topic.as_bytes());
        let topic_end = buf.len();
        buf.resize(topic_end + SEQ_ROOM, 0);
        encoding::message::encode(EVENT_TIME, time, &mut buf);
        encode_payload(&mut buf);
        Self { buf, topic_end }
    }

    /// The event without its number, as it travels between a cluster's nodes: the topic
    /// field, then the time and the payload.
    pub fn unnumbered(mut self) -> Bytes {
        self.buf.drain(self.topic_end..self.topic_end + SEQ_ROOM);
        self.buf.into()
    }

    /// An event that [`Draft::unnumbered`] gave, ready to be numbered again; None when
    /// the bytes do not start with a topic field.
    pub fn from_unnumbered(bytes: &[u8]) -> Option<Self> {
        let mut rest = bytes;
        match encoding::decode_key(&mut rest) {
            Ok((EVENT_TOPIC, WireType::LengthDelimited)) => {}
            _ => return None,
        }
        let len = usize::try_from(encoding::decode_varint(&mut rest).ok()?).ok()?;
        let topic_end = bytes.len() - rest.len() + len;
        if topic_end > bytes.len() {
            return None;
        }
        let mut buf = Vec::with_capacity(bytes.len() + SEQ_ROOM);
        buf.extend_from_slice(&bytes[..topic_end]);
        buf.resize(topic_end + SEQ_ROOM, 0);
        buf.extend_from_slice(&bytes[topic_end..]);
        Some(Self { buf, topic_end })
    }

    /// The most bytes the event can take once numbered.
    pub fn max_len(&self) -> usize {
        self.buf.len()
    }

    /// Numbers the event: writes the sequence number at the end of the room, moves the
    /// topic field up to meet it and leaves the rest of the room out. Copies at most
    /// the topic field, whatever the payload's size.
    pub fn finish(mut self, seq: u64) -> EncodedEvent {
        let mut field = [0u8; SEQ_ROOM];
        let mut writer = &mut field[..];
        encoding::uint64::encode(EVENT_SEQ, &seq, &mut writer);
        let len = SEQ_ROOM - writer.len();
        let start = SEQ_ROOM - len;
        self.buf.copy_within(..self.topic_end, start);
        self.buf[start + self.topic_end..self.topic_end + SEQ_ROOM].copy_from_slice(&field[..len]);
        // Advanced rather than sliced: a slice of a fresh Bytes allocates its sharing.
        let mut bytes = Bytes::from(self.buf);
        bytes.advance(start);
        EncodedEvent(bytes)
    }
}

/// An encoded `google.protobuf.Struct` that [`EncodedStruct::check`] found well-formed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedStruct(Bytes);

impl EncodedStruct {
    /// Accepts the bytes if prost would decode them as a Struct: the wire format,
    /// the field types and UTF-8 strings are checked, nothing is allocated.
    pub fn check(bytes: Bytes) -> Result<Self, Malformed> {
        check_struct(&bytes, 0).map_err(Malformed)?;
        Ok(Self(bytes))
    }
}

/// Why bytes are not a well-formed Struct.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(&'static str);

/// A `streamhandler.v1.PublishRequest` with its data left encoded. The daemon's server
/// receives these in place of `pb::PublishRequest`: same fields, same wire format.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawPublish {
    /// The topic's bytes, unchecked: taken from the request without a copy, and read
    /// as text once [`crate::topic::name_from_bytes`] has checked them.
    pub topic: Bytes,
    /// The encoded data, unchecked; None when the request has none.
    pub data: Option<Bytes>,
}

const PUBLISH_TOPIC: u32 = 1;
const PUBLISH_DATA: u32 = 2;

impl Message for RawPublish {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.topic.is_empty() {
            encoding::bytes::encode(PUBLISH_TOPIC, &self.topic, buf);
        }
        if let Some(data) = &self.data {
            encoding::bytes::encode(PUBLISH_DATA, data, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            PUBLISH_TOPIC => encoding::bytes::merge(wire_type, &mut self.topic, buf, ctx),
            PUBLISH_DATA => {
                encoding::bytes::merge(wire_type, self.data.get_or_insert_default(), buf, ctx)
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let topic = if self.topic.is_empty() {
            0
        } else {
            encoding::bytes::encoded_len(PUBLISH_TOPIC, &self.topic)
        };
        topic
            + self
                .data
                .as_ref()
                .map_or(0, |d| encoding::bytes::encoded_len(PUBLISH_DATA, d))
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// How deep Structs may nest, as prost allows.
const MAX_DEPTH: u32 = 100;

/// What the check finds wrong, as prost would say it. A plain string until it leaves
/// the check: the walk runs on every event a client publishes, and a small error type
/// keeps its results in registers.
type Checked<T> = Result<T, &'static str>;

/// A field's key off `buf`. Every key of a Struct fits one byte, read here; anything
/// else, errors included, is prost's to read.
#[inline(always)]
fn key(buf: &mut &[u8]) -> Checked<(u32, WireType)> {
    if let &[byte @ 0x08..=0x7f, ref rest @ ..] = *buf {
        let wire_type = match byte & 7 {
            0 => WireType::Varint,
            1 => WireType::SixtyFourBit,
            2 => WireType::LengthDelimited,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::ThirtyTwoBit,
            _ => return long_key(buf),
        };
        *buf = rest;
        return Ok((u32::from(byte >> 3), wire_type));
    }
    long_key(buf)
}

#[cold]
#[inline(never)]
fn long_key(buf: &mut &[u8]) -> Checked<(u32, WireType)> {
    encoding::decode_key(buf).map_err(|_| "invalid key")
}

/// A varint off `buf`: one byte, read here, for short lengths; prost reads the rest.
#[inline(always)]
fn varint(buf: &mut &[u8]) -> Checked<u64> {
    if let &[byte @ 0x00..=0x7f, ref rest @ ..] = *buf {
        *buf = rest;
        return Ok(u64::from(byte));
    }
    long_varint(buf)
}

#[cold]
#[inline(never)]
fn long_varint(buf: &mut &[u8]) -> Checked<u64> {
    encoding::decode_varint(buf).map_err(|_| "invalid varint")
}

/// Skips a field the check does not look into, as prost would.
#[cold]
#[inline(never)]
fn skip(wire_type: WireType, tag: u32, buf: &mut &[u8]) -> Checked<()> {
    encoding::skip_field(wire_type, tag, buf, DecodeContext::default()).map_err(|_| "invalid field")
}

/// The bytes of a length-delimited field, taken off `buf`.
#[inline(always)]
fn delimited<'a>(wire_type: WireType, buf: &mut &'a [u8]) -> Checked<&'a [u8]> {
    if wire_type != WireType::LengthDelimited {
        return Err("invalid wire type");
    }
    let len = varint(buf)?;
    match usize::try_from(len) {
        Ok(len) if len <= buf.len() => {
            let (field, rest) = buf.split_at(len);
            *buf = rest;
            Ok(field)
        }
        _ => Err("buffer underflow"),
    }
}

#[inline(always)]
fn utf8(bytes: &[u8]) -> Checked<()> {
    // Most strings are ASCII, which a word at a time tells faster than full decoding.
    if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
        Ok(())
    } else {
        Err("invalid string value: data is not UTF-8 encoded")
    }
}

/// `Struct { map<string, Value> fields = 1; }`, each entry `{ string key = 1; Value
/// value = 2; }`.
fn check_struct(mut buf: &[u8], depth: u32) -> Checked<()> {
    if depth > MAX_DEPTH {
        return Err("recursion limit reached");
    }
    while !buf.is_empty() {
        let (tag, wire_type) = key(&mut buf)?;
        if tag != 1 {
            skip(wire_type, tag, &mut buf)?;
            continue;
        }
        let mut entry = delimited(wire_type, &mut buf)?;
        while !entry.is_empty() {
            let (tag, wire_type) = key(&mut entry)?;
            match tag {
                1 => utf8(delimited(wire_type, &mut entry)?)?,
                2 => check_value(delimited(wire_type, &mut entry)?, depth + 1)?,
                _ => skip(wire_type, tag, &mut entry)?,
            }
        }
    }
    Ok(())
}

/// `Value { oneof kind { NullValue null_value = 1; double number_value = 2;
/// string string_value = 3; bool bool_value = 4; Struct struct_value = 5;
/// ListValue list_value = 6; } }`, a list being `{ repeated Value values = 1; }`.
fn check_value(mut buf: &[u8], depth: u32) -> Checked<()> {
    if depth > MAX_DEPTH {
        return Err("recursion limit reached");
    }
    while !buf.is_empty() {
        let (tag, wire_type) = key(&mut buf)?;
        match (tag, wire_type) {
            (1 | 4, WireType::Varint) => {
                varint(&mut buf)?;
            }
            (2, WireType::SixtyFourBit) => {
                buf = buf.get(8..).ok_or("buffer underflow")?;
            }
            (3, _) => utf8(delimited(wire_type, &mut buf)?)?,
            (5, _) => check_struct(delimited(wire_type, &mut buf)?, depth + 1)?,
            (6, _) => {
                let mut list = delimited(wire_type, &mut buf)?;
                while !list.is_empty() {
                    let (tag, wire_type) = key(&mut list)?;
                    match tag {
                        1 => check_value(delimited(wire_type, &mut list)?, depth + 1)?,
                        _ => skip(wire_type, tag, &mut list)?,
                    }
                }
            }
            (1 | 2 | 4, _) => return Err("invalid wire type"),
            _ => skip(wire_type, tag, &mut buf)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost_types::{ListValue, Struct, Value, value::Kind};

    use super::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Kind::NullValue(0)),
            any::<f64>().prop_map(Kind::NumberValue),
            ".{0,20}".prop_map(Kind::StringValue),
            any::<bool>().prop_map(Kind::BoolValue),
        ]
        .prop_map(|kind| Value { kind: Some(kind) });
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|values| Kind::ListValue(ListValue { values })),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|fields| Kind::StructValue(Struct { fields })),
            ]
            .prop_map(|kind| Value { kind: Some(kind) })
        })
    }

    fn structs() -> impl Strategy<Value = Struct> {
        prop::collection::btree_map(".{0,8}", value(), 0..5).prop_map(|fields| Struct { fields })
    }

    proptest! {
        // Cases kept few enough to run in seconds; PROPTEST_CASES=100000 runs them longer.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
        ))]

        #[test]
        fn raw_publish_agrees_with_prost_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            let raw = RawPublish::decode(bytes.as_slice());
            if let Ok(request) = pb::PublishRequest::decode(bytes.as_slice()) {
                prop_assert_eq!(raw.unwrap().topic, request.topic);
            }
        }

        #[test]
        fn damaged_publish_requests_are_refused_or_decode(data in structs(), topic in ".{0,20}", at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = pb::PublishRequest { topic, data: Some(data) }.encode_to_vec();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(raw) = RawPublish::decode(bytes.as_slice())
                && let Some(data) = raw.data
                && EncodedStruct::check(data.clone()).is_ok()
            {
                prop_assert!(Struct::decode(data).is_ok());
            }
        }

        #[test]
        fn passed_through_data_makes_the_same_event(data in structs(), seq in 1u64.., topic in "[a-z/]{1,20}") {
            let time = prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 };
            let checked = EncodedStruct::check(data.encode_to_vec().into()).unwrap();
            let passed = Draft::with_data(&topic, &time, &checked).finish(seq);
            prop_assert_eq!(passed.topic_and_seq(), Some((topic.as_str(), seq)));
            let decoded = pb::Event::decode(passed.bytes().clone()).unwrap();
            prop_assert_eq!(decoded, pb::Event {
                topic,
                seq,
                time: Some(time),
                payload: Some(pb::event::Payload::Data(data)),
            });
        }

        #[test]
        fn keys_and_varints_read_as_prost_reads_them(bytes in prop::collection::vec(any::<u8>(), 0..12)) {
            let (mut ours, mut prosts) = (bytes.as_slice(), bytes.as_slice());
            prop_assert_eq!(key(&mut ours).ok(), encoding::decode_key(&mut prosts).ok());
            prop_assert_eq!(ours.len(), prosts.len());
            let (mut ours, mut prosts) = (bytes.as_slice(), bytes.as_slice());
            prop_assert_eq!(varint(&mut ours).ok(), encoding::decode_varint(&mut prosts).ok());
            prop_assert_eq!(ours.len(), prosts.len());
        }

        #[test]
        fn whatever_the_check_accepts_prost_decodes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if EncodedStruct::check(bytes.clone().into()).is_ok() {
                prop_assert!(Struct::decode(bytes.as_slice()).is_ok());
            }
        }

        #[test]
        fn damaged_structs_are_refused_or_still_decode(data in structs(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = data.encode_to_vec();
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if EncodedStruct::check(bytes.clone().into()).is_ok() {
                prop_assert!(Struct::decode(bytes.as_slice()).is_ok());
            }
        }
    }

    #[test]
    fn a_numbered_draft_is_the_event_prost_encodes() {
        let time = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        let payloads = [
            pb::event::Payload::Text(pb::Text {
                body: "x".repeat(300),
                ..Default::default()
            }),
            pb::event::Payload::Lifecycle(pb::Lifecycle::default()),
        ];
        for payload in payloads {
            for (topic, seq) in [("t", 1), ("a/b", 300), (&*"x".repeat(128), u64::MAX)] {
                let numbered = Draft::new(topic, &time, &payload).finish(seq);
                let event = pb::Event {
                    topic: topic.to_owned(),
                    seq,
                    time: Some(time),
                    payload: Some(payload.clone()),
                };
                assert_eq!(numbered, EncodedEvent::new(&event), "{topic} {seq}");
                assert_eq!(numbered.topic_and_seq(), Some((topic, seq)));
                let carried = Draft::new(topic, &time, &payload).unnumbered();
                let renumbered = Draft::from_unnumbered(&carried).unwrap().finish(seq);
                assert_eq!(renumbered, numbered, "carried between nodes: {topic} {seq}");
            }
        }
        assert_eq!(
            EncodedEvent::new(&pb::Event::default()).topic_and_seq(),
            None
        );
        for garbage in [&b""[..], b"\x12\x01a", b"\x0a\x05ab"] {
            assert!(Draft::from_unnumbered(garbage).is_none(), "{garbage:?}");
        }
    }

    #[test]
    fn bad_utf8_and_wrong_wire_types_are_refused() {
        // fields { key: "k", value: { string_value: <0xff> } }
        let bad_string = [0x0a, 0x08, 0x0a, 0x01, b'k', 0x12, 0x03, 0x1a, 0x01, 0xff];
        assert!(EncodedStruct::check(Bytes::copy_from_slice(&bad_string)).is_err());
        assert!(Struct::decode(&bad_string[..]).is_err());
        // field 1 as a varint
        assert!(EncodedStruct::check(Bytes::from_static(&[0x08, 0x01])).is_err());
        assert!(EncodedStruct::check(Bytes::new()).is_ok());
    }

    #[test]
    fn raw_publish_reads_a_publish_request() {
        let request = pb::PublishRequest {
            topic: "t".into(),
            data: Some(Struct::default()),
        };
        let raw = RawPublish::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(raw.topic, "t");
        assert_eq!(raw.data, Some(Bytes::new()));
        assert_eq!(raw.encode_to_vec(), request.encode_to_vec());
        let none = RawPublish::decode(&[0x0a, 0x01, b't'][..]).unwrap();
        assert_eq!(none.data, None);
    }
}
