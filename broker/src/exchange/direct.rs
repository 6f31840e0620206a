//! Direct exchange: a message goes to the bindings whose key equals its routing key.

use std::collections::HashMap;

use amq_protocol::types::FieldTable;

use super::{Destination, Router};

/// Routing key to destinations; one hash lookup per message.
#[derive(Default)]
pub struct DirectRouter {
    by_key: HashMap<String, Vec<Destination>>,
}

impl Router for DirectRouter {
    fn bind(&mut self, dest: &Destination, key: &str, _args: &FieldTable) {
        self.by_key
            .entry(key.to_owned())
            .or_default()
            .push(dest.clone());
    }

    fn unbind(&mut self, dest: &Destination, key: &str, _args: &FieldTable) {
        if let Some(list) = self.by_key.get_mut(key) {
            if let Some(pos) = list.iter().position(|d| d == dest) {
                list.swap_remove(pos);
            }
            if list.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    fn route(&self, routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        if let Some(list) = self.by_key.get(routing_key) {
            out.extend(list.iter().cloned());
        }
    }
}
