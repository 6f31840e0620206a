//! Frame encoding: frames are appended to one output buffer so that a connection writes many
//! frames with one syscall. Method and property encoding is amq-protocol's.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::gen_properties;
use amq_protocol::protocol::{gen_class, AMQPClass, BasicProperties};
use bytes::Bytes;

use super::{FRAME_END, FRAME_OVERHEAD};

fn frame_start(out: &mut Vec<u8>, kind: u8, channel: u16) -> usize {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    let size_at = out.len();
    out.extend_from_slice(&[0; 4]);
    size_at
}

fn frame_finish(out: &mut Vec<u8>, size_at: usize) {
    let size = (out.len() - size_at - 4) as u32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out.push(FRAME_END);
}

/// Appends a method frame.
pub fn write_method(out: &mut Vec<u8>, channel: u16, method: &AMQPClass) {
    let size_at = frame_start(out, 1, channel);
    let ctx = gen_class(method)(WriteContext::from(std::mem::take(out)));
    // Writing into a Vec cannot run out of room; a failure here would be a codec bug.
    *out = ctx.expect("encoding a method into a Vec").write;
    frame_finish(out, size_at);
}

/// Appends a content header frame (with already-encoded properties) and the body frames, each
/// body frame at most `frame_max` bytes long.
pub fn write_content(
    out: &mut Vec<u8>,
    channel: u16,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    let size_at = frame_start(out, 2, channel);
    out.extend_from_slice(&60u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(raw_properties);
    frame_finish(out, size_at);
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for part in body.chunks(chunk) {
        out.reserve(part.len() + FRAME_OVERHEAD);
        out.push(3);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
        out.push(FRAME_END);
    }
}

/// Appends a basic.deliver method frame. This is the one method on the delivery hot path, so
/// it is written directly instead of building an owned `basic::Deliver` (three string copies)
/// for amq-protocol's generic encoder; a test checks the bytes are identical to amq-protocol's.
pub fn write_deliver(
    out: &mut Vec<u8>,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) {
    let size_at = frame_start(out, 1, channel);
    out.extend_from_slice(&[0, 60, 0, 60]);
    short_string(out, consumer_tag);
    out.extend_from_slice(&delivery_tag.to_be_bytes());
    out.push(u8::from(redelivered));
    short_string(out, exchange);
    short_string(out, routing_key);
    frame_finish(out, size_at);
}

fn short_string(out: &mut Vec<u8>, s: &str) {
    // Short strings are at most 255 bytes; every name Warren holds was parsed as one.
    let b = &s.as_bytes()[..s.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

/// Appends a heartbeat frame.
pub fn write_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// Encodes basic properties the way they travel in a content header.
pub fn encode_properties(properties: &BasicProperties) -> Bytes {
    let ctx = gen_properties(properties)(WriteContext::from(Vec::new()));
    Bytes::from(ctx.expect("encoding properties into a Vec").write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_frame, Frame};
    use bytes::BytesMut;

    #[test]
    fn content_is_split_by_frame_max() {
        let props = encode_properties(&BasicProperties::default().with_delivery_mode(2));
        let body = vec![7u8; 10_000];
        let mut out = Vec::new();
        write_content(&mut out, 1, &props, &body, 4096);
        let mut buf = BytesMut::from(&out[..]);
        let mut bodies = Vec::new();
        while let Some(frame) = decode_frame(&mut buf, 4096).unwrap() {
            match frame {
                Frame::Header {
                    body_size,
                    properties,
                    ..
                } => {
                    assert_eq!(body_size, 10_000);
                    assert_eq!(*properties.delivery_mode(), Some(2));
                }
                Frame::Body(_, b) => bodies.push(b.len()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(bodies, vec![4088, 4088, 1824]);
    }

    #[test]
    fn deliver_bytes_match_amq_protocol() {
        use amq_protocol::protocol::basic;
        for redelivered in [false, true] {
            let mut ours = Vec::new();
            write_deliver(
                &mut ours,
                7,
                "amq.ctag-x",
                123_456,
                redelivered,
                "orders",
                "eu.paris",
            );
            let mut theirs = Vec::new();
            write_method(
                &mut theirs,
                7,
                &AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: "amq.ctag-x".into(),
                    delivery_tag: 123_456,
                    redelivered,
                    exchange: "orders".into(),
                    routing_key: "eu.paris".into(),
                })),
            );
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn empty_body_has_no_body_frame() {
        let mut out = Vec::new();
        write_content(
            &mut out,
            1,
            &encode_properties(&BasicProperties::default()),
            &[],
            4096,
        );
        let mut buf = BytesMut::from(&out[..]);
        assert!(matches!(
            decode_frame(&mut buf, 4096).unwrap(),
            Some(Frame::Header { body_size: 0, .. })
        ));
        assert!(buf.is_empty());
    }
}
