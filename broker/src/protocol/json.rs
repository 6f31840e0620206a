//! AMQP field values as JSON, as RabbitMQ's management API and Warren's CLI print them:
//! numbers as numbers, strings as text, byte arrays as base64.

use amq_protocol::types::{AMQPValue, FieldTable};
use base64::Engine as _;
use serde_json::{Map, Value};

/// A field table as a JSON object.
pub fn table_json(table: &FieldTable) -> Value {
    let mut map = Map::new();
    for (k, v) in table {
        map.insert(k.to_string(), value_json(v));
    }
    Value::Object(map)
}

/// One AMQP value as JSON.
pub fn value_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(f) => Value::from(f64::from(*f)),
        AMQPValue::Double(f) => Value::from(*f),
        AMQPValue::DecimalValue(d) => {
            Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => Value::String(s.to_string()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_json).collect()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => table_json(t),
        AMQPValue::ByteArray(b) => Value::String(base64(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// Standard base64 with padding; binary bodies and byte arrays travel this way in JSON.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard, padded base64; `None` if it is not that.
pub fn from_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [&b""[..], b"f", b"fo", b"foo", b"guest:guest", &[0, 255, 7]] {
            assert_eq!(from_base64(&base64(s)).as_deref(), Some(s));
        }
        assert_eq!(base64(b"guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
        assert_eq!(from_base64("not base64!"), None);
    }
}
