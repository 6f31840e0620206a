//! The tx class (select, commit, rollback) and the confirm class (select).

use std::sync::Arc;

use amq_protocol::protocol::{tx, AMQPClass};

use super::basic::Settle;
use super::channel::{settle, Unacked};
use super::connection::Connection;
use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;
use crate::protocol::write_method;

/// Body bytes one transaction may hold before it is refused, so a client cannot grow the
/// broker's memory without bound by never committing.
const TX_MAX_BYTES: usize = 256 * 1024 * 1024;

/// What a transactional channel holds until commit.
#[derive(Default)]
pub(crate) struct TxState {
    /// Publishes, in order, with their mandatory flag.
    pub publishes: Vec<(Arc<Message>, bool)>,
    /// Acks, nacks and rejects, with the entries they took out of the unacked map (restored
    /// on rollback).
    pub settles: Vec<(u64, Unacked, Settle)>,
    bytes: usize,
}

impl TxState {
    /// Holds a publish until commit.
    pub fn hold(&mut self, msg: Arc<Message>, mandatory: bool) -> AmqpResult<()> {
        self.bytes += msg.body_len();
        if self.bytes > TX_MAX_BYTES {
            return Err(AmqpError::precondition(format_args!(
                "transaction holds more than {TX_MAX_BYTES} bytes of messages; commit more often"
            )));
        }
        self.publishes.push((msg, mandatory));
        Ok(())
    }
}

impl Connection {
    pub(crate) async fn handle_tx_method(
        &mut self,
        id: u16,
        method: tx::AMQPMethod,
    ) -> AmqpResult<()> {
        match method {
            tx::AMQPMethod::Select(_) => {
                let ch = self.ch(id)?;
                if ch.confirms.is_some() {
                    return Err(AmqpError::precondition(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                ch.tx.get_or_insert_with(TxState::default);
                write_method(
                    &mut self.out,
                    id,
                    &AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})),
                );
            }
            tx::AMQPMethod::Commit(_) => {
                let ch = self.ch(id)?;
                let state = std::mem::take(
                    ch.tx
                        .as_mut()
                        .ok_or_else(|| AmqpError::precondition("channel is not transactional"))?,
                );
                let qos = ch.qos.clone();
                for (msg, mandatory) in state.publishes {
                    let props = msg.properties();
                    self.publish_message(id, msg, mandatory, props.headers().as_ref())?;
                }
                self.flush_publishes().await;
                for (_, u, how) in state.settles {
                    if settle([u], &qos, |_, ids| how.command(ids)) {
                        self.wake_channel(id);
                    }
                }
                write_method(
                    &mut self.out,
                    id,
                    &AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
                );
            }
            tx::AMQPMethod::Rollback(_) => {
                let ch = self.ch(id)?;
                let state = std::mem::take(
                    ch.tx
                        .as_mut()
                        .ok_or_else(|| AmqpError::precondition("channel is not transactional"))?,
                );
                for (tag, u, _) in state.settles {
                    ch.unacked.insert(tag, u);
                }
                write_method(
                    &mut self.out,
                    id,
                    &AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
            }
            _ => return Err(AmqpError::command_invalid("unexpected tx method")),
        }
        Ok(())
    }
}
