//! Proves consumer dispatch: several consumers on one queue get messages round-robin, and
//! basic.qos prefetch_count caps unacknowledged deliveries per consumer (global=false) or per
//! channel (global=true); acking frees capacity; no-ack consumers ignore the limit.
mod common;

use common::*;
use lapin::options::*;
use std::time::Duration;

#[tokio::test]
async fn two_consumers_share_a_queue_round_robin() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("rr")).await;
    let mut c1 = consume(&ch, &q, true).await;
    let mut c2 = consume(&ch, &q, true).await;

    let publisher = confirm_channel(&conn).await;
    for i in 0..6 {
        publish_confirmed(&publisher, "", &q, format!("m{i}").as_bytes()).await;
    }
    let mut got1 = Vec::new();
    let mut got2 = Vec::new();
    for _ in 0..3 {
        got1.push(body(&next_delivery(&mut c1).await));
        got2.push(body(&next_delivery(&mut c2).await));
    }
    assert_eq!(got1, vec!["m0", "m2", "m4"]);
    assert_eq!(got2, vec!["m1", "m3", "m5"]);
}

#[tokio::test]
async fn prefetch_count_limits_unacked_deliveries_per_consumer() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("prefetch")).await;
    within(
        "basic.qos",
        ch.basic_qos(2, BasicQosOptions { global: false }),
    )
    .await
    .unwrap();
    let mut c = consume(&ch, &q, false).await;

    let publisher = confirm_channel(&conn).await;
    for i in 0..5 {
        publish_confirmed(&publisher, "", &q, format!("m{i}").as_bytes()).await;
    }
    let d0 = next_delivery(&mut c).await;
    let d1 = next_delivery(&mut c).await;
    assert_eq!((body(&d0).as_str(), body(&d1).as_str()), ("m0", "m1"));
    // With two unacked messages out, the other three must stay ready in the queue.
    assert_eq!(message_count(&publisher, &q).await, 3);
    assert_no_delivery(&mut c, Duration::from_millis(200)).await;

    // Acking one frees exactly one slot.
    within("ack", d0.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    let d2 = next_delivery(&mut c).await;
    assert_eq!(body(&d2), "m2");
    assert_eq!(message_count(&publisher, &q).await, 2);

    // A multiple ack up to d2 frees two.
    within(
        "ack multiple",
        ch.basic_ack(d2.delivery_tag, BasicAckOptions { multiple: true }),
    )
    .await
    .unwrap();
    let d3 = next_delivery(&mut c).await;
    let d4 = next_delivery(&mut c).await;
    assert_eq!((body(&d3).as_str(), body(&d4).as_str()), ("m3", "m4"));
    assert_eq!(message_count(&publisher, &q).await, 0);
}

#[tokio::test]
async fn prefetch_one_with_two_consumers_leaves_the_rest_ready() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("prefetch1")).await;
    within("basic.qos", ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut c1 = consume(&ch, &q, false).await;
    let mut c2 = consume(&ch, &q, false).await;
    let publisher = confirm_channel(&conn).await;
    for i in 0..3 {
        publish_confirmed(&publisher, "", &q, format!("m{i}").as_bytes()).await;
    }
    let d1 = next_delivery(&mut c1).await;
    let d2 = next_delivery(&mut c2).await;
    assert_eq!(body(&d1), "m0");
    assert_eq!(body(&d2), "m1");
    assert_eq!(message_count(&publisher, &q).await, 1);
    within("ack", d2.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    // Only c2 has room now.
    let d3 = next_delivery(&mut c2).await;
    assert_eq!(body(&d3), "m2");
    assert_no_delivery(&mut c1, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn global_prefetch_is_shared_by_the_channel_consumers() {
    // RabbitMQ reinterprets global=true as a limit shared by all consumers of the channel.
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q1 = declare_queue(&ch, &unique("g1")).await;
    let q2 = declare_queue(&ch, &unique("g2")).await;
    within(
        "basic.qos global",
        ch.basic_qos(1, BasicQosOptions { global: true }),
    )
    .await
    .unwrap();
    let mut c1 = consume(&ch, &q1, false).await;
    let mut c2 = consume(&ch, &q2, false).await;
    let publisher = confirm_channel(&conn).await;
    publish_confirmed(&publisher, "", &q1, b"a").await;
    let d = next_delivery(&mut c1).await;
    assert_eq!(body(&d), "a");
    publish_confirmed(&publisher, "", &q2, b"b").await;
    // The channel already has one unacked message: q2's message must wait.
    assert_no_delivery(&mut c2, Duration::from_millis(200)).await;
    assert_eq!(message_count(&publisher, &q2).await, 1);
    within("ack", d.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    let d2 = next_delivery(&mut c2).await;
    assert_eq!(body(&d2), "b");
}

#[tokio::test]
async fn no_ack_consumers_ignore_prefetch() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("noack")).await;
    within("basic.qos", ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut c = consume(&ch, &q, true).await;
    let publisher = confirm_channel(&conn).await;
    for i in 0..4 {
        publish_confirmed(&publisher, "", &q, format!("m{i}").as_bytes()).await;
    }
    for i in 0..4 {
        assert_eq!(body(&next_delivery(&mut c).await), format!("m{i}"));
    }
}

#[tokio::test]
async fn per_consumer_prefetch_is_fixed_when_the_consumer_starts() {
    // With global=false, basic.qos only applies to consumers started after it: raising the
    // limit does not unblock an existing consumer, a new consumer gets the new limit.
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("raise")).await;
    within("basic.qos", ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut c1 = consume(&ch, &q, false).await;
    let publisher = confirm_channel(&conn).await;
    for i in 0..3 {
        publish_confirmed(&publisher, "", &q, format!("m{i}").as_bytes()).await;
    }
    let _d0 = next_delivery(&mut c1).await;
    assert_eq!(message_count(&publisher, &q).await, 2);
    // prefetch 0 = unlimited, but only for consumers started from now on.
    within("basic.qos 0", ch.basic_qos(0, BasicQosOptions::default()))
        .await
        .unwrap();
    assert_no_delivery(&mut c1, Duration::from_millis(200)).await;
    assert_eq!(message_count(&publisher, &q).await, 2);
    let mut c2 = consume(&ch, &q, false).await;
    assert_eq!(body(&next_delivery(&mut c2).await), "m1");
    assert_eq!(body(&next_delivery(&mut c2).await), "m2");
}
