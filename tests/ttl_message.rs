//! Proves message TTL: `x-message-ttl` per queue and the `expiration` property per message,
//! the smaller applying; an expired message is dead-lettered with reason `expired` from the
//! head of the queue and never reaches a consumer; a requeued message keeps its original
//! expiry; a malformed expiration is refused.
mod common;
mod queue_support;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::BasicProperties;
use queue_support::*;

fn expiring(ms: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(ms.into())
}

#[tokio::test]
async fn a_queue_ttl_dead_letters_with_reason_expired() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("ttl-q-dlq")).await;
    let mut args = dlx_to(&dlq);
    args.push(("x-message-ttl", int(100)));
    let work = declare_with(&ch, &unique("ttl-q"), &args).await;
    let mut dead = consume(&ch, &dlq, true).await;
    publish_confirmed(&ch, "", &work, b"stale").await;

    let d = next_delivery(&mut dead).await;
    assert_eq!(body(&d), "stale");
    assert_eq!(deaths(&d), vec![(work.clone(), "expired".into(), 1)]);
    assert_eq!(message_count(&ch, &work).await, 0);
}

#[tokio::test]
async fn a_message_expiration_dead_letters_with_reason_expired() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("ttl-m-dlq")).await;
    let work = declare_with(&ch, &unique("ttl-m"), &dlx_to(&dlq)).await;
    let mut dead = consume(&ch, &dlq, true).await;
    publish_confirmed_with(&ch, "", &work, b"stale", expiring("100")).await;
    publish_confirmed(&ch, "", &work, b"fresh").await;

    let d = next_delivery(&mut dead).await;
    assert_eq!(body(&d), "stale");
    let e = &x_death(&d)[0];
    assert_eq!((e.queue(), e.reason()), (work.clone(), "expired".into()));
    assert_eq!(e.original_expiration().as_deref(), Some("100"));
    assert_eq!(
        drain(&ch, &work).await,
        ["fresh"],
        "only the expiring one went"
    );
}

#[tokio::test]
async fn the_smaller_of_queue_ttl_and_message_expiration_applies() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("ttl-min-dlq")).await;
    let mut dead = consume(&ch, &dlq, true).await;

    // A long queue TTL, a short expiration.
    let mut args = dlx_to(&dlq);
    args.push(("x-message-ttl", int(60_000)));
    let long_queue = declare_with(&ch, &unique("ttl-min-longq"), &args).await;
    publish_confirmed_with(&ch, "", &long_queue, b"short message", expiring("50")).await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(body(&d), "short message");
    assert_eq!(x_death(&d)[0].queue(), long_queue);

    // A short queue TTL, a long expiration.
    let mut args = dlx_to(&dlq);
    args.push(("x-message-ttl", int(50)));
    let short_queue = declare_with(&ch, &unique("ttl-min-shortq"), &args).await;
    publish_confirmed_with(&ch, "", &short_queue, b"long message", expiring("60000")).await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(body(&d), "long message");
    let e = &x_death(&d)[0];
    assert_eq!(e.queue(), short_queue);
    assert_eq!(e.original_expiration().as_deref(), Some("60000"));
}

#[tokio::test]
async fn an_expired_message_never_reaches_a_consumer() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("ttl-never-dlq")).await;
    let work = declare_with(&ch, &unique("ttl-never"), &dlx_to(&dlq)).await;
    let consumer_ch = channel(&conn).await;
    prefetch(&consumer_ch, 1).await;
    let mut c = consume(&consumer_ch, &work, false).await;
    publish_confirmed(&ch, "", &work, b"busy").await;
    let busy = next_delivery(&mut c).await;
    // The consumer is full (prefetch 1) while the second message expires behind the first.
    publish_confirmed_with(&ch, "", &work, b"stale", expiring("100")).await;
    let mut dead = consume(&ch, &dlq, true).await;
    assert_eq!(body(&next_delivery(&mut dead).await), "stale");

    within("ack", busy.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    assert_no_delivery(&mut c, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_requeued_message_keeps_its_original_expiry() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("ttl-requeue-dlq")).await;
    let mut args = dlx_to(&dlq);
    args.push(("x-message-ttl", int(1000)));
    let work = declare_with(&ch, &unique("ttl-requeue"), &args).await;
    let consumer_ch = channel(&conn).await;
    let mut c = consume(&consumer_ch, &work, false).await;
    publish_confirmed(&ch, "", &work, b"held too long").await;
    let d = next_delivery(&mut c).await;
    // Hold it past its TTL, then requeue it: it does not start a new TTL, it expires.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    within(
        "nack requeue",
        d.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        }),
    )
    .await
    .unwrap();

    let mut dead = consume(&ch, &dlq, true).await;
    let dl = next_delivery(&mut dead).await;
    assert_eq!(body(&dl), "held too long");
    assert_eq!(x_death(&dl)[0].reason(), "expired");
    assert_no_delivery(&mut c, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn messages_expire_from_the_head_of_the_queue() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("ttl-head-dlq")).await;
    let work = declare_with(&ch, &unique("ttl-head"), &dlx_to(&dlq)).await;
    publish_confirmed_with(&ch, "", &work, b"long-lived", expiring("60000")).await;
    publish_confirmed_with(&ch, "", &work, b"short-lived", expiring("50")).await;
    // Like a RabbitMQ classic queue, only the head is checked: the short-lived message waits
    // behind the long-lived one...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(message_count(&ch, &work).await, 2);
    assert_eq!(message_count(&ch, &dlq).await, 0);
    // ...and once that one is gone, it is dead-lettered, not delivered.
    let head = get(&ch, &work).await.expect("the head");
    assert_eq!(body(&head), "long-lived");
    within("ack", head.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    assert!(get(&ch, &work).await.is_none());
    let mut dead = consume(&ch, &dlq, true).await;
    assert_eq!(body(&next_delivery(&mut dead).await), "short-lived");
}

#[tokio::test]
async fn a_zero_ttl_message_without_a_consumer_is_dead_lettered_at_once() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("ttl-zero-dlq")).await;
    let mut args = dlx_to(&dlq);
    args.push(("x-message-ttl", int(0)));
    let work = declare_with(&ch, &unique("ttl-zero"), &args).await;
    publish_confirmed(&ch, "", &work, b"now or never").await;
    let mut dead = consume(&ch, &dlq, true).await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(x_death(&d)[0].reason(), "expired");
    assert!(get(&ch, &work).await.is_none());
}

// RabbitMQ delivers a message with TTL 0 to a consumer that can take it at once (its docs:
// "messages ... expire upon reaching a queue unless they can be delivered to a consumer
// immediately"); checked against RabbitMQ 3.10.
#[tokio::test]
async fn a_zero_ttl_message_reaches_a_waiting_consumer() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let zero_queue = declare_with(&ch, &unique("ttl-zero-c"), &[("x-message-ttl", int(0))]).await;
    let zero_message = declare_queue(&ch, &unique("ttl-zero-m")).await;
    let mut c1 = consume(&ch, &zero_queue, true).await;
    let mut c2 = consume(&ch, &zero_message, true).await;
    publish_confirmed(&ch, "", &zero_queue, b"queue ttl 0").await;
    publish_confirmed_with(&ch, "", &zero_message, b"expiration 0", expiring("0")).await;
    assert_eq!(body(&next_delivery(&mut c1).await), "queue ttl 0");
    assert_eq!(body(&next_delivery(&mut c2).await), "expiration 0");
}

#[tokio::test]
async fn a_malformed_expiration_is_refused_with_406() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let mut events = conn.events_listener();
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("ttl-bad")).await;
    for bad in ["soon", "-5"] {
        let ch = channel(&conn).await;
        publish_with(&ch, "", &q, b"x", expiring(bad)).await;
        // basic.publish has no reply: the refusal comes as a channel.close.
        let (code, text) = next_error_event(&mut events).await;
        assert_eq!(code, 406, "{bad}: {text}");
        assert!(
            text.contains(&format!("invalid expiration '{bad}'")),
            "{bad}: {text}"
        );
        assert_only_channel_closed(&conn, &ch).await;
    }
    assert_eq!(message_count(&ch, &q).await, 0);
}
