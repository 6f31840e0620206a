//! Proves delayed retry with backoff (RabbitMQ 4.3's `x-delayed-retry-type`, `-min`, `-max`):
//! a returned message of the chosen kind (`failed`: nack/reject with requeue; `returned`: its
//! channel closed; `all`; `disabled`, the default) waits min × delivery count, capped at max,
//! before it is redelivered, without holding up the messages behind it; with a delivery limit
//! it ends in the dead-letter queue.
//!
//! Warren and RabbitMQ 4.3+ only: against an older `WARREN_TEST_URL` broker these tests are
//! skipped (RabbitMQ 3.10 ignores the arguments).
mod common;
mod queue_support;

use std::time::{Duration, Instant};

use common::*;
use lapin::message::Delivery;
use lapin::options::*;
use lapin::{Channel, Connection};
use queue_support::*;

/// A long delay: a message that gets it does not come back during the test.
const FOREVER_MS: i32 = 600_000;

fn skip(broker: &TestBroker) -> bool {
    if on_warren(broker) {
        return false;
    }
    eprintln!("skipped: delayed retry needs RabbitMQ 4.3+ (or Warren)");
    true
}

async fn retry_queue(ch: &Channel, kind: &str, min: i32, max: Option<i32>) -> String {
    let mut args = vec![
        ("x-delayed-retry-type", text(kind)),
        ("x-delayed-retry-min", int(min)),
    ];
    if let Some(max) = max {
        args.push(("x-delayed-retry-max", int(max)));
    }
    declare_with(ch, &unique("retry"), &args).await
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

async fn ack(d: &Delivery) {
    within("ack", d.ack(BasicAckOptions::default()))
        .await
        .unwrap();
}

/// Delivers the single message of `q` to a consumer on a fresh channel, then closes that
/// channel with the message unacked (a "returned" message). Returns the delivery.
async fn deliver_and_close(conn: &Connection, q: &str) -> Delivery {
    let worker = channel(conn).await;
    let mut c = consume(&worker, q, false).await;
    let d = next_delivery(&mut c).await;
    within("channel.close", worker.close(200, "crash".into()))
        .await
        .unwrap();
    d
}

#[tokio::test]
async fn a_failed_message_waits_out_its_delay_without_blocking_the_ones_behind_it() {
    let broker = start().await;
    if skip(&broker) {
        return;
    }
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = retry_queue(&ch, "failed", 300, None).await;
    publish_confirmed(&ch, "", &q, b"flaky").await;
    publish_confirmed(&ch, "", &q, b"second").await;
    publish_confirmed(&ch, "", &q, b"third").await;
    let mut c = consume(&ch, &q, false).await;

    let first = next_delivery(&mut c).await;
    assert_eq!(body(&first), "flaky");
    let failed_at = Instant::now();
    nack_requeue(&first).await;
    // The messages behind it are not held up by the delay...
    for expected in ["second", "third"] {
        let d = next_delivery(&mut c).await;
        assert_eq!(body(&d), expected);
        ack(&d).await;
    }
    // ...and it comes back once the delay is over, counted.
    let again = next_delivery(&mut c).await;
    assert!(
        failed_at.elapsed() >= Duration::from_millis(300),
        "redelivered after {:?}, before its 300 ms delay",
        failed_at.elapsed()
    );
    assert_eq!(body(&again), "flaky");
    assert!(again.redelivered);
    assert_eq!(delivery_count(&again), Some(1));
    ack(&again).await;
}

#[tokio::test]
async fn the_delay_grows_with_the_delivery_count() {
    let broker = start().await;
    if skip(&broker) {
        return;
    }
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = retry_queue(&ch, "failed", 150, Some(60_000)).await;
    publish_confirmed(&ch, "", &q, b"flaky").await;
    let mut c = consume(&ch, &q, false).await;
    let mut d = next_delivery(&mut c).await;
    for n in 1..=3u32 {
        let failed_at = Instant::now();
        nack_requeue(&d).await;
        d = next_delivery(&mut c).await;
        let waited = failed_at.elapsed();
        assert!(
            waited >= Duration::from_millis(150) * n,
            "failure {n}: redelivered after {waited:?}, expected at least {n} × 150 ms"
        );
        assert_eq!(delivery_count(&d), Some(i64::from(n)));
    }
    ack(&d).await;
}

#[tokio::test]
async fn the_delay_is_capped_at_the_max() {
    let broker = start().await;
    if skip(&broker) {
        return;
    }
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    // min × count would be ten minutes; max makes it 100 ms.
    let q = retry_queue(&ch, "failed", FOREVER_MS, Some(100)).await;
    publish_confirmed(&ch, "", &q, b"capped").await;
    let mut c = consume(&ch, &q, false).await;
    let d = next_delivery(&mut c).await;
    nack_requeue(&d).await;
    let d = next_delivery(&mut c).await;
    assert_eq!(delivery_count(&d), Some(1));
    ack(&d).await;
}

#[tokio::test]
async fn type_failed_delays_nacks_but_not_returns() {
    let broker = start().await;
    if skip(&broker) {
        return;
    }
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = retry_queue(&ch, "failed", FOREVER_MS, None).await;
    publish_confirmed(&ch, "", &q, b"m").await;
    // Returned (channel closed): no delay.
    deliver_and_close(&conn, &q).await;
    let mut c = consume(&ch, &q, false).await;
    let d = next_delivery(&mut c).await;
    assert_eq!(delivery_count(&d), Some(1));
    // Failed (nack): delayed.
    nack_requeue(&d).await;
    assert_no_delivery(&mut c, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn type_returned_delays_returns_but_not_nacks() {
    let broker = start().await;
    if skip(&broker) {
        return;
    }
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = retry_queue(&ch, "returned", FOREVER_MS, None).await;
    publish_confirmed(&ch, "", &q, b"m").await;
    let mut c = consume(&ch, &q, false).await;
    let d = next_delivery(&mut c).await;
    // Failed (nack): no delay.
    nack_requeue(&d).await;
    let d = next_delivery(&mut c).await;
    assert_eq!(delivery_count(&d), Some(1));
    within(
        "basic.cancel",
        ch.basic_cancel(c.tag(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    nack_requeue(&d).await;
    // Returned (channel closed): delayed.
    deliver_and_close(&conn, &q).await;
    let mut c = consume(&ch, &q, false).await;
    assert_no_delivery(&mut c, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn type_all_delays_both_and_disabled_neither() {
    let broker = start().await;
    if skip(&broker) {
        return;
    }
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;

    let all = retry_queue(&ch, "all", FOREVER_MS, None).await;
    publish_confirmed(&ch, "", &all, b"nacked").await;
    let d = get(&ch, &all).await.expect("the message");
    nack_requeue(&d).await;
    publish_confirmed(&ch, "", &all, b"returned").await;
    let d = deliver_and_close(&conn, &all).await;
    assert_eq!(body(&d), "returned", "the nacked message is waiting");
    let mut c = consume(&ch, &all, false).await;
    assert_no_delivery(&mut c, Duration::from_millis(500)).await;

    let disabled = retry_queue(&ch, "disabled", FOREVER_MS, None).await;
    publish_confirmed(&ch, "", &disabled, b"m").await;
    let d = get(&ch, &disabled).await.expect("the message");
    nack_requeue(&d).await;
    deliver_and_close(&conn, &disabled).await;
    let mut c = consume(&ch, &disabled, false).await;
    let d = next_delivery(&mut c).await;
    assert_eq!(body(&d), "m");
    assert!(d.redelivered);
}

#[tokio::test]
async fn retries_end_in_the_dead_letter_queue_past_the_delivery_limit() {
    let broker = start().await;
    if skip(&broker) {
        return;
    }
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("retry-dlq")).await;
    let mut args = dlx_to(&dlq);
    args.extend([
        ("x-delayed-retry-type", text("failed")),
        ("x-delayed-retry-min", int(50)),
        ("x-delayed-retry-max", int(200)),
        ("x-delivery-limit", int(3)),
    ]);
    let q = declare_with(&ch, &unique("retry-limited"), &args).await;
    publish_confirmed(&ch, "", &q, b"hopeless").await;
    let mut c = consume(&ch, &q, false).await;
    for n in 0..4 {
        let d = next_delivery(&mut c).await;
        assert_eq!(delivery_count(&d), (n > 0).then_some(n));
        nack_requeue(&d).await;
    }
    let mut dead = consume(&ch, &dlq, true).await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(deaths(&d), vec![(q.clone(), "delivery_limit".into(), 1)]);
    assert_no_delivery(&mut c, Duration::from_millis(300)).await;
}
