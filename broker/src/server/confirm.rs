//! Publisher confirms: the confirm class, and the per-channel tracker that turns publish
//! outcomes into as few basic.ack / basic.nack frames as possible, always in publish order.

use std::collections::VecDeque;

use amq_protocol::protocol::{basic, confirm, AMQPClass};

use super::connection::Connection;
use crate::error::{AmqpError, AmqpResult};
use crate::protocol::write_method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Waiting for this many queues (each confirms once its write is on disk).
    Waiting(u32),
    Ack,
    Nack,
}

/// The outcomes of a confirm-mode channel's publishes not yet reported to the client.
#[derive(Debug, Default)]
pub(crate) struct Confirms {
    /// Sequence number of `pending[0]`.
    base: u64,
    /// Last sequence number handed out.
    last: u64,
    pending: VecDeque<Outcome>,
}

impl Confirms {
    /// A new publish that must wait for `waits` queues; returns its sequence number.
    pub fn publish(&mut self, waits: u32) -> u64 {
        self.last += 1;
        if self.pending.is_empty() {
            self.base = self.last;
        }
        self.pending.push_back(if waits == 0 {
            Outcome::Ack
        } else {
            Outcome::Waiting(waits)
        });
        self.last
    }

    /// The oldest publish not yet confirmed to the client (the next one if none is).
    pub fn first_pending(&self) -> u64 {
        if self.pending.is_empty() {
            self.last + 1
        } else {
            self.base
        }
    }

    /// Publishes not yet confirmed to the client.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A queue finished with publish `seq`.
    pub fn resolve(&mut self, seq: u64, ok: bool) {
        let Some(idx) = seq.checked_sub(self.base) else {
            return;
        };
        let Some(o) = self.pending.get_mut(idx as usize) else {
            return;
        };
        *o = match (*o, ok) {
            (Outcome::Waiting(_), false) | (Outcome::Nack, _) => Outcome::Nack,
            (Outcome::Waiting(n), true) if n > 1 => Outcome::Waiting(n - 1),
            _ => Outcome::Ack,
        };
    }

    /// Writes the settled prefix: runs of acks as one basic.ack with multiple=true, each nack
    /// on its own.
    pub fn flush(&mut self, out: &mut Vec<u8>, channel: u16) -> u64 {
        let mut run_end = None;
        let mut acked = 0;
        while let Some(&o) = self.pending.front() {
            let seq = self.base;
            match o {
                Outcome::Waiting(_) => break,
                Outcome::Ack => {
                    run_end = Some(seq);
                    acked += 1;
                }
                Outcome::Nack => {
                    if let Some(tag) = run_end.take() {
                        write_ack(out, channel, tag);
                    }
                    write_method(
                        out,
                        channel,
                        &AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                            delivery_tag: seq,
                            multiple: false,
                            requeue: false,
                        })),
                    );
                }
            }
            self.pending.pop_front();
            self.base += 1;
        }
        if let Some(tag) = run_end {
            write_ack(out, channel, tag);
        }
        acked
    }
}

fn write_ack(out: &mut Vec<u8>, channel: u16, tag: u64) {
    write_method(
        out,
        channel,
        &AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: tag,
            multiple: true,
        })),
    );
}

impl Connection {
    pub(crate) fn handle_confirm_method(
        &mut self,
        id: u16,
        method: confirm::AMQPMethod,
    ) -> AmqpResult<()> {
        match method {
            confirm::AMQPMethod::Select(s) => {
                let ch = self.ch(id)?;
                if ch.tx.is_some() {
                    return Err(AmqpError::precondition(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                ch.confirms.get_or_insert_with(Confirms::default);
                if !s.nowait {
                    write_method(
                        &mut self.out,
                        id,
                        &AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            _ => Err(AmqpError::command_invalid("unexpected confirm method")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_frame, Frame};
    use bytes::BytesMut;

    fn frames(out: &[u8]) -> Vec<(bool, u64, bool)> {
        let mut buf = BytesMut::from(out);
        let mut v = Vec::new();
        while let Some(frame) = decode_frame(&mut buf, 131072).unwrap() {
            match frame {
                // The decoder's fast path reads basic.ack in place.
                Frame::Ack {
                    delivery_tag,
                    multiple,
                    ..
                } => v.push((true, delivery_tag, multiple)),
                Frame::Method(_, m) => match *m {
                    AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                        v.push((false, n.delivery_tag, n.multiple))
                    }
                    other => panic!("unexpected {other:?}"),
                },
                other => panic!("unexpected {other:?}"),
            }
        }
        v
    }

    #[test]
    fn acks_coalesce_and_wait_for_the_oldest() {
        let mut c = Confirms::default();
        let a = c.publish(0);
        let b = c.publish(1);
        let d = c.publish(0);
        let mut out = Vec::new();
        c.flush(&mut out, 1);
        assert_eq!(frames(&out), [(true, a, true)]);
        c.resolve(b, true);
        out.clear();
        c.flush(&mut out, 1);
        assert_eq!(frames(&out), [(true, d, true)]);
    }

    #[test]
    fn a_nack_is_never_covered_by_a_multiple_ack() {
        let mut c = Confirms::default();
        let a = c.publish(0);
        let b = c.publish(2);
        let d = c.publish(0);
        c.resolve(b, true);
        c.resolve(b, false);
        let mut out = Vec::new();
        c.flush(&mut out, 1);
        assert_eq!(
            frames(&out),
            [(true, a, true), (false, b, false), (true, d, true)]
        );
    }
}
