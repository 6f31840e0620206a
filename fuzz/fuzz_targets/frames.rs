//! The frame decoder (`warren_broker::protocol::decode_frame`) on arbitrary bytes: it must
//! never panic, must always make progress or ask for more, and must find the same frames
//! whether the bytes arrive at once or split at arbitrary points (as TCP delivers them).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warren_broker::protocol::{decode_frame, FRAME_MIN_SIZE};

/// Decodes `chunks` fed one after the other into one buffer; returns each frame (as its
/// `Debug` text) and the error that ended the stream, if any.
fn decode(chunks: &[&[u8]], frame_max: u32) -> (Vec<String>, Option<String>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match decode_frame(&mut buf, frame_max) {
                Ok(Some(frame)) => {
                    assert!(buf.len() < before, "a frame was decoded from no bytes");
                    frames.push(format!("{frame:?}"));
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "asking for more bytes consumed some");
                    break;
                }
                Err(e) => {
                    // Every error maps to a connection-level reply code.
                    assert!(matches!(e.reply_code(), 501 | 502 | 540), "{e}");
                    return (frames, Some(e.to_string()));
                }
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the input is cut; the rest is the byte stream.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    for frame_max in [FRAME_MIN_SIZE, 131_072] {
        let whole = decode(&[stream], frame_max);
        let step = usize::from(cut).max(1);
        let pieces: Vec<&[u8]> = stream.chunks(step).collect();
        assert_eq!(whole, decode(&pieces, frame_max), "cut every {step} bytes");
    }
});
