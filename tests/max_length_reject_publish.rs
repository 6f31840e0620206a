//! Proves `x-overflow` reject-publish and reject-publish-dlx: once the queue is full, a new
//! message is refused (basic.nack in confirm mode, silently dropped otherwise) and the queue
//! keeps its oldest messages; reject-publish-dlx also dead-letters the refused message with
//! reason `maxlen`, reject-publish does not; room made by a consumer is usable again.
mod common;
mod queue_support;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::{BasicProperties, Channel, ExchangeKind};
use queue_support::*;

/// Publishes in confirm mode and returns whether the broker acked (true) or nacked (false).
async fn publish_acked(ch: &Channel, queue: &str, body: &str) -> bool {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish");
    let c = within("publisher confirm", confirm).await.expect("confirm");
    assert!(c.is_ack() || c.is_nack(), "{c:?}");
    c.is_ack()
}

async fn full_queue(ch: &Channel, overflow: &str, dlq: &str, limit: (&str, i32)) -> String {
    let mut args = dlx_to(dlq);
    args.push(("x-overflow", text(overflow)));
    args.push((limit.0, int(limit.1)));
    declare_with(ch, &unique("overflow"), &args).await
}

#[tokio::test]
async fn reject_publish_nacks_the_message_that_does_not_fit_and_does_not_dead_letter_it() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("overflow-dlq")).await;
    let q = full_queue(&ch, "reject-publish", &dlq, ("x-max-length", 2)).await;
    let acks: Vec<bool> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(publish_acked(&ch, &q, &format!("m{i}")).await);
        }
        v
    };
    assert_eq!(acks, [true, true, false, false]);
    assert_eq!(message_count(&ch, &dlq).await, 0);
    assert_eq!(drain(&ch, &q).await, ["m0", "m1"], "the oldest are kept");
}

#[tokio::test]
async fn reject_publish_dlx_nacks_and_dead_letters_with_reason_maxlen() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("overflow-dlx-dlq")).await;
    let q = full_queue(&ch, "reject-publish-dlx", &dlq, ("x-max-length", 1)).await;
    assert!(publish_acked(&ch, &q, "m0").await);
    assert!(!publish_acked(&ch, &q, "m1").await);
    let mut dead = consume(&ch, &dlq, true).await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(body(&d), "m1");
    assert_eq!(deaths(&d), vec![(q.clone(), "maxlen".into(), 1)]);
    assert_eq!(drain(&ch, &q).await, ["m0"]);
}

#[tokio::test]
async fn reject_publish_applies_to_x_max_length_bytes() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("overflow-bytes-dlq")).await;
    let q = full_queue(&ch, "reject-publish", &dlq, ("x-max-length-bytes", 10)).await;
    assert!(publish_acked(&ch, &q, "12345").await);
    assert!(
        publish_acked(&ch, &q, "67890").await,
        "exactly 10 bytes fit"
    );
    assert!(!publish_acked(&ch, &q, "x").await);
    assert_eq!(drain(&ch, &q).await, ["12345", "67890"]);
}

#[tokio::test]
async fn room_made_by_a_consumer_accepts_publishes_again() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("overflow-room-dlq")).await;
    let q = full_queue(&ch, "reject-publish", &dlq, ("x-max-length", 1)).await;
    assert!(publish_acked(&ch, &q, "m0").await);
    assert!(!publish_acked(&ch, &q, "m1").await);
    let m = get(&ch, &q).await.expect("m0");
    within("ack", m.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    assert!(publish_acked(&ch, &q, "m2").await);
    assert_eq!(drain(&ch, &q).await, ["m2"]);
}

#[tokio::test]
async fn without_confirms_a_refused_message_is_dropped_silently() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("overflow-plain-dlq")).await;
    let q = full_queue(&ch, "reject-publish", &dlq, ("x-max-length", 1)).await;
    for i in 0..3 {
        publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    wait_message_count(&ch, &q, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(ch.status().connected(), "a refusal is not a channel error");
    assert_eq!(drain(&ch, &q).await, ["m0"]);
}

#[tokio::test]
async fn a_message_refused_by_one_of_its_queues_is_nacked_and_still_delivered_to_the_others() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let x = unique("overflow-fan");
    declare_exchange(&ch, &x, ExchangeKind::Fanout).await;
    let dlq = declare_queue(&ch, &unique("overflow-fan-dlq")).await;
    let full = full_queue(&ch, "reject-publish", &dlq, ("x-max-length", 0)).await;
    let free = declare_queue(&ch, &unique("overflow-fan-free")).await;
    bind(&ch, &full, &x, "").await;
    bind(&ch, &free, &x, "").await;
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            x.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            b"half",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish");
    let c = within("publisher confirm", confirm).await.expect("confirm");
    assert!(c.is_nack(), "one queue refused it: {c:?}");
    assert_eq!(drain(&ch, &free).await, ["half"]);
    assert_eq!(message_count(&ch, &full).await, 0);
}
