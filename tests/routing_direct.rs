//! Proves direct-exchange routing: a message goes to exactly the queues bound with a key equal
//! to its routing key, the default exchange routes by queue name, and the pre-declared
//! `amq.direct` exchange exists.
mod common;

use common::*;
use lapin::ExchangeKind;

#[tokio::test]
async fn direct_exchange_routes_on_exact_key_match() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("direct");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let q_a = declare_queue(&ch, &unique("q-a")).await;
    let q_b = declare_queue(&ch, &unique("q-b")).await;
    let q_a2 = declare_queue(&ch, &unique("q-a2")).await;
    let q_ab = declare_queue(&ch, &unique("q-ab")).await;
    bind(&ch, &q_a, &ex, "a").await;
    bind(&ch, &q_b, &ex, "b").await;
    bind(&ch, &q_a2, &ex, "a").await;
    // One queue bound under two keys.
    bind(&ch, &q_ab, &ex, "a").await;
    bind(&ch, &q_ab, &ex, "b").await;

    publish_confirmed(&ch, &ex, "a", b"to-a").await;
    publish_confirmed(&ch, &ex, "b", b"to-b").await;
    publish_confirmed(&ch, &ex, "c", b"to-nobody").await;
    // Keys are compared byte for byte: no case folding, no prefix match.
    publish_confirmed(&ch, &ex, "A", b"upper-a").await;
    publish_confirmed(&ch, &ex, "ab", b"ab").await;
    publish_confirmed(&ch, &ex, "", b"empty").await;

    assert_eq!(drain(&ch, &q_a).await, vec!["to-a"]);
    assert_eq!(drain(&ch, &q_b).await, vec!["to-b"]);
    assert_eq!(drain(&ch, &q_a2).await, vec!["to-a"]);
    assert_eq!(drain(&ch, &q_ab).await, vec!["to-a", "to-b"]);
}

#[tokio::test]
async fn binding_the_same_queue_twice_with_the_same_key_delivers_one_copy() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("direct-dup");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let q = declare_queue(&ch, &unique("q")).await;
    bind(&ch, &q, &ex, "k").await;
    bind(&ch, &q, &ex, "k").await; // idempotent
    publish_confirmed(&ch, &ex, "k", b"once").await;
    assert_eq!(drain(&ch, &q).await, vec!["once"]);
}

#[tokio::test]
async fn unbind_stops_routing() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("direct-unbind");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let q = declare_queue(&ch, &unique("q")).await;
    let keep = declare_queue(&ch, &unique("keep")).await;
    bind(&ch, &q, &ex, "k").await;
    bind(&ch, &keep, &ex, "k").await; // keeps the auto-delete exchange alive
    publish_confirmed(&ch, &ex, "k", b"before").await;
    within(
        "queue.unbind",
        ch.queue_unbind(
            q.as_str().into(),
            ex.as_str().into(),
            "k".into(),
            Default::default(),
        ),
    )
    .await
    .expect("queue.unbind");
    publish_confirmed(&ch, &ex, "k", b"after").await;
    assert_eq!(drain(&ch, &q).await, vec!["before"]);
    assert_eq!(drain(&ch, &keep).await, vec!["before", "after"]);
}

#[tokio::test]
async fn default_exchange_routes_to_the_queue_named_by_the_routing_key() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q1 = declare_queue(&ch, &unique("dflt-1")).await;
    let q2 = declare_queue(&ch, &unique("dflt-2")).await;
    publish_confirmed(&ch, "", &q1, b"one").await;
    publish_confirmed(&ch, "", &q2, b"two").await;
    // No such queue: silently dropped (no mandatory flag), still confirmed.
    publish_confirmed(&ch, "", &unique("no-such-queue"), b"lost").await;
    assert_eq!(drain(&ch, &q1).await, vec!["one"]);
    assert_eq!(drain(&ch, &q2).await, vec!["two"]);
}

#[tokio::test]
async fn delivery_reports_exchange_and_routing_key() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("q")).await;
    bind(&ch, &q, "amq.direct", "rk-amq-direct").await;
    publish_confirmed(&ch, "amq.direct", "rk-amq-direct", b"via amq.direct").await;
    publish_confirmed(&ch, "", &q, b"via default").await;
    let m1 = within(
        "basic.get",
        ch.basic_get(q.as_str().into(), Default::default()),
    )
    .await
    .unwrap()
    .expect("first message");
    assert_eq!(m1.delivery.exchange.as_str(), "amq.direct");
    assert_eq!(m1.delivery.routing_key.as_str(), "rk-amq-direct");
    assert_eq!(m1.delivery.data, b"via amq.direct");
    let m2 = within(
        "basic.get",
        ch.basic_get(q.as_str().into(), Default::default()),
    )
    .await
    .unwrap()
    .expect("second message");
    assert_eq!(m2.delivery.exchange.as_str(), "");
    assert_eq!(m2.delivery.routing_key.as_str(), q);
    // Unbind from the shared amq.direct so nothing leaks between runs.
    within(
        "queue.unbind",
        ch.queue_unbind(
            q.as_str().into(),
            "amq.direct".into(),
            "rk-amq-direct".into(),
            Default::default(),
        ),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn predeclared_exchanges_exist() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        within(
            "passive exchange.declare",
            ch.exchange_declare(
                name.into(),
                kind,
                lapin::options::ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} must exist: {e}"));
    }
    // Redeclaring a pre-declared exchange with equivalent settings (durable) is allowed.
    within(
        "exchange.declare amq.direct",
        ch.exchange_declare(
            "amq.direct".into(),
            ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        ),
    )
    .await
    .expect("equivalent redeclare of amq.direct");
}
