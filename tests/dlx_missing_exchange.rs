//! Proves that a dead-letter exchange that does not exist drops the message, as RabbitMQ does
//! (rejected and expired alike), and that the exchange is looked up at each death, so
//! declaring it later makes dead-lettering work.
mod common;
mod queue_support;

use common::*;
use lapin::options::*;
use lapin::ExchangeKind;
use queue_support::*;

#[tokio::test]
async fn a_rejected_message_with_a_missing_dead_letter_exchange_is_dropped() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlx = unique("dlx-missing-x");
    let work = declare_with(
        &ch,
        &unique("dlx-missing-work"),
        &[("x-dead-letter-exchange", text(&dlx))],
    )
    .await;
    publish_confirmed(&ch, "", &work, b"lost").await;
    publish_confirmed(&ch, "", &work, b"kept").await;

    let m = get(&ch, &work).await.expect("the message");
    within("reject", m.reject(BasicRejectOptions { requeue: false }))
        .await
        .unwrap();
    // Neither requeued nor an error: the message is gone and the channel still works.
    wait_message_count(&ch, &work, 1).await;
    assert_eq!(drain(&ch, &work).await, ["kept"]);
    assert!(ch.status().connected());

    // The exchange is resolved at each death: once declared, it receives dead letters.
    declare_exchange(&ch, &dlx, ExchangeKind::Fanout).await;
    let dlq = declare_queue(&ch, &unique("dlx-missing-dlq")).await;
    bind(&ch, &dlq, &dlx, "").await;
    publish_confirmed(&ch, "", &work, b"found").await;
    let m = get(&ch, &work).await.expect("the message");
    within("reject", m.reject(BasicRejectOptions { requeue: false }))
        .await
        .unwrap();
    let mut dead = consume(&ch, &dlq, true).await;
    assert_eq!(body(&next_delivery(&mut dead).await), "found");
}

#[tokio::test]
async fn an_expired_message_with_a_missing_dead_letter_exchange_is_dropped() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let work = declare_with(
        &ch,
        &unique("dlx-missing-ttl"),
        &[
            ("x-dead-letter-exchange", text(&unique("dlx-missing-x"))),
            ("x-message-ttl", int(50)),
        ],
    )
    .await;
    publish_confirmed(&ch, "", &work, b"expires").await;
    wait_message_count(&ch, &work, 0).await;
    assert!(get(&ch, &work).await.is_none());
}
