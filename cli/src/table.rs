//! AMQP field tables from the command line, and back out as JSON.
//!
//! `--arg x-max-length=100` and `-H key=value` are parsed here. Arguments guess their type
//! (integers are signed 64-bit "long", as RabbitMQ's management tools send them; `true`/`false`
//! are booleans; anything else is a string); headers are strings. Either can force a type with
//! `key:type=value`, where type is str, long (i64), int (i32), short (i16), byte (i8), bool or
//! double. An unknown type is refused: in `--arg`, whatever follows a ':' in the key is a type
//! (x-argument names hold no colons); in headers, keys may hold colons (`urn:thing=1`), but a
//! suffix that reads as a misspelt type (`:bytes`, `:integer`) is refused all the same.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// How a value without an explicit type is read.
#[derive(Clone, Copy)]
pub enum Guess {
    /// x-arguments: integers and booleans are recognised.
    Typed,
    /// Headers: always a string.
    Text,
}

/// One `key[:type]=value` entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The field name.
    pub key: ShortString,
    /// The typed value.
    pub value: AMQPValue,
}

/// Parses `key[:type]=value` for `--arg`.
pub fn parse_arg(s: &str) -> Result<Entry, String> {
    parse_entry(s, Guess::Typed)
}

/// Parses `key[:type]=value` for `-H/--header`.
pub fn parse_header(s: &str) -> Result<Entry, String> {
    parse_entry(s, Guess::Text)
}

fn parse_entry(s: &str, guess: Guess) -> Result<Entry, String> {
    let (lhs, raw) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE or KEY:TYPE=VALUE, got '{s}'"))?;
    // A ':' only introduces a type when what follows is a type name, so keys may hold colons.
    let (key, forced) = match lhs.rsplit_once(':') {
        Some((key, ty)) if is_type_name(ty) => (key, Some(ty)),
        Some((_, ty)) if matches!(guess, Guess::Typed) || looks_like_a_type(ty) => {
            return Err(format!(
                "unknown type '{ty}' in '{s}'; the types are {TYPES} (a key that holds ':' \
                 takes a type too: KEY:str=VALUE)"
            ))
        }
        _ => (lhs, None),
    };
    if key.is_empty() {
        return Err(format!("missing key before '=' in '{s}'"));
    }
    let key =
        ShortString::try_new(key).map_err(|_| format!("key '{key}' is longer than 255 bytes"))?;
    let value = match forced {
        Some(ty) => typed(ty, raw)?,
        None => guessed(raw, guess),
    };
    Ok(Entry { key, value })
}

/// The type names, for messages.
const TYPES: &str = "str, long, int, short, byte, bool, double";

/// Type names of other tools and languages, taken for a typo of ours rather than part of a key.
fn looks_like_a_type(ty: &str) -> bool {
    matches!(
        ty.to_ascii_lowercase().as_str(),
        "bytes"
            | "integer"
            | "float"
            | "number"
            | "boolean"
            | "text"
            | "longstr"
            | "i8"
            | "i16"
            | "i32"
            | "i64"
            | "u8"
            | "u16"
            | "u32"
            | "u64"
            | "f32"
            | "f64"
    )
}

fn is_type_name(ty: &str) -> bool {
    matches!(
        ty,
        "str" | "string" | "long" | "int" | "short" | "byte" | "bool" | "double"
    )
}

fn guessed(raw: &str, guess: Guess) -> AMQPValue {
    if let Guess::Typed = guess {
        if let Ok(n) = raw.parse::<i64>() {
            return AMQPValue::LongLongInt(n);
        }
        match raw {
            "true" => return AMQPValue::Boolean(true),
            "false" => return AMQPValue::Boolean(false),
            _ => {}
        }
    }
    AMQPValue::LongString(LongString::from(raw))
}

fn typed(ty: &str, raw: &str) -> Result<AMQPValue, String> {
    let bad = |what: &str| format!("'{raw}' is not {what}");
    Ok(match ty {
        "str" | "string" => AMQPValue::LongString(LongString::from(raw)),
        "long" => AMQPValue::LongLongInt(raw.parse().map_err(|_| bad("a 64-bit integer"))?),
        "int" => AMQPValue::LongInt(raw.parse().map_err(|_| bad("a 32-bit integer"))?),
        "short" => AMQPValue::ShortInt(raw.parse().map_err(|_| bad("a 16-bit integer"))?),
        "byte" => AMQPValue::ShortShortInt(raw.parse().map_err(|_| bad("an 8-bit integer"))?),
        "bool" => AMQPValue::Boolean(raw.parse().map_err(|_| bad("true or false"))?),
        "double" => AMQPValue::Double(raw.parse().map_err(|_| bad("a number"))?),
        _ => unreachable!("is_type_name admitted '{ty}'"),
    })
}

/// Builds a field table; a key given twice keeps its last value.
pub fn to_table(entries: &[Entry]) -> FieldTable {
    let mut table = FieldTable::default();
    for e in entries {
        table.insert(e.key.clone(), e.value.clone());
    }
    table
}

pub use warren_broker::protocol::json::{base64, table_json};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_longs_and_words_are_strings() {
        let e = parse_arg("x-max-length=100").unwrap();
        assert_eq!(e.key.as_str(), "x-max-length");
        assert_eq!(e.value, AMQPValue::LongLongInt(100));
        let e = parse_arg("x-dead-letter-exchange=dlx").unwrap();
        assert_eq!(e.value, AMQPValue::LongString("dlx".into()));
        assert_eq!(
            parse_arg("x-single-active-consumer=true").unwrap().value,
            AMQPValue::Boolean(true)
        );
        assert_eq!(
            parse_arg("x-overflow=reject-publish").unwrap().value,
            AMQPValue::LongString("reject-publish".into())
        );
    }

    #[test]
    fn a_type_can_be_forced() {
        assert_eq!(
            parse_arg("x-max-length:str=100").unwrap().value,
            AMQPValue::LongString("100".into())
        );
        assert_eq!(
            parse_arg("x-max-priority:byte=10").unwrap().value,
            AMQPValue::ShortShortInt(10)
        );
        assert_eq!(
            parse_header("retries:int=3").unwrap().value,
            AMQPValue::LongInt(3)
        );
        assert!(parse_arg("n:int=lots").unwrap_err().contains("32-bit"));
    }

    #[test]
    fn headers_are_strings_and_keys_may_hold_colons() {
        assert_eq!(
            parse_header("n=1").unwrap().value,
            AMQPValue::LongString("1".into())
        );
        let e = parse_header("urn:thing=a=b").unwrap();
        assert_eq!(e.key.as_str(), "urn:thing");
        assert_eq!(e.value, AMQPValue::LongString("a=b".into()));
    }

    #[test]
    fn unknown_types_are_refused() {
        let err = parse_arg("x-max-priority:bytes=10").unwrap_err();
        assert!(err.contains("unknown type 'bytes'"), "{err}");
        assert!(parse_arg("x-max-priority:whatever=10").is_err());
        assert!(parse_header("retries:integer=3").is_err());
        let e = parse_arg("a:b:str=1").unwrap();
        assert_eq!(e.key.as_str(), "a:b");
    }

    #[test]
    fn malformed_entries_are_refused() {
        assert!(parse_arg("novalue").is_err());
        assert!(parse_arg("=1").is_err());
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }
}
