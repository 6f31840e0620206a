//! Proves publisher confirms: after confirm.select every publish is acked (routed or not),
//! confirm delivery tags count publishes from 1 on the channel, a mandatory unroutable message
//! is returned before its ack, and wait_for_confirms covers everything outstanding.
mod common;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, confirm, AMQPClass};
use common::*;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, ExchangeKind};

#[tokio::test]
async fn every_publish_is_acked_routed_or_not() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("q")).await;
    let ex = unique("fanout-empty");
    declare_exchange(&ch, &ex, ExchangeKind::Fanout).await;
    let mut confirms = Vec::new();
    for i in 0..20 {
        let target = if i % 2 == 0 {
            ("", q.as_str())
        } else {
            (ex.as_str(), "")
        };
        confirms.push(
            within(
                "basic.publish",
                ch.basic_publish(
                    target.0.into(),
                    target.1.into(),
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    BasicProperties::default(),
                ),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        let confirmation = within("confirm", c).await.unwrap();
        assert!(confirmation.is_ack(), "{confirmation:?}");
    }
    assert_eq!(message_count(&ch, &q).await, 10);
}

#[tokio::test]
async fn wait_for_confirms_returns_once_all_are_acked() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("q")).await;
    for i in 0..50 {
        // Dropping the PublisherConfirm hands it to wait_for_confirms.
        drop(
            within(
                "basic.publish",
                ch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    BasicProperties::default(),
                ),
            )
            .await
            .unwrap(),
        );
    }
    let returned = within("wait_for_confirms", ch.wait_for_confirms())
        .await
        .unwrap();
    assert!(returned.is_empty());
    assert_eq!(message_count(&ch, &q).await, 50);
}

#[tokio::test]
async fn mandatory_unroutable_message_is_returned_then_acked() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let missing_queue = unique("nobody-home");
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            missing_queue.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"bounce",
            BasicProperties::default(),
        ),
    )
    .await
    .unwrap();
    let confirmation = within("confirm", confirm).await.unwrap();
    assert!(
        confirmation.is_ack(),
        "an unroutable message is still acked: {confirmation:?}"
    );
    let returned = confirmation
        .take_message()
        .expect("returned before the ack");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.delivery.data, b"bounce");
}

/// On the wire: confirm.select-ok, then basic.ack frames whose tags (possibly `multiple`)
/// cover publishes 1..=N, in increasing order.
#[tokio::test]
async fn confirm_tags_count_publishes_from_one() {
    let broker = start().await;
    let mut raw = RawConn::open(broker.addr).await;
    raw.open_channel(1).await;
    raw.send_method(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    )
    .await;
    match raw.recv_method().await {
        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => {}
        other => panic!("expected confirm.select-ok, got {other:?}"),
    }
    let n = 5u64;
    for i in 0..n {
        raw.send_method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: unique("nowhere").as_str().into(),
                mandatory: false,
                immediate: false,
            })),
        )
        .await;
        let body = format!("m{i}").into_bytes();
        raw.send_frame(&AMQPFrame::Header(
            1,
            amq_protocol::frame::AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: BasicProperties::default(),
            },
        ))
        .await;
        raw.send_frame(&AMQPFrame::Body(1, body)).await;
    }
    let mut confirmed = 0u64;
    while confirmed < n {
        match raw.recv_method().await {
            AMQPClass::Basic(basic::AMQPMethod::Ack(ack)) => {
                assert!(
                    ack.delivery_tag > confirmed,
                    "tags increase: {ack:?} after {confirmed}"
                );
                assert!(
                    ack.delivery_tag <= n,
                    "no tag beyond the publishes: {ack:?}"
                );
                if !ack.multiple {
                    assert_eq!(
                        ack.delivery_tag,
                        confirmed + 1,
                        "a single ack confirms the next tag"
                    );
                }
                confirmed = ack.delivery_tag;
            }
            other => panic!("expected basic.ack, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn confirm_select_is_idempotent() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    within(
        "second confirm.select",
        ch.confirm_select(Default::default()),
    )
    .await
    .expect("confirm.select twice is fine");
    let q = declare_queue(&ch, &unique("q")).await;
    publish_confirmed(&ch, "", &q, b"ok").await;
}
