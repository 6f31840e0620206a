//! Proves queue.purge and queue.delete: purge drops ready messages and reports how many (but
//! leaves unacked ones alone), delete reports the ready count, removes the queue's bindings and
//! cancels nothing else, and deleting missing queues or exchanges is a no-op success.
mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::ExchangeKind;

#[tokio::test]
async fn purge_removes_ready_messages_and_reports_the_count() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("purge")).await;
    for i in 0..4 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    // One message is out unacked: purge does not touch it.
    let held = channel(&conn).await;
    let m = within(
        "basic.get",
        held.basic_get(q.as_str().into(), BasicGetOptions::default()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(m.delivery.data, b"m0");
    let purged = within(
        "queue.purge",
        ch.queue_purge(q.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(purged, 3);
    assert_eq!(message_count(&ch, &q).await, 0);
    // Purging an empty queue is fine and reports 0.
    assert_eq!(
        within(
            "queue.purge",
            ch.queue_purge(q.as_str().into(), Default::default())
        )
        .await
        .unwrap(),
        0
    );
    // The unacked message survives the purge and comes back when its channel closes.
    within("channel.close", held.close(200, "bye".into()))
        .await
        .unwrap();
    wait_message_count(&ch, &q, 1).await;
    assert_eq!(drain(&ch, &q).await, vec!["m0"]);
}

#[tokio::test]
async fn delete_reports_the_message_count_and_removes_the_queue() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("del")).await;
    for i in 0..2 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    let deleted = within(
        "queue.delete",
        ch.queue_delete(q.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(deleted, 2);
    let probe = channel(&conn).await;
    let (code, _) = expect_refused(
        "passive declare after delete",
        probe.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn conditional_deletes_succeed_when_the_condition_holds() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("cond")).await;
    let n = within(
        "queue.delete if-unused if-empty",
        ch.queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_unused: true,
                if_empty: true,
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap();
    assert_eq!(n, 0);
    let ex = unique("cond-ex");
    declare_exchange(&ch, &ex, ExchangeKind::Topic).await;
    within(
        "exchange.delete if-unused",
        ch.exchange_delete(
            ex.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn deleting_missing_queues_and_exchanges_succeeds() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let n = within(
        "queue.delete missing",
        ch.queue_delete(unique("never").as_str().into(), Default::default()),
    )
    .await
    .expect("deleting a missing queue is not an error in RabbitMQ");
    assert_eq!(n, 0);
    within(
        "exchange.delete missing",
        ch.exchange_delete(unique("never-ex").as_str().into(), Default::default()),
    )
    .await
    .expect("deleting a missing exchange is not an error in RabbitMQ");
    // And the channel is still open.
    declare_queue(&ch, "").await;
}

#[tokio::test]
async fn deleting_a_queue_removes_its_bindings() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("bound-ex");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let keep = declare_queue(&ch, &unique("keep")).await;
    bind(&ch, &keep, &ex, "other").await; // keeps the auto-delete exchange alive
    let name = unique("rebind");
    declare_queue(&ch, &name).await;
    bind(&ch, &name, &ex, "k").await;
    within(
        "queue.delete",
        ch.queue_delete(name.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
    declare_queue(&ch, &name).await; // same name, new queue, no bindings
    publish_confirmed(&ch, &ex, "k", b"should not arrive").await;
    assert_eq!(message_count(&ch, &name).await, 0);
}

#[tokio::test]
async fn deleting_an_exchange_removes_its_bindings() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("ex-del");
    within(
        "exchange.declare",
        ch.exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let q = declare_queue(&ch, &unique("q")).await;
    bind(&ch, &q, &ex, "").await;
    within(
        "exchange.delete",
        ch.exchange_delete(ex.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
    within(
        "exchange.declare again",
        ch.exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    publish_confirmed(&ch, &ex, "", b"lost").await;
    assert_eq!(message_count(&ch, &q).await, 0);
    within(
        "exchange.delete",
        ch.exchange_delete(ex.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
}
