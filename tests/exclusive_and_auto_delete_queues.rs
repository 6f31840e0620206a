//! Proves queue lifetimes and exclusivity: an exclusive queue is usable from any channel of its
//! connection and disappears with it; an auto-delete queue disappears when its last consumer
//! goes (but not before it ever had one); an auto-delete exchange disappears with its last
//! binding; an exclusive consumer locks out other consumers (403).
mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

fn report(case: &str, code: u16, text: &str) {
    eprintln!("[observed] {case}: {code} {text:?}");
}

async fn queue_exists(ch_conn: &lapin::Connection, q: &str) -> bool {
    let ch = channel(ch_conn).await;
    match within(
        "passive queue.declare",
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    {
        Ok(_) => {
            let _ = ch.close(200, "bye".into()).await;
            true
        }
        // 405: still there, but exclusive to a connection that is going away.
        Err(e) if amqp_error(&e).0 == 405 => true,
        Err(e) => {
            assert_eq!(amqp_error(&e).0, 404, "{e}");
            false
        }
    }
}

async fn exchange_exists(conn: &lapin::Connection, ex: &str) -> bool {
    let ch = channel(conn).await;
    match within(
        "passive exchange.declare",
        ch.exchange_declare(
            ex.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    {
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

/// Polls until `cond` is true (deletions may complete just after the triggering reply).
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        while !cond().await {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn exclusive_queue_is_shared_by_the_connection_channels_and_dies_with_it() {
    let broker = start().await;
    let owner = connect(&broker).await;
    let ch1 = channel(&owner).await;
    let q = declare_queue(&ch1, &unique("excl")).await;
    // Another channel of the same connection may use it freely.
    let ch2 = confirm_channel(&owner).await;
    publish_confirmed(&ch2, "", &q, b"same connection").await;
    let _c = consume(&ch2, &q, true).await;
    within(
        "queue.purge",
        ch2.queue_purge(q.as_str().into(), Default::default()),
    )
    .await
    .unwrap();

    let observer = connect(&broker).await;
    within("connection.close", owner.close(200, "bye".into()))
        .await
        .unwrap();
    eventually("the exclusive queue to be deleted", || async {
        !queue_exists(&observer, &q).await
    })
    .await;
}

#[tokio::test]
async fn auto_delete_queue_goes_when_its_last_consumer_goes() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = unique("autodel");
    within(
        "queue.declare auto-delete",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    // Never consumed yet: it stays.
    assert!(queue_exists(&conn, &q).await);
    let c1 = consume(&ch, &q, true).await;
    let c2 = consume(&ch, &q, true).await;
    within("cancel c1", ch.basic_cancel(c1.tag(), Default::default()))
        .await
        .unwrap();
    assert!(queue_exists(&conn, &q).await, "one consumer is left");
    within("cancel c2", ch.basic_cancel(c2.tag(), Default::default()))
        .await
        .unwrap();
    eventually("the auto-delete queue to be deleted", || async {
        !queue_exists(&conn, &q).await
    })
    .await;
}

#[tokio::test]
async fn auto_delete_queue_goes_when_the_consumer_channel_closes() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = unique("autodel-close");
    within(
        "queue.declare auto-delete",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let consumer_ch = channel(&conn).await;
    let _c = consume(&consumer_ch, &q, false).await;
    within("channel.close", consumer_ch.close(200, "bye".into()))
        .await
        .unwrap();
    eventually("the auto-delete queue to be deleted", || async {
        !queue_exists(&conn, &q).await
    })
    .await;
}

#[tokio::test]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let ex = unique("autodel-ex");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    // Never bound: it stays.
    assert!(exchange_exists(&conn, &ex).await);
    let q1 = declare_queue(&ch, &unique("q1")).await;
    let q2 = declare_queue(&ch, &unique("q2")).await;
    bind(&ch, &q1, &ex, "a").await;
    bind(&ch, &q2, &ex, "b").await;
    within(
        "unbind q1",
        ch.queue_unbind(
            q1.as_str().into(),
            ex.as_str().into(),
            "a".into(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert!(exchange_exists(&conn, &ex).await, "one binding left");
    // Deleting the bound queue removes the last binding.
    within(
        "queue.delete q2",
        ch.queue_delete(q2.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
    eventually("the auto-delete exchange to be deleted", || async {
        !exchange_exists(&conn, &ex).await
    })
    .await;
}

#[tokio::test]
async fn exclusive_consumer_locks_out_other_consumers() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("excl-consumer")).await;
    let _owner = within(
        "exclusive basic.consume",
        ch.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let other: Channel = channel(&conn).await;
    let (code, text) = expect_refused(
        "second consumer on an exclusively consumed queue",
        other.basic_consume(
            q.as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    report("consume while exclusive consumer exists", code, &text);
    assert_eq!(code, 403, "{text}");
    assert_eq!(
        text,
        format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")
    );
    assert_only_channel_closed(&conn, &other).await;
}

#[tokio::test]
async fn exclusive_consume_is_refused_when_the_queue_has_consumers() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("excl-late")).await;
    let _first = consume(&ch, &q, false).await;
    let other = channel(&conn).await;
    let (code, text) = expect_refused(
        "exclusive consume on a queue that has a consumer",
        other.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    report("exclusive consume with existing consumer", code, &text);
    assert_eq!(code, 403, "{text}");
    assert_eq!(
        text,
        format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")
    );
    assert_only_channel_closed(&conn, &other).await;
}
