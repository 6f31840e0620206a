//! The `x-consistent-hash` exchange, as RabbitMQ's `rabbitmq_consistent_hash_exchange` plugin:
//! one bound queue per message, picked by a hash of its routing key (or of a header or a
//! property), with binding keys as weights. Run against RabbitMQ with `WARREN_TEST_URL` (the
//! plugin enabled: `PLUGINS=rabbitmq_consistent_hash_exchange`).
mod common;

use std::collections::HashMap;

use common::*;
use lapin::options::{BasicCancelOptions, BasicPublishOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

fn chx() -> ExchangeKind {
    ExchangeKind::Custom("x-consistent-hash".into())
}

fn args(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), AMQPValue::LongString((*v).into()));
    }
    t
}

/// Publishes one message per key (with the properties `props` gives it), and returns which of
/// `queues` each key went to. The queues are emptied.
async fn route_all(
    ch: &Channel,
    exchange: &str,
    keys: &[String],
    props: impl Fn(&str) -> (String, BasicProperties),
    queues: &[String],
) -> HashMap<String, String> {
    let mut confirms = Vec::with_capacity(keys.len());
    for k in keys {
        let (routing_key, p) = props(k);
        let c = ch
            .basic_publish(
                exchange.into(),
                routing_key.as_str().into(),
                BasicPublishOptions::default(),
                k.as_bytes(),
                p,
            )
            .await
            .expect("publish");
        confirms.push(c);
    }
    for c in confirms {
        assert!(within("a confirm", c).await.expect("confirm").is_ack());
    }
    let mut out = HashMap::new();
    for q in queues {
        let n = message_count(ch, q).await;
        let mut consumer = consume(ch, q, true).await;
        for _ in 0..n {
            let d = next_delivery(&mut consumer).await;
            out.insert(body(&d), q.clone());
        }
        ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
            .expect("cancel");
    }
    assert_eq!(out.len(), keys.len(), "every key routed to one queue");
    out
}

async fn setup(ch: &Channel, exchange: &str, n: usize, weight: &str) -> Vec<String> {
    let mut queues = Vec::new();
    for i in 0..n {
        let q = declare_queue(ch, &format!("{exchange}-q{i}")).await;
        bind(ch, &q, exchange, weight).await;
        queues.push(q);
    }
    queues
}

fn by_key(k: &str) -> (String, BasicProperties) {
    (k.to_owned(), BasicProperties::default())
}

#[tokio::test]
async fn keys_spread_evenly_and_an_eleventh_queue_takes_only_its_share() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let x = unique("chx");
    declare_exchange(&ch, &x, chx()).await;
    let mut queues = setup(&ch, &x, 10, "1").await;
    let keys: Vec<String> = (0..100_000).map(|i| format!("key-{i}")).collect();
    let before = route_all(&ch, &x, &keys, by_key, &queues).await;
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for q in before.values() {
        *counts.entry(q).or_default() += 1;
    }
    assert_eq!(counts.len(), 10, "every queue gets keys: {counts:?}");
    for (q, n) in &counts {
        // Even is 10,000 each; a few percent either way.
        assert!((9_500..=10_500).contains(n), "{q} got {n} of 100,000 keys");
    }
    // The same keys again: each goes where it went before.
    let again = route_all(&ch, &x, &keys[..5_000], by_key, &queues).await;
    for (k, q) in &again {
        assert_eq!(&before[k], q, "{k} moved with no binding changed");
    }

    let eleventh = declare_queue(&ch, &format!("{x}-q10")).await;
    bind(&ch, &eleventh, &x, "1").await;
    queues.push(eleventh.clone());
    let after = route_all(&ch, &x, &keys, by_key, &queues).await;
    let mut moved = 0;
    for k in &keys {
        if after[k] != before[k] {
            assert_eq!(
                after[k], eleventh,
                "{k} moved from {} to {}, not to the new queue",
                before[k], after[k]
            );
            moved += 1;
        }
    }
    // About 1/11 of 100,000 (9,091).
    assert!(
        (8_600..=9_600).contains(&moved),
        "{moved} of 100,000 keys moved to the eleventh queue"
    );
}

#[tokio::test]
async fn weights_shift_the_share() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let x = unique("chx-w");
    declare_exchange(&ch, &x, chx()).await;
    let light = declare_queue(&ch, &format!("{x}-light")).await;
    let heavy = declare_queue(&ch, &format!("{x}-heavy")).await;
    bind(&ch, &light, &x, "1").await;
    bind(&ch, &heavy, &x, "3").await;
    let keys: Vec<String> = (0..20_000).map(|i| format!("k{i}")).collect();
    let routed = route_all(&ch, &x, &keys, by_key, &[light, heavy.clone()]).await;
    let to_heavy = routed.values().filter(|q| **q == heavy).count();
    // Three quarters is 15,000.
    assert!(
        (14_400..=15_600).contains(&to_heavy),
        "the queue of weight 3 got {to_heavy} of 20,000"
    );
}

#[tokio::test]
async fn a_header_or_a_property_can_be_hashed_instead_of_the_routing_key() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    for (what, arg) in [
        ("header", ("hash-header", "customer")),
        ("property", ("hash-property", "message_id")),
    ] {
        let x = unique(&format!("chx-{what}"));
        declare_exchange_with(&ch, &x, chx(), args(&[arg])).await;
        let queues = setup(&ch, &x, 4, "1").await;
        // Bodies are unique; the hashed value repeats: customer c0..c19, five messages each,
        // all with the same routing key.
        let keys: Vec<String> = (0..100).map(|i| format!("c{}/{i}", i % 20)).collect();
        let props = |k: &str| {
            let customer = k.split('/').next().unwrap().to_owned();
            let p = if what == "header" {
                let mut h = FieldTable::default();
                h.insert(
                    "customer".into(),
                    AMQPValue::LongString(customer.as_str().into()),
                );
                BasicProperties::default().with_headers(h)
            } else {
                BasicProperties::default().with_message_id(ShortString::from(customer))
            };
            ("same-routing-key".to_owned(), p)
        };
        let routed = route_all(&ch, &x, &keys, props, &queues).await;
        let mut of_customer: HashMap<&str, &str> = HashMap::new();
        for (k, q) in &routed {
            let c = k.split('/').next().unwrap();
            let first = of_customer.entry(c).or_insert(q);
            assert_eq!(first, q, "{what}: customer {c} went to two queues");
        }
        let used: std::collections::HashSet<&&str> = of_customer.values().collect();
        assert!(
            used.len() > 1,
            "{what}: 20 customers all went to one queue, so the routing key was hashed"
        );
    }
}

#[tokio::test]
async fn bad_arguments_and_binding_keys_are_refused_with_406() {
    let broker = start().await;
    let conn = connect(&broker).await;

    let ch = channel(&conn).await;
    let both = args(&[("hash-header", "h"), ("hash-property", "message_id")]);
    let (code, text) = expect_refused(
        "declare with hash-header and hash-property",
        ch.exchange_declare(
            unique("chx-both").as_str().into(),
            chx(),
            Default::default(),
            both,
        ),
    )
    .await;
    assert_eq!(code, 406, "{text}");
    assert!(text.contains("mutually exclusive"), "{text}");

    let ch = channel(&conn).await;
    let (code, text) = expect_refused(
        "declare with an unknown hash-property",
        ch.exchange_declare(
            unique("chx-prop").as_str().into(),
            chx(),
            Default::default(),
            args(&[("hash-property", "app_id")]),
        ),
    )
    .await;
    assert_eq!(code, 406, "{text}");
    assert!(text.contains("Unsupported property"), "{text}");

    for bad in ["abc", "0", "-2"] {
        let ch = channel(&conn).await;
        let x = unique("chx-key");
        declare_exchange(&ch, &x, chx()).await;
        let q = declare_queue(&ch, &format!("{x}-q")).await;
        let (code, text) = expect_refused(
            "a binding whose key is not a positive integer",
            ch.queue_bind(
                q.as_str().into(),
                x.as_str().into(),
                bad.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
        assert_eq!(code, 406, "binding key {bad:?}: {text}");
    }
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn an_exchange_with_no_bindings_routes_nowhere() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let x = unique("chx-empty");
    declare_exchange(&ch, &x, chx()).await;
    let c = ch
        .basic_publish(
            x.as_str().into(),
            "k".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    let confirmation = within("a confirm", c).await.expect("confirm");
    assert!(confirmation.is_ack());
    let returned = confirmation
        .take_message()
        .expect("the message is returned");
    assert_eq!(returned.reply_code, 312);
    let _ = conn.close(200, "bye".into()).await;
}
