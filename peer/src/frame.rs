//! Bytes on the data channel: a pure codec, no I/O.
//!
//! A [`Message`] is first laid out as an *envelope* (routing key, headers, body), then cut
//! into *chunks* no larger than the data channel's message-size limit. A data-channel message
//! carries one or more [`Frame`]s back to back, so that many small messages share one SCTP
//! message and one UDP datagram:
//!
//! ```text
//! Chunk  0x01  seq:u64  index:u32  count:u32  len:u32  payload[len]   (21-byte header)
//! Ack    0x02  next:u64        every seq < next was delivered          (9 bytes)
//! Bye    0x03  last:u64        the sender sent seqs 0..last            (9 bytes)
//!
//! envelope = rk_len:u8 rk  header_count:u16 (name_len:u8 name value_len:u32 value)*  body
//! ```
//!
//! All integers are big-endian. A chunked message carries its index and count in every
//! chunk, so chunks of an unordered channel can be put back together in any order.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::message::Message;

/// Bytes in front of every chunk's payload.
pub const CHUNK_HEADER: usize = 1 + 8 + 4 + 4 + 4;
/// The smallest frame limit that leaves room for a useful payload.
pub const MIN_FRAME: usize = CHUNK_HEADER + 16;

const KIND_CHUNK: u8 = 0x01;
const KIND_ACK: u8 = 0x02;
const KIND_BYE: u8 = 0x03;

/// One data-channel message, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A piece of message `seq`: piece `index` of `count`.
    Chunk {
        /// The message's position in the sender's stream.
        seq: u64,
        /// Which piece, from 0.
        index: u32,
        /// How many pieces the message has, at least 1.
        count: u32,
        /// This piece of the envelope.
        payload: Bytes,
    },
    /// Cumulative acknowledgement: every message below `next` was delivered.
    Ack {
        /// The first sequence number not yet delivered.
        next: u64,
    },
    /// The sender closes the link after sending messages `0..last`.
    Bye {
        /// How many messages the sender sent in all.
        last: u64,
    },
}

/// A frame or envelope that breaks the format: the peer is not speaking this protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header announces.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A frame type this version does not know.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// A chunk whose index or count makes no sense.
    #[error("bad chunk {index}/{count} of message {seq}")]
    BadChunk {
        /// The message.
        seq: u64,
        /// The claimed index.
        index: u32,
        /// The claimed count.
        count: u32,
    },
    /// A message larger than this receiver accepts.
    #[error("message {seq} would exceed {limit} bytes")]
    TooLarge {
        /// The message.
        seq: u64,
        /// The receiver's limit.
        limit: usize,
    },
    /// Routing key or header names that are not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
}

impl Frame {
    /// Decodes every frame of one data-channel message. Chunk payloads share `data`'s memory.
    pub fn decode_all(mut data: Bytes) -> Result<Vec<Frame>, FrameError> {
        let mut frames = Vec::with_capacity(1);
        if data.is_empty() {
            return Err(FrameError::Truncated("frame"));
        }
        while !data.is_empty() {
            frames.push(Frame::decode_one(&mut data)?);
        }
        Ok(frames)
    }

    /// Decodes the frame at the front of `data` and advances past it.
    pub fn decode_one(data: &mut Bytes) -> Result<Frame, FrameError> {
        if data.is_empty() {
            return Err(FrameError::Truncated("frame"));
        }
        let kind = data.get_u8();
        match kind {
            KIND_CHUNK => {
                if data.len() < CHUNK_HEADER - 1 {
                    return Err(FrameError::Truncated("chunk header"));
                }
                let seq = data.get_u64();
                let index = data.get_u32();
                let count = data.get_u32();
                let len = data.get_u32() as usize;
                if count == 0 || index >= count {
                    return Err(FrameError::BadChunk { seq, index, count });
                }
                if data.len() < len {
                    return Err(FrameError::Truncated("chunk payload"));
                }
                Ok(Frame::Chunk {
                    seq,
                    index,
                    count,
                    payload: data.split_to(len),
                })
            }
            KIND_ACK | KIND_BYE => {
                if data.len() < 8 {
                    return Err(FrameError::Truncated("control frame"));
                }
                let n = data.get_u64();
                Ok(if kind == KIND_ACK {
                    Frame::Ack { next: n }
                } else {
                    Frame::Bye { last: n }
                })
            }
            other => Err(FrameError::UnknownKind(other)),
        }
    }

    /// Encodes a control frame (`Ack` or `Bye`); chunks come from [`encode_message`].
    pub fn encode_control(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(9);
        match self {
            Frame::Ack { next } => {
                out.put_u8(KIND_ACK);
                out.put_u64(*next);
            }
            Frame::Bye { last } => {
                out.put_u8(KIND_BYE);
                out.put_u64(*last);
            }
            Frame::Chunk { .. } => unreachable!("chunks are built by encode_message"),
        }
        out
    }
}

/// Bytes of the envelope in front of the body.
fn envelope_header_len(msg: &Message) -> usize {
    1 + msg.routing_key.len()
        + 2
        + msg
            .headers
            .iter()
            .map(|(k, v)| 1 + k.len() + 4 + v.len())
            .sum::<usize>()
}

fn write_envelope_header(msg: &Message, out: &mut Vec<u8>) {
    out.put_u8(msg.routing_key.len() as u8);
    out.put_slice(msg.routing_key.as_bytes());
    out.put_u16(msg.headers.len() as u16);
    for (k, v) in &msg.headers {
        out.put_u8(k.len() as u8);
        out.put_slice(k.as_bytes());
        out.put_u32(v.len() as u32);
        out.put_slice(v.as_bytes());
    }
}

/// Cuts message `seq` into frames of at most `max_frame` bytes each.
///
/// The message must have passed [`Message::validate`]; `max_frame` must be at least
/// [`MIN_FRAME`].
pub fn encode_message(seq: u64, msg: &Message, max_frame: usize) -> Vec<BytesMut> {
    assert!(max_frame >= MIN_FRAME, "frame limit {max_frame} too small");
    let mut head = Vec::with_capacity(envelope_header_len(msg));
    write_envelope_header(msg, &mut head);
    let total = head.len() + msg.body.len();
    let per_frame = max_frame - CHUNK_HEADER;
    let count = total.div_ceil(per_frame).max(1);
    let count32 = u32::try_from(count).expect("message too large to chunk");

    // The envelope is the concatenation `head ++ body`; walk it in `per_frame` steps.
    let mut frames = Vec::with_capacity(count);
    let mut offset = 0;
    for index in 0..count32 {
        let take = per_frame.min(total - offset);
        let mut f = BytesMut::with_capacity(CHUNK_HEADER + take);
        f.put_u8(KIND_CHUNK);
        f.put_u64(seq);
        f.put_u32(index);
        f.put_u32(count32);
        f.put_u32(take as u32);
        let end = offset + take;
        if offset < head.len() {
            let head_end = end.min(head.len());
            f.put_slice(&head[offset..head_end]);
        }
        if end > head.len() {
            let start = offset.max(head.len()) - head.len();
            f.put_slice(&msg.body[start..end - head.len()]);
        }
        frames.push(f);
        offset = end;
    }
    frames
}

/// Packs frames into data-channel messages of at most `max_frame` bytes, in order.
pub struct Batcher {
    /// Largest data-channel message.
    max_frame: usize,
    /// Finished data-channel messages.
    out: Vec<BytesMut>,
    /// The message being filled.
    current: BytesMut,
}

impl Batcher {
    /// An empty batcher.
    pub fn new(max_frame: usize) -> Self {
        Batcher {
            max_frame,
            out: Vec::new(),
            current: BytesMut::new(),
        }
    }

    /// Appends one encoded frame, starting a new data-channel message if it does not fit.
    pub fn push(&mut self, frame: BytesMut) {
        if !self.current.is_empty() && self.current.len() + frame.len() > self.max_frame {
            self.out.push(std::mem::take(&mut self.current));
        }
        if self.current.is_empty() {
            self.current = frame;
        } else {
            self.current.extend_from_slice(&frame);
        }
    }

    /// Bytes buffered so far.
    pub fn len(&self) -> usize {
        self.out.iter().map(BytesMut::len).sum::<usize>() + self.current.len()
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty() && self.current.is_empty()
    }

    /// The data-channel messages to send, in order.
    pub fn finish(mut self) -> Vec<BytesMut> {
        if !self.current.is_empty() {
            self.out.push(self.current);
        }
        self.out
    }
}

/// Parses an envelope. The body shares `data`'s memory.
pub fn decode_envelope(mut data: Bytes) -> Result<Message, FrameError> {
    fn need(data: &Bytes, n: usize, what: &'static str) -> Result<(), FrameError> {
        if data.len() < n {
            Err(FrameError::Truncated(what))
        } else {
            Ok(())
        }
    }
    fn string(data: &mut Bytes, n: usize, what: &'static str) -> Result<String, FrameError> {
        need(data, n, what)?;
        let raw = data.split_to(n);
        String::from_utf8(raw.to_vec()).map_err(|_| FrameError::NotUtf8(what))
    }
    need(&data, 1, "routing key length")?;
    let rk_len = data.get_u8() as usize;
    let routing_key = string(&mut data, rk_len, "routing key")?;
    need(&data, 2, "header count")?;
    let n = data.get_u16();
    let mut headers = BTreeMap::new();
    for _ in 0..n {
        need(&data, 1, "header name length")?;
        let k_len = data.get_u8() as usize;
        let k = string(&mut data, k_len, "header name")?;
        need(&data, 4, "header value length")?;
        let v_len = data.get_u32() as usize;
        let v = string(&mut data, v_len, "header value")?;
        headers.insert(k, v);
    }
    Ok(Message {
        routing_key,
        headers,
        body: data,
    })
}

/// A message whose chunks have not all arrived.
struct Partial {
    /// The pieces by index; `None` until that piece arrives.
    pieces: Vec<Option<Bytes>>,
    /// How many pieces are still missing.
    missing: u32,
    /// Bytes held so far, checked against the receiver's limit.
    bytes: usize,
}

/// Puts chunks back into messages.
///
/// A reliable, ordered channel delivers a message's chunks in a row, so at most one message
/// is ever partial. An unordered, lossy channel may interleave and drop chunks; there the
/// oldest partial messages are dropped once more than `max_partials` are open, which is the
/// only way a lost chunk can be forgotten.
pub struct Reassembler {
    /// Open messages by sequence number.
    partial: BTreeMap<u64, Partial>,
    /// How many messages may be open at once.
    max_partials: usize,
    /// Largest envelope accepted, in bytes.
    max_message: usize,
}

impl Reassembler {
    /// A reassembler that holds at most `max_partials` incomplete messages of at most
    /// `max_message` bytes each.
    pub fn new(max_partials: usize, max_message: usize) -> Self {
        Reassembler {
            partial: BTreeMap::new(),
            max_partials: max_partials.max(1),
            max_message,
        }
    }

    /// Adds one chunk; returns the message once its last missing chunk arrives. A duplicate
    /// chunk is ignored. A chunk of an already finished message opens a new partial message
    /// that never completes and is eventually evicted, so callers deduplicate by sequence
    /// number after reassembly.
    pub fn push(
        &mut self,
        seq: u64,
        index: u32,
        count: u32,
        payload: Bytes,
    ) -> Result<Option<Message>, FrameError> {
        if count == 0 || index >= count {
            return Err(FrameError::BadChunk { seq, index, count });
        }
        if count == 1 {
            if payload.len() > self.max_message {
                return Err(FrameError::TooLarge {
                    seq,
                    limit: self.max_message,
                });
            }
            return decode_envelope(payload).map(Some);
        }
        let limit = self.max_message;
        let p = self.partial.entry(seq).or_insert_with(|| Partial {
            pieces: Vec::new(),
            missing: count,
            bytes: 0,
        });
        if p.pieces.is_empty() {
            p.pieces.resize(count as usize, None);
        }
        if p.pieces.len() != count as usize {
            self.partial.remove(&seq);
            return Err(FrameError::BadChunk { seq, index, count });
        }
        let slot = &mut p.pieces[index as usize];
        if slot.is_some() {
            return Ok(None);
        }
        p.bytes += payload.len();
        if p.bytes > limit {
            self.partial.remove(&seq);
            return Err(FrameError::TooLarge { seq, limit });
        }
        *slot = Some(payload);
        p.missing -= 1;
        if p.missing > 0 {
            while self.partial.len() > self.max_partials {
                self.partial.pop_first();
            }
            return Ok(None);
        }
        let p = self.partial.remove(&seq).expect("partial present");
        let mut whole = BytesMut::with_capacity(p.bytes);
        for piece in p.pieces.into_iter().flatten() {
            whole.extend_from_slice(&piece);
        }
        decode_envelope(whole.freeze()).map(Some)
    }

    /// How many messages are waiting for chunks.
    pub fn open(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body_len: usize) -> Message {
        let body: Vec<u8> = (0..body_len).map(|i| (i * 31 % 251) as u8).collect();
        Message::new("sensors.temp", body)
            .with_header("unit", "celsius")
            .with_header("site", "north")
    }

    fn reassemble(frames: Vec<BytesMut>, r: &mut Reassembler) -> Vec<Message> {
        let mut out = Vec::new();
        for f in frames {
            for frame in Frame::decode_all(f.freeze()).unwrap() {
                match frame {
                    Frame::Chunk {
                        seq,
                        index,
                        count,
                        payload,
                    } => out.extend(r.push(seq, index, count, payload).unwrap()),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        out
    }

    fn decode(f: BytesMut) -> Result<Frame, FrameError> {
        let mut v = Frame::decode_all(f.freeze())?;
        assert_eq!(v.len(), 1);
        Ok(v.remove(0))
    }

    #[test]
    fn small_message_is_one_exact_frame() {
        let msg = Message::new("k", &b"hi"[..]).with_header("a", "b");
        let frames = encode_message(7, &msg, 64 * 1024);
        assert_eq!(frames.len(), 1);
        let expected: &[u8] = &[
            0x01, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, // chunk 0/1 of seq 7
            0, 0, 0, 13, // 13 payload bytes
            1, b'k', // routing key
            0, 1, 1, b'a', 0, 0, 0, 1, b'b', // one header a=b
            b'h', b'i', // body
        ];
        assert_eq!(&frames[0][..], expected);
        let mut r = Reassembler::new(4, 1 << 20);
        assert_eq!(reassemble(frames, &mut r), vec![msg]);
    }

    #[test]
    fn control_frames_round_trip_exactly() {
        let ack = Frame::Ack { next: 0x0102 };
        let bytes = ack.encode_control();
        assert_eq!(&bytes[..], &[0x02, 0, 0, 0, 0, 0, 0, 0x01, 0x02]);
        assert_eq!(decode(bytes).unwrap(), ack);
        let bye = Frame::Bye { last: 10_000 };
        assert_eq!(decode(bye.encode_control()).unwrap(), bye);
    }

    #[test]
    fn one_mebibyte_is_chunked_under_the_limit_and_reassembled() {
        let msg = sample(1 << 20);
        let max = 64 * 1024;
        let frames = encode_message(3, &msg, max);
        assert!(frames.len() > 16);
        assert!(frames.iter().all(|f| f.len() <= max));
        let mut r = Reassembler::new(4, 2 << 20);
        assert_eq!(reassemble(frames, &mut r), vec![msg]);
        assert_eq!(r.open(), 0);
    }

    #[test]
    fn envelope_split_across_chunks_still_parses() {
        // A tiny frame limit puts the routing key and headers in different chunks.
        let msg = sample(100);
        let frames = encode_message(1, &msg, MIN_FRAME);
        assert!(frames.len() > 5);
        let mut r = Reassembler::new(4, 1 << 20);
        assert_eq!(reassemble(frames, &mut r), vec![msg]);
    }

    #[test]
    fn empty_message_round_trips() {
        let msg = Message::default();
        let frames = encode_message(0, &msg, 1024);
        assert_eq!(frames.len(), 1);
        let mut r = Reassembler::new(4, 1024);
        assert_eq!(reassemble(frames, &mut r), vec![msg]);
    }

    #[test]
    fn body_exactly_filling_frames_has_no_empty_trailing_chunk() {
        let msg = Message::new("", vec![7u8; 100 - 3]);
        let frames = encode_message(0, &msg, CHUNK_HEADER + 50);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|f| f.len() == CHUNK_HEADER + 50));
    }

    #[test]
    fn chunks_out_of_order_and_duplicated_reassemble_once() {
        let msg = sample(10_000);
        let mut frames = encode_message(9, &msg, 1024);
        frames.reverse();
        let dup = frames[2].clone();
        frames.insert(5, dup);
        let mut r = Reassembler::new(4, 1 << 20);
        assert_eq!(reassemble(frames, &mut r), vec![msg]);
    }

    #[test]
    fn interleaved_messages_reassemble_independently() {
        let a = sample(5000);
        let b = Message::new("other", vec![1u8; 4000]);
        let fa = encode_message(1, &a, 1024);
        let fb = encode_message(2, &b, 1024);
        let mut mixed = Vec::new();
        let mut ia = fa.into_iter();
        let mut ib = fb.into_iter();
        loop {
            match (ia.next(), ib.next()) {
                (None, None) => break,
                (x, y) => mixed.extend(x.into_iter().chain(y)),
            }
        }
        let mut r = Reassembler::new(4, 1 << 20);
        let got = reassemble(mixed, &mut r);
        assert_eq!(got.len(), 2);
        assert!(got.contains(&a) && got.contains(&b));
    }

    #[test]
    fn lost_chunks_are_evicted_oldest_first() {
        let mut r = Reassembler::new(2, 1 << 20);
        for seq in 0..5 {
            let frames = encode_message(seq, &sample(3000), 1024);
            let f = frames.into_iter().next().unwrap();
            if let Frame::Chunk {
                seq,
                index,
                count,
                payload,
            } = decode(f).unwrap()
            {
                assert_eq!(r.push(seq, index, count, payload).unwrap(), None);
            }
        }
        assert_eq!(r.open(), 2);
    }

    #[test]
    fn oversized_message_is_refused() {
        let frames = encode_message(4, &sample(10_000), 1024);
        let mut r = Reassembler::new(4, 5_000);
        let mut err = None;
        for f in frames {
            if let Frame::Chunk {
                seq,
                index,
                count,
                payload,
            } = decode(f).unwrap()
            {
                if let Err(e) = r.push(seq, index, count, payload) {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(
            err,
            Some(FrameError::TooLarge {
                seq: 4,
                limit: 5_000
            })
        );
        assert_eq!(r.open(), 0);
    }

    #[test]
    fn truncated_and_unknown_frames_are_errors() {
        let d = |b: &'static [u8]| Frame::decode_all(Bytes::from_static(b));
        assert_eq!(d(&[]), Err(FrameError::Truncated("frame")));
        assert_eq!(d(&[0x01, 0, 0]), Err(FrameError::Truncated("chunk header")));
        assert_eq!(
            d(&[0x02, 0, 0]),
            Err(FrameError::Truncated("control frame"))
        );
        assert_eq!(d(&[0x7f]), Err(FrameError::UnknownKind(0x7f)));
        let bad = &[
            0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0,
        ];
        assert!(matches!(d(bad), Err(FrameError::BadChunk { .. })));
        let short = &[
            0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 1,
        ];
        assert_eq!(d(short), Err(FrameError::Truncated("chunk payload")));
    }

    #[test]
    fn batched_frames_share_one_data_channel_message_under_the_limit() {
        let max = 1024;
        let mut b = Batcher::new(max);
        let mut expected = Vec::new();
        for seq in 0..100u64 {
            let m = Message::new("t", seq.to_be_bytes().to_vec());
            for f in encode_message(seq, &m, max) {
                b.push(f);
            }
            expected.push(m);
        }
        b.push(Frame::Ack { next: 5 }.encode_control());
        let messages = b.finish();
        assert!(
            messages.len() > 1 && messages.len() < 10,
            "{} messages",
            messages.len()
        );
        assert!(messages.iter().all(|m| m.len() <= max));
        let mut r = Reassembler::new(2, 1 << 20);
        let mut got = Vec::new();
        let mut acks = Vec::new();
        for m in messages {
            for f in Frame::decode_all(m.freeze()).unwrap() {
                match f {
                    Frame::Chunk {
                        seq,
                        index,
                        count,
                        payload,
                    } => got.extend(r.push(seq, index, count, payload).unwrap()),
                    other => acks.push(other),
                }
            }
        }
        assert_eq!(got, expected);
        assert_eq!(acks, vec![Frame::Ack { next: 5 }]);
    }

    #[test]
    fn every_truncation_of_an_envelope_is_an_error_not_a_panic() {
        let msg = sample(0);
        let mut head = Vec::new();
        write_envelope_header(&msg, &mut head);
        for cut in 0..head.len() {
            // Cutting inside the header must fail; cutting nowhere is the full message.
            let r = decode_envelope(Bytes::copy_from_slice(&head[..cut]));
            assert!(r.is_err(), "cut at {cut} parsed: {r:?}");
        }
        assert_eq!(decode_envelope(Bytes::from(head)).unwrap(), msg);
    }
}
