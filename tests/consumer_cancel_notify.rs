//! Proves consumer lifecycle: server-generated consumer tags start with `amq.ctag-`, a client
//! basic.cancel stops deliveries, and when a queue is deleted under a consumer the server sends
//! basic.cancel (consumer_cancel_notify), ending the consumer while the channel stays open.
mod common;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, queue, AMQPClass};
use common::*;
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use std::time::Duration;

#[tokio::test]
async fn server_generated_consumer_tags() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("q")).await;
    let a = consume(&ch, &q, true).await;
    let b = consume(&ch, &q, true).await;
    assert!(a.tag().as_str().starts_with("amq.ctag-"), "{}", a.tag());
    assert_ne!(a.tag(), b.tag());
    let chosen = unique("my-tag");
    let c = within(
        "basic.consume with a tag",
        ch.basic_consume(
            q.as_str().into(),
            chosen.as_str().into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(c.tag().as_str(), chosen);
}

#[tokio::test]
async fn client_cancel_stops_deliveries() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("q")).await;
    let mut c = consume(&ch, &q, true).await;
    let p = confirm_channel(&conn).await;
    publish_confirmed(&p, "", &q, b"before").await;
    assert_eq!(body(&next_delivery(&mut c).await), "before");
    within(
        "basic.cancel",
        ch.basic_cancel(c.tag(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    publish_confirmed(&p, "", &q, b"after").await;
    // The stream ends and the message stays in the queue.
    match within("consumer end", c.next()).await {
        None => {}
        Some(Ok(d)) => panic!("delivery after cancel: {}", body(&d)),
        Some(Err(e)) => panic!("error after cancel: {e}"),
    }
    assert_eq!(message_count(&p, &q).await, 1);
}

#[tokio::test]
async fn deleting_the_queue_cancels_its_consumers() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("doomed")).await;
    let mut c = consume(&ch, &q, false).await;
    let other = channel(&conn).await;
    within(
        "queue.delete",
        other.queue_delete(q.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
    // The server's basic.cancel ends the consumer stream without an error.
    match within("the server's basic.cancel", c.next()).await {
        None => {}
        Some(Ok(d)) => panic!("unexpected delivery: {}", body(&d)),
        Some(Err(e)) => panic!("the consumer should end cleanly, got {e}"),
    }
    // Neither the consumer's channel nor the connection was closed.
    assert!(ch.status().connected());
    declare_queue(&ch, "").await;
}

#[tokio::test]
async fn deleting_the_queue_from_another_connection_cancels_consumers() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = unique("shared-doomed");
    within(
        "queue.declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let mut c1 = consume(&ch, &q, true).await;
    let mut c2 = consume(&ch, &q, true).await;
    let killer = connect(&broker).await;
    let kch = channel(&killer).await;
    within(
        "queue.delete",
        kch.queue_delete(q.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
    for c in [&mut c1, &mut c2] {
        assert!(within("basic.cancel from the server", c.next())
            .await
            .is_none());
    }
    assert!(ch.status().connected());
}

/// Declares an exclusive queue on channel 1, consumes from it with tag "raw-tag", deletes it
/// from channel 2, and reports whether a basic.cancel for "raw-tag" arrived on channel 1.
async fn raw_delete_under_consumer(raw: &mut RawConn) -> Option<basic::Cancel> {
    raw.open_channel(1).await;
    let q = unique("raw-doomed");
    raw.send_method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: q.as_str().into(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    assert!(matches!(
        raw.recv_method().await,
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))
    ));
    raw.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: q.as_str().into(),
            consumer_tag: "raw-tag".into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    match raw.recv_method().await {
        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)) => {
            assert_eq!(ok.consumer_tag.as_str(), "raw-tag")
        }
        other => panic!("expected basic.consume-ok, got {other:?}"),
    }
    raw.open_channel(2).await;
    raw.send_method(
        2,
        AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: q.as_str().into(),
            if_unused: false,
            if_empty: false,
            nowait: false,
        })),
    )
    .await;
    let mut cancel = None;
    let mut saw_delete_ok = false;
    while !saw_delete_ok {
        match raw.recv().await {
            Incoming::Frame(AMQPFrame::Method(
                2,
                AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_)),
            )) => saw_delete_ok = true,
            Incoming::Frame(AMQPFrame::Method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Cancel(c)),
            )) => cancel = Some(c),
            Incoming::Frame(_) => {}
            Incoming::Eof => panic!("connection closed"),
        }
    }
    if cancel.is_none() {
        // The cancel may trail the delete-ok (they come from different channels).
        while let Some(Incoming::Frame(f)) = raw.recv_timeout(Duration::from_millis(300)).await {
            if let AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Cancel(c))) = f {
                cancel = Some(c);
                break;
            }
        }
    }
    cancel
}

/// On the wire: a client announcing consumer_cancel_notify gets basic.cancel naming its tag.
#[tokio::test]
async fn raw_server_cancel_frame_with_capability() {
    let broker = start().await;
    let mut raw = RawConn::open_with(
        broker.addr,
        None,
        client_properties_with_capabilities(&["consumer_cancel_notify"]),
    )
    .await;
    let cancel = raw_delete_under_consumer(&mut raw)
        .await
        .expect("basic.cancel from the server");
    assert_eq!(cancel.consumer_tag.as_str(), "raw-tag");
    // Channel 1 is still open: a declare on it works.
    raw.send_method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "".into(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    loop {
        match raw.recv_method().await {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)) => break,
            AMQPClass::Basic(basic::AMQPMethod::CancelOk(_)) => continue,
            other => panic!("expected queue.declare-ok, got {other:?}"),
        }
    }
}

/// A client that does not announce consumer_cancel_notify is not sent basic.cancel.
#[tokio::test]
async fn raw_no_cancel_frame_without_capability() {
    let broker = start().await;
    let mut raw = RawConn::open(broker.addr).await;
    let cancel = raw_delete_under_consumer(&mut raw).await;
    eprintln!("[observed] raw client without consumer_cancel_notify got basic.cancel: {cancel:?}");
    assert!(
        cancel.is_none(),
        "RabbitMQ only sends basic.cancel to clients announcing consumer_cancel_notify"
    );
}
