//! Proves that unacknowledged messages are requeued, in their original order and flagged
//! redelivered, when their channel is closed or their connection is closed or simply dropped,
//! while cancelling a consumer leaves its unacked messages with the channel.
mod common;

use common::*;
use lapin::options::*;

#[tokio::test]
async fn closing_the_channel_requeues_unacked_messages_in_order() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let owner = confirm_channel(&conn).await;
    let q = declare_queue(&owner, &unique("requeue")).await;
    for i in 0..3 {
        publish_confirmed(&owner, "", &q, format!("m{i}").as_bytes()).await;
    }
    let ch = channel(&conn).await;
    let mut c = consume(&ch, &q, false).await;
    let d0 = next_delivery(&mut c).await;
    let _d1 = next_delivery(&mut c).await;
    let _d2 = next_delivery(&mut c).await;
    within("ack", d0.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    within("channel.close", ch.close(200, "bye".into()))
        .await
        .unwrap();

    wait_message_count(&owner, &q, 2).await;
    let ch2 = channel(&conn).await;
    let mut seen = Vec::new();
    while let Some(m) = within(
        "basic.get",
        ch2.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    {
        assert!(
            m.delivery.redelivered,
            "requeued messages are flagged redelivered"
        );
        seen.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    assert_eq!(seen, vec!["m1", "m2"]);
}

#[tokio::test]
async fn closing_the_connection_requeues_unacked_messages() {
    let broker = start().await;
    let owner_conn = connect(&broker).await;
    let owner = confirm_channel(&owner_conn).await;
    let q = unique("requeue-conn");
    within(
        "queue.declare",
        owner.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                auto_delete: false,
                ..Default::default()
            },
            Default::default(),
        ),
    )
    .await
    .unwrap();
    for i in 0..2 {
        publish_confirmed(&owner, "", &q, format!("m{i}").as_bytes()).await;
    }
    let consumer_conn = connect(&broker).await;
    let ch = channel(&consumer_conn).await;
    let got = within(
        "basic.get",
        ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .unwrap()
    .expect("m0");
    assert_eq!(got.delivery.data, b"m0");
    within("connection.close", consumer_conn.close(200, "bye".into()))
        .await
        .unwrap();
    wait_message_count(&owner, &q, 2).await;

    let first = within(
        "basic.get",
        owner.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .expect("m0 back");
    assert_eq!(first.delivery.data, b"m0");
    assert!(first.delivery.redelivered);
    assert_eq!(drain(&owner, &q).await, vec!["m1"]);
    within(
        "queue.delete",
        owner.queue_delete(q.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_vanished_tcp_connection_requeues_unacked_messages() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let owner = confirm_channel(&conn).await;
    // Not exclusive: another connection must be able to basic.get from it.
    let q = unique("requeue-raw");
    within(
        "queue.declare",
        owner.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            Default::default(),
        ),
    )
    .await
    .unwrap();
    publish_confirmed(&owner, "", &q, b"orphan").await;

    // A raw client takes the message without acking it, then just drops the socket.
    {
        let mut raw = RawConn::open(broker.addr).await;
        raw.open_channel(1).await;
        let get = amq_protocol::protocol::AMQPClass::Basic(
            amq_protocol::protocol::basic::AMQPMethod::Get(amq_protocol::protocol::basic::Get {
                queue: q.as_str().into(),
                no_ack: false,
            }),
        );
        raw.send_method(1, get).await;
        match raw.recv_method().await {
            amq_protocol::protocol::AMQPClass::Basic(
                amq_protocol::protocol::basic::AMQPMethod::GetOk(ok),
            ) => {
                assert_eq!(ok.delivery_tag, 1)
            }
            other => panic!("expected basic.get-ok, got {other:?}"),
        }
    } // socket dropped without connection.close

    let back = within("the message to be requeued", async {
        loop {
            if let Some(m) = owner
                .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(back.delivery.data, b"orphan");
    assert!(back.delivery.redelivered);
    within(
        "queue.delete",
        owner.queue_delete(q.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn cancelling_a_consumer_does_not_requeue_its_unacked_messages() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let owner = confirm_channel(&conn).await;
    let q = declare_queue(&owner, &unique("cancel-keeps")).await;
    publish_confirmed(&owner, "", &q, b"held").await;
    let ch = channel(&conn).await;
    let mut c = consume(&ch, &q, false).await;
    let d = next_delivery(&mut c).await;
    within(
        "basic.cancel",
        ch.basic_cancel(c.tag(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    // Still unacked on the channel: not ready in the queue.
    assert_eq!(message_count(&owner, &q).await, 0);
    // And it can still be acked after the cancel.
    within("ack after cancel", d.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    within("channel.close", ch.close(200, "bye".into()))
        .await
        .unwrap();
    assert_eq!(message_count(&owner, &q).await, 0);
}
