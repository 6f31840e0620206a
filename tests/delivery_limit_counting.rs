//! Proves `x-delivery-limit` on any queue, durable or not: every failed delivery (nack or reject
//! with requeue, or the consumer's channel closing with the message unacked) is counted, each
//! redelivery carries `x-delivery-count`, and past the limit the message is dead-lettered with
//! reason `delivery_limit`, or dropped when the queue has no dead-letter exchange.
//!
//! RabbitMQ has delivery limits on quorum queues only: against a `WARREN_TEST_URL` broker the
//! limited queues are declared as (durable) quorum queues, to compare the counting.
mod common;
mod queue_support;

use amq_protocol::types::AMQPValue;
use common::*;
use lapin::message::Delivery;
use lapin::options::*;
use lapin::Channel;
use queue_support::*;

/// Declares a queue with a delivery limit (plus `args`). On Warren: exclusive and transient,
/// or durable if asked; elsewhere a quorum queue, which RabbitMQ requires for the limit.
async fn limited(
    broker: &TestBroker,
    ch: &Channel,
    prefix: &str,
    limit: i32,
    durable: bool,
    args: &[(&str, AMQPValue)],
) -> String {
    let mut all = args.to_vec();
    all.push(("x-delivery-limit", int(limit)));
    let opts = if on_warren(broker) && !durable {
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        }
    } else {
        if !on_warren(broker) {
            all.push(("x-queue-type", text("quorum")));
        }
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        }
    };
    declare_opts(ch, &unique(prefix), opts, &all).await
}

async fn nack_requeue(d: &Delivery) {
    within(
        "nack requeue",
        d.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        }),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn redeliveries_carry_x_delivery_count() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = limited(&broker, &ch, "dlim-count", 10, false, &[]).await;
    publish_confirmed(&ch, "", &q, b"flaky").await;
    let mut c = consume(&ch, &q, false).await;

    let d = next_delivery(&mut c).await;
    assert_eq!(delivery_count(&d), None, "a first delivery has no count");
    nack_requeue(&d).await;
    let d = next_delivery(&mut c).await;
    assert!(d.redelivered);
    assert_eq!(delivery_count(&d), Some(1));
    within("reject", d.reject(BasicRejectOptions { requeue: true }))
        .await
        .unwrap();
    let d = next_delivery(&mut c).await;
    assert_eq!(delivery_count(&d), Some(2));
    assert!(
        matches!(
            header(&d, "x-delivery-count"),
            Some(AMQPValue::LongLongInt(2))
        ),
        "x-delivery-count is a long: {:?}",
        header(&d, "x-delivery-count")
    );
    within("ack", d.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    if !on_warren(&broker) {
        delete_queue(&ch, &q).await;
    }
}

#[tokio::test]
async fn a_channel_closing_with_the_message_unacked_counts_as_a_failed_delivery() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = limited(&broker, &ch, "dlim-close", 10, false, &[]).await;
    publish_confirmed(&ch, "", &q, b"abandoned").await;
    for expected in [None, Some(1), Some(2)] {
        let worker = channel(&conn).await;
        let mut c = consume(&worker, &q, false).await;
        let d = next_delivery(&mut c).await;
        assert_eq!(delivery_count(&d), expected);
        within("channel.close", worker.close(200, "crash".into()))
            .await
            .unwrap();
    }
    wait_message_count(&ch, &q, 1).await;
    if !on_warren(&broker) {
        delete_queue(&ch, &q).await;
    }
}

#[tokio::test]
async fn past_the_limit_the_message_is_dead_lettered_with_reason_delivery_limit() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("dlim-dlq")).await;
    let q = limited(&broker, &ch, "dlim", 2, false, &dlx_to(&dlq)).await;
    publish_confirmed(&ch, "", &q, b"hopeless").await;
    publish_confirmed(&ch, "", &q, b"fine").await;
    let mut c = consume(&ch, &q, false).await;
    // A limit of 2 allows two failed deliveries: the third failure dead-letters.
    let mut failures = 0;
    while failures < 3 {
        let d = next_delivery(&mut c).await;
        if body(&d) == "hopeless" {
            failures += 1;
            nack_requeue(&d).await;
        } else {
            within("ack", d.ack(BasicAckOptions::default()))
                .await
                .unwrap();
        }
    }
    let mut dead = consume(&ch, &dlq, true).await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(body(&d), "hopeless");
    assert_eq!(deaths(&d), vec![(q.clone(), "delivery_limit".into(), 1)]);
    assert_eq!(header_str(&d, "x-first-death-reason"), "delivery_limit");
    assert_eq!(message_count(&ch, &q).await, 0);
    if !on_warren(&broker) {
        delete_queue(&ch, &q).await;
    }
}

#[tokio::test]
async fn past_the_limit_without_a_dead_letter_exchange_the_message_is_dropped() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = limited(&broker, &ch, "dlim-drop", 0, false, &[]).await;
    publish_confirmed(&ch, "", &q, b"one chance").await;
    let d = get(&ch, &q).await.expect("the message");
    // Limit 0: the first failure is already one too many.
    nack_requeue(&d).await;
    wait_message_count(&ch, &q, 0).await;
    assert!(get(&ch, &q).await.is_none());
    if !on_warren(&broker) {
        delete_queue(&ch, &q).await;
    }
}

#[tokio::test]
async fn a_durable_queue_counts_and_dead_letters_the_same_way() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("dlim-durable-dlq")).await;
    let q = limited(&broker, &ch, "dlim-durable", 1, true, &dlx_to(&dlq)).await;
    publish_confirmed_with(
        &ch,
        "",
        &q,
        b"persistent",
        lapin::BasicProperties::default().with_delivery_mode(2),
    )
    .await;
    let mut c = consume(&ch, &q, false).await;
    let d = next_delivery(&mut c).await;
    nack_requeue(&d).await;
    let d = next_delivery(&mut c).await;
    assert_eq!(delivery_count(&d), Some(1));
    nack_requeue(&d).await;
    let mut dead = consume(&ch, &dlq, true).await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(x_death(&d)[0].reason(), "delivery_limit");
    delete_queue(&ch, &q).await;
}

#[tokio::test]
async fn a_rejection_without_requeue_is_rejected_not_a_delivery_limit() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("dlim-rej-dlq")).await;
    let q = limited(&broker, &ch, "dlim-rej", 5, false, &dlx_to(&dlq)).await;
    publish_confirmed(&ch, "", &q, b"bad").await;
    let d = get(&ch, &q).await.expect("the message");
    nack_requeue(&d).await;
    let d = {
        let mut c = consume(&ch, &q, false).await;
        next_delivery(&mut c).await
    };
    within("reject", d.reject(BasicRejectOptions { requeue: false }))
        .await
        .unwrap();
    let mut dead = consume(&ch, &dlq, true).await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(deaths(&d), vec![(q.clone(), "rejected".into(), 1)]);
    if !on_warren(&broker) {
        delete_queue(&ch, &q).await;
    }
}
