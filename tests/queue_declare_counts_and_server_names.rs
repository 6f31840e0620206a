//! Proves queue.declare replies: an empty name gets a server-generated `amq.gen-` name,
//! declare-ok carries the ready-message and consumer counts, and an empty queue name in later
//! methods on the same channel means the channel's most recently declared queue (404 if none).
mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;

fn report(case: &str, code: u16, text: &str) {
    eprintln!("[observed] {case}: {code} {text:?}");
}

#[tokio::test]
async fn empty_name_gets_a_unique_server_generated_name() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let a = declare_queue(&ch, "").await;
    let b = declare_queue(&ch, "").await;
    assert!(a.starts_with("amq.gen-"), "{a}");
    assert!(b.starts_with("amq.gen-"), "{b}");
    assert_ne!(a, b);
    assert!(a.len() > "amq.gen-".len() + 8, "{a}");
    // The generated name is a real queue, usable through the default exchange.
    let p = confirm_channel(&conn).await;
    publish_confirmed(&p, "", &a, b"hello").await;
    assert_eq!(drain(&ch, &a).await, vec!["hello"]);
}

#[tokio::test]
async fn declare_ok_reports_ready_messages_and_consumers() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let name = unique("counts");
    let fresh = within(
        "queue.declare",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!((fresh.message_count(), fresh.consumer_count()), (0, 0));
    for i in 0..3 {
        publish_confirmed(&ch, "", &name, format!("m{i}").as_bytes()).await;
    }
    let consumer_ch = channel(&conn).await;
    within("basic.qos", consumer_ch.basic_qos(1, Default::default()))
        .await
        .unwrap();
    let mut c1 = consume(&consumer_ch, &name, false).await;
    let mut c2 = consume(&consumer_ch, &name, false).await;
    let _d1 = next_delivery(&mut c1).await;
    let _d2 = next_delivery(&mut c2).await;
    // Two unacked, one ready; two consumers. Both active and passive declares report it.
    let again = within(
        "queue.declare",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(again.name().as_str(), name);
    assert_eq!((again.message_count(), again.consumer_count()), (1, 2));
    let passive = within(
        "passive queue.declare",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!((passive.message_count(), passive.consumer_count()), (1, 2));
    within(
        "cancel",
        consumer_ch.basic_cancel(c2.tag(), Default::default()),
    )
    .await
    .unwrap();
    let after_cancel = within(
        "passive queue.declare",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(after_cancel.consumer_count(), 1);
}

#[tokio::test]
async fn empty_queue_name_means_the_last_declared_queue() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let ex = unique("fan");
    declare_exchange(&ch, &ex, lapin::ExchangeKind::Fanout).await;
    let _older = declare_queue(&ch, "").await;
    let q = declare_queue(&ch, "").await;
    // queue.bind with an empty queue name binds the last declared queue.
    bind(&ch, "", &ex, "").await;
    let p = confirm_channel(&conn).await;
    publish_confirmed(&p, &ex, "", b"one").await;
    publish_confirmed(&p, &ex, "", b"two").await;
    assert_eq!(message_count(&ch, &q).await, 2);
    // basic.get with an empty name.
    let m = within(
        "basic.get ''",
        ch.basic_get("".into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .expect("a message from the last declared queue");
    assert_eq!(m.delivery.data, b"one");
    // queue.purge with an empty name.
    let purged = within(
        "queue.purge ''",
        ch.queue_purge("".into(), Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(purged, 1);
    // basic.consume with an empty name.
    let mut c = within(
        "basic.consume ''",
        ch.basic_consume(
            "".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(c.queue().as_str(), "", "lapin records what we sent");
    publish_confirmed(&p, &ex, "", b"three").await;
    assert_eq!(body(&next_delivery(&mut c).await), "three");
}

#[tokio::test]
async fn empty_queue_name_without_a_previous_declare_is_not_found() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let (code, text) = expect_refused(
        "basic.get ''",
        ch.basic_get("".into(), BasicGetOptions::default()),
    )
    .await;
    report(
        "empty queue name, nothing declared on the channel",
        code,
        &text,
    );
    assert_eq!(code, 404, "{text}");
    assert_eq!(text, "NOT_FOUND - no previously declared queue");
    assert_only_channel_closed(&conn, &ch).await;
}

#[tokio::test]
async fn last_declared_queue_is_per_channel() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch1 = channel(&conn).await;
    let _q = declare_queue(&ch1, "").await;
    let ch2 = channel(&conn).await;
    let (code, text) = expect_refused(
        "queue.purge '' on another channel",
        ch2.queue_purge("".into(), Default::default()),
    )
    .await;
    assert_eq!(code, 404, "{text}");
    assert_eq!(text, "NOT_FOUND - no previously declared queue");
}

/// declare-ok reads the queue's counters instead of asking the queue behind its mailbox, yet
/// still counts every message its connection published before it, as RabbitMQ does. The
/// publishes and the passive declare arrive in one TCP write, so the broker reads them in one
/// batch and answers the declare before the queue has handled them: they are counted on
/// their way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_ok_counts_publishes_still_on_their_way() {
    use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
    use amq_protocol::protocol::{basic, queue, AMQPClass};

    let broker = start().await;
    let mut raw = RawConn::open(broker.addr).await;
    raw.open_channel(1).await;
    let q = unique("on-the-way");
    let declare = |passive| {
        encode(&AMQPFrame::Method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: q.as_str().into(),
                passive,
                durable: false,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        ))
    };
    raw.send_bytes(&declare(false)).await;
    let mut batch = Vec::new();
    for _ in 0..2000 {
        batch.extend(encode(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: q.as_str().into(),
                mandatory: false,
                immediate: false,
            })),
        )));
        batch.extend(encode(&AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: 1,
                properties: lapin::BasicProperties::default(),
            },
        )));
        batch.extend(encode(&AMQPFrame::Body(1, b"m".to_vec())));
    }
    batch.extend(declare(true));
    raw.send_bytes(&batch).await;
    let mut counts = Vec::new();
    while counts.len() < 2 {
        match raw.recv().await {
            Incoming::Frame(AMQPFrame::Method(
                1,
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)),
            )) => counts.push(ok.message_count),
            Incoming::Frame(_) => {}
            Incoming::Eof => panic!("connection closed"),
        }
    }
    assert_eq!(counts, [0, 2000]);
}
