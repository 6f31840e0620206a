//! Proves that a message rejected or nacked with requeue=false goes to the queue's
//! `x-dead-letter-exchange` with reason `rejected`, under `x-dead-letter-routing-key` if the
//! queue has one and under its own routing key if not, while a requeue does not dead-letter.
mod common;
mod queue_support;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::ExchangeKind;
use queue_support::*;

#[tokio::test]
async fn reject_without_requeue_dead_letters_with_reason_rejected() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("dlx-rej-dlq")).await;
    let work = declare_with(&ch, &unique("dlx-rej-work"), &dlx_to(&dlq)).await;
    let mut dead = consume(&ch, &dlq, true).await;
    publish_confirmed(&ch, "", &work, b"poison").await;

    let m = get(&ch, &work).await.expect("the message");
    within("reject", m.reject(BasicRejectOptions { requeue: false }))
        .await
        .unwrap();

    let d = next_delivery(&mut dead).await;
    assert_eq!(body(&d), "poison");
    assert_eq!(
        d.routing_key.as_str(),
        dlq,
        "x-dead-letter-routing-key replaces the routing key"
    );
    assert_eq!(
        d.exchange.as_str(),
        "",
        "delivered from the dead-letter exchange"
    );
    assert!(!d.redelivered, "a dead-lettered message is a new message");
    assert_eq!(deaths(&d), vec![(work.clone(), "rejected".into(), 1)]);
    assert_eq!(message_count(&ch, &work).await, 0, "it left the work queue");
}

#[tokio::test]
async fn nack_without_requeue_dead_letters_every_covered_message_in_order() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("dlx-nack-dlq")).await;
    let work = declare_with(&ch, &unique("dlx-nack-work"), &dlx_to(&dlq)).await;
    for i in 0..3 {
        publish_confirmed(&ch, "", &work, format!("m{i}").as_bytes()).await;
    }
    let mut c = consume(&ch, &work, false).await;
    let mut last = 0;
    for _ in 0..3 {
        last = next_delivery(&mut c).await.delivery_tag;
    }
    within(
        "nack multiple",
        ch.basic_nack(
            last,
            BasicNackOptions {
                multiple: true,
                requeue: false,
            },
        ),
    )
    .await
    .unwrap();

    let mut dead = consume(&ch, &dlq, true).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = next_delivery(&mut dead).await;
        assert_eq!(x_death(&d)[0].reason(), "rejected");
        got.push(body(&d));
    }
    assert_eq!(got, ["m0", "m1", "m2"]);
}

#[tokio::test]
async fn without_a_dead_letter_routing_key_the_original_routing_key_is_used() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlx = unique("dlx-rk-x");
    declare_exchange(&ch, &dlx, ExchangeKind::Direct).await;
    let by_key = declare_queue(&ch, &unique("dlx-rk-orders")).await;
    let other = declare_queue(&ch, &unique("dlx-rk-other")).await;
    bind(&ch, &by_key, &dlx, "orders.new").await;
    bind(&ch, &other, &dlx, "something-else").await;
    let src = unique("dlx-rk-src");
    declare_exchange(&ch, &src, ExchangeKind::Direct).await;
    let work = declare_with(
        &ch,
        &unique("dlx-rk-work"),
        &[("x-dead-letter-exchange", text(&dlx))],
    )
    .await;
    bind(&ch, &work, &src, "orders.new").await;
    publish_confirmed(&ch, &src, "orders.new", b"order 1").await;

    let m = get(&ch, &work).await.expect("the message");
    within("reject", m.reject(BasicRejectOptions { requeue: false }))
        .await
        .unwrap();

    let mut dead = consume(&ch, &by_key, true).await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(body(&d), "order 1");
    assert_eq!(d.exchange.as_str(), dlx);
    assert_eq!(d.routing_key.as_str(), "orders.new");
    assert_eq!(
        x_death(&d)[0].exchange(),
        src,
        "x-death names the original exchange"
    );
    assert_eq!(message_count(&ch, &other).await, 0);
}

#[tokio::test]
async fn a_fanout_dead_letter_exchange_copies_the_message_to_every_bound_queue() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlx = unique("dlx-fan-x");
    declare_exchange(&ch, &dlx, ExchangeKind::Fanout).await;
    let a = declare_queue(&ch, &unique("dlx-fan-a")).await;
    let b = declare_queue(&ch, &unique("dlx-fan-b")).await;
    bind(&ch, &a, &dlx, "").await;
    bind(&ch, &b, &dlx, "").await;
    let work = declare_with(
        &ch,
        &unique("dlx-fan-work"),
        &[("x-dead-letter-exchange", text(&dlx))],
    )
    .await;
    publish_confirmed(&ch, "", &work, b"twice").await;
    let m = get(&ch, &work).await.expect("the message");
    within(
        "nack",
        m.nack(BasicNackOptions {
            requeue: false,
            multiple: false,
        }),
    )
    .await
    .unwrap();

    for q in [&a, &b] {
        let mut c = consume(&ch, q, true).await;
        let d = next_delivery(&mut c).await;
        assert_eq!(body(&d), "twice");
        assert_eq!(x_death(&d)[0].queue(), work);
    }
}

#[tokio::test]
async fn reject_or_nack_with_requeue_does_not_dead_letter() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("dlx-req-dlq")).await;
    let work = declare_with(&ch, &unique("dlx-req-work"), &dlx_to(&dlq)).await;
    publish_confirmed(&ch, "", &work, b"again").await;
    let mut dead = consume(&ch, &dlq, true).await;

    let m = get(&ch, &work).await.expect("the message");
    within("reject", m.reject(BasicRejectOptions { requeue: true }))
        .await
        .unwrap();
    wait_message_count(&ch, &work, 1).await;
    let m = get(&ch, &work).await.expect("the requeued message");
    assert!(m.redelivered);
    within(
        "nack",
        m.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        }),
    )
    .await
    .unwrap();
    wait_message_count(&ch, &work, 1).await;
    assert_no_delivery(&mut dead, Duration::from_millis(300)).await;
}
