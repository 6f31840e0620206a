//! A bound on how deeply field tables and arrays nest, checked on the raw bytes before
//! amq-protocol parses them. amq-protocol's parser (and every walk over a parsed table:
//! validating, cloning, encoding, dropping) recurses once per level, so a small frame of
//! tables nested in tables would overflow a worker's stack and abort the process. This scan
//! is iterative and allocates nothing; anything deeper than [`MAX_NESTING`] is refused.

/// The deepest nesting of tables and arrays accepted, counting the outermost table as 1.
/// RabbitMQ's own headers need 4 (`x-death`: table, array, table, array of routing keys);
/// no client needs more than a handful.
pub const MAX_NESTING: usize = 32;

/// Why a table was refused by the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestingError {
    /// Tables or arrays nest deeper than [`MAX_NESTING`].
    TooDeep,
    /// The bytes are not a field table (amq-protocol would refuse them too).
    Malformed,
}

/// Checks the field table that starts at `buf[0]` (its 4-byte length first) and returns the
/// bytes it takes.
pub fn check_table(buf: &[u8]) -> Result<usize, NestingError> {
    check_value(b'F', buf)
}

/// Checks a table given without its length prefix (an AMQPLAIN response).
pub fn check_table_body(body: &[u8]) -> Result<(), NestingError> {
    let mut ends = [0usize; MAX_NESTING];
    ends[0] = body.len();
    let mut kinds = [b'F'; MAX_NESTING];
    scan(body, 0, &mut ends, &mut kinds, 1)
}

/// Checks one value of type `kind` (a field type octet) at the start of `buf` and returns
/// its encoded size.
fn check_value(kind: u8, buf: &[u8]) -> Result<usize, NestingError> {
    match kind {
        b'F' | b'A' => {
            let len = u32_at(buf, 0)? as usize;
            let end = 4usize.checked_add(len).ok_or(NestingError::Malformed)?;
            if end > buf.len() {
                return Err(NestingError::Malformed);
            }
            let mut ends = [0usize; MAX_NESTING];
            let mut kinds = [0u8; MAX_NESTING];
            ends[0] = end;
            kinds[0] = kind;
            scan(buf, 4, &mut ends, &mut kinds, 1)?;
            Ok(end)
        }
        _ => scalar_size(kind, buf),
    }
}

/// Walks the entries of the open containers (`ends[..depth]`, innermost last) from `at`.
fn scan(
    buf: &[u8],
    mut at: usize,
    ends: &mut [usize; MAX_NESTING],
    kinds: &mut [u8; MAX_NESTING],
    mut depth: usize,
) -> Result<(), NestingError> {
    while depth > 0 {
        let end = ends[depth - 1];
        if at == end {
            depth -= 1;
            continue;
        }
        if at > end {
            return Err(NestingError::Malformed);
        }
        if kinds[depth - 1] == b'F' {
            // A table entry starts with its key, a short string.
            let key = *buf.get(at).ok_or(NestingError::Malformed)? as usize;
            at += 1 + key;
        }
        let kind = *buf.get(at).ok_or(NestingError::Malformed)?;
        at += 1;
        let rest = buf.get(at..end).ok_or(NestingError::Malformed)?;
        if matches!(kind, b'F' | b'A') {
            if depth == MAX_NESTING {
                return Err(NestingError::TooDeep);
            }
            let len = u32_at(rest, 0)? as usize;
            if len > rest.len() - 4 {
                return Err(NestingError::Malformed);
            }
            at += 4;
            ends[depth] = at + len;
            kinds[depth] = kind;
            depth += 1;
        } else {
            at += scalar_size(kind, rest)?;
        }
    }
    Ok(())
}

/// The encoded size of a value that holds no other values (type octet excluded).
fn scalar_size(kind: u8, buf: &[u8]) -> Result<usize, NestingError> {
    let size = match kind {
        b'V' => 0,
        b't' | b'b' | b'B' => 1,
        b's' | b'U' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'D' => 5,
        b'L' | b'l' | b'd' | b'T' => 8,
        b'S' | b'x' => 4 + u32_at(buf, 0)? as usize,
        _ => return Err(NestingError::Malformed),
    };
    if size > buf.len() {
        return Err(NestingError::Malformed);
    }
    Ok(size)
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, NestingError> {
    buf.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(NestingError::Malformed)
}

/// What comes before a method's field table, after the class and method ids.
#[derive(Clone, Copy)]
enum Field {
    /// An octet (a version number, or a byte of bit flags).
    Octet,
    /// A short integer (the deprecated ticket).
    Short,
    /// A short string.
    ShortStr,
}

/// The methods whose arguments hold a field table (every one amq-protocol parses one for),
/// with the fields that come before the table.
fn table_offset(
    class_id: u16,
    method_id: u16,
    payload: &[u8],
) -> Option<Result<usize, NestingError>> {
    use Field::*;
    let before: &[Field] = match (class_id, method_id) {
        (10, 10) => &[Octet, Octet],                     // connection.start
        (10, 11) => &[],                                 // connection.start-ok
        (40, 10) => &[Short, ShortStr, ShortStr, Octet], // exchange.declare
        (40, 30) | (40, 40) => &[Short, ShortStr, ShortStr, ShortStr, Octet], // exchange.(un)bind
        (50, 10) => &[Short, ShortStr, Octet],           // queue.declare
        (50, 20) => &[Short, ShortStr, ShortStr, ShortStr, Octet], // queue.bind
        (50, 50) => &[Short, ShortStr, ShortStr, ShortStr], // queue.unbind
        (60, 20) => &[Short, ShortStr, ShortStr, Octet], // basic.consume
        _ => return None,
    };
    let mut at = 4;
    for field in before {
        at += match field {
            Octet => 1,
            Short => 2,
            ShortStr => match payload.get(at) {
                Some(len) => 1 + *len as usize,
                None => return Some(Err(NestingError::Malformed)),
            },
        };
    }
    Some(Ok(at))
}

/// Checks the field table in a method payload (class and method ids first), if the method
/// has one.
pub fn check_method(class_id: u16, method_id: u16, payload: &[u8]) -> Result<(), NestingError> {
    match table_offset(class_id, method_id, payload) {
        None => Ok(()),
        Some(at) => {
            let at = at?;
            check_table(payload.get(at..).ok_or(NestingError::Malformed)?).map(|_| ())
        }
    }
}

/// Checks the headers table of encoded basic properties (flags first), if they have one.
pub fn check_properties(raw: &[u8]) -> Result<(), NestingError> {
    let flags = match raw {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => return Err(NestingError::Malformed),
    };
    if flags & (1 << 13) == 0 {
        return Ok(());
    }
    let mut at = 2;
    // content-type and content-encoding, short strings, come before the headers.
    for bit in [15, 14] {
        if flags & (1 << bit) != 0 {
            at += 1 + *raw.get(at).ok_or(NestingError::Malformed)? as usize;
        }
    }
    check_table(raw.get(at..).ok_or(NestingError::Malformed)?).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::WriteContext;
    use amq_protocol::types::generation::gen_field_table;
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

    /// A table `levels` deep: {"a": {"a": ... {} }}, built as bytes (never as a nested
    /// value, which would recurse to drop).
    fn nested_bytes(levels: usize, array: bool) -> Vec<u8> {
        // Innermost first: an empty table.
        let mut inner: Vec<u8> = 0u32.to_be_bytes().to_vec();
        for _ in 1..levels {
            let mut entry = Vec::with_capacity(inner.len() + 8);
            if array {
                entry.push(b'F');
            } else {
                entry.extend_from_slice(&[1, b'a', b'F']);
            }
            entry.extend_from_slice(&inner);
            let mut outer = (entry.len() as u32).to_be_bytes().to_vec();
            outer.extend_from_slice(&entry);
            if array {
                // Wrap as a table holding the array.
                let mut t = vec![1, b'a', b'A'];
                t.extend_from_slice(&outer);
                let mut o = (t.len() as u32).to_be_bytes().to_vec();
                o.extend_from_slice(&t);
                inner = o;
            } else {
                inner = outer;
            }
        }
        inner
    }

    fn encoded(table: &FieldTable) -> Vec<u8> {
        let ctx = gen_field_table(table)(WriteContext::from(Vec::new()));
        ctx.expect("encoding a table into a Vec").write
    }

    #[test]
    fn shallow_tables_pass_and_report_their_size() {
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::LongLongInt(7));
        inner.insert("s".into(), AMQPValue::LongString(LongString::from("x")));
        let mut t = FieldTable::default();
        t.insert("t".into(), AMQPValue::FieldTable(inner.clone()));
        t.insert(
            "a".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::FieldTable(inner),
                AMQPValue::Boolean(true),
                AMQPValue::Void,
                AMQPValue::DecimalValue(amq_protocol::types::DecimalValue { scale: 1, value: 2 }),
            ])),
        );
        let bytes = encoded(&t);
        assert_eq!(check_table(&bytes), Ok(bytes.len()));
    }

    #[test]
    fn the_limit_is_exact() {
        let ok = nested_bytes(MAX_NESTING, false);
        assert_eq!(check_table(&ok), Ok(ok.len()));
        assert_eq!(
            check_table(&nested_bytes(MAX_NESTING + 1, false)),
            Err(NestingError::TooDeep)
        );
        assert_eq!(
            check_table(&nested_bytes(100_000, false)),
            Err(NestingError::TooDeep)
        );
        assert_eq!(
            check_table(&nested_bytes(50_000, true)),
            Err(NestingError::TooDeep)
        );
    }

    #[test]
    fn agrees_with_amq_protocol_on_what_parses() {
        // Truncations of a valid table: whatever amq-protocol refuses, the scan refuses.
        let mut inner = FieldTable::default();
        inner.insert("k".into(), AMQPValue::LongString(LongString::from("value")));
        let mut t = FieldTable::default();
        t.insert("t".into(), AMQPValue::FieldTable(inner));
        t.insert("i".into(), AMQPValue::LongInt(-3));
        let bytes = encoded(&t);
        for cut in 0..bytes.len() {
            let mut b = bytes[..cut].to_vec();
            if b.len() >= 4 {
                b[..4].copy_from_slice(&((cut - 4) as u32).to_be_bytes());
            }
            let theirs = amq_protocol::types::parsing::parse_field_table(&b[..]).is_ok();
            let ours = check_table(&b).is_ok();
            assert!(
                ours || !theirs,
                "cut {cut}: amq-protocol accepts what the scan refuses"
            );
        }
    }

    #[test]
    fn table_bodies_are_checked_too() {
        let deep = nested_bytes(1000, false);
        assert_eq!(check_table_body(&deep[4..]), Err(NestingError::TooDeep));
        let ok = nested_bytes(3, false);
        assert_eq!(check_table_body(&ok[4..]), Ok(()));
    }
}
