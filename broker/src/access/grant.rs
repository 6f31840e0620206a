//! What one user may do in one vhost, compiled for the connection that checks it: RabbitMQ's
//! `configure`, `write` and `read` regular expressions and its topic permissions, with
//! RabbitMQ's reply texts for a refusal.

use std::collections::HashMap;

use regex::Regex;

use crate::error::{AmqpError, AmqpResult};

/// One permission pattern, matched as RabbitMQ matches it (`re:run`: anywhere in the name).
#[derive(Debug, Clone)]
pub enum Pattern {
    /// `.*`, the common case: everything, without running a regex.
    Any,
    /// The empty pattern: nothing.
    Never,
    /// Anything else.
    Re(Regex),
}

impl Pattern {
    /// Compiles `p`; `Err` carries the regex engine's complaint.
    pub fn compile(p: &str) -> Result<Pattern, String> {
        match p {
            "" => Ok(Pattern::Never),
            ".*" | "^.*" | "^.*$" | ".*$" => Ok(Pattern::Any),
            _ => Regex::new(&pcre_braces(p))
                .map(Pattern::Re)
                .map_err(|e| e.to_string()),
        }
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Never => false,
            Pattern::Re(re) => re.is_match(name),
        }
    }
}

/// PCRE (RabbitMQ's regex engine) reads a `{` that does not start a repetition (`{2}`,
/// `{2,}`, `{2,5}`) as a plain character; the `regex` crate refuses it. Such braces are
/// escaped, so `^{username}-` means what it means in RabbitMQ.
fn pcre_braces(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = String::with_capacity(p.len() + 4);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            // An escape and what it escapes, as they are (multi-byte characters included).
            let next = p[i + 1..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&p[i..i + 1 + next]);
            i += 1 + next;
            continue;
        }
        if c == b'{' && !is_quantifier(&p[i + 1..]) {
            out.push_str("\\{");
            i += 1;
            continue;
        }
        let len = p[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&p[i..i + len]);
        i += len;
    }
    out
}

/// Whether `rest` (what follows a `{`) is `n}`, `n,}` or `n,m}`.
fn is_quantifier(rest: &str) -> bool {
    let Some(end) = rest.find('}') else {
        return false;
    };
    let inner = &rest[..end];
    let (a, b) = inner.split_once(',').unwrap_or((inner, "0"));
    !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
}

/// The three kinds of permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    Configure,
    Write,
    Read,
}

/// What a permission is checked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Queue,
    Exchange,
}

impl Resource {
    fn as_str(self) -> &'static str {
        match self {
            Resource::Queue => "queue",
            Resource::Exchange => "exchange",
        }
    }
}

/// Topic permissions on one exchange: patterns on routing keys (variables already expanded).
#[derive(Debug, Clone)]
pub struct TopicGrant {
    pub write: Pattern,
    pub read: Pattern,
}

/// A user's permissions in a vhost, ready to check.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user: String,
    pub vhost: String,
    pub configure: Pattern,
    pub write: Pattern,
    pub read: Pattern,
    /// Topic permissions by exchange name (empty: no topic restrictions).
    pub topics: HashMap<String, TopicGrant>,
}

impl Grant {
    /// Nothing allowed (a user whose permissions in the vhost were cleared).
    pub fn none(user: &str, vhost: &str) -> Grant {
        Grant {
            user: user.to_owned(),
            vhost: vhost.to_owned(),
            configure: Pattern::Never,
            write: Pattern::Never,
            read: Pattern::Never,
            topics: HashMap::new(),
        }
    }

    fn pattern(&self, perm: Perm) -> &Pattern {
        match perm {
            Perm::Configure => &self.configure,
            Perm::Write => &self.write,
            Perm::Read => &self.read,
        }
    }

    /// Whether every publish is allowed without looking at its exchange or routing key.
    pub fn publishes_freely(&self) -> bool {
        matches!(self.write, Pattern::Any) && self.topics.is_empty()
    }

    /// Checks `perm` on a queue or exchange. The default exchange is `amq.default`, as
    /// RabbitMQ names it.
    pub fn check(&self, perm: Perm, kind: Resource, name: &str) -> AmqpResult<()> {
        let name = if kind == Resource::Exchange && name.is_empty() {
            "amq.default"
        } else {
            name
        };
        if self.pattern(perm).matches(name) {
            return Ok(());
        }
        Err(AmqpError::access_refused(format_args!(
            "access to {} '{name}' in vhost '{}' refused for user '{}'",
            kind.as_str(),
            self.vhost,
            self.user
        )))
    }

    /// Checks a routing key against the topic permissions of a topic exchange (`write` for a
    /// publish, `read` for a binding that has the exchange as its source). An exchange
    /// without topic permissions allows every key.
    pub fn check_topic(&self, perm: Perm, exchange: &str, key: &str) -> AmqpResult<()> {
        let Some(t) = self.topics.get(exchange) else {
            return Ok(());
        };
        let p = if perm == Perm::Write {
            &t.write
        } else {
            &t.read
        };
        if p.matches(key) {
            return Ok(());
        }
        Err(AmqpError::access_refused(format_args!(
            "access to topic '{key}' in exchange '{exchange}' in vhost '{}' refused for user '{}'",
            self.vhost, self.user
        )))
    }
}

/// Expands `{username}`, `{vhost}` and `{client_id}` in a topic permission pattern, as
/// RabbitMQ does (the values are not escaped: a `.` in a name matches any character).
pub fn expand(pattern: &str, user: &str, vhost: &str, client_id: Option<&str>) -> String {
    let mut p = pattern
        .replace("{username}", user)
        .replace("{vhost}", vhost);
    if let Some(id) = client_id {
        p = p.replace("{client_id}", id);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(c: &str, w: &str, r: &str) -> Grant {
        Grant {
            user: "u".into(),
            vhost: "v".into(),
            configure: Pattern::compile(c).unwrap(),
            write: Pattern::compile(w).unwrap(),
            read: Pattern::compile(r).unwrap(),
            topics: HashMap::new(),
        }
    }

    #[test]
    fn patterns_match_anywhere_and_empty_denies() {
        let g = grant("^app-", "x", "");
        assert!(g.check(Perm::Configure, Resource::Queue, "app-1").is_ok());
        assert!(g
            .check(Perm::Configure, Resource::Queue, "my-app-1")
            .is_err());
        assert!(g.check(Perm::Write, Resource::Exchange, "box").is_ok());
        let e = g.check(Perm::Read, Resource::Queue, "").unwrap_err();
        assert_eq!(e.code, crate::error::ReplyCode::AccessRefused);
        assert_eq!(
            e.text,
            "ACCESS_REFUSED - access to queue '' in vhost 'v' refused for user 'u'"
        );
    }

    #[test]
    fn the_default_exchange_is_amq_default() {
        let g = grant(".*", "^amq\\.default$", ".*");
        assert!(g.check(Perm::Write, Resource::Exchange, "").is_ok());
        let e = grant(".*", "^x$", ".*")
            .check(Perm::Write, Resource::Exchange, "")
            .unwrap_err();
        assert!(e.text.contains("exchange 'amq.default'"), "{}", e.text);
    }

    #[test]
    fn braces_that_are_not_repetitions_are_literal_as_in_pcre() {
        let p = Pattern::compile("^{username}-").unwrap();
        assert!(p.matches("{username}-q"));
        assert!(!p.matches("u-q"));
        let p = Pattern::compile("^a{2}$").unwrap();
        assert!(p.matches("aa"));
        assert!(Pattern::compile("^a{2,}b\\{x").unwrap().matches("aaab{x"));
        assert!(Pattern::compile("(").is_err());
    }

    #[test]
    fn topic_patterns_expand_variables_unescaped() {
        assert_eq!(expand("^{username}\\.", "a.b", "v", None), "^a.b\\.");
        assert_eq!(expand("^{vhost}-{client_id}", "u", "v", Some("c")), "^v-c");
        let mut g = grant(".*", ".*", ".*");
        g.topics.insert(
            "amq.topic".into(),
            TopicGrant {
                write: Pattern::compile("^a").unwrap(),
                read: Pattern::compile(".*").unwrap(),
            },
        );
        assert!(!g.publishes_freely());
        assert!(g.check_topic(Perm::Write, "amq.topic", "a.x").is_ok());
        let e = g.check_topic(Perm::Write, "amq.topic", "b.x").unwrap_err();
        assert_eq!(
            e.text,
            "ACCESS_REFUSED - access to topic 'b.x' in exchange 'amq.topic' in vhost 'v' refused for user 'u'"
        );
        assert!(g.check_topic(Perm::Write, "other", "b.x").is_ok());
    }
}
