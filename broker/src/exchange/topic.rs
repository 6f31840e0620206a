//! Topic exchange: binding keys are dot-separated words where `*` matches exactly one word and
//! `#` zero or more. Bindings are compiled into a trie of words when bound, so routing walks the
//! routing key once instead of matching every binding's pattern.

use std::collections::HashMap;

use amq_protocol::types::FieldTable;

use super::{Destination, Router};

#[derive(Default)]
struct Node {
    /// Literal next words.
    words: HashMap<Box<str>, Node>,
    /// `*`: any one word.
    star: Option<Box<Node>>,
    /// `#`: any number of words, including none.
    hash: Option<Box<Node>>,
    /// Bindings whose pattern ends here.
    dests: Vec<Destination>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.words.is_empty() && self.star.is_none() && self.hash.is_none() && self.dests.is_empty()
    }

    fn child_mut(&mut self, word: &str) -> &mut Node {
        match word {
            "*" => self.star.get_or_insert_with(Default::default),
            "#" => self.hash.get_or_insert_with(Default::default),
            w => self.words.entry(w.into()).or_default(),
        }
    }

    /// Removes `dest` at the end of `pattern`; returns whether this node is now empty.
    fn remove(&mut self, pattern: &[&str], dest: &Destination) -> bool {
        match pattern.split_first() {
            None => {
                if let Some(pos) = self.dests.iter().position(|d| d == dest) {
                    self.dests.swap_remove(pos);
                }
            }
            Some((&word, rest)) => match word {
                "*" => {
                    if self.star.as_mut().is_some_and(|n| n.remove(rest, dest)) {
                        self.star = None;
                    }
                }
                "#" => {
                    if self.hash.as_mut().is_some_and(|n| n.remove(rest, dest)) {
                        self.hash = None;
                    }
                }
                w => {
                    if self.words.get_mut(w).is_some_and(|n| n.remove(rest, dest)) {
                        self.words.remove(w);
                    }
                }
            },
        }
        self.is_empty()
    }

    fn matches(&self, words: &[&str], out: &mut Vec<Destination>) {
        match words.split_first() {
            None => out.extend(self.dests.iter().cloned()),
            Some((first, rest)) => {
                if let Some(next) = self.words.get(*first) {
                    next.matches(rest, out);
                }
                if let Some(star) = &self.star {
                    star.matches(rest, out);
                }
            }
        }
        if let Some(hash) = &self.hash {
            // `#` swallows zero, one, ... all of the remaining words.
            for skip in 0..=words.len() {
                hash.matches(&words[skip..], out);
            }
        }
    }
}

fn split(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// The compiled bindings of one topic exchange.
#[derive(Default)]
pub struct TopicRouter {
    root: Node,
}

impl Router for TopicRouter {
    fn bind(&mut self, dest: &Destination, key: &str, _args: &FieldTable) {
        let mut node = &mut self.root;
        for word in split(key) {
            node = node.child_mut(word);
        }
        node.dests.push(dest.clone());
    }

    fn unbind(&mut self, dest: &Destination, key: &str, _args: &FieldTable) {
        self.root.remove(&split(key), dest);
    }

    fn route(&self, routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        let words = split(routing_key);
        self.root.matches(&words, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueHandle;

    fn q(name: &str) -> Destination {
        thread_local! {
            static QUEUES: std::cell::RefCell<std::collections::HashMap<String, QueueHandle>> =
                Default::default();
        }
        let h = QUEUES.with(|m| {
            m.borrow_mut()
                .entry(name.to_owned())
                .or_insert_with(|| QueueHandle::detached(name))
                .clone()
        });
        Destination::Queue(h)
    }

    fn routed(router: &TopicRouter, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        router.route(key, None, &mut out);
        let mut names: Vec<String> = out.into_iter().map(|d| d.name().to_string()).collect();
        names.sort();
        names.dedup();
        names
    }

    fn router(bindings: &[(&str, &str)]) -> TopicRouter {
        let mut r = TopicRouter::default();
        for (pattern, name) in bindings {
            r.bind(&q(name), pattern, &FieldTable::default());
        }
        r
    }

    #[test]
    fn star_matches_exactly_one_word() {
        let r = router(&[("a.*.c", "q")]);
        assert_eq!(routed(&r, "a.b.c"), ["q"]);
        assert!(routed(&r, "a.c").is_empty());
        assert!(routed(&r, "a.b.b.c").is_empty());
    }

    #[test]
    fn hash_matches_zero_or_more_words() {
        let r = router(&[("a.#", "q"), ("#", "all"), ("#.z", "z")]);
        assert_eq!(routed(&r, "a"), ["all", "q"]);
        assert_eq!(routed(&r, "a.b.c"), ["all", "q"]);
        assert_eq!(routed(&r, "z"), ["all", "z"]);
        assert_eq!(routed(&r, "x.y.z"), ["all", "z"]);
        assert_eq!(routed(&r, ""), ["all"]);
    }

    #[test]
    fn unbind_removes_only_that_binding() {
        let mut r = router(&[("a.*", "q1"), ("a.*", "q2")]);
        r.unbind(&q("q1"), "a.*", &FieldTable::default());
        assert_eq!(routed(&r, "a.b"), ["q2"]);
        r.unbind(&q("q2"), "a.*", &FieldTable::default());
        assert!(r.root.is_empty());
    }

    #[test]
    fn ten_thousand_bindings_route_by_walking_the_key() {
        let mut r = TopicRouter::default();
        for i in 0..10_000 {
            r.bind(
                &q(&format!("q{i}")),
                &format!("orders.{i}.*"),
                &FieldTable::default(),
            );
        }
        assert_eq!(routed(&r, "orders.4242.created"), ["q4242"]);
    }
}
