//! Frame encoding: frames are appended to one output buffer so that a connection writes many
//! frames with one syscall. Method and property encoding is amq-protocol's.

use std::collections::VecDeque;
use std::io::IoSlice;

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::gen_properties;
use amq_protocol::protocol::{gen_class, AMQPClass, BasicProperties};
use bytes::Bytes;

use super::{FRAME_END, FRAME_OVERHEAD};

/// Bodies at least this large are spliced into the output by reference instead of copied.
pub const SPLICE_MIN: usize = 8 * 1024;

/// Frames waiting to be written: encoded bytes in one buffer (it derefs to that `Vec<u8>`,
/// which the `write_*` functions append to), with large bodies spliced in between by
/// reference, so a 64 KiB body is never copied on its way from one socket to another. A
/// writer takes [`io_slices`](Output::io_slices) for one vectored write, then
/// [`advance`](Output::advance)s by what the socket took.
#[derive(Debug, Default)]
pub struct Output {
    /// Encoded frames (with the bodies of `spliced` left out).
    buf: Vec<u8>,
    /// Bodies to be written before `buf[at..]`, by position `at`, in order.
    spliced: VecDeque<(usize, Bytes)>,
    /// Bytes of `spliced` not yet written.
    spliced_len: usize,
    /// Bytes of `buf` already written.
    written: usize,
    /// Bytes of the first spliced body already written.
    front_written: usize,
}

impl std::ops::Deref for Output {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl std::ops::DerefMut for Output {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl Output {
    /// Appends `body` by reference at the current end of the encoded bytes.
    pub fn splice(&mut self, body: Bytes) {
        self.spliced_len += body.len();
        self.spliced.push_back((self.buf.len(), body));
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.written + self.spliced_len - self.front_written
    }

    /// Nothing waits to be written.
    pub fn is_drained(&self) -> bool {
        self.pending() == 0
    }

    /// Fills `slices` with the next bytes to write, in order; returns how many it filled.
    pub fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let max = slices.len();
        let mut n = 0;
        let mut pos = self.written;
        let mut front = self.front_written;
        for (at, body) in &self.spliced {
            if n + 2 > max {
                return n;
            }
            if pos < *at {
                slices[n] = IoSlice::new(&self.buf[pos..*at]);
                n += 1;
                pos = *at;
            }
            if front < body.len() {
                slices[n] = IoSlice::new(&body[front..]);
                n += 1;
            }
            front = 0;
        }
        if pos < self.buf.len() && n < max {
            slices[n] = IoSlice::new(&self.buf[pos..]);
            n += 1;
        }
        n
    }

    /// Records that the socket took `n` more bytes; once everything is written the buffer is
    /// emptied (its capacity kept up to `keep` bytes).
    pub fn advance(&mut self, mut n: usize, keep: usize) {
        while n > 0 {
            let next_at = self.spliced.front().map(|(at, _)| *at);
            match next_at {
                Some(at) if self.written == at => {
                    let len = self.spliced.front().map_or(0, |(_, b)| b.len());
                    let take = n.min(len - self.front_written);
                    self.front_written += take;
                    n -= take;
                    if self.front_written == len {
                        self.spliced.pop_front();
                        self.spliced_len -= len;
                        self.front_written = 0;
                    }
                }
                _ => {
                    let end = next_at.unwrap_or(self.buf.len());
                    let take = n.min(end - self.written);
                    self.written += take;
                    n -= take;
                    if take == 0 {
                        break;
                    }
                }
            }
        }
        if self.is_drained() {
            self.buf.clear();
            self.written = 0;
            if self.buf.capacity() > keep {
                self.buf = Vec::new();
            }
        }
    }
}

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
    write_content_header(out, channel, raw_properties, body.len(), frame_max);
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

fn write_content_header(
    out: &mut Vec<u8>,
    channel: u16,
    raw_properties: &[u8],
    body_len: usize,
    _frame_max: u32,
) {
    let size_at = frame_start(out, 2, channel);
    out.extend_from_slice(&60u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(body_len as u64).to_be_bytes());
    out.extend_from_slice(raw_properties);
    frame_finish(out, size_at);
}

/// [`write_content`] for a body held as `Bytes`: a large one is spliced into `out` by
/// reference rather than copied.
pub fn write_content_shared(
    out: &mut Output,
    channel: u16,
    raw_properties: &[u8],
    body: &[u8],
    shared: Option<&Bytes>,
    frame_max: u32,
) {
    let Some(shared) = shared.filter(|b| b.len() >= SPLICE_MIN) else {
        return write_content(out, channel, raw_properties, body, frame_max);
    };
    write_content_header(out, channel, raw_properties, shared.len(), frame_max);
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    let mut at = 0;
    while at < shared.len() {
        let end = (at + chunk).min(shared.len());
        out.push(3);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&((end - at) as u32).to_be_bytes());
        out.splice(shared.slice(at..end));
        out.push(FRAME_END);
        at = end;
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
    exchange: &[u8],
    routing_key: &[u8],
) {
    let size_at = frame_start(out, 1, channel);
    out.extend_from_slice(&[0, 60, 0, 60]);
    short_string(out, consumer_tag.as_bytes());
    out.extend_from_slice(&delivery_tag.to_be_bytes());
    out.push(u8::from(redelivered));
    short_string(out, exchange);
    short_string(out, routing_key);
    frame_finish(out, size_at);
}

fn short_string(out: &mut Vec<u8>, s: &[u8]) {
    // Short strings are at most 255 bytes; every name Warren holds was parsed as one.
    let b = &s[..s.len().min(255)];
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
                    assert_eq!(properties.delivery_mode, Some(2));
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
                b"orders",
                b"eu.paris",
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

    /// Writes `out` through `io_slices`/`advance` in steps of `step` bytes.
    fn drain(out: &mut Output, step: usize) -> Vec<u8> {
        let mut written = Vec::new();
        while !out.is_drained() {
            let mut slices = [IoSlice::new(&[]); 4];
            let k = out.io_slices(&mut slices);
            let mut n = 0;
            for s in &slices[..k] {
                let take = (step - n).min(s.len());
                written.extend_from_slice(&s[..take]);
                n += take;
                if n == step {
                    break;
                }
            }
            out.advance(n, 1 << 20);
        }
        written
    }

    #[test]
    fn spliced_bodies_write_the_same_bytes_as_copied_ones() {
        let props = encode_properties(&BasicProperties::default());
        let bodies: Vec<Bytes> = [20_000usize, 10, 70_000, 9_000]
            .iter()
            .map(|&n| Bytes::from((0..n).map(|i| i as u8).collect::<Vec<u8>>()))
            .collect();
        let mut copied = Vec::new();
        for b in &bodies {
            write_heartbeat(&mut copied);
            write_content(&mut copied, 2, &props, b, 32_768);
        }
        for step in [1, 7, 4096, 65_536, 1 << 20] {
            let mut out = Output::default();
            for b in &bodies {
                write_heartbeat(&mut out);
                write_content_shared(&mut out, 2, &props, b, Some(b), 32_768);
            }
            assert_eq!(drain(&mut out, step), copied, "step {step}");
            assert_eq!(out.pending(), 0);
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
