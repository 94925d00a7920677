//! Conversions between JSON (`serde_json`) and `google.protobuf.Struct`, the payload of
//! free-form events: those published by clients and by the generic pollers.

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Number};

use crate::wire::MAX_DATA_DEPTH;

/// JSON that nests deeper than data may (see [`MAX_DATA_DEPTH`]): no client could
/// decode the event it would make.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("objects and lists nest deeper than {MAX_DATA_DEPTH} levels, the most data may")]
pub struct TooDeep;

/// Any JSON value as a protobuf Struct: an object as it is, anything else as
/// `{"value": ...}`, since a Struct holds only objects.
pub fn to_struct_wrapped(value: serde_json::Value) -> Result<Struct, TooDeep> {
    match value {
        serde_json::Value::Object(map) => to_struct(map),
        other => to_struct(Map::from_iter([("value".to_owned(), other)])),
    }
}

/// A JSON object as a protobuf Struct, the object being data's level 1. Numbers
/// become doubles, as Struct requires; JSON has no NaN or infinity, so all are finite.
pub fn to_struct(map: Map<String, serde_json::Value>) -> Result<Struct, TooDeep> {
    struct_at(map, 1)
}

fn struct_at(map: Map<String, serde_json::Value>, level: u32) -> Result<Struct, TooDeep> {
    let fields = map
        .into_iter()
        .map(|(k, v)| Ok((k, value_at(v, level)?)))
        .collect::<Result<_, TooDeep>>()?;
    Ok(Struct { fields })
}

/// A value inside an object or list at `level`.
fn value_at(value: serde_json::Value, level: u32) -> Result<Value, TooDeep> {
    let nested = || (level < MAX_DATA_DEPTH).then_some(level + 1).ok_or(TooDeep);
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        // Without serde_json's arbitrary precision, every number reads as an f64.
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => {
            let level = nested()?;
            Kind::ListValue(ListValue {
                values: items
                    .into_iter()
                    .map(|item| value_at(item, level))
                    .collect::<Result<_, _>>()?,
            })
        }
        serde_json::Value::Object(map) => Kind::StructValue(struct_at(map, nested()?)?),
    };
    Ok(Value { kind: Some(kind) })
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
        assert_eq!(from_struct(&to_struct(map).unwrap()), json);
    }

    #[test]
    fn non_objects_are_wrapped_as_value() {
        let wrapped = to_struct_wrapped(serde_json::json!([1, 2])).unwrap();
        assert_eq!(from_struct(&wrapped), serde_json::json!({"value": [1, 2]}));
        let object = to_struct_wrapped(serde_json::json!({"a": "b"})).unwrap();
        assert_eq!(from_struct(&object), serde_json::json!({"a": "b"}));
    }

    /// `{"a": {"a": ... 1}}` with `levels` objects in all.
    fn nested_objects(levels: u32) -> serde_json::Value {
        (1..levels).fold(
            serde_json::json!({"a": 1}),
            |inner, _| serde_json::json!({ "a": inner }),
        )
    }

    #[test]
    fn json_nests_as_deep_as_data_may_and_no_deeper() {
        let at_limit = nested_objects(MAX_DATA_DEPTH);
        let converted = to_struct_wrapped(at_limit.clone()).unwrap();
        assert_eq!(from_struct(&converted), at_limit);
        assert_eq!(
            to_struct_wrapped(nested_objects(MAX_DATA_DEPTH + 1)),
            Err(TooDeep)
        );
        // A list is a level too, and so is the object a list is wrapped in.
        let mut list = serde_json::json!(1);
        for _ in 1..MAX_DATA_DEPTH {
            list = serde_json::json!([list]);
        }
        assert!(to_struct_wrapped(list.clone()).is_ok());
        assert_eq!(to_struct_wrapped(serde_json::json!([list])), Err(TooDeep));
    }

    #[test]
    fn odd_numbers() {
        assert_eq!(number(f64::NAN), serde_json::Value::Null);
        assert_eq!(number(1e300).to_string(), "1e+300");
        assert_eq!(number(-0.5).to_string(), "-0.5");
    }
}
