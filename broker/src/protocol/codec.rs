//! `decode_frame` as a tokio-util `Decoder`, carrying the negotiated frame_max.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::{decode_frame, DecodeError, Frame, FRAME_OVERHEAD};

/// Decodes AMQP frames; `frame_max` starts at the broker's limit and drops to what
/// connection.tune-ok negotiates.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    /// Largest frame accepted, framing included.
    pub frame_max: u32,
}

/// A decode failure, or the socket's.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Frame(#[from] DecodeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FrameCodec {
    /// Bytes still to come of the frame that `src` starts with, when its header is in `src`
    /// and the rest of it is not: a reader that asks for exactly this many ends its read at
    /// the frame's end. An oversized frame counts as `frame_max` (decoding refuses it).
    pub fn missing(&self, src: &[u8]) -> Option<usize> {
        let size = u32::from_be_bytes(src.get(3..7)?.try_into().ok()?);
        let total = (size as usize + FRAME_OVERHEAD).min(self.frame_max as usize);
        total.checked_sub(src.len()).filter(|&n| n > 0)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(decode_frame(src, self.frame_max)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: u32) -> Vec<u8> {
        let mut h = vec![3, 0, 1];
        h.extend_from_slice(&size.to_be_bytes());
        h
    }

    #[test]
    fn missing_counts_what_is_left_of_a_partial_frame() {
        let codec = FrameCodec { frame_max: 131_072 };
        assert_eq!(codec.missing(&[]), None, "no header yet");
        assert_eq!(codec.missing(&header(70_000)[..6]), None, "half a header");
        let mut buf = header(70_000);
        buf.resize(1000, 0);
        assert_eq!(codec.missing(&buf), Some(70_008 - 1000));
        buf.resize(70_008, 0);
        assert_eq!(codec.missing(&buf), None, "the frame is all there");
        buf.resize(70_100, 0);
        assert_eq!(codec.missing(&buf), None, "and more behind it");
        assert_eq!(
            codec.missing(&header(u32::MAX)),
            Some(131_072 - 7),
            "an oversized frame is capped at frame_max"
        );
    }
}
