//! Proves RabbitMQ's dead-letter cycle rule: a message that would be dead-lettered back into a
//! queue it already died in, with no rejection anywhere in that cycle, is dropped (for that
//! queue only: other targets still get it); a cycle that includes a rejection goes on, counting
//! each death.
mod common;
mod queue_support;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::ExchangeKind;
use queue_support::*;

#[tokio::test]
async fn an_automatic_cycle_of_expiries_is_dropped_at_the_queue_that_closes_it() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    // q1 --expired--> fanout f1 --> q2 and tap1
    // q2 --expired--> fanout f2 --> q1 (a cycle: dropped there) and tap2 (not a cycle)
    let (f1, f2) = (unique("dlx-cyc-f1"), unique("dlx-cyc-f2"));
    declare_exchange(&ch, &f1, ExchangeKind::Fanout).await;
    declare_exchange(&ch, &f2, ExchangeKind::Fanout).await;
    let ttl = ("x-message-ttl", int(50));
    let q1 = declare_with(
        &ch,
        &unique("dlx-cyc-q1"),
        &[("x-dead-letter-exchange", text(&f1)), ttl.clone()],
    )
    .await;
    let q2 = declare_with(
        &ch,
        &unique("dlx-cyc-q2"),
        &[("x-dead-letter-exchange", text(&f2)), ttl],
    )
    .await;
    let tap1 = declare_queue(&ch, &unique("dlx-cyc-tap1")).await;
    let tap2 = declare_queue(&ch, &unique("dlx-cyc-tap2")).await;
    bind(&ch, &q2, &f1, "").await;
    bind(&ch, &tap1, &f1, "").await;
    bind(&ch, &q1, &f2, "").await;
    bind(&ch, &tap2, &f2, "").await;

    publish_confirmed(&ch, "", &q1, b"round").await;

    let mut c2 = consume(&ch, &tap2, true).await;
    let d = next_delivery(&mut c2).await;
    assert_eq!(
        deaths(&d),
        vec![
            (q2.clone(), "expired".into(), 1),
            (q1.clone(), "expired".into(), 1)
        ]
    );
    // Had the message gone on to q1, it would expire there again and reach tap1 and tap2 once
    // more (every 100 ms or so).
    assert_no_delivery(&mut c2, Duration::from_millis(500)).await;
    assert_eq!(message_count(&ch, &tap1).await, 1);
    assert_eq!(message_count(&ch, &q1).await, 0);
    assert_eq!(message_count(&ch, &q2).await, 0);
}

#[tokio::test]
async fn a_queue_expiring_into_itself_drops_the_message() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let name = unique("dlx-cyc-self");
    let q = declare_with(
        &ch,
        &name,
        &[
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(&name)),
            ("x-message-ttl", int(50)),
        ],
    )
    .await;
    publish_confirmed(&ch, "", &q, b"once").await;
    wait_message_count(&ch, &q, 0).await;
    // A loop would keep putting it back; it stays gone.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(message_count(&ch, &q).await, 0);
    }
}

#[tokio::test]
async fn a_cycle_with_a_rejection_in_it_goes_on_and_counts_each_death() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    // work --rejected--> retry (TTL 50 ms) --expired--> work: the classic retry loop.
    let (work_name, retry_name) = (unique("dlx-loop-work"), unique("dlx-loop-retry"));
    let work = declare_with(&ch, &work_name, &dlx_to(&retry_name)).await;
    let mut retry_args = dlx_to(&work_name);
    retry_args.push(("x-message-ttl", int(50)));
    let retry = declare_with(&ch, &retry_name, &retry_args).await;
    publish_confirmed(&ch, "", &work, b"job").await;

    let mut c = consume(&ch, &work, false).await;
    let first = next_delivery(&mut c).await;
    assert!(x_death(&first).is_empty());
    within(
        "reject",
        first.reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .unwrap();

    let second = next_delivery(&mut c).await;
    assert_eq!(body(&second), "job");
    assert_eq!(
        deaths(&second),
        vec![
            (retry.clone(), "expired".into(), 1),
            (work.clone(), "rejected".into(), 1)
        ]
    );
    within(
        "reject",
        second.reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .unwrap();

    let third = next_delivery(&mut c).await;
    assert_eq!(
        deaths(&third),
        vec![
            (retry.clone(), "expired".into(), 2),
            (work.clone(), "rejected".into(), 2)
        ]
    );
    within("ack", third.ack(BasicAckOptions::default()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_queue_dead_lettering_rejects_into_itself_counts_each_rejection() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let name = unique("dlx-self-rej");
    let q = declare_with(&ch, &name, &dlx_to(&name)).await;
    publish_confirmed(&ch, "", &q, b"boomerang").await;
    let mut c = consume(&ch, &q, false).await;
    for n in 0..3 {
        let d = next_delivery(&mut c).await;
        if n == 0 {
            assert!(x_death(&d).is_empty());
        } else {
            assert_eq!(deaths(&d), vec![(q.clone(), "rejected".into(), n)]);
        }
        within("reject", d.reject(BasicRejectOptions { requeue: false }))
            .await
            .unwrap();
    }
    let d = next_delivery(&mut c).await;
    assert_eq!(deaths(&d), vec![(q.clone(), "rejected".into(), 3)]);
}
