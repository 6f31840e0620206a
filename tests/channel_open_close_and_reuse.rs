//! Proves the channel lifecycle: many channels coexist on one connection, a client
//! channel.close is answered with close-ok and the number can be reopened, closing a channel
//! cancels its consumers, and after a broker-initiated channel.close the broker ignores further
//! frames on that channel until the client's close-ok, after which the number is reusable.
mod common;

use amq_protocol::protocol::{basic, channel, queue, AMQPClass};
use amq_protocol::types::FieldTable;
use common::*;

fn declare(name: &str, passive: bool) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: name.into(),
        passive,
        durable: false,
        exclusive: true,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

#[tokio::test]
async fn many_channels_on_one_connection() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let mut chans = Vec::new();
    for _ in 0..40 {
        chans.push(channel(&conn).await);
    }
    for (i, ch) in chans.iter().enumerate() {
        if i % 2 == 0 {
            within("channel.close", ch.close(200, "bye".into()))
                .await
                .unwrap();
        }
    }
    for (i, ch) in chans.iter().enumerate() {
        if i % 2 == 1 {
            declare_queue(ch, "").await;
        }
    }
}

#[tokio::test]
async fn a_closed_channel_number_can_be_reopened() {
    let broker = start().await;
    let mut raw = RawConn::open(broker.addr).await;
    raw.open_channel(1).await;
    raw.send_method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "done".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await;
    match raw.recv_method().await {
        AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {}
        other => panic!("expected channel.close-ok, got {other:?}"),
    }
    raw.open_channel(1).await;
    raw.send_method(1, declare("", false)).await;
    assert!(matches!(
        raw.recv_method().await,
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))
    ));
}

#[tokio::test]
async fn frames_after_a_channel_error_are_ignored_until_close_ok() {
    let broker = start().await;
    let mut raw = RawConn::open(broker.addr).await;
    raw.open_channel(1).await;
    raw.send_method(1, declare(&unique("missing"), true)).await;
    // Before answering the broker's channel.close, keep talking on the channel: RabbitMQ
    // discards these instead of escalating to a connection error.
    raw.send_method(1, declare("", false)).await;
    raw.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 1,
            global: false,
        })),
    )
    .await;
    let close = raw.expect_channel_close(1).await;
    assert_eq!(close.reply_code, 404, "{close:?}");
    assert_eq!((close.class_id, close.method_id), (50, 10));
    // Nothing else arrives for channel 1 (the discarded methods got no replies); the number
    // is free again.
    raw.open_channel(1).await;
    raw.send_method(1, declare("", false)).await;
    assert!(matches!(
        raw.recv_method().await,
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))
    ));
}

#[tokio::test]
async fn closing_a_channel_cancels_its_consumers() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let owner = confirm_channel(&conn).await;
    let q = declare_queue(&owner, &unique("q")).await;
    let a = channel(&conn).await;
    let b = channel(&conn).await;
    let _ca = consume(&a, &q, true).await;
    let mut cb = consume(&b, &q, true).await;
    within("channel.close", a.close(200, "bye".into()))
        .await
        .unwrap();
    for i in 0..3 {
        publish_confirmed(&owner, "", &q, format!("m{i}").as_bytes()).await;
    }
    for i in 0..3 {
        assert_eq!(body(&next_delivery(&mut cb).await), format!("m{i}"));
    }
}
