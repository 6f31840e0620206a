//! Proves topic-exchange matching: `*` matches exactly one word, `#` zero or more words,
//! words are separated by dots (empty words count), matching is case-sensitive, and a queue
//! matched by several bindings gets one copy.
mod common;

use common::*;
use lapin::ExchangeKind;

/// (binding pattern, routing keys it must match); every other key in KEYS must not match.
const CASES: &[(&str, &[&str])] = &[
    ("a.b.c", &["a.b.c"]),
    ("a.*.c", &["a.b.c", "a.x.c", "a..c"]),
    (
        "a.#",
        &["a", "a.b", "a.b.c", "a.b.d.c", "a.", "a..c", "a.c", "a.x.c"],
    ),
    (
        "#",
        &[
            "a", "a.b", "a.b.c", "a.c", "b.c", "c", "", "a.b.d.c", "A.b.c", "a.", "a..c", "ab.c",
            "x.y.z.w", "a.x.c",
        ],
    ),
    // An empty routing key has zero words: `*` does not match it, `#` does.
    ("*", &["a", "c"]),
    (
        "#.c",
        &[
            "a.b.c", "a.c", "b.c", "c", "A.b.c", "a.b.d.c", "a..c", "ab.c", "a.x.c",
        ],
    ),
    ("a.#.c", &["a.b.c", "a.c", "a.b.d.c", "a..c", "a.x.c"]),
    ("*.*", &["a.b", "a.c", "b.c", "a.", "ab.c"]),
    // A trailing dot makes a trailing empty word, which `*` matches.
    (
        "a.*.#",
        &["a.b", "a.b.c", "a.c", "a.b.d.c", "a.", "a..c", "a.x.c"],
    ),
    ("*.b.*", &["a.b.c", "A.b.c"]),
    (
        "#.#",
        &[
            "a", "a.b", "a.b.c", "a.c", "b.c", "c", "", "a.b.d.c", "A.b.c", "a.", "a..c", "ab.c",
            "x.y.z.w", "a.x.c",
        ],
    ),
    ("*.*.*.*", &["a.b.d.c", "x.y.z.w"]),
];

const KEYS: &[&str] = &[
    "a", "a.b", "a.b.c", "a.c", "b.c", "c", "", "a.b.d.c", "A.b.c", "a.", "a..c", "ab.c",
    "x.y.z.w", "a.x.c",
];

#[tokio::test]
async fn topic_patterns_match_as_rabbitmq_does() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("topic");
    declare_exchange(&ch, &ex, ExchangeKind::Topic).await;
    let mut queues = Vec::new();
    for (i, (pattern, _)) in CASES.iter().enumerate() {
        let q = declare_queue(&ch, &unique(&format!("topic-{i}"))).await;
        bind(&ch, &q, &ex, pattern).await;
        queues.push(q);
    }
    for key in KEYS {
        publish_confirmed(&ch, &ex, key, key.as_bytes()).await;
    }
    let mut failures = Vec::new();
    for ((pattern, expected), q) in CASES.iter().zip(&queues) {
        let mut got = drain(&ch, q).await;
        got.sort();
        let mut want: Vec<String> = expected
            .iter()
            .filter(|k| KEYS.contains(k))
            .map(|k| k.to_string())
            .collect();
        want.sort();
        if got != want {
            failures.push(format!("pattern {pattern:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn overlapping_topic_bindings_deliver_one_copy() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("topic-overlap");
    declare_exchange(&ch, &ex, ExchangeKind::Topic).await;
    let q = declare_queue(&ch, &unique("q")).await;
    bind(&ch, &q, &ex, "stock.#").await;
    bind(&ch, &q, &ex, "*.nyse").await;
    bind(&ch, &q, &ex, "stock.nyse").await;
    publish_confirmed(&ch, &ex, "stock.nyse", b"ibm").await;
    publish_confirmed(&ch, &ex, "bond.lse", b"gilt").await;
    assert_eq!(drain(&ch, &q).await, vec!["ibm"]);
}

#[tokio::test]
async fn amq_topic_is_predeclared_and_routes() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("q")).await;
    let word = unique("w").replace('-', "_");
    let pattern = format!("{word}.*");
    bind(&ch, &q, "amq.topic", &pattern).await;
    publish_confirmed(&ch, "amq.topic", &format!("{word}.x"), b"hit").await;
    publish_confirmed(&ch, "amq.topic", &format!("{word}.x.y"), b"miss").await;
    assert_eq!(drain(&ch, &q).await, vec!["hit"]);
    within(
        "queue.unbind",
        ch.queue_unbind(
            q.as_str().into(),
            "amq.topic".into(),
            pattern.as_str().into(),
            Default::default(),
        ),
    )
    .await
    .unwrap();
}
