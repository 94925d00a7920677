//! streamd's Subscribe as the bench reads it: events read straight from the wire
//! format, so that the client spends as little CPU per event as `nats bench` does on
//! raw bytes. An incoming Event yields only its `seq` and what its payload means to the
//! bench. (Requests go out as the daemon's own `wire::RawPublish`, their data already
//! encoded.)

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{self, DecodeContext, WireType},
};

use streamhandler::pb;

use super::payload::{self, Stamp};

/// `streamhandler.v1.Event` fields the bench reads; see the proto.
const EVENT_SEQ: u32 = 2;
const EVENT_LAGGED: u32 = 11;
const EVENT_DATA: u32 = 12;
const EVENT_SUBSCRIBED: u32 = 13;

/// What an Event's payload is to the bench.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EventPayload {
    /// A payload of another kind (a service's event).
    #[default]
    Other,
    /// Published data: the bench's payload, or `None` for someone else's.
    Data(Option<Stamp>),
    /// This subscriber skipped `missed` events.
    Lagged(u64),
    /// The stream is live: what is published from now on reaches it.
    Subscribed,
}

/// An Event from a Subscribe stream, as far as the bench reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawEvent {
    pub seq: u64,
    pub payload: EventPayload,
}

impl Message for RawEvent {
    /// Events only arrive; the trait asks for encoding all the same.
    fn encode_raw(&self, _buf: &mut impl BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            EVENT_SEQ => encoding::uint64::merge(wire_type, &mut self.seq, buf, ctx),
            EVENT_LAGGED => {
                // Rare, so decoded whole, whatever detail it carries beside `missed`.
                let mut lagged = pb::Lagged::default();
                encoding::message::merge(wire_type, &mut lagged, buf, ctx)?;
                self.payload = EventPayload::Lagged(lagged.missed);
                Ok(())
            }
            EVENT_SUBSCRIBED => {
                // Once per stream; its positions are of no use to the bench.
                encoding::skip_field(wire_type, tag, buf, ctx)?;
                self.payload = EventPayload::Subscribed;
                Ok(())
            }
            EVENT_DATA => {
                self.payload = EventPayload::Data(with_field(wire_type, buf, ctx, payload::read)?);
                Ok(())
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Runs `read` on the next length-delimited field: in place when the buffer holds it in
/// one piece (tonic's does), else on a copy.
fn with_field<T>(
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
    read: impl FnOnce(&[u8]) -> T,
) -> Result<T, DecodeError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
    let chunk = buf.chunk();
    let mut field = chunk;
    if let Ok(len) = encoding::decode_varint(&mut field)
        && field.len() as u64 >= len
    {
        let header = chunk.len() - field.len();
        let value = read(&field[..len as usize]);
        buf.advance(header + len as usize);
        return Ok(value);
    }
    let mut copy = Bytes::new();
    encoding::bytes::merge(wire_type, &mut copy, buf, ctx)?;
    Ok(read(&copy))
}

#[cfg(test)]
mod tests {
    use prost_types::Struct;
    use streamhandler::pb::event::Payload;

    use super::*;
    use crate::bench::payload::Kind;

    fn event(payload: Payload) -> Vec<u8> {
        pb::Event {
            topic: "bench.t".into(),
            seq: 77,
            time: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 2,
            }),
            payload: Some(payload),
        }
        .encode_to_vec()
    }

    #[test]
    fn events_read_as_their_prost_decoding_says() {
        let data = payload::encode(Kind::Measured, 5, 123, 10);
        let bytes = event(Payload::Data(Struct::decode(data).unwrap()));
        assert_eq!(
            RawEvent::decode(&bytes[..]).unwrap(),
            RawEvent {
                seq: 77,
                payload: EventPayload::Data(Some(Stamp::Data {
                    index: 5,
                    sent_ns: 123
                }))
            }
        );
        let lagged = event(Payload::Lagged(pb::Lagged {
            missed: 9,
            ..Default::default()
        }));
        assert_eq!(
            RawEvent::decode(&lagged[..]).unwrap().payload,
            EventPayload::Lagged(9)
        );
        let other = event(Payload::Emoji(pb::Emoji::default()));
        assert_eq!(
            RawEvent::decode(&other[..]).unwrap().payload,
            EventPayload::Other
        );
        let subscribed = event(Payload::Subscribed(pb::Subscribed {
            topics: vec!["bench.t".into()],
            positions: vec![pb::TopicPosition {
                topic: "bench.t".into(),
                seq: 3,
            }],
        }));
        assert_eq!(
            RawEvent::decode(&subscribed[..]).unwrap().payload,
            EventPayload::Subscribed
        );
        let foreign = event(Payload::Data(Struct::default()));
        assert_eq!(
            RawEvent::decode(&foreign[..]).unwrap().payload,
            EventPayload::Data(None)
        );
    }
}
