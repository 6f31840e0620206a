//! Headers exchange: a binding matches on the message's headers, as `x-match` says: `all` (the
//! default) or `any` of the binding's arguments, ignoring `x-` arguments unless `all-with-x` or
//! `any-with-x`. An argument with a void value matches on the header's presence alone.

use amq_protocol::types::{AMQPValue, FieldTable};

use super::{Destination, Router};
use crate::error::{AmqpError, AmqpResult};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    All,
    Any,
}

struct Matcher {
    dest: Destination,
    args: FieldTable,
    mode: Mode,
    /// The (key, expected value) pairs that take part in matching.
    terms: Vec<(String, AMQPValue)>,
}

impl Matcher {
    fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let empty = FieldTable::default();
        let headers = headers.unwrap_or(&empty).inner();
        let hit = |(k, v): &(String, AMQPValue)| match headers.get(k.as_str()) {
            Some(found) => matches!(v, AMQPValue::Void) || found == v,
            None => false,
        };
        match self.mode {
            Mode::All => self.terms.iter().all(hit),
            Mode::Any => self.terms.iter().any(hit),
        }
    }
}

fn parse_mode(args: &FieldTable) -> AmqpResult<(Mode, bool)> {
    let value = match args.inner().get("x-match") {
        None => return Ok((Mode::All, false)),
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        Some(other) => {
            return Err(AmqpError::precondition(format_args!(
                "Invalid x-match field type {other:?}; expected all, any, all-with-x, or any-with-x"
            )))
        }
    };
    match value.as_str() {
        "all" => Ok((Mode::All, false)),
        "any" => Ok((Mode::Any, false)),
        "all-with-x" => Ok((Mode::All, true)),
        "any-with-x" => Ok((Mode::Any, true)),
        v => Err(AmqpError::precondition(format_args!(
            "Invalid x-match field value \"{v}\"; expected all, any, all-with-x, or any-with-x"
        ))),
    }
}

/// The bindings of one headers exchange, each with its parsed match rule.
#[derive(Default)]
pub struct HeadersRouter {
    matchers: Vec<Matcher>,
}

impl Router for HeadersRouter {
    fn validate(&self, _key: &str, args: &FieldTable) -> AmqpResult<()> {
        parse_mode(args).map(|_| ())
    }

    fn bind(&mut self, dest: &Destination, _key: &str, args: &FieldTable) {
        let (mode, with_x) = parse_mode(args).unwrap_or((Mode::All, false));
        let terms = args
            .inner()
            .iter()
            .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")))
            .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
            .collect();
        self.matchers.push(Matcher {
            dest: dest.clone(),
            args: args.clone(),
            mode,
            terms,
        });
    }

    fn unbind(&mut self, dest: &Destination, _key: &str, args: &FieldTable) {
        if let Some(pos) = self
            .matchers
            .iter()
            .position(|m| m.dest == *dest && m.args == *args)
        {
            self.matchers.swap_remove(pos);
        }
    }

    fn route(&self, _routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        for m in &self.matchers {
            if m.matches(headers) {
                out.push(m.dest.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueHandle;

    fn table(pairs: &[(&str, &str)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), AMQPValue::LongString((*v).into()));
        }
        t
    }

    fn hits(args: FieldTable, headers: FieldTable) -> bool {
        let mut r = HeadersRouter::default();
        r.bind(&Destination::Queue(QueueHandle::detached("q")), "", &args);
        let mut out = Vec::new();
        r.route("", Some(&headers), &mut out);
        !out.is_empty()
    }

    #[test]
    fn all_needs_every_header() {
        let args = table(&[("a", "1"), ("b", "2")]);
        assert!(hits(
            args.clone(),
            table(&[("a", "1"), ("b", "2"), ("c", "3")])
        ));
        assert!(!hits(args, table(&[("a", "1")])));
    }

    #[test]
    fn any_needs_one_header() {
        let args = table(&[("x-match", "any"), ("a", "1"), ("b", "2")]);
        assert!(hits(args.clone(), table(&[("b", "2")])));
        assert!(!hits(args, table(&[("b", "3")])));
    }

    #[test]
    fn x_arguments_count_only_with_x() {
        let args = table(&[("x-match", "all"), ("x-k", "v")]);
        assert!(hits(args, table(&[])));
        let args = table(&[("x-match", "all-with-x"), ("x-k", "v")]);
        assert!(!hits(args.clone(), table(&[])));
        assert!(hits(args, table(&[("x-k", "v")])));
    }

    #[test]
    fn bad_x_match_is_refused() {
        let r = HeadersRouter::default();
        let err = r.validate("", &table(&[("x-match", "some")])).unwrap_err();
        assert_eq!(err.code.code(), 406);
    }
}
