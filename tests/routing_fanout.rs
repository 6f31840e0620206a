//! Proves fanout routing: every bound queue gets exactly one copy whatever the routing key,
//! even a queue bound several times.
mod common;

use common::*;
use lapin::ExchangeKind;

#[tokio::test]
async fn fanout_copies_to_every_bound_queue_ignoring_the_key() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("fanout");
    declare_exchange(&ch, &ex, ExchangeKind::Fanout).await;
    let q1 = declare_queue(&ch, &unique("q1")).await;
    let q2 = declare_queue(&ch, &unique("q2")).await;
    let q3 = declare_queue(&ch, &unique("q3")).await;
    let unbound = declare_queue(&ch, &unique("unbound")).await;
    bind(&ch, &q1, &ex, "").await;
    bind(&ch, &q2, &ex, "some-key").await;
    bind(&ch, &q3, &ex, "x").await;

    publish_confirmed(&ch, &ex, "", b"m1").await;
    publish_confirmed(&ch, &ex, "anything.at.all", b"m2").await;

    for q in [&q1, &q2, &q3] {
        assert_eq!(drain(&ch, q).await, vec!["m1", "m2"], "queue {q}");
    }
    assert!(drain(&ch, &unbound).await.is_empty());
}

#[tokio::test]
async fn queue_bound_twice_to_a_fanout_gets_one_copy() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("fanout-twice");
    declare_exchange(&ch, &ex, ExchangeKind::Fanout).await;
    let q = declare_queue(&ch, &unique("q")).await;
    bind(&ch, &q, &ex, "a").await;
    bind(&ch, &q, &ex, "b").await;
    publish_confirmed(&ch, &ex, "", b"single").await;
    assert_eq!(drain(&ch, &q).await, vec!["single"]);
}

#[tokio::test]
async fn fanout_with_no_bindings_drops_the_message() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("fanout-empty");
    declare_exchange(&ch, &ex, ExchangeKind::Fanout).await;
    // Still confirmed (ack, not nack) although routed nowhere.
    publish_confirmed(&ch, &ex, "", b"nowhere").await;
}
