//! Proves `x-max-length` and `x-max-length-bytes` with the default overflow, drop-head: the
//! oldest ready messages make room and are dead-lettered with reason `maxlen` (or dropped
//! without a dead-letter exchange); bytes are body bytes; unacked messages do not count.
mod common;
mod queue_support;

use common::*;
use lapin::options::*;
use queue_support::*;

#[tokio::test]
async fn x_max_length_drops_the_oldest_and_dead_letters_them_with_reason_maxlen() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("maxlen-dlq")).await;
    let mut args = dlx_to(&dlq);
    args.push(("x-max-length", int(2)));
    let q = declare_with(&ch, &unique("maxlen"), &args).await;
    for i in 0..4 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    assert_eq!(drain(&ch, &q).await, ["m2", "m3"]);
    let mut dead = consume(&ch, &dlq, true).await;
    for expected in ["m0", "m1"] {
        let d = next_delivery(&mut dead).await;
        assert_eq!(body(&d), expected);
        assert_eq!(deaths(&d), vec![(q.clone(), "maxlen".into(), 1)]);
    }
}

#[tokio::test]
async fn x_max_length_bytes_counts_body_bytes() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("maxbytes-dlq")).await;
    let mut args = dlx_to(&dlq);
    args.push(("x-max-length-bytes", int(10)));
    let q = declare_with(&ch, &unique("maxbytes"), &args).await;
    // Properties do not count: a big header on a 4-byte body still fits.
    let big = with_header(Default::default(), "padding", text(&"p".repeat(500)));
    publish_confirmed_with(&ch, "", &q, b"aaaa", big).await;
    publish_confirmed(&ch, "", &q, b"bbbb").await;
    assert_eq!(message_count(&ch, &q).await, 2);
    publish_confirmed(&ch, "", &q, b"cccc").await; // 12 bytes > 10: the head goes
    assert_eq!(drain(&ch, &q).await, ["bbbb", "cccc"]);
    let mut dead = consume(&ch, &dlq, true).await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(body(&d), "aaaa");
    assert_eq!(x_death(&d)[0].reason(), "maxlen");
}

#[tokio::test]
async fn without_a_dead_letter_exchange_the_dropped_messages_are_gone() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_with(&ch, &unique("maxlen-nodlx"), &[("x-max-length", int(1))]).await;
    for i in 0..3 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    assert_eq!(drain(&ch, &q).await, ["m2"]);
}

#[tokio::test]
async fn unacked_messages_do_not_count_towards_the_limit() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_with(&ch, &unique("maxlen-unacked"), &[("x-max-length", int(1))]).await;
    publish_confirmed(&ch, "", &q, b"m0").await;
    let held = get(&ch, &q).await.expect("m0");
    publish_confirmed(&ch, "", &q, b"m1").await;
    assert_eq!(message_count(&ch, &q).await, 1, "m0 is out, m1 fits");
    publish_confirmed(&ch, "", &q, b"m2").await;
    within("ack", held.ack(BasicAckOptions::default()))
        .await
        .expect("the held message is still ackable");
    assert_eq!(drain(&ch, &q).await, ["m2"]);
}

// Checked against RabbitMQ 3.10: a requeue that leaves more ready messages than the limit
// trims the head (the requeued message, dead-lettered with reason `maxlen`).
#[tokio::test]
async fn a_requeue_that_overfills_the_queue_drops_the_head() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("maxlen-requeue-dlq")).await;
    let mut args = dlx_to(&dlq);
    args.push(("x-max-length", int(1)));
    let q = declare_with(&ch, &unique("maxlen-requeue"), &args).await;
    publish_confirmed(&ch, "", &q, b"m0").await;
    let held = get(&ch, &q).await.expect("m0");
    publish_confirmed(&ch, "", &q, b"m1").await;
    within("reject", held.reject(BasicRejectOptions { requeue: true }))
        .await
        .unwrap();
    let mut dead = consume(&ch, &dlq, true).await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(body(&d), "m0");
    assert_eq!(x_death(&d)[0].reason(), "maxlen");
    assert_eq!(drain(&ch, &q).await, ["m1"]);
}
