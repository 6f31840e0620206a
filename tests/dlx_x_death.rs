//! Proves the `x-death` history exactly as RabbitMQ 3.13+ writes it: an array of tables, most
//! recent first, one per (queue, reason), with `count` (long), `reason`, `queue`, `time`
//! (timestamp of the first such death), `exchange`, `routing-keys` (array of strings) and
//! `original-expiration`; the `x-first-death-*` headers (never changed) and `x-last-death-*`;
//! the `expiration` property removed; and a publisher's `x-death` not trusted as a count.
//!
//! Against RabbitMQ 3.10 the checks of `x-last-death-*` and of a forged `x-death` are skipped:
//! 3.10 does not write the former and trusts the latter (both changed in 3.13).
mod common;
mod queue_support;

use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};
use common::*;
use lapin::options::*;
use lapin::{BasicProperties, ExchangeKind};
use queue_support::*;

#[tokio::test]
async fn the_first_death_is_recorded_with_every_field_and_type() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let src = unique("xdeath-src");
    declare_exchange(&ch, &src, ExchangeKind::Direct).await;
    let dlq = declare_queue(&ch, &unique("xdeath-dlq")).await;
    let work = declare_with(&ch, &unique("xdeath-work"), &dlx_to(&dlq)).await;
    bind(&ch, &work, &src, "orders.new").await;
    let props = with_header(
        BasicProperties::default()
            .with_expiration("60000".into())
            .with_message_id("id-1".into())
            .with_content_type("text/plain".into()),
        "app",
        text("kept"),
    );
    let before = unix_now();
    publish_confirmed_with(&ch, &src, "orders.new", b"order", props).await;
    let m = get(&ch, &work).await.expect("the message");
    within("reject", m.reject(BasicRejectOptions { requeue: false }))
        .await
        .unwrap();

    let mut dead = consume(&ch, &dlq, true).await;
    let d = next_delivery(&mut dead).await;
    let after = unix_now();
    let entries = x_death(&d);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.count(), 1);
    assert_eq!(e.reason(), "rejected");
    assert_eq!(e.queue(), work);
    assert!(
        (before.saturating_sub(1)..=after + 1).contains(&e.time()),
        "time {} is not the moment of death ({before}..{after})",
        e.time()
    );
    assert_eq!(e.exchange(), src);
    assert_eq!(e.routing_keys(), ["orders.new"]);
    assert_eq!(e.original_expiration().as_deref(), Some("60000"));
    let mut keys: Vec<&str> = e.table.inner().keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "count",
            "exchange",
            "original-expiration",
            "queue",
            "reason",
            "routing-keys",
            "time"
        ]
    );

    assert_eq!(header_str(&d, "x-first-death-queue"), work);
    assert_eq!(header_str(&d, "x-first-death-reason"), "rejected");
    assert_eq!(header_str(&d, "x-first-death-exchange"), src);
    if on_warren(&broker) {
        // RabbitMQ 3.13+ only.
        assert_eq!(header_str(&d, "x-last-death-queue"), work);
        assert_eq!(header_str(&d, "x-last-death-reason"), "rejected");
        assert_eq!(header_str(&d, "x-last-death-exchange"), src);
    }
    assert_eq!(
        *d.properties.expiration(),
        None,
        "expiration is removed on dead-lettering"
    );
    assert_eq!(header_str(&d, "app"), "kept", "other headers are kept");
    assert_eq!(
        d.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("id-1")
    );
    assert_eq!(
        d.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
}

#[tokio::test]
async fn no_original_expiration_without_an_expiration() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("xdeath-noexp-dlq")).await;
    let mut args = dlx_to(&dlq);
    args.push(("x-message-ttl", int(50)));
    let work = declare_with(&ch, &unique("xdeath-noexp"), &args).await;
    publish_confirmed(&ch, "", &work, b"queue ttl only").await;
    let mut dead = consume(&ch, &dlq, true).await;
    let d = next_delivery(&mut dead).await;
    let e = &x_death(&d)[0];
    assert_eq!(e.reason(), "expired");
    assert_eq!(
        e.original_expiration(),
        None,
        "a queue TTL is not the message's expiration"
    );
    assert_eq!(e.routing_keys(), [work.as_str()]);
    assert_eq!(e.exchange(), "");
}

#[tokio::test]
async fn repeated_deaths_count_per_queue_and_reason_and_move_to_the_front() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let (work_name, retry_name) = (unique("xdeath-work"), unique("xdeath-retry"));
    let work = declare_with(&ch, &work_name, &dlx_to(&retry_name)).await;
    let mut retry_args = dlx_to(&work_name);
    retry_args.push(("x-message-ttl", int(50)));
    let retry = declare_with(&ch, &retry_name, &retry_args).await;
    publish_confirmed_with(
        &ch,
        "",
        &work,
        b"job",
        BasicProperties::default().with_expiration("60000".into()),
    )
    .await;

    let mut c = consume(&ch, &work, false).await;
    let mut first_time = None;
    for round in 1..=3i64 {
        let d = next_delivery(&mut c).await;
        let entries = x_death(&d);
        if round == 1 {
            assert!(entries.is_empty());
            assert_eq!(
                d.properties.expiration().as_ref().map(|s| s.as_str()),
                Some("60000")
            );
        } else {
            let n = round - 1;
            assert_eq!(
                deaths(&d),
                vec![
                    (retry.clone(), "expired".into(), n),
                    (work.clone(), "rejected".into(), n)
                ],
                "round {round}"
            );
            let times = (entries[0].time(), entries[1].time());
            assert_eq!(
                *first_time.get_or_insert(times),
                times,
                "time is the first death's and never moves"
            );
            // The entry of the retry queue: the message reached it from the dead-letter
            // exchange ("") under the dead-letter routing key.
            assert_eq!(entries[0].exchange(), "");
            assert_eq!(entries[0].routing_keys(), [retry.as_str()]);
            assert_eq!(
                entries[1].original_expiration().as_deref(),
                Some("60000"),
                "the expiration it had when it first died"
            );
            assert_eq!(header_str(&d, "x-first-death-queue"), work);
            assert_eq!(header_str(&d, "x-first-death-reason"), "rejected");
            assert_eq!(header_str(&d, "x-first-death-exchange"), "");
            if on_warren(&broker) {
                // RabbitMQ 3.13+ only.
                assert_eq!(header_str(&d, "x-last-death-queue"), retry);
                assert_eq!(header_str(&d, "x-last-death-reason"), "expired");
                assert_eq!(header_str(&d, "x-last-death-exchange"), "");
            }
            if round == 2 {
                // Let the clock pass a second before the next deaths, whose `time` must not
                // follow.
                tokio::time::sleep(Duration::from_millis(1100)).await;
            }
        }
        if round < 3 {
            within("reject", d.reject(BasicRejectOptions { requeue: false }))
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn the_dead_lettered_message_does_not_expire_again() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("xdeath-exp-dlq")).await;
    let work = declare_with(&ch, &unique("xdeath-exp"), &dlx_to(&dlq)).await;
    publish_confirmed_with(
        &ch,
        "",
        &work,
        b"short-lived",
        BasicProperties::default().with_expiration("300".into()),
    )
    .await;
    let m = get(&ch, &work).await.expect("the message");
    within("reject", m.reject(BasicRejectOptions { requeue: false }))
        .await
        .unwrap();
    wait_message_count(&ch, &dlq, 1).await;
    // Well past its 300 ms expiration, it is still in the dead-letter queue.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let d = get(&ch, &dlq)
        .await
        .expect("the dead letter is still there");
    assert_eq!(*d.properties.expiration(), None);
    assert_eq!(x_death(&d)[0].original_expiration().as_deref(), Some("300"));
}

#[tokio::test]
async fn a_publishers_x_death_header_is_not_trusted_as_a_count() {
    let broker = start().await;
    if !on_warren(&broker) {
        eprintln!("skipped: RabbitMQ 3.10 trusts a published x-death (3.13+ does not)");
        return;
    }
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("xdeath-forged-dlq")).await;
    let work = declare_with(&ch, &unique("xdeath-forged"), &dlx_to(&dlq)).await;
    let mut forged = FieldTable::default();
    forged.insert("queue".into(), text(&work));
    forged.insert("reason".into(), text("rejected"));
    forged.insert("count".into(), AMQPValue::LongLongInt(99));
    forged.insert("exchange".into(), text(""));
    forged.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![text(&work)])),
    );
    let props = with_header(
        with_header(
            BasicProperties::default(),
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(forged)])),
        ),
        "x-first-death-queue",
        text("forged"),
    );
    publish_confirmed_with(&ch, "", &work, b"forged", props).await;
    let m = get(&ch, &work).await.expect("the message");
    within("reject", m.reject(BasicRejectOptions { requeue: false }))
        .await
        .unwrap();
    let mut dead = consume(&ch, &dlq, true).await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(deaths(&d), vec![(work.clone(), "rejected".into(), 1)]);
    assert_eq!(header_str(&d, "x-first-death-queue"), work);

    // A consumer that republishes a dead letter by hand (headers and all) starts a new history.
    publish_confirmed_with(&ch, "", &work, b"forged", d.properties.clone()).await;
    let m = get(&ch, &work).await.expect("the republished message");
    within("reject", m.reject(BasicRejectOptions { requeue: false }))
        .await
        .unwrap();
    let d = next_delivery(&mut dead).await;
    assert_eq!(deaths(&d), vec![(work.clone(), "rejected".into(), 1)]);
}
