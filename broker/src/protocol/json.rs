//! AMQP field values as JSON, as RabbitMQ's management API and Warren's CLI print them:
//! numbers as numbers, strings as text, byte arrays as base64.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
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

/// A JSON object as a field table, typed as RabbitMQ's management API types arguments:
/// integers as signed 64-bit, other numbers as doubles, strings as long strings, lists as
/// arrays, objects as tables, `null` as void. `None` if `v` is not an object.
pub fn json_table(v: &Value) -> Option<FieldTable> {
    let Value::Object(map) = v else { return None };
    let mut table = FieldTable::default();
    for (k, v) in map {
        table.insert(k.as_str().into(), json_value(v));
    }
    Some(table)
}

/// One JSON value as an AMQP value (see [`json_table`]).
pub fn json_value(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        Value::Array(a) => {
            AMQPValue::FieldArray(a.iter().map(json_value).collect::<Vec<_>>().into())
        }
        Value::Object(_) => AMQPValue::FieldTable(json_table(v).unwrap_or_default()),
    }
}

/// A message's properties as RabbitMQ's management API writes them (`rabbit_mgmt_format`):
/// the ones that are set, by their AMQP names, `type` for the type, headers as an object.
pub fn properties_json(p: &BasicProperties) -> Map<String, Value> {
    let mut m = Map::new();
    let mut text = |k: &str, v: &Option<ShortString>| {
        if let Some(v) = v {
            m.insert(k.into(), Value::String(v.to_string()));
        }
    };
    text("content_type", p.content_type());
    text("content_encoding", p.content_encoding());
    text("correlation_id", p.correlation_id());
    text("reply_to", p.reply_to());
    text("expiration", p.expiration());
    text("message_id", p.message_id());
    text("type", p.kind());
    text("user_id", p.user_id());
    text("app_id", p.app_id());
    text("cluster_id", p.cluster_id());
    if let Some(n) = p.delivery_mode() {
        m.insert("delivery_mode".into(), Value::from(*n));
    }
    if let Some(n) = p.priority() {
        m.insert("priority".into(), Value::from(*n));
    }
    if let Some(t) = p.timestamp() {
        m.insert("timestamp".into(), Value::from(*t));
    }
    if let Some(h) = p.headers() {
        m.insert("headers".into(), table_json(h));
    }
    m
}

/// Properties from a JSON object written as [`properties_json`] writes them; an error names
/// the field that is not what it should be.
pub fn json_properties(v: &Value) -> Result<BasicProperties, String> {
    let mut p = BasicProperties::default();
    let map = match v {
        Value::Object(m) => m,
        // RabbitMQ writes empty properties as [].
        Value::Array(a) if a.is_empty() => return Ok(p),
        Value::Null => return Ok(p),
        _ => return Err("properties must be an object".into()),
    };
    for (k, v) in map {
        let text = || -> Result<ShortString, String> {
            match v {
                Value::String(s) if s.len() <= 255 => Ok(s.as_str().into()),
                _ => Err(format!(
                    "property '{k}' must be a string of at most 255 bytes"
                )),
            }
        };
        let small = || -> Result<u8, String> {
            v.as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| format!("property '{k}' must be an integer from 0 to 255"))
        };
        p = match k.as_str() {
            "content_type" => p.with_content_type(text()?),
            "content_encoding" => p.with_content_encoding(text()?),
            "correlation_id" => p.with_correlation_id(text()?),
            "reply_to" => p.with_reply_to(text()?),
            "expiration" => p.with_expiration(text()?),
            "message_id" => p.with_message_id(text()?),
            "type" => p.with_type(text()?),
            "user_id" => p.with_user_id(text()?),
            "app_id" => p.with_app_id(text()?),
            "cluster_id" => p.with_cluster_id(text()?),
            "delivery_mode" => p.with_delivery_mode(small()?),
            "priority" => p.with_priority(small()?),
            "timestamp" => p.with_timestamp(
                v.as_u64()
                    .ok_or_else(|| format!("property '{k}' must be a non-negative integer"))?,
            ),
            "headers" => p.with_headers(
                json_table(v).ok_or_else(|| format!("property '{k}' must be an object"))?,
            ),
            other => return Err(format!("unknown property '{other}'")),
        };
    }
    Ok(p)
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

    #[test]
    fn json_tables_round_trip_as_rabbitmq_types_them() {
        let v = serde_json::json!({"x-max-length": 10, "ratio": 0.5, "name": "a", "on": true,
            "list": [1, "b"], "nested": {"k": -3}, "none": null});
        let t = json_table(&v).unwrap();
        assert_eq!(
            t.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert_eq!(t.inner().get("ratio"), Some(&AMQPValue::Double(0.5)));
        assert_eq!(table_json(&t), v);
        assert_eq!(json_table(&serde_json::json!([1])), None);
    }

    #[test]
    fn properties_round_trip_and_bad_ones_are_named() {
        let v = serde_json::json!({"content_type": "text/plain", "delivery_mode": 2,
            "priority": 5, "headers": {"a": 1}, "message_id": "m1", "timestamp": 7, "type": "t"});
        let p = json_properties(&v).unwrap();
        assert_eq!(Value::Object(properties_json(&p)), v);
        assert!(json_properties(&serde_json::json!([])).is_ok());
        let e = json_properties(&serde_json::json!({"delivery_mode": "x"})).unwrap_err();
        assert!(e.contains("delivery_mode"), "{e}");
        assert!(json_properties(&serde_json::json!({"nope": 1})).is_err());
    }
}
