//! Frame decoding: the 7-byte frame header is read here so that limits apply before a frame's
//! payload is buffered; the payload itself is parsed by amq-protocol.

use amq_protocol::protocol::{parse_class, AMQPClass, BasicProperties};
use amq_protocol::types::{FieldTable, ShortString};
use bytes::{Buf, Bytes, BytesMut};

use super::nesting::{self, NestingError};
use super::FRAME_END;

/// The only protocol header Warren speaks: AMQP 0-9-1.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// A decoded inbound frame.
#[derive(Debug)]
pub enum Frame {
    /// A method frame.
    Method(u16, Box<AMQPClass>),
    /// basic.publish, the method on the publish hot path, read in place (see [`Publish`]).
    Publish(u16, Publish),
    /// basic.ack, the method on the consume hot path.
    Ack {
        channel: u16,
        delivery_tag: u64,
        multiple: bool,
    },
    /// A content header: the class, body size, what the broker needs of the properties, and
    /// the properties exactly as the publisher encoded them (re-sent verbatim on delivery, so
    /// they are never re-encoded).
    Header {
        channel: u16,
        class_id: u16,
        body_size: u64,
        properties: Props,
        raw_properties: Bytes,
    },
    /// A content body frame; the payload shares the read buffer's allocation.
    Body(u16, Bytes),
    /// A heartbeat frame, with the channel it arrived on (anything but 0 is a protocol error).
    Heartbeat(u16),
}

impl Frame {
    /// The channel the frame arrived on.
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method(c, _)
            | Frame::Publish(c, _)
            | Frame::Body(c, _)
            | Frame::Heartbeat(c) => *c,
            Frame::Header { channel, .. } | Frame::Ack { channel, .. } => *channel,
        }
    }
}

/// A basic.publish read in place: the exchange and routing key are slices of the frame's
/// payload, so a publish allocates nothing before its message is built. Equivalent to
/// amq-protocol's `basic::Publish` (a test checks both parsers agree on every input).
#[derive(Debug, Clone)]
pub struct Publish {
    /// The method payload: class, method, ticket, exchange, routing key, flags.
    payload: Bytes,
    /// Where the routing key's length octet is.
    rk_at: usize,
    /// The mandatory flag.
    pub mandatory: bool,
    /// The immediate flag (refused with 540, as RabbitMQ does).
    pub immediate: bool,
}

impl Publish {
    /// A basic.publish as a client would send it (for tests).
    #[cfg(test)]
    pub(crate) fn for_test(
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        immediate: bool,
    ) -> Self {
        let mut p = vec![0, 60, 0, 40, 0, 0, exchange.len() as u8];
        p.extend_from_slice(exchange.as_bytes());
        p.push(routing_key.len() as u8);
        p.extend_from_slice(routing_key.as_bytes());
        p.push(u8::from(mandatory) | (u8::from(immediate) << 1));
        parse_publish(Bytes::from(p)).expect("a valid basic.publish")
    }

    /// The exchange name (valid UTF-8).
    pub fn exchange(&self) -> &[u8] {
        &self.payload[7..self.rk_at]
    }

    /// The routing key (valid UTF-8).
    pub fn routing_key(&self) -> &[u8] {
        &self.payload[self.rk_at + 1..self.payload.len() - 1]
    }
}

/// Reads a basic.publish payload (class and method ids included). `None` when amq-protocol
/// would refuse it too.
fn parse_publish(payload: Bytes) -> Option<Publish> {
    let xl = *payload.get(6)? as usize;
    let rk_at = 7 + xl;
    let rl = *payload.get(rk_at)? as usize;
    let flags_at = rk_at + 1 + rl;
    if payload.len() != flags_at + 1 {
        return None;
    }
    std::str::from_utf8(&payload[7..rk_at]).ok()?;
    std::str::from_utf8(&payload[rk_at + 1..flags_at]).ok()?;
    let flags = payload[flags_at];
    Some(Publish {
        mandatory: flags & 1 != 0,
        immediate: flags & 2 != 0,
        payload,
        rk_at,
    })
}

/// What the broker needs of a message's properties. The properties travel on verbatim, so
/// only these are extracted; a message with headers has them parsed (by amq-protocol), for
/// headers exchanges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Props {
    /// `delivery-mode` (2: persistent).
    pub delivery_mode: Option<u8>,
    /// `priority`.
    pub priority: Option<u8>,
    /// `expiration`, as sent (validated when published).
    pub expiration: Option<ShortString>,
    /// `user-id`, checked against the login.
    pub user_id: Option<ShortString>,
    /// `headers`.
    pub headers: Option<FieldTable>,
}

impl Props {
    /// The fields of parsed properties.
    pub fn of(p: &BasicProperties) -> Props {
        Props {
            delivery_mode: *p.delivery_mode(),
            priority: *p.priority(),
            expiration: p.expiration().clone(),
            user_id: p.user_id().clone(),
            headers: p.headers().clone(),
        }
    }
}

/// Reads encoded basic properties (flags first). Properties without headers, the common case
/// on the publish path, are walked in place; with headers, amq-protocol parses them. `None`
/// when they do not parse, exactly when amq-protocol's parser refuses them.
pub fn scan_properties(raw: &[u8]) -> Option<Props> {
    // The headers table is parsed by amq-protocol, which recurses once per nesting level.
    nesting::check_properties(raw).ok()?;
    scan_checked_properties(raw)
}

/// [`scan_properties`] of properties whose nesting was checked.
fn scan_checked_properties(raw: &[u8]) -> Option<Props> {
    let flags = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]);
    if flags & (1 << 13) != 0 {
        return match amq_protocol::protocol::basic::parse_properties(raw) {
            Ok(([], p)) => Some(Props::of(&p)),
            _ => None,
        };
    }
    let mut at = 2;
    let mut props = Props::default();
    for bit in (2..=15).rev() {
        if flags & (1 << bit) == 0 {
            continue;
        }
        match bit {
            12 | 11 => {
                let v = *raw.get(at)?;
                at += 1;
                if bit == 12 {
                    props.delivery_mode = Some(v);
                } else {
                    props.priority = Some(v);
                }
            }
            6 => {
                raw.get(at..at + 8)?;
                at += 8;
            }
            _ => {
                let len = *raw.get(at)? as usize;
                let s = std::str::from_utf8(raw.get(at + 1..at + 1 + len)?).ok()?;
                at += 1 + len;
                match bit {
                    8 => props.expiration = Some(s.into()),
                    4 => props.user_id = Some(s.into()),
                    _ => {}
                }
            }
        }
    }
    (at == raw.len()).then_some(props)
}

/// Why bytes could not become a frame. Every variant is a connection error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame announces a size above the negotiated frame_max (501).
    #[error("frame size {size} exceeds frame_max {max}")]
    TooLarge { size: u64, max: u32 },
    /// The octet after the payload is not 0xCE (501).
    #[error("frame end octet was {0:#04x}, expected 0xce")]
    BadFrameEnd(u8),
    /// An unknown frame type octet (501).
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// A method with a class or method id Warren does not know (540).
    #[error("unknown class {class_id} method {method_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },
    /// A method field value Warren does not support, such as basic.qos prefetch_size (540).
    #[error("{what}")]
    Unsupported {
        class_id: u16,
        method_id: u16,
        what: String,
    },
    /// The payload did not parse: a bad field table, a truncated method (501, as RabbitMQ).
    #[error("cannot decode {what} frame on channel {channel}")]
    Syntax { channel: u16, what: &'static str },
    /// A field table nests tables or arrays deeper than [`nesting::MAX_NESTING`] (502).
    #[error("field table nested deeper than {max} levels in {what} frame on channel {channel}", max = nesting::MAX_NESTING)]
    TooDeep { channel: u16, what: &'static str },
}

impl DecodeError {
    /// The class and method the error is about, if any.
    pub fn method(&self) -> (u16, u16) {
        match self {
            DecodeError::UnknownMethod {
                class_id,
                method_id,
            }
            | DecodeError::Unsupported {
                class_id,
                method_id,
                ..
            } => (*class_id, *method_id),
            _ => (0, 0),
        }
    }

    /// The AMQP reply code the connection is closed with.
    pub fn reply_code(&self) -> u16 {
        match self {
            DecodeError::TooLarge { .. }
            | DecodeError::BadFrameEnd(_)
            | DecodeError::UnknownType(_) => 501,
            DecodeError::UnknownMethod { .. } | DecodeError::Unsupported { .. } => 540,
            // RabbitMQ closes with 501 "cannot decode" for arguments that do not parse.
            DecodeError::Syntax { .. } => 501,
            DecodeError::TooDeep { .. } => 502,
        }
    }
}

const KNOWN_METHODS: &[(u16, &[u16])] = &[
    (
        10,
        &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
    ),
    (20, &[10, 11, 20, 21, 40, 41]),
    (30, &[10, 11]),
    (40, &[10, 11, 20, 21, 30, 31, 40, 51]),
    (50, &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51]),
    (
        60,
        &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
    ),
    (85, &[10, 11]),
    (90, &[10, 11, 20, 21, 30, 31]),
];

fn known_method(class_id: u16, method_id: u16) -> bool {
    KNOWN_METHODS
        .iter()
        .any(|(c, ms)| *c == class_id && ms.contains(&method_id))
}

/// Takes one frame off the front of `buf`. `Ok(None)` means more bytes are needed (a partial
/// frame is an expected state). A frame larger than `frame_max` is refused as soon as its header
/// is seen, so a client cannot make the broker buffer more than `frame_max` bytes.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, DecodeError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if !matches!(kind, 1 | 2 | 3 | 8) {
        return Err(DecodeError::UnknownType(kind));
    }
    if (size as u64) + 8 > frame_max as u64 {
        return Err(DecodeError::TooLarge {
            size: size as u64 + 8,
            max: frame_max,
        });
    }
    if buf.len() < size + 8 {
        buf.reserve(size + 8 - buf.len());
        return Ok(None);
    }
    if buf[7 + size] != FRAME_END {
        return Err(DecodeError::BadFrameEnd(buf[7 + size]));
    }
    buf.advance(7);
    let payload = buf.split_to(size).freeze();
    buf.advance(1);
    let frame = match kind {
        1 => {
            if payload.len() < 4 {
                return Err(DecodeError::Syntax {
                    channel,
                    what: "method",
                });
            }
            let class_id = u16::from_be_bytes([payload[0], payload[1]]);
            let method_id = u16::from_be_bytes([payload[2], payload[3]]);
            if !known_method(class_id, method_id) {
                return Err(DecodeError::UnknownMethod {
                    class_id,
                    method_id,
                });
            }
            // amq-protocol drops basic.qos prefetch_size; RabbitMQ refuses anything but 0.
            if (class_id, method_id) == (60, 10) && payload.len() >= 8 {
                let size = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                if size != 0 {
                    return Err(DecodeError::Unsupported {
                        class_id,
                        method_id,
                        what: format!("prefetch_size!=0 ({size})"),
                    });
                }
            }
            match (class_id, method_id) {
                (60, 40) => {
                    return match parse_publish(payload) {
                        Some(p) => Ok(Some(Frame::Publish(channel, p))),
                        None => Err(DecodeError::Syntax {
                            channel,
                            what: "method",
                        }),
                    }
                }
                (60, 80) if payload.len() == 13 => {
                    return Ok(Some(Frame::Ack {
                        channel,
                        delivery_tag: u64::from_be_bytes(
                            payload[4..12].try_into().expect("8 bytes"),
                        ),
                        multiple: payload[12] & 1 != 0,
                    }))
                }
                _ => {}
            }
            match nesting::check_method(class_id, method_id, &payload) {
                Ok(()) => {}
                Err(NestingError::TooDeep) => {
                    return Err(DecodeError::TooDeep {
                        channel,
                        what: "method",
                    })
                }
                Err(NestingError::Malformed) => {
                    return Err(DecodeError::Syntax {
                        channel,
                        what: "method",
                    })
                }
            }
            match parse_class(&payload[..]) {
                Ok(([], class)) => Frame::Method(channel, Box::new(class)),
                _ => {
                    return Err(DecodeError::Syntax {
                        channel,
                        what: "method",
                    })
                }
            }
        }
        2 => {
            // class (2), weight (2) and body size (8) precede the properties.
            let properties = match payload.get(12..).map(nesting::check_properties) {
                Some(Err(NestingError::TooDeep)) => {
                    return Err(DecodeError::TooDeep {
                        channel,
                        what: "content header",
                    })
                }
                // Malformed tables are refused without handing them to amq-protocol.
                Some(Ok(())) if payload.len() >= 14 => scan_checked_properties(&payload[12..]),
                _ => None,
            };
            match properties {
                Some(properties) => Frame::Header {
                    channel,
                    class_id: u16::from_be_bytes([payload[0], payload[1]]),
                    body_size: u64::from_be_bytes(payload[4..12].try_into().expect("8 bytes")),
                    properties,
                    raw_properties: payload.slice(12..),
                },
                None => {
                    return Err(DecodeError::Syntax {
                        channel,
                        what: "content header",
                    })
                }
            }
        }
        3 => Frame::Body(channel, payload),
        _ => Frame::Heartbeat(channel),
    };
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::write_method;
    use amq_protocol::protocol::channel;

    fn encoded_open() -> Vec<u8> {
        let mut out = Vec::new();
        write_method(
            &mut out,
            3,
            &AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
        out
    }

    #[test]
    fn round_trips_a_method() {
        let mut buf = BytesMut::from(&encoded_open()[..]);
        let frame = decode_frame(&mut buf, 131072).unwrap().unwrap();
        assert!(matches!(frame, Frame::Method(3, _)));
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let bytes = encoded_open();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(decode_frame(&mut buf, 131072).unwrap().map(|_| ()), None);
        }
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 1, 0, 0][..]);
        assert_eq!(
            decode_frame(&mut buf, 4096).unwrap_err(),
            DecodeError::TooLarge {
                size: 65544,
                max: 4096
            }
        );
    }

    #[test]
    fn wrong_frame_end_is_a_frame_error() {
        let mut bytes = encoded_open();
        *bytes.last_mut().unwrap() = 0;
        let err = decode_frame(&mut BytesMut::from(&bytes[..]), 131072).unwrap_err();
        assert_eq!(err.reply_code(), 501);
    }

    #[test]
    fn unknown_method_is_not_implemented() {
        let bytes = [1u8, 0, 1, 0, 0, 0, 4, 0, 20, 0, 99, 0xCE];
        let err = decode_frame(&mut BytesMut::from(&bytes[..]), 131072).unwrap_err();
        assert_eq!(err.reply_code(), 540);
    }

    /// A tiny deterministic generator for the agreement tests below.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn text(&mut self) -> String {
            let n = self.below(12) as usize;
            (0..n)
                .map(|_| char::from(b'a' + self.below(26) as u8))
                .collect()
        }
    }

    fn random_properties(rng: &mut Rng) -> BasicProperties {
        let mut p = BasicProperties::default();
        macro_rules! maybe {
            ($set:ident, $v:expr) => {
                if rng.below(3) == 0 {
                    p = p.$set($v);
                }
            };
        }
        maybe!(with_content_type, rng.text().into());
        maybe!(with_content_encoding, rng.text().into());
        if rng.below(4) == 0 {
            let mut h = FieldTable::default();
            h.insert(
                rng.text().into(),
                amq_protocol::types::AMQPValue::LongString(rng.text().into()),
            );
            p = p.with_headers(h);
        }
        maybe!(with_delivery_mode, rng.below(3) as u8);
        maybe!(with_priority, rng.below(10) as u8);
        maybe!(with_correlation_id, rng.text().into());
        maybe!(with_reply_to, rng.text().into());
        maybe!(with_expiration, rng.below(100_000).to_string().into());
        maybe!(with_message_id, rng.text().into());
        maybe!(with_timestamp, rng.next());
        maybe!(with_type, rng.text().into());
        maybe!(with_user_id, rng.text().into());
        maybe!(with_app_id, rng.text().into());
        maybe!(with_cluster_id, rng.text().into());
        p
    }

    /// amq-protocol's verdict on encoded properties: parsed, with nothing left over.
    fn reference(raw: &[u8]) -> Option<Props> {
        match amq_protocol::protocol::basic::parse_properties(raw) {
            Ok(([], p)) => Some(Props::of(&p)),
            _ => None,
        }
    }

    #[test]
    fn properties_scan_agrees_with_amq_protocol() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let p = random_properties(&mut rng);
            let raw = crate::protocol::encode_properties(&p);
            assert_eq!(scan_properties(&raw), Some(Props::of(&p)), "{p:?}");
            // Damaged encodings: both parsers refuse, or both read the same thing.
            let mut bad = raw.to_vec();
            match rng.below(3) {
                0 => bad.truncate(rng.below(bad.len() as u64 + 1) as usize),
                1 => bad.push(rng.below(256) as u8),
                _ => {
                    let at = rng.below(bad.len() as u64) as usize;
                    bad[at] = rng.below(256) as u8;
                }
            }
            assert_eq!(scan_properties(&bad), reference(&bad), "{bad:?}");
        }
    }

    fn encoded(method: &AMQPClass) -> BytesMut {
        let mut out = Vec::new();
        write_method(&mut out, 5, method);
        BytesMut::from(&out[..])
    }

    #[test]
    fn publish_fast_path_agrees_with_amq_protocol() {
        use amq_protocol::protocol::basic;
        let mut rng = Rng(77);
        for _ in 0..2000 {
            let method = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: rng.text().into(),
                routing_key: rng.text().into(),
                mandatory: rng.below(2) == 0,
                immediate: rng.below(2) == 0,
            }));
            let AMQPClass::Basic(basic::AMQPMethod::Publish(want)) = &method else {
                unreachable!()
            };
            match decode_frame(&mut encoded(&method), 131072).unwrap() {
                Some(Frame::Publish(5, got)) => {
                    assert_eq!(got.exchange(), want.exchange.as_str().as_bytes());
                    assert_eq!(got.routing_key(), want.routing_key.as_str().as_bytes());
                    assert_eq!(
                        (got.mandatory, got.immediate),
                        (want.mandatory, want.immediate)
                    );
                }
                other => panic!("{other:?}"),
            }
            // Damaged payloads (frame size kept consistent): same verdict as amq-protocol.
            let buf = encoded(&method);
            let mut payload = buf[7..buf.len() - 1].to_vec();
            match rng.below(2) {
                0 => payload.truncate(4 + rng.below(payload.len() as u64 - 3) as usize),
                _ => {
                    let at = 4 + rng.below(payload.len() as u64 - 4) as usize;
                    payload[at] = rng.below(256) as u8;
                }
            }
            let ours = parse_publish(Bytes::from(payload.clone())).is_some();
            let theirs = matches!(parse_class(&payload[..]), Ok(([], _)));
            assert_eq!(ours, theirs, "{payload:?}");
        }
    }

    #[test]
    fn ack_fast_path_agrees_with_amq_protocol() {
        use amq_protocol::protocol::basic;
        for (tag, multiple) in [(1, false), (u64::MAX, true), (0, true), (1 << 40, false)] {
            let method = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: tag,
                multiple,
            }));
            match decode_frame(&mut encoded(&method), 131072).unwrap() {
                Some(Frame::Ack {
                    channel: 5,
                    delivery_tag,
                    multiple: m,
                }) => assert_eq!((delivery_tag, m), (tag, multiple)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn truncated_method_is_a_frame_error() {
        // queue.declare with no arguments at all
        let bytes = [1u8, 0, 1, 0, 0, 0, 4, 0, 50, 0, 10, 0xCE];
        let err = decode_frame(&mut BytesMut::from(&bytes[..]), 131072).unwrap_err();
        assert_eq!(err.reply_code(), 501);
    }
}
