//! The wire format: AMQP 0-9-1 frames in and out of byte buffers.
//!
//! No sockets and no broker state live here. Parsing of methods, content headers and field
//! tables is amq-protocol's; this module only finds frame boundaries (so that an oversized or
//! malformed frame is refused before it is buffered) and appends encoded frames to an output
//! buffer without intermediate copies of message bodies.

mod codec;
mod decode;
mod encode;
pub mod json;
pub mod nesting;

pub use codec::{CodecError, FrameCodec};

pub use decode::{
    decode_frame, scan_properties, DecodeError, Frame, Props, Publish, PROTOCOL_HEADER,
};
pub use encode::{
    encode_properties, write_content, write_content_shared, write_deliver, write_heartbeat,
    write_method, Output,
};

/// Smallest frame_max a peer may negotiate (AMQP 0-9-1 §4.2.1 FRAME-MIN-SIZE).
pub const FRAME_MIN_SIZE: u32 = 4096;
/// Bytes of framing around a payload: type, channel, size and the frame-end octet.
pub const FRAME_OVERHEAD: usize = 8;
/// The frame-end octet.
pub const FRAME_END: u8 = 0xCE;
