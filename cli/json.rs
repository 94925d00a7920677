//! JSON in and out: events as proto3 JSON (what grpcurl prints), and the `publish`
//! argument as a `google.protobuf.Struct`.

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use prost_types::Struct;
use streamhandler::{
    json::to_struct,
    pb::{self, FILE_DESCRIPTOR_SET},
};

use crate::error::Error;

/// The full name of the message every subscribe line holds.
const EVENT_MESSAGE: &str = "streamhandler.v1.Event";

/// Prints events in the proto3 JSON mapping, using the API's own descriptors.
pub struct EventEncoder {
    event: MessageDescriptor,
    options: SerializeOptions,
}

impl EventEncoder {
    /// Decodes the descriptors once; every event then reuses them.
    pub fn new() -> Result<Self, Error> {
        let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .map_err(|err| Error::Other(format!("bad built-in descriptors: {err}")))?;
        let event = pool
            .get_message_by_name(EVENT_MESSAGE)
            .ok_or_else(|| Error::Other(format!("no {EVENT_MESSAGE} in the descriptors")))?;
        // 64-bit integers as numbers rather than strings, so `jq '.seq'` compares.
        let options = SerializeOptions::new().stringify_64_bit_integers(false);
        Ok(EventEncoder { event, options })
    }

    /// One event as one line of compact JSON (no trailing newline).
    pub fn encode(&self, event: &pb::Event) -> Result<String, Error> {
        let bad = |err: &dyn std::fmt::Display| Error::Other(format!("cannot print event: {err}"));
        let message = DynamicMessage::decode(self.event.clone(), event.encode_to_vec().as_slice())
            .map_err(|err| bad(&err))?;
        let mut serializer = serde_json::Serializer::new(Vec::new());
        message
            .serialize_with_options(&mut serializer, &self.options)
            .map_err(|err| bad(&err))?;
        String::from_utf8(serializer.into_inner()).map_err(|err| bad(&err))
    }
}

/// Parses the `publish` argument, which must be a JSON object.
pub fn parse_object(text: &str) -> Result<Struct, Error> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|err| Error::Other(format!("the data is not valid JSON: {err}")))?;
    match value {
        serde_json::Value::Object(map) => {
            to_struct(map).map_err(|e| Error::Other(format!("the data's {e}")))
        }
        other => Err(Error::Other(format!(
            "the data must be a JSON object like '{{\"key\": 1}}', not {}",
            json_kind(&other)
        ))),
    }
}

/// "an array", "a string", …: what a JSON value is, for error messages.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use pb::event::Payload;
    use streamhandler::json::from_struct;

    use super::*;

    #[test]
    fn objects_round_trip() {
        let s = parse_object(r#"{"b": [1, 2.5, "x", null, true], "a": {"n": -3}}"#).unwrap();
        assert_eq!(
            from_struct(&s).to_string(),
            r#"{"a":{"n":-3},"b":[1,2.5,"x",null,true]}"#
        );
    }

    #[test]
    fn non_objects_are_refused_clearly() {
        let err = parse_object("[1, 2]").unwrap_err().to_string();
        assert!(err.contains("must be a JSON object"), "{err}");
        assert!(err.contains("an array"), "{err}");
        let err = parse_object("{oops").unwrap_err().to_string();
        assert!(err.starts_with("the data is not valid JSON"), "{err}");
    }

    #[test]
    fn events_print_as_proto3_json() {
        let encoder = EventEncoder::new().unwrap();
        let event = pb::Event {
            topic: "streamer".into(),
            seq: 42,
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 500_000_000,
            }),
            payload: Some(Payload::Points(pb::Points {
                series: vec![pb::Series {
                    points: vec![pb::Point { x: 1.5, y: 2.0 }],
                }],
            })),
        };
        let json: serde_json::Value =
            serde_json::from_str(&encoder.encode(&event).unwrap()).unwrap();
        assert_eq!(json["seq"], 42);
        assert_eq!(json["topic"], "streamer");
        assert_eq!(json["time"], "2023-11-14T22:13:20.500Z");
        assert_eq!(json["points"]["series"][0]["points"][0]["x"], 1.5);
    }

    #[test]
    fn lifecycle_and_data_events_print_as_proto3_json() {
        let encoder = EventEncoder::new().unwrap();
        let event = pb::Event {
            topic: "slugs".into(),
            seq: 3,
            time: None,
            payload: Some(Payload::Lifecycle(pb::Lifecycle {
                kind: pb::lifecycle::Kind::Restarting as i32,
                message: "boom".into(),
                backoff: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 200_000_000,
                }),
                attempt: 2,
                ..Default::default()
            })),
        };
        let line = encoder.encode(&event).unwrap();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["lifecycle"]["kind"], "KIND_RESTARTING");
        assert_eq!(json["lifecycle"]["backoff"], "1.200s");

        let data = parse_object(r#"{"temp": 21.5}"#).unwrap();
        let event = pb::Event {
            topic: "sensors/kitchen".into(),
            seq: 1,
            time: None,
            payload: Some(Payload::Data(data)),
        };
        let json: serde_json::Value =
            serde_json::from_str(&encoder.encode(&event).unwrap()).unwrap();
        assert_eq!(json["data"]["temp"], 21.5);
    }
}
