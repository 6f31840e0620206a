//! Proves `x-expires`: a queue with no consumers that nobody uses (declares, consumes, gets)
//! for that long is deleted, with its messages, which are not dead-lettered; a consumer or a
//! redeclare keeps it alive.
mod common;
mod queue_support;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::Connection;
use queue_support::*;

/// Whether `name` exists, by a passive declare on a throwaway channel.
async fn exists(conn: &Connection, name: &str) -> bool {
    let ch = channel(conn).await;
    let r = within(
        "passive queue.declare",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        ),
    )
    .await;
    match r {
        Ok(_) => {
            let _ = ch.close(200, "bye".into()).await;
            true
        }
        Err(e) => {
            assert_eq!(amqp_error(&e).0, 404, "{e}");
            false
        }
    }
}

/// Waits for `name` to expire. A passive declare is a use of the queue for RabbitMQ (it
/// restarts the `x-expires` clock), so polls are further apart than `expires_ms`.
async fn wait_gone(conn: &Connection, name: &str, expires_ms: u64) {
    within("the queue to expire", async {
        while exists(conn, name).await {
            tokio::time::sleep(Duration::from_millis(expires_ms * 2)).await;
        }
    })
    .await
}

fn shared() -> QueueDeclareOptions {
    QueueDeclareOptions::default()
}

#[tokio::test]
async fn an_unused_queue_is_deleted_with_its_messages_which_are_not_dead_lettered() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let dlq = declare_queue(&ch, &unique("expires-dlq")).await;
    let mut args = dlx_to(&dlq);
    args.push(("x-expires", int(200)));
    let q = declare_opts(&ch, &unique("expires"), shared(), &args).await;
    publish_confirmed(&ch, "", &q, b"goes with the queue").await;
    wait_gone(&conn, &q, 200).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(message_count(&ch, &dlq).await, 0);
}

#[tokio::test]
async fn a_queue_with_a_consumer_does_not_expire_until_the_consumer_goes() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_opts(
        &ch,
        &unique("expires-used"),
        shared(),
        &[("x-expires", int(200))],
    )
    .await;
    let c = consume(&ch, &q, true).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(exists(&conn, &q).await, "a consumed queue is in use");
    within(
        "basic.cancel",
        ch.basic_cancel(c.tag(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    wait_gone(&conn, &q, 200).await;
}

#[tokio::test]
async fn redeclaring_and_basic_get_keep_a_queue_alive() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let args = [("x-expires", int(1000))];
    let q = declare_opts(&ch, &unique("expires-touched"), shared(), &args).await;
    for i in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if i % 2 == 0 {
            declare_opts(&ch, &q, shared(), &args).await;
        } else {
            assert!(get(&ch, &q).await.is_none());
        }
    }
    assert!(exists(&conn, &q).await, "used every 100 ms for 1.5 s");
    wait_gone(&conn, &q, 1000).await;
}
