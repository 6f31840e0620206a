//! Method and content-header payloads. Warren reads basic.publish, basic.ack and message
//! properties with its own fast paths and everything else with amq-protocol, so this target
//! checks the fast paths against amq-protocol on every input (same fields, same refusals),
//! and that any method Warren accepts encodes and decodes back to itself.
#![no_main]

use amq_protocol::protocol::basic::{self, parse_properties};
use amq_protocol::protocol::{parse_class, AMQPClass};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warren_broker::protocol::nesting::{check_method, check_properties, NestingError};
use warren_broker::protocol::{decode_frame, write_method, DecodeError, Frame, Props};

const FRAME_MAX: u32 = 131_072;

fn frame(kind: u8, payload: &[u8]) -> BytesMut {
    let mut f = BytesMut::new();
    f.extend_from_slice(&[kind, 0, 1]);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.extend_from_slice(&[0xCE]);
    f
}

/// What amq-protocol makes of a method payload, when it takes all of it.
fn reference(payload: &[u8]) -> Option<AMQPClass> {
    match parse_class(payload) {
        Ok(([], class)) => Some(class),
        _ => None,
    }
}

fn check_method_payload(payload: &[u8]) {
    let decoded = decode_frame(&mut frame(1, payload), FRAME_MAX);
    let ids = payload.get(..4).map(|p| {
        (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        )
    });
    // The nesting scan keeps over-deep tables from amq-protocol; so must this check.
    if let Some((c, m)) = ids {
        if check_method(c, m, payload) == Err(NestingError::TooDeep) {
            return;
        }
    }
    match decoded {
        Ok(Some(Frame::Publish(_, p))) => match reference(payload) {
            Some(AMQPClass::Basic(basic::AMQPMethod::Publish(r))) => {
                assert_eq!(p.exchange(), r.exchange.as_str().as_bytes());
                assert_eq!(p.routing_key(), r.routing_key.as_str().as_bytes());
                assert_eq!((p.mandatory, p.immediate), (r.mandatory, r.immediate));
            }
            other => panic!("Warren read a publish amq-protocol reads as {other:?}"),
        },
        Ok(Some(Frame::Ack {
            delivery_tag,
            multiple,
            ..
        })) => match reference(payload) {
            Some(AMQPClass::Basic(basic::AMQPMethod::Ack(r))) => {
                assert_eq!((delivery_tag, multiple), (r.delivery_tag, r.multiple));
            }
            other => panic!("Warren read an ack amq-protocol reads as {other:?}"),
        },
        Ok(Some(Frame::Method(_, class))) => {
            let mut out = Vec::new();
            write_method(&mut out, 1, &class);
            let again = decode_frame(&mut BytesMut::from(&out[..]), FRAME_MAX);
            match again {
                // Compared encoded: a float field may hold NaN, which equals nothing.
                Ok(Some(Frame::Method(_, back))) => {
                    let mut again = Vec::new();
                    write_method(&mut again, 1, &back);
                    assert_eq!(again, out, "{class:?} does not survive encoding");
                }
                // Re-encoded publishes and acks come back through the fast paths.
                Ok(Some(Frame::Publish(..) | Frame::Ack { .. })) => {}
                other => panic!("{class:?} encoded does not decode: {other:?}"),
            }
        }
        Ok(other) => panic!("a method frame decoded as {other:?}"),
        Err(DecodeError::Syntax { .. }) => {
            // Refused as malformed: amq-protocol must not read it as the method it claims
            // to be.
            if let Some(class) = reference(payload) {
                panic!("Warren refused a method amq-protocol reads: {class:?}");
            }
        }
        Err(_) => {}
    }
}

fn check_header_payload(payload: &[u8]) {
    let decoded = decode_frame(&mut frame(2, payload), FRAME_MAX);
    let Some(raw) = payload.get(12..) else {
        assert!(
            decoded.is_err(),
            "a header without its fixed fields decoded"
        );
        return;
    };
    if check_properties(raw) == Err(NestingError::TooDeep) {
        return;
    }
    let reference = match parse_properties(raw) {
        Ok(([], p)) => Some(Props::of(&p)),
        _ => None,
    };
    match decoded {
        // Compared as text: a header may hold a NaN float, which equals nothing.
        Ok(Some(Frame::Header { properties, .. })) => assert_eq!(
            format!("{:?}", Some(properties)),
            format!("{reference:?}"),
            "properties read differently"
        ),
        Err(DecodeError::Syntax { .. }) => assert_eq!(reference, None, "properties refused"),
        other => panic!("a content header decoded as {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check_method_payload(data);
    check_header_payload(data);
});
