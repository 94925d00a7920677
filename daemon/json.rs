//! Conversions between JSON (`serde_json`) and `google.protobuf.Struct`, the payload of
//! free-form events: those published by clients and by the generic pollers.

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Number};

/// Any JSON value as a protobuf Struct: an object as it is, anything else as
/// `{"value": ...}`, since a Struct holds only objects.
pub fn to_struct_wrapped(value: serde_json::Value) -> Struct {
    match value {
        serde_json::Value::Object(map) => to_struct(map),
        other => to_struct(Map::from_iter([("value".to_owned(), other)])),
    }
}

/// A JSON object as a protobuf Struct. Numbers become doubles, as Struct requires.
pub fn to_struct(map: Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

pub fn to_value(value: serde_json::Value) -> Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    Value { kind: Some(kind) }
}

/// A protobuf Struct as a JSON object. Whole numbers print without a fraction.
pub fn from_struct(s: &Struct) -> serde_json::Value {
    // Sorted keys, so the same data always prints the same way.
    let mut fields: Vec<_> = s.fields.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    serde_json::Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.clone(), from_value(v)))
            .collect(),
    )
}

pub fn from_value(value: &Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(from_value).collect())
        }
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

/// A double as JSON: an integer when it is one (and exactly representable), null for
/// NaN and infinities, which JSON cannot hold.
fn number(n: f64) -> serde_json::Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() <= EXACT {
        serde_json::Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip() {
        let json = serde_json::json!({"b": [1, 2.5, "x", null, true], "a": {"n": -3}});
        let serde_json::Value::Object(map) = json.clone() else {
            unreachable!()
        };
        assert_eq!(from_struct(&to_struct(map)), json);
    }

    #[test]
    fn non_objects_are_wrapped_as_value() {
        let wrapped = to_struct_wrapped(serde_json::json!([1, 2]));
        assert_eq!(from_struct(&wrapped), serde_json::json!({"value": [1, 2]}));
        let object = to_struct_wrapped(serde_json::json!({"a": "b"}));
        assert_eq!(from_struct(&object), serde_json::json!({"a": "b"}));
    }

    #[test]
    fn odd_numbers() {
        assert_eq!(number(f64::NAN), serde_json::Value::Null);
        assert_eq!(number(1e300).to_string(), "1e+300");
        assert_eq!(number(-0.5).to_string(), "-0.5");
    }
}
