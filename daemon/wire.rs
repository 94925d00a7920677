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
    /// Accepts the bytes if every standard client decodes them, and prints them as
    /// JSON, with its default limits: prost would decode them as a Struct (wire
    /// format, field types, UTF-8 strings), they nest at most [`MAX_DATA_DEPTH`]
    /// levels, every number is finite, every value has a kind, and nothing else is in
    /// them. Decodes nothing and allocates nothing unless it refuses.
    pub fn check(bytes: Bytes) -> Result<Self, Malformed> {
        check_struct(&bytes, 1).map_err(|fault| *fault)?;
        Ok(Self(bytes))
    }
}

/// How deep data may nest: the data object is level 1, and each object or list inside
/// it one level more. An object level is three messages deep once decoded (Struct, its
/// map entry, Value) and a list level two, so an Event whose data nests this deep is at
/// most 61 messages deep: well inside the 100 that prost, Python's protobuf and
/// protobuf-es decode by default.
pub const MAX_DATA_DEPTH: u32 = 20;

/// Why bytes are not data the daemon passes on, and where in the data.
#[derive(Debug)]
pub struct Malformed {
    /// From the fault outwards: each level adds its step as the check unwinds.
    steps: Vec<Step>,
    reason: std::borrow::Cow<'static, str>,
}

#[derive(Debug)]
enum Step {
    Key(String),
    Index(usize),
}

impl Malformed {
    /// Where the fault is, under `root` (the field the data came in): `data.a.b[2]`.
    pub fn field(&self, root: &str) -> String {
        let mut field = root.to_owned();
        for step in self.steps.iter().rev() {
            match step {
                Step::Key(key) if is_plain_key(key) => field.push_str(&format!(".{key}")),
                Step::Key(key) => field.push_str(&format!("[{}]", crate::topic::quoted(key))),
                Step::Index(i) => field.push_str(&format!("[{i}]")),
            }
        }
        field
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    fn at(mut self: Box<Self>, step: Step) -> Box<Self> {
        self.steps.push(step);
        self
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field("data"), self.reason)
    }
}

impl std::error::Error for Malformed {}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cold]
#[inline(never)]
fn fault(reason: impl Into<std::borrow::Cow<'static, str>>) -> Box<Malformed> {
    Box::new(Malformed {
        steps: Vec::new(),
        reason: reason.into(),
    })
}

#[cold]
#[inline(never)]
fn unknown_field(tag: u32, message: &str) -> Box<Malformed> {
    fault(format!(
        "field {tag} is not part of google.protobuf.{message}; data carries only what \
         JSON can"
    ))
}

/// The daemon's gRPC codec: prost's, but a request that does not decode is the
/// client's fault, answered INVALID_ARGUMENT, not INTERNAL.
pub struct Codec<T, U>(tonic_prost::ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(tonic_prost::ProstCodec::default())
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <tonic_prost::ProstCodec<T, U> as tonic::codec::Codec>::Encoder;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(self.0.decoder())
    }
}

/// Decodes requests as prost does, saying that the client sent what does not decode.
pub struct Decoder<U>(tonic_prost::ProstDecoder<U>);

impl<U: Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<U>, tonic::Status> {
        self.0.decode(buf).map_err(|status| {
            tonic::Status::invalid_argument(format!(
                "the request does not decode: {}",
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.0.buffer_settings()
    }
}

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

/// What the check finds wrong. Boxed, so that a result is one word: the walk runs on
/// every event a client publishes.
type Checked<T> = Result<T, Box<Malformed>>;

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
    encoding::decode_key(buf).map_err(|_| fault("not a Struct: invalid key"))
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
    encoding::decode_varint(buf).map_err(|_| fault("not a Struct: invalid varint"))
}

/// The bytes of a length-delimited field, taken off `buf`.
#[inline(always)]
fn delimited<'a>(wire_type: WireType, buf: &mut &'a [u8]) -> Checked<&'a [u8]> {
    if wire_type != WireType::LengthDelimited {
        return Err(fault("not a Struct: invalid wire type"));
    }
    let len = varint(buf)?;
    match usize::try_from(len) {
        Ok(len) if len <= buf.len() => {
            let (field, rest) = buf.split_at(len);
            *buf = rest;
            Ok(field)
        }
        _ => Err(fault("not a Struct: buffer underflow")),
    }
}

#[inline(always)]
fn utf8(bytes: &[u8]) -> Checked<()> {
    // Most strings are ASCII, which a word at a time tells faster than full decoding.
    if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
        Ok(())
    } else {
        Err(fault("a string is not UTF-8"))
    }
}

/// `Struct { map<string, Value> fields = 1; }`, each entry `{ string key = 1; Value
/// value = 2; }`, at nesting `level`.
fn check_struct(mut buf: &[u8], level: u32) -> Checked<()> {
    while !buf.is_empty() {
        let (tag, wire_type) = key(&mut buf)?;
        if tag != 1 {
            return Err(unknown_field(tag, "Struct"));
        }
        let entry = delimited(wire_type, &mut buf)?;
        let mut rest = entry;
        let mut has_value = false;
        while !rest.is_empty() {
            let (tag, wire_type) = key(&mut rest)?;
            match tag {
                1 => utf8(delimited(wire_type, &mut rest)?)?,
                2 => {
                    has_value = true;
                    check_value(delimited(wire_type, &mut rest)?, level)
                        .map_err(|fault| fault.at(Step::Key(entry_key(entry))))?;
                }
                _ => return Err(unknown_field(tag, "Struct's entry")),
            }
        }
        if !has_value {
            return Err(fault("no value").at(Step::Key(entry_key(entry))));
        }
    }
    Ok(())
}

/// An entry's key, for saying where a fault is: the key may come after the value.
#[cold]
#[inline(never)]
fn entry_key(mut entry: &[u8]) -> String {
    let mut name = String::new();
    while let Ok((tag, wire_type)) = encoding::decode_key(&mut entry) {
        let mut field = String::new();
        let read = match (tag, wire_type) {
            (1, WireType::LengthDelimited) => {
                encoding::string::merge(wire_type, &mut field, &mut entry, DecodeContext::default())
            }
            _ => encoding::skip_field(wire_type, tag, &mut entry, DecodeContext::default()),
        };
        match read {
            Ok(()) if tag == 1 => name = field,
            Ok(()) => {}
            Err(_) => break,
        }
    }
    name
}

/// `Value { oneof kind { NullValue null_value = 1; double number_value = 2;
/// string string_value = 3; bool bool_value = 4; Struct struct_value = 5;
/// ListValue list_value = 6; } }`, inside data at nesting `level`.
fn check_value(mut buf: &[u8], level: u32) -> Checked<()> {
    if buf.is_empty() {
        return Err(fault(
            "a value has no kind: set one of null, number, string, bool, struct or list",
        ));
    }
    while !buf.is_empty() {
        let (tag, wire_type) = key(&mut buf)?;
        match (tag, wire_type) {
            (1, WireType::Varint) => {
                if varint(&mut buf)? != 0 {
                    return Err(fault("null_value must be NULL_VALUE (0)"));
                }
            }
            (2, WireType::SixtyFourBit) => {
                let (bits, rest) = buf
                    .split_first_chunk::<8>()
                    .ok_or_else(|| fault("not a Struct: buffer underflow"))?;
                if !f64::from_le_bytes(*bits).is_finite() {
                    return Err(fault(
                        "a number must be finite, not NaN or an infinity, which JSON cannot \
                         carry; send null or a string",
                    ));
                }
                buf = rest;
            }
            (3, _) => utf8(delimited(wire_type, &mut buf)?)?,
            (4, WireType::Varint) => {
                varint(&mut buf)?;
            }
            (5, _) => check_struct(delimited(wire_type, &mut buf)?, nested(level)?)?,
            (6, _) => check_list(delimited(wire_type, &mut buf)?, nested(level)?)?,
            (1 | 2 | 4, _) => return Err(fault("not a Struct: invalid wire type")),
            _ => return Err(unknown_field(tag, "Value")),
        }
    }
    Ok(())
}

/// `ListValue { repeated Value values = 1; }`, at nesting `level`.
fn check_list(mut buf: &[u8], level: u32) -> Checked<()> {
    let mut index = 0;
    while !buf.is_empty() {
        let (tag, wire_type) = key(&mut buf)?;
        if tag != 1 {
            return Err(unknown_field(tag, "ListValue"));
        }
        check_value(delimited(wire_type, &mut buf)?, level)
            .map_err(|fault| fault.at(Step::Index(index)))?;
        index += 1;
    }
    Ok(())
}

/// The level of an object or list inside one at `level`, if data may nest so deep.
#[inline(always)]
fn nested(level: u32) -> Checked<u32> {
    if level < MAX_DATA_DEPTH {
        Ok(level + 1)
    } else {
        Err(fault(format!(
            "objects and lists nest deeper than {MAX_DATA_DEPTH} levels, the most data may"
        )))
    }
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

    /// Data nesting 1 to 30 levels down one path of objects and lists, with a leaf
    /// (any number among them) at the bottom; with its depth, and whether the leaf is
    /// finite.
    fn deep_data() -> impl Strategy<Value = (Struct, u32, bool)> {
        let leaf = prop_oneof![
            any::<f64>().prop_map(Kind::NumberValue),
            Just(Kind::StringValue("leaf".into())),
            Just(Kind::NullValue(0)),
        ];
        (prop::collection::vec(any::<bool>(), 0..30), leaf).prop_map(|(lists, leaf)| {
            let finite = !matches!(leaf, Kind::NumberValue(n) if !n.is_finite());
            let depth = lists.len() as u32 + 1;
            let bottom = Value { kind: Some(leaf) };
            let value = lists.iter().rev().fold(bottom, |inner, &list| {
                let kind = if list {
                    Kind::ListValue(ListValue {
                        values: vec![inner],
                    })
                } else {
                    Kind::StructValue(Struct {
                        fields: [("k".to_owned(), inner)].into(),
                    })
                };
                Value { kind: Some(kind) }
            });
            let data = Struct {
                fields: [("top".to_owned(), value)].into(),
            };
            (data, depth, finite)
        })
    }

    fn is_finite(data: &Struct) -> bool {
        fn value(v: &Value) -> bool {
            match &v.kind {
                Some(Kind::NumberValue(n)) => n.is_finite(),
                Some(Kind::StructValue(s)) => is_finite(s),
                Some(Kind::ListValue(l)) => l.values.iter().all(value),
                _ => true,
            }
        }
        data.fields.values().all(value)
    }

    /// The Event a client's data makes, decoded as a subscriber decodes it: prost with
    /// its default limits.
    fn event_with(data: &EncodedStruct) -> Result<pb::Event, DecodeError> {
        let time = prost_types::Timestamp::default();
        let event = Draft::with_data("t", &time, data).finish(u64::MAX);
        pb::Event::decode(event.bytes().clone())
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
            if let Ok(data) = EncodedStruct::check(bytes.clone().into()) {
                prop_assert!(Struct::decode(bytes.as_slice()).is_ok());
                prop_assert!(event_with(&data).is_ok());
            }
        }

        /// Any data a client may send, nested to 30 levels with any number at the
        /// bottom: accepted exactly when it nests at most 20 levels and its numbers are
        /// finite, and then the Event it makes decodes with prost's default limits.
        #[test]
        fn any_accepted_publish_makes_an_event_every_client_decodes(
            (data, depth, finite) in deep_data(),
            siblings in structs(),
        ) {
            let mut data = data;
            data.fields.extend(siblings.fields.into_iter().map(|(k, v)| (format!("s{k}"), v)));
            let finite = finite && is_finite(&data);
            let request = pb::PublishRequest { topic: "t".into(), data: Some(data) }.encode_to_vec();
            let raw = RawPublish::decode(request.as_slice()).unwrap();
            let checked = EncodedStruct::check(raw.data.unwrap());
            prop_assert_eq!(checked.is_ok(), depth <= MAX_DATA_DEPTH && finite, "{:?}", checked);
            if let Ok(data) = checked {
                prop_assert!(event_with(&data).is_ok());
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

    /// `levels` objects nested, the data object the first, a number at the bottom.
    fn nested(levels: u32, number: f64) -> Struct {
        let bottom = Value {
            kind: Some(Kind::NumberValue(number)),
        };
        let mut data = Struct {
            fields: [("a".to_owned(), bottom)].into(),
        };
        for _ in 1..levels {
            data = Struct {
                fields: [(
                    "a".to_owned(),
                    Value {
                        kind: Some(Kind::StructValue(data)),
                    },
                )]
                .into(),
            };
        }
        data
    }

    fn check(data: &Struct) -> Result<EncodedStruct, Malformed> {
        EncodedStruct::check(data.encode_to_vec().into())
    }

    #[test]
    fn data_nests_at_most_twenty_levels_and_says_where_it_goes_deeper() {
        let at_limit = check(&nested(MAX_DATA_DEPTH, 1.0)).unwrap();
        let decoded = event_with(&at_limit).unwrap();
        assert_eq!(
            decoded.payload,
            Some(pb::event::Payload::Data(nested(MAX_DATA_DEPTH, 1.0)))
        );
        let past = check(&nested(MAX_DATA_DEPTH + 1, 1.0)).unwrap_err();
        assert_eq!(past.field("data"), format!("data{}", ".a".repeat(20)));
        assert!(past.reason().contains("deeper than 20 levels"), "{past}");
        // What the limit guards against: prost itself refuses an Event this deep.
        let far = nested(40, 1.0);
        let event = pb::Event {
            payload: Some(pb::event::Payload::Data(far.clone())),
            ..Default::default()
        };
        assert!(pb::Event::decode(event.encode_to_vec().as_slice()).is_err());
        assert!(check(&far).is_err());
    }

    #[test]
    fn numbers_must_be_finite() {
        for odd in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let refused = check(&nested(3, odd)).unwrap_err();
            assert_eq!(refused.field("data"), "data.a.a.a");
            assert!(refused.reason().contains("finite"), "{refused}");
        }
        assert!(check(&nested(3, f64::MAX)).is_ok());
        let list = Struct {
            fields: [(
                "odd key".to_owned(),
                Value {
                    kind: Some(Kind::ListValue(ListValue {
                        values: vec![
                            Value {
                                kind: Some(Kind::NumberValue(1.0)),
                            },
                            Value {
                                kind: Some(Kind::NumberValue(f64::NAN)),
                            },
                        ],
                    })),
                },
            )]
            .into(),
        };
        let refused = check(&list).unwrap_err();
        assert_eq!(
            refused.to_string().split(':').next(),
            Some("data[\"odd key\"][1]")
        );
    }

    #[test]
    fn what_json_cannot_carry_is_refused() {
        let refused = |bytes: &[u8]| {
            EncodedStruct::check(Bytes::copy_from_slice(bytes))
                .unwrap_err()
                .to_string()
        };
        // fields { key: "k", value: {} }: a value of no kind.
        let empty_value = [0x0a, 0x05, 0x0a, 0x01, b'k', 0x12, 0x00];
        assert!(refused(&empty_value).contains("no kind"));
        // fields { key: "k" }: no value at all.
        assert!(refused(&[0x0a, 0x03, 0x0a, 0x01, b'k']).starts_with("data.k: no value"));
        // fields { key: "k", value: { null_value: 1 } }
        let null_one = [0x0a, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, 0x08, 0x01];
        assert!(refused(&null_one).contains("null_value"));
        // Field 2 of a Struct, and field 9 of a Value: not part of the types.
        assert!(refused(&[0x10, 0x01]).contains("field 2 is not part of"));
        let unknown = [0x0a, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, 0x48, 0x01];
        assert!(refused(&unknown).contains("field 9 is not part of"));
        // A group nested deep in an unknown field would trip a decoder's limit.
        let mut groups = vec![0x0a, 0x00];
        groups.extend(std::iter::repeat_n(0x1b, 200));
        assert!(EncodedStruct::check(groups.into()).is_err());
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
