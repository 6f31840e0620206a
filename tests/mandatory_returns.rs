//! Proves the mandatory flag: an unroutable mandatory message comes back in basic.return with
//! 312 NO_ROUTE, its exchange, routing key, body and properties; routable or non-mandatory
//! messages are never returned.
mod common;

use common::*;
use lapin::message::BasicReturnMessage;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};

async fn publish_mandatory(ch: &Channel, ex: &str, key: &str, body: &[u8], props: BasicProperties) {
    // Not a confirm channel: the returned PublisherConfirm resolves to NotRequested.
    drop(
        within(
            "basic.publish",
            ch.basic_publish(
                ex.into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            ),
        )
        .await
        .expect("basic.publish"),
    );
}

/// Waits until lapin has collected `n` returned messages on this (non-confirm) channel.
async fn returned(ch: &Channel, n: usize) -> Vec<BasicReturnMessage> {
    within("basic.return", async {
        let mut all = Vec::new();
        loop {
            all.extend(ch.wait_for_confirms().await.unwrap());
            if all.len() >= n {
                return all;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test]
async fn unroutable_mandatory_message_is_returned_with_no_route() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let ex = unique("direct");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let mut headers = FieldTable::default();
    headers.insert("h".into(), AMQPValue::LongString(LongString::from("v")));
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_correlation_id("corr-1".into())
        .with_headers(headers);
    publish_mandatory(&ch, &ex, "no.binding", b"come back", props.clone()).await;

    let msgs = returned(&ch, 1).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.reply_code, 312);
    assert_eq!(m.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(m.delivery.exchange.as_str(), ex);
    assert_eq!(m.delivery.routing_key.as_str(), "no.binding");
    assert_eq!(m.delivery.data, b"come back");
    assert_eq!(m.delivery.properties.content_type(), props.content_type());
    assert_eq!(
        m.delivery.properties.correlation_id(),
        props.correlation_id()
    );
    assert_eq!(m.delivery.properties.headers(), props.headers());
}

#[tokio::test]
async fn mandatory_to_a_missing_queue_via_the_default_exchange_is_returned() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let missing = unique("missing");
    publish_mandatory(&ch, "", &missing, b"x", BasicProperties::default()).await;
    let msgs = returned(&ch, 1).await;
    assert_eq!(msgs[0].reply_code, 312);
    assert_eq!(msgs[0].delivery.exchange.as_str(), "");
    assert_eq!(msgs[0].delivery.routing_key.as_str(), missing);
}

#[tokio::test]
async fn routable_and_non_mandatory_messages_are_not_returned() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("q")).await;
    // Routable + mandatory: delivered, not returned.
    publish_mandatory(&ch, "", &q, b"routable", BasicProperties::default()).await;
    // Unroutable, not mandatory: silently dropped.
    publish(&ch, "", &unique("missing"), b"dropped").await;
    // Unroutable + mandatory: the one and only return, used as a barrier.
    let marker = unique("marker");
    publish_mandatory(&ch, "", &marker, b"marker", BasicProperties::default()).await;
    let msgs = returned(&ch, 1).await;
    assert_eq!(msgs.len(), 1, "only the marker comes back");
    assert_eq!(msgs[0].delivery.routing_key.as_str(), marker);
    assert_eq!(drain(&ch, &q).await, vec!["routable"]);
}

#[tokio::test]
async fn returns_keep_publish_order() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    for i in 0..5 {
        publish_mandatory(
            &ch,
            "",
            &unique("gone"),
            format!("r{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    let msgs = returned(&ch, 5).await;
    let bodies: Vec<_> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned())
        .collect();
    assert_eq!(bodies, vec!["r0", "r1", "r2", "r3", "r4"]);
}
