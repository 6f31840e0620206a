//! Frame decoding: the 7-byte frame header is read here so that limits apply before a frame's
//! payload is buffered; the payload itself is parsed by amq-protocol.

use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::protocol::{parse_class, AMQPClass, BasicProperties};
use bytes::{Buf, Bytes, BytesMut};

use super::FRAME_END;

/// The only protocol header Warren speaks: AMQP 0-9-1.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// A decoded inbound frame.
#[derive(Debug)]
pub enum Frame {
    /// A method frame.
    Method(u16, Box<AMQPClass>),
    /// A content header: the class, body size, parsed properties, and the properties exactly as
    /// the publisher encoded them (re-sent verbatim on delivery, so they are never re-encoded).
    Header {
        channel: u16,
        class_id: u16,
        body_size: u64,
        properties: Box<BasicProperties>,
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
            Frame::Method(c, _) | Frame::Body(c, _) | Frame::Heartbeat(c) => *c,
            Frame::Header { channel, .. } => *channel,
        }
    }
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
        2 => match parse_content_header(&payload[..]) {
            Ok(([], header)) => Frame::Header {
                channel,
                class_id: header.class_id,
                body_size: header.body_size,
                properties: Box::new(header.properties),
                // class (2), weight (2) and body size (8) precede the properties.
                raw_properties: payload.slice(12..),
            },
            _ => {
                return Err(DecodeError::Syntax {
                    channel,
                    what: "content header",
                })
            }
        },
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

    #[test]
    fn truncated_method_is_a_frame_error() {
        // queue.declare with no arguments at all
        let bytes = [1u8, 0, 1, 0, 0, 0, 4, 0, 50, 0, 10, 0xCE];
        let err = decode_frame(&mut BytesMut::from(&bytes[..]), 131072).unwrap_err();
        assert_eq!(err.reply_code(), 501);
    }
}
