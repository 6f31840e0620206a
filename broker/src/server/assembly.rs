//! Assembling a published message from its frames (AMQP 0-9-1 §4.2.6): basic.publish, then
//! one content header, then body frames until the header's size is reached. Each channel has
//! one [`Assembly`], an explicit state machine; a frame out of order is 505 UNEXPECTED_FRAME
//! with RabbitMQ's words (its `rabbit_command_assembler`; LavinMQ's channel does the same).
//! Body frames are kept as they arrived (usually one, never copied) in the channel's parts
//! list, which the caller passes in.

use bytes::Bytes;

use crate::error::{AmqpError, AmqpResult};
use crate::protocol::{Props, Publish};

/// Where a channel is in receiving a published message.
#[derive(Debug, Default)]
pub(crate) enum Assembly {
    /// No publish in progress: any frame but a content header or body.
    #[default]
    Idle,
    /// basic.publish arrived: its content header comes next.
    AwaitingHeader(Publish),
    /// The header arrived: body frames come next, until `received == size`.
    AwaitingBody {
        method: Publish,
        properties: Props,
        raw_properties: Bytes,
        size: u64,
        received: u64,
    },
}

/// A message whose frames have all arrived (its body is in the parts list).
#[derive(Debug)]
pub(crate) struct Complete {
    pub method: Publish,
    pub properties: Props,
    pub raw_properties: Bytes,
}

fn expected_header() -> AmqpError {
    AmqpError::unexpected_frame(
        "expected content header for class 60, got non content header frame instead",
    )
}

fn expected_body() -> AmqpError {
    AmqpError::unexpected_frame("expected content body, got non content body frame instead")
}

fn expected_method() -> AmqpError {
    AmqpError::unexpected_frame("expected method frame, got non method frame instead")
}

impl Assembly {
    /// A method frame (or the fast path's basic.ack) arrived: only allowed between messages.
    pub fn method_allowed(&self) -> AmqpResult<()> {
        match self {
            Assembly::Idle => Ok(()),
            Assembly::AwaitingHeader(_) => Err(expected_header()),
            Assembly::AwaitingBody { .. } => Err(expected_body()),
        }
    }

    /// basic.publish: a message starts.
    pub fn publish(&mut self, method: Publish) -> AmqpResult<()> {
        self.method_allowed()?;
        if method.immediate {
            return Err(AmqpError::not_implemented("immediate=true").during(60, 40));
        }
        *self = Assembly::AwaitingHeader(method);
        Ok(())
    }

    /// A content header. Bodies larger than `max_size` are refused with 406 (the channel
    /// closes, as RabbitMQ's `max_message_size`). An empty body completes the message.
    pub fn header(
        &mut self,
        class_id: u16,
        size: u64,
        properties: Props,
        raw_properties: Bytes,
        max_size: u64,
    ) -> AmqpResult<Option<Complete>> {
        let method = match std::mem::take(self) {
            Assembly::AwaitingHeader(method) => method,
            Assembly::Idle => return Err(expected_method()),
            body @ Assembly::AwaitingBody { .. } => {
                *self = body;
                return Err(expected_body());
            }
        };
        if class_id != 60 {
            return Err(AmqpError::unexpected_frame(format_args!(
                "content header for class {class_id}, expected 60"
            )));
        }
        if size > max_size {
            return Err(AmqpError::precondition(format_args!(
                "message size {size} is larger than configured max size {max_size}"
            ))
            .during(60, 40));
        }
        if size == 0 {
            return Ok(Some(Complete {
                method,
                properties,
                raw_properties,
            }));
        }
        *self = Assembly::AwaitingBody {
            method,
            properties,
            raw_properties,
            size,
            received: 0,
        };
        Ok(None)
    }

    /// A body frame, appended to `parts`; the last one completes the message.
    pub fn body(&mut self, bytes: Bytes, parts: &mut Vec<Bytes>) -> AmqpResult<Option<Complete>> {
        match self {
            Assembly::AwaitingBody { size, received, .. } => {
                *received += bytes.len() as u64;
                parts.push(bytes);
                if *received > *size {
                    return Err(AmqpError::unexpected_frame(
                        "content body exceeds the size in its header",
                    ));
                }
                if *received < *size {
                    return Ok(None);
                }
            }
            Assembly::Idle => return Err(expected_method()),
            Assembly::AwaitingHeader(_) => return Err(expected_header()),
        }
        let Assembly::AwaitingBody {
            method,
            properties,
            raw_properties,
            ..
        } = std::mem::take(self)
        else {
            return Ok(None);
        };
        Ok(Some(Complete {
            method,
            properties,
            raw_properties,
        }))
    }

    /// Drops a message in progress (the channel closes).
    pub fn reset(&mut self) {
        *self = Assembly::Idle;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ReplyCode;

    fn publish() -> Publish {
        Publish::for_test("x", "key", false, false)
    }

    fn header(a: &mut Assembly, size: u64) -> AmqpResult<Option<Complete>> {
        a.header(60, size, Props::default(), Bytes::new(), 1 << 20)
    }

    fn code(r: AmqpResult<impl std::fmt::Debug>) -> ReplyCode {
        r.expect_err("refused").code
    }

    #[test]
    fn a_message_is_method_header_then_bodies_up_to_the_size() {
        let mut a = Assembly::default();
        let mut parts = Vec::new();
        a.publish(publish()).unwrap();
        assert!(header(&mut a, 5).unwrap().is_none());
        assert!(a
            .body(Bytes::from_static(b"he"), &mut parts)
            .unwrap()
            .is_none());
        let done = a.body(Bytes::from_static(b"llo"), &mut parts).unwrap();
        let done = done.expect("complete at the size");
        assert_eq!(done.method.routing_key(), b"key");
        assert_eq!(parts.len(), 2);
        assert!(matches!(a, Assembly::Idle));
        // An empty body completes at the header.
        a.publish(publish()).unwrap();
        assert!(header(&mut a, 0).unwrap().is_some());
        assert!(a.method_allowed().is_ok());
    }

    #[test]
    fn frames_out_of_order_are_unexpected_frame() {
        let mut parts = Vec::new();
        let mut a = Assembly::default();
        assert_eq!(
            code(header(&mut a, 1)),
            ReplyCode::UnexpectedFrame,
            "header first"
        );
        assert_eq!(
            code(a.body(Bytes::from_static(b"x"), &mut parts)),
            ReplyCode::UnexpectedFrame,
            "body first"
        );
        a.publish(publish()).unwrap();
        assert_eq!(
            code(a.method_allowed()),
            ReplyCode::UnexpectedFrame,
            "method before header"
        );
        assert_eq!(
            code(a.publish(publish())),
            ReplyCode::UnexpectedFrame,
            "publish before header"
        );
        assert_eq!(
            code(a.body(Bytes::from_static(b"x"), &mut parts)),
            ReplyCode::UnexpectedFrame,
            "body before header"
        );
        let mut a = Assembly::default();
        a.publish(publish()).unwrap();
        header(&mut a, 4).unwrap();
        assert_eq!(
            code(a.method_allowed()),
            ReplyCode::UnexpectedFrame,
            "method mid-body"
        );
        assert_eq!(
            code(header(&mut a, 4)),
            ReplyCode::UnexpectedFrame,
            "second header"
        );
        assert_eq!(
            code(a.body(Bytes::from_static(b"12345"), &mut parts)),
            ReplyCode::UnexpectedFrame,
            "more body than the header said"
        );
    }

    #[test]
    fn refusals_with_rabbitmqs_codes() {
        let mut a = Assembly::default();
        assert_eq!(
            code(a.publish(Publish::for_test("x", "k", false, true))),
            ReplyCode::NotImplemented,
            "immediate=true"
        );
        a.publish(publish()).unwrap();
        assert_eq!(
            code(a.header(60, 2 << 20, Props::default(), Bytes::new(), 1 << 20)),
            ReplyCode::PreconditionFailed,
            "larger than max_message_size"
        );
        assert!(
            matches!(a, Assembly::Idle),
            "the message in progress is dropped"
        );
        a.publish(publish()).unwrap();
        assert_eq!(
            code(a.header(50, 1, Props::default(), Bytes::new(), 1 << 20)),
            ReplyCode::UnexpectedFrame,
            "a header for another class"
        );
    }
}
