//! Policies and operator policies, as RabbitMQ's: named per vhost, each with a regex
//! `pattern` over queue or exchange names, an `apply-to`, a `priority` and a `definition` of
//! settings. Of the policies that match an object, the one with the highest priority applies
//! (ties: the name that sorts first, where RabbitMQ leaves it unspecified); of the operator
//! policies, likewise. The two definitions merge as in `rabbit_policy`: a key only one of them
//! sets comes from it; for a key both set, the operator's numeric limit wins when it is the
//! lower one (`message-ttl`, `expires`, `max-length`, `max-length-bytes`, `delivery-limit`).
//!
//! A queue's own `x-` arguments then meet the merged definition as in RabbitMQ's
//! `rabbit_amqqueue_process`: for those numeric limits the lower of argument and policy wins
//! (`res_min`), for everything else the client's argument wins (`res_arg`).
//!
//! This module only validates, matches and merges; the vhost owns the set and applies it.

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::queue::kind::QueueKind;

/// The settings whose lower value wins: between policy and operator policy, and between a
/// policy and the queue's own argument.
const LOWER_WINS: &[&str] = &[
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "delivery-limit",
];

/// The settings an operator policy may hold (RabbitMQ's `operator_policy_validator`s that
/// Warren implements).
const OPERATOR_KEYS: &[&str] = LOWER_WINS;

/// Settings RabbitMQ knows that Warren does not act on: refused by name rather than stored
/// and silently ignored.
const NOT_IMPLEMENTED: &[&str] = &[
    "max-in-memory-length",
    "max-in-memory-bytes",
    "queue-version",
    "queue-leader-locator",
    "initial-cluster-size",
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "federation-upstream",
    "federation-upstream-set",
    "shovel",
];

/// What a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    All,
    Exchanges,
    Queues,
    ClassicQueues,
    QuorumQueues,
    Streams,
}

impl ApplyTo {
    /// Parses RabbitMQ's names.
    pub fn parse(s: &str) -> Option<ApplyTo> {
        Some(match s {
            "all" => ApplyTo::All,
            "exchanges" => ApplyTo::Exchanges,
            "queues" => ApplyTo::Queues,
            "classic_queues" => ApplyTo::ClassicQueues,
            "quorum_queues" => ApplyTo::QuorumQueues,
            "streams" => ApplyTo::Streams,
            _ => return None,
        })
    }

    fn covers(self, target: Target) -> bool {
        matches!(
            (self, target),
            (ApplyTo::All, _)
                | (ApplyTo::Exchanges, Target::Exchange)
                | (ApplyTo::Queues, Target::Queue(_))
                | (ApplyTo::ClassicQueues, Target::Queue(QueueKind::Classic))
                | (ApplyTo::QuorumQueues, Target::Queue(QueueKind::Quorum))
                | (ApplyTo::Streams, Target::Queue(QueueKind::Stream))
        )
    }
}

/// What a policy is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Exchange,
    Queue(QueueKind),
}

/// A policy as it is stored, listed and exported (RabbitMQ's JSON fields).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyDef {
    pub name: String,
    pub pattern: String,
    #[serde(rename = "apply-to")]
    pub apply_to: String,
    pub priority: i64,
    pub definition: Map<String, Value>,
}

/// A validated policy.
#[derive(Debug)]
pub struct Policy {
    pub def: PolicyDef,
    regex: regex::Regex,
    apply_to: ApplyTo,
}

/// An Erlang-looking rendering of a JSON value, for RabbitMQ's validation messages
/// (`<<"abc">> is not a valid message TTL`).
fn term(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{s}\">>"),
        other => other.to_string(),
    }
}

fn validation_failed(why: String) -> String {
    format!("Validation failed\n\n{why}\n")
}

/// Checks one setting's value; the error is RabbitMQ's sentence.
fn validate_setting(key: &str, v: &Value) -> Result<(), Option<String>> {
    let int_at_least = |min: i64, what: &str| match v.as_i64() {
        Some(n) if n >= min && v.is_i64() => Ok(()),
        _ => Err(Some(format!("{} is not a valid {what}", term(v)))),
    };
    let string = |what: &str| match v {
        Value::String(_) => Ok(()),
        _ => Err(Some(format!("{} is not a valid {what}", term(v)))),
    };
    match key {
        "alternate-exchange" => string("alternate exchange name"),
        "dead-letter-exchange" => string("dead letter exchange name"),
        "dead-letter-routing-key" => string("dead letter routing key"),
        "message-ttl" => match v.as_u64() {
            Some(n) if n <= crate::queue::args::MAX_TTL_MS => Ok(()),
            _ => Err(Some(format!("{} is not a valid message TTL", term(v)))),
        },
        "expires" => match v.as_u64() {
            Some(n) if (1..=crate::queue::args::MAX_TTL_MS).contains(&n) => Ok(()),
            _ => Err(Some(format!("{} is not a valid queue expiry", term(v)))),
        },
        "max-length" => int_at_least(0, "maximum length"),
        "max-length-bytes" => int_at_least(0, "maximum length in bytes"),
        "delivery-limit" => int_at_least(0, "delivery limit"),
        "stream-max-segment-size-bytes" => int_at_least(1, "segment size"),
        "overflow" => match v.as_str() {
            Some("drop-head" | "reject-publish" | "reject-publish-dlx") => Ok(()),
            _ => Err(Some(format!("{} is not a valid overflow value", term(v)))),
        },
        "queue-mode" => match v.as_str() {
            Some("default" | "lazy") => Ok(()),
            _ => Err(Some(format!("{} is not a valid queue-mode value", term(v)))),
        },
        "max-age" => match v.as_str().and_then(crate::stream::parse_interval) {
            Some(_) => Ok(()),
            None => Err(Some(format!("{} is not a valid max age", term(v)))),
        },
        _ => Err(None),
    }
}

/// Validates a definition, as RabbitMQ's policy validators do (400 reasons).
pub fn validate_definition(definition: &Map<String, Value>, operator: bool) -> Result<(), String> {
    if definition.is_empty() {
        return Err(validation_failed("no policy provided".into()));
    }
    let mut unknown = Vec::new();
    for (key, v) in definition {
        if NOT_IMPLEMENTED.contains(&key.as_str()) {
            return Err(validation_failed(format!(
                "'{key}' is a RabbitMQ policy setting that Warren does not implement"
            )));
        }
        if operator && !OPERATOR_KEYS.contains(&key.as_str()) {
            unknown.push(format!("{{<<\"{key}\">>,{}}}", term(v)));
            continue;
        }
        match validate_setting(key, v) {
            Ok(()) => {}
            Err(Some(why)) => return Err(validation_failed(why)),
            Err(None) => unknown.push(format!("{{<<\"{key}\">>,{}}}", term(v))),
        }
    }
    if !unknown.is_empty() {
        return Err(validation_failed(format!(
            "[{}] are not recognised policy settings",
            unknown.join(",")
        )));
    }
    Ok(())
}

impl Policy {
    /// Validates a policy (the error is a 400 reason in RabbitMQ's words).
    pub fn new(def: PolicyDef, operator: bool) -> Result<Policy, String> {
        let apply_to = ApplyTo::parse(&def.apply_to).ok_or_else(|| {
            validation_failed(format!(
                "apply-to '{}' unrecognised; should be 'queues', 'classic_queues', \
                 'quorum_queues', 'streams', 'exchanges' or 'all'",
                def.apply_to
            ))
        })?;
        let regex = regex::Regex::new(&def.pattern).map_err(|e| {
            validation_failed(format!(
                "<<\"{}\">> is not a valid regular expression: {e}",
                def.pattern
            ))
        })?;
        validate_definition(&def.definition, operator)?;
        Ok(Policy {
            def,
            regex,
            apply_to,
        })
    }

    /// Parses a policy from the API's PUT body (`pattern`, `definition`, optional `priority`
    /// (0) and `apply-to` (`all`)).
    pub fn from_body(
        name: &str,
        body: &Map<String, Value>,
        operator: bool,
    ) -> Result<Policy, String> {
        let pattern = match body.get("pattern") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => return Err("[{key_missing,pattern}]".into()),
            Some(other) => {
                return Err(validation_failed(format!(
                    "pattern should be a string, actually was {other}"
                )))
            }
        };
        let definition = match body.get("definition") {
            Some(Value::Object(o)) => o.clone(),
            None | Some(Value::Null) => return Err("[{key_missing,definition}]".into()),
            Some(other) => {
                return Err(validation_failed(format!(
                    "definition must be a dictionary: {other}"
                )))
            }
        };
        let priority = match body.get("priority") {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or(0),
            // Some tools send it as a string.
            Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => {
                s.trim().parse().unwrap_or(0)
            }
            Some(other) => {
                return Err(validation_failed(format!(
                    "{} priority must be a number",
                    term(other)
                )))
            }
        };
        let apply_to = match body.get("apply-to") {
            None | Some(Value::Null) => "all".to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(validation_failed(format!(
                    "apply-to should be a string, actually was {other}"
                )))
            }
        };
        Policy::new(
            PolicyDef {
                name: name.to_owned(),
                pattern,
                apply_to,
                priority,
                definition,
            },
            operator,
        )
    }

    /// Whether it applies to this object.
    pub fn matches(&self, target: Target, name: &str) -> bool {
        self.apply_to.covers(target) && self.regex.is_match(name)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.def.name
    }
}

/// A vhost's policies and operator policies.
#[derive(Debug, Default, Clone)]
pub struct PolicySet {
    policies: Vec<Arc<Policy>>,
    operator: Vec<Arc<Policy>>,
}

impl PolicySet {
    fn list_mut(&mut self, operator: bool) -> &mut Vec<Arc<Policy>> {
        if operator {
            &mut self.operator
        } else {
            &mut self.policies
        }
    }

    /// The policies (or operator policies), by name.
    pub fn list(&self, operator: bool) -> &[Arc<Policy>] {
        if operator {
            &self.operator
        } else {
            &self.policies
        }
    }

    /// Adds or replaces a policy; whether it is new.
    pub fn put(&mut self, operator: bool, policy: Policy) -> bool {
        let list = self.list_mut(operator);
        let policy = Arc::new(policy);
        match list.binary_search_by(|p| p.name().cmp(policy.name())) {
            Ok(i) => {
                list[i] = policy;
                false
            }
            Err(i) => {
                list.insert(i, policy);
                true
            }
        }
    }

    /// Removes a policy; whether it was there.
    pub fn remove(&mut self, operator: bool, name: &str) -> bool {
        let list = self.list_mut(operator);
        match list.binary_search_by(|p| p.name().cmp(name)) {
            Ok(i) => {
                list.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    fn select(list: &[Arc<Policy>], target: Target, name: &str) -> Option<Arc<Policy>> {
        // Sorted by name, so the first of equal priorities is the name that sorts first.
        let mut best: Option<&Arc<Policy>> = None;
        for p in list.iter().filter(|p| p.matches(target, name)) {
            if best.is_none_or(|b| p.def.priority > b.def.priority) {
                best = Some(p);
            }
        }
        best.cloned()
    }

    /// The policy and operator policy that apply to an object.
    pub fn applied(&self, target: Target, name: &str) -> Applied {
        if self.policies.is_empty() && self.operator.is_empty() {
            return Applied::default();
        }
        Applied {
            policy: Self::select(&self.policies, target, name),
            operator: Self::select(&self.operator, target, name),
        }
    }
}

/// The policy and operator policy in force on one queue or exchange.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub policy: Option<Arc<Policy>>,
    pub operator: Option<Arc<Policy>>,
}

fn same(a: &Option<Arc<Policy>>, b: &Option<Arc<Policy>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

impl PartialEq for Applied {
    fn eq(&self, other: &Self) -> bool {
        same(&self.policy, &other.policy) && same(&self.operator, &other.operator)
    }
}

impl Applied {
    /// Whether nothing applies.
    pub fn is_empty(&self) -> bool {
        self.policy.is_none() && self.operator.is_none()
    }

    /// The policy's name.
    pub fn policy_name(&self) -> Option<&str> {
        self.policy.as_ref().map(|p| p.name())
    }

    /// The operator policy's name.
    pub fn operator_policy_name(&self) -> Option<&str> {
        self.operator.as_ref().map(|p| p.name())
    }

    /// The merged definition (RabbitMQ's `effective_policy_definition`).
    pub fn definition(&self) -> Map<String, Value> {
        let mut out = self
            .policy
            .as_ref()
            .map(|p| p.def.definition.clone())
            .unwrap_or_default();
        if let Some(op) = &self.operator {
            for (k, v) in &op.def.definition {
                let merged = match (out.get(k), LOWER_WINS.contains(&k.as_str())) {
                    (Some(mine), true) => match (mine.as_i64(), v.as_i64()) {
                        (Some(a), Some(b)) => Value::from(a.min(b)),
                        _ => v.clone(),
                    },
                    _ => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
        }
        out
    }

    /// The `x-` arguments a queue runs with: its own, and what the policies add. For the
    /// numeric limits the lower of the two wins; for the rest the queue's own argument.
    pub fn queue_arguments(&self, own: &FieldTable) -> FieldTable {
        let mut table = own.clone();
        if self.is_empty() {
            return table;
        }
        let definition = self.definition();
        for (key, v) in &definition {
            if key == "alternate-exchange" || key == "queue-mode" {
                continue;
            }
            let arg = format!("x-{key}");
            let mine = own.inner().get(arg.as_str());
            let value = match (mine, LOWER_WINS.contains(&key.as_str())) {
                (Some(m), true) => match (crate::queue::args::as_int(m), v.as_i64()) {
                    (Some(a), Some(b)) if i128::from(b) < a => AMQPValue::LongLongInt(b),
                    _ => continue,
                },
                (Some(_), false) => continue,
                (None, _) => match v {
                    Value::Number(n) => match n.as_i64() {
                        Some(n) => AMQPValue::LongLongInt(n),
                        None => continue,
                    },
                    Value::String(s) => AMQPValue::LongString(s.as_str().into()),
                    _ => continue,
                },
            };
            table.insert(arg.as_str().into(), value);
        }
        // A policy's dead-letter routing key means nothing without a dead-letter exchange
        // (RabbitMQ ignores it; Warren's argument check would refuse the pair).
        if !table.inner().contains_key("x-dead-letter-exchange") {
            let mut t = FieldTable::default();
            for (k, v) in table.inner() {
                if k.as_str() != "x-dead-letter-routing-key" {
                    t.insert(k.clone(), v.clone());
                }
            }
            table = t;
        }
        table
    }

    /// The alternate exchange a policy gives (an exchange's own argument wins over it).
    pub fn alternate_exchange(&self) -> Option<Arc<str>> {
        let p = self.policy.as_ref()?;
        p.def
            .definition
            .get("alternate-exchange")
            .and_then(Value::as_str)
            .map(Arc::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, pattern: &str, priority: i64, def: Value, operator: bool) -> Policy {
        let body = json!({"pattern": pattern, "priority": priority, "definition": def});
        Policy::from_body(name, body.as_object().unwrap(), operator).unwrap()
    }

    const CLASSIC: Target = Target::Queue(QueueKind::Classic);

    #[test]
    fn the_highest_priority_match_applies_and_ties_go_to_the_first_name() {
        let mut set = PolicySet::default();
        set.put(false, policy("b", "^q", 1, json!({"max-length": 5}), false));
        set.put(false, policy("a", "^q", 1, json!({"max-length": 6}), false));
        set.put(
            false,
            policy("c", "^qq", 2, json!({"max-length": 7}), false),
        );
        assert_eq!(set.applied(CLASSIC, "q1").policy_name(), Some("a"));
        assert_eq!(set.applied(CLASSIC, "qq").policy_name(), Some("c"));
        assert!(set.applied(CLASSIC, "x").is_empty());
        assert!(set.applied(Target::Exchange, "q1").policy.is_some());
    }

    #[test]
    fn apply_to_selects_kinds() {
        let body = json!({"pattern": ".", "apply-to": "streams", "definition": {"max-age": "1h"}});
        let p = Policy::from_body("s", body.as_object().unwrap(), false).unwrap();
        assert!(p.matches(Target::Queue(QueueKind::Stream), "s"));
        assert!(!p.matches(CLASSIC, "s"));
        assert!(!p.matches(Target::Exchange, "s"));
    }

    #[test]
    fn the_operator_policy_wins_when_stricter() {
        let applied = Applied {
            policy: Some(Arc::new(policy(
                "p",
                ".",
                0,
                json!({"max-length": 100, "message-ttl": 1000, "dead-letter-exchange": "dlx"}),
                false,
            ))),
            operator: Some(Arc::new(policy(
                "o",
                ".",
                0,
                json!({"max-length": 10, "message-ttl": 5000, "expires": 60000}),
                true,
            ))),
        };
        let d = applied.definition();
        assert_eq!(d["max-length"], json!(10));
        assert_eq!(d["message-ttl"], json!(1000));
        assert_eq!(d["expires"], json!(60000));
        assert_eq!(d["dead-letter-exchange"], json!("dlx"));
    }

    #[test]
    fn arguments_lower_limit_wins_and_other_arguments_win_over_policies() {
        let applied = Applied {
            policy: Some(Arc::new(policy(
                "p",
                ".",
                0,
                json!({"max-length": 100, "overflow": "reject-publish", "dead-letter-routing-key": "k"}),
                false,
            ))),
            operator: None,
        };
        let mut own = FieldTable::default();
        own.insert("x-max-length".into(), AMQPValue::LongInt(50));
        own.insert(
            "x-overflow".into(),
            AMQPValue::LongString("drop-head".into()),
        );
        let t = applied.queue_arguments(&own);
        assert_eq!(t.inner()["x-max-length"], AMQPValue::LongInt(50));
        assert_eq!(
            t.inner()["x-overflow"],
            AMQPValue::LongString("drop-head".into())
        );
        assert!(
            !t.inner().contains_key("x-dead-letter-routing-key"),
            "no dead-letter exchange"
        );
        let mut own = FieldTable::default();
        own.insert("x-max-length".into(), AMQPValue::LongInt(500));
        let t = applied.queue_arguments(&own);
        assert_eq!(t.inner()["x-max-length"], AMQPValue::LongLongInt(100));
        assert_eq!(
            t.inner()["x-overflow"],
            AMQPValue::LongString("reject-publish".into())
        );
    }

    #[test]
    fn validation_speaks_rabbitmqs_words() {
        let bad = |def: Value, operator: bool| {
            let body = json!({"pattern": ".", "definition": def});
            Policy::from_body("p", body.as_object().unwrap(), operator).unwrap_err()
        };
        assert!(bad(json!({"message-ttl": "x"}), false).contains("is not a valid message TTL"));
        assert!(bad(json!({"expires": 0}), false).contains("is not a valid queue expiry"));
        assert!(bad(json!({"foo": 1}), false).contains("are not recognised policy settings"));
        assert!(
            bad(json!({"dead-letter-exchange": "x"}), true)
                .contains("are not recognised policy settings"),
            "operator policies hold limits only"
        );
        assert!(bad(json!({"ha-mode": "all"}), false).contains("does not implement"));
        assert!(bad(json!({}), false).contains("no policy provided"));
        let body = json!({"pattern": "(", "definition": {"max-length": 1}});
        assert!(Policy::from_body("p", body.as_object().unwrap(), false).is_err());
        let body = json!({"pattern": ".", "apply-to": "topics", "definition": {"max-length": 1}});
        assert!(Policy::from_body("p", body.as_object().unwrap(), false)
            .unwrap_err()
            .contains("apply-to 'topics' unrecognised"));
    }
}
