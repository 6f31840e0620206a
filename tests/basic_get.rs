//! Proves basic.get: get-empty on an empty queue, FIFO order, the remaining message count,
//! exchange/routing key/redelivered fields, properties round-tripping unchanged, and that a
//! no-ack get removes the message while an ack-mode get leaves it unacked until acked.
mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::BasicProperties;

#[tokio::test]
async fn get_on_an_empty_queue_is_empty() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("empty")).await;
    let got = within(
        "basic.get",
        ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap();
    assert!(got.is_none());
    // The channel is still fine afterwards.
    assert!(within(
        "basic.get",
        ch.basic_get(q.as_str().into(), BasicGetOptions::default())
    )
    .await
    .unwrap()
    .is_none());
}

#[tokio::test]
async fn get_returns_messages_in_order_with_the_remaining_count() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("fifo")).await;
    for i in 0..3 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    for (i, remaining) in [(0, 2), (1, 1), (2, 0)] {
        let m = within(
            "basic.get",
            ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }),
        )
        .await
        .unwrap()
        .expect("a message");
        assert_eq!(m.delivery.data, format!("m{i}").as_bytes());
        assert_eq!(
            m.message_count, remaining,
            "message_count = messages left after this one"
        );
        assert!(!m.delivery.redelivered);
        assert_eq!(m.delivery.exchange.as_str(), "");
        assert_eq!(m.delivery.routing_key.as_str(), q);
    }
    assert!(within(
        "basic.get",
        ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
    )
    .await
    .unwrap()
    .is_none());
}

#[tokio::test]
async fn ack_mode_get_keeps_the_message_unacked_until_acked() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("get-ack")).await;
    publish_confirmed(&ch, "", &q, b"m").await;
    let m = within(
        "basic.get",
        ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        message_count(&ch, &q).await,
        0,
        "unacked messages are not counted as ready"
    );
    within(
        "reject requeue",
        m.delivery.reject(BasicRejectOptions { requeue: true }),
    )
    .await
    .unwrap();
    wait_message_count(&ch, &q, 1).await;
    let again = within(
        "basic.get",
        ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(again.delivery.redelivered);
    within("ack", again.delivery.ack(Default::default()))
        .await
        .unwrap();
    assert_eq!(message_count(&ch, &q).await, 0);
}

#[tokio::test]
async fn properties_and_body_round_trip_unchanged() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("props")).await;
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::Boolean(true));
    let mut headers = FieldTable::default();
    headers.insert(
        "string".into(),
        AMQPValue::LongString(LongString::from("value")),
    );
    headers.insert("int".into(), AMQPValue::LongInt(-42));
    headers.insert("long".into(), AMQPValue::LongLongInt(1 << 40));
    headers.insert("bool".into(), AMQPValue::Boolean(false));
    headers.insert("table".into(), AMQPValue::FieldTable(nested));
    headers.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString(LongString::from("two")),
        ])),
    );
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("corr".into())
        .with_reply_to("reply-queue".into())
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("kind".into())
        .with_user_id("guest".into())
        .with_app_id("warren-tests".into());
    // A body with every byte value and longer than one frame would be if frame_max were small.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
    publish_confirmed_with(&ch, "", &q, &body, props.clone()).await;
    publish_confirmed_with(&ch, "", &q, b"", BasicProperties::default()).await;

    let m = within(
        "basic.get",
        ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(m.delivery.data.len(), body.len());
    assert!(m.delivery.data == body, "body corrupted");
    assert_eq!(m.delivery.properties, props);

    let empty = within(
        "basic.get",
        ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(empty.delivery.data.is_empty());
    assert_eq!(empty.delivery.properties, BasicProperties::default());
}

#[tokio::test]
async fn user_id_must_match_the_authenticated_user() {
    // RabbitMQ validates user_id against the connection's user: a mismatch closes the channel.
    let broker = start().await;
    let conn = connect(&broker).await;
    let mut events = conn.events_listener();
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("uid")).await;
    publish_with(
        &ch,
        "",
        &q,
        b"x",
        BasicProperties::default().with_user_id("mallory".into()),
    )
    .await;
    let (code, text) = next_error_event(&mut events).await;
    eprintln!("[observed] user_id mismatch: {code} {text:?}");
    assert_eq!(code, 406, "{text}");
    assert_eq!(text, "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'");
    assert_only_channel_closed(&conn, &ch).await;
}
