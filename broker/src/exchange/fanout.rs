//! Fanout exchange: every bound destination gets the message, whatever its routing key.

use amq_protocol::types::FieldTable;

use super::{Destination, Router};

/// The destinations, one entry per binding.
#[derive(Default)]
pub struct FanoutRouter {
    dests: Vec<Destination>,
}

impl Router for FanoutRouter {
    fn bind(&mut self, dest: &Destination, _key: &str, _args: &FieldTable) {
        self.dests.push(dest.clone());
    }

    fn unbind(&mut self, dest: &Destination, _key: &str, _args: &FieldTable) {
        if let Some(pos) = self.dests.iter().position(|d| d == dest) {
            self.dests.swap_remove(pos);
        }
    }

    fn route(&self, _routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        out.extend(self.dests.iter().cloned());
    }
}
