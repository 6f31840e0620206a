//! `decode_frame` as a tokio-util `Decoder`, carrying the negotiated frame_max.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::{decode_frame, DecodeError, Frame};

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

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(decode_frame(src, self.frame_max)?)
    }
}
