//! Proves which errors RabbitMQ treats as hard (connection-level) errors and answers with
//! connection.close: reused consumer tag (530), unknown exchange type (503), prefetch_size != 0,
//! immediate=true, channel.flow(active=false) and basic.recover(requeue=false) (540
//! NOT_IMPLEMENTED). After each, new connections still work.
mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};

fn report(case: &str, code: u16, text: &str) {
    eprintln!("[observed] {case}: {code} {text:?}");
}

#[tokio::test]
async fn reusing_a_consumer_tag_on_a_channel_is_not_allowed() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("q")).await;
    let tag = unique("ctag");
    within(
        "basic.consume",
        ch.basic_consume(
            q.as_str().into(),
            tag.as_str().into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let (code, text) = expect_refused(
        "second basic.consume with the same tag",
        ch.basic_consume(
            q.as_str().into(),
            tag.as_str().into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    report("duplicate consumer tag", code, &text);
    assert_eq!(code, 530, "{text}");
    assert_eq!(
        text,
        format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'")
    );
    wait_connection_dead(&conn).await;
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn the_same_consumer_tag_on_two_channels_is_fine() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch1 = channel(&conn).await;
    let ch2 = channel(&conn).await;
    let q = declare_queue(&ch1, &unique("q")).await;
    let tag = unique("ctag");
    let mut consumers = Vec::new(); // dropping a lapin Consumer cancels it
    for ch in [&ch1, &ch2] {
        let c = within(
            "basic.consume",
            ch.basic_consume(
                q.as_str().into(),
                tag.as_str().into(),
                Default::default(),
                FieldTable::default(),
            ),
        )
        .await
        .expect("consumer tags are scoped to the channel");
        assert_eq!(c.tag().as_str(), tag);
        consumers.push(c);
    }
    let declared = within(
        "queue.declare",
        ch1.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(declared.consumer_count(), 2);
}

#[tokio::test]
async fn unknown_exchange_type_is_command_invalid() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let (code, text) = expect_refused(
        "exchange.declare with an unknown type",
        ch.exchange_declare(
            unique("weird").as_str().into(),
            ExchangeKind::Custom("no-such-type".into()),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    report("unknown exchange type", code, &text);
    assert_eq!(code, 503, "{text}");
    assert_eq!(
        text,
        "COMMAND_INVALID - unknown exchange type 'no-such-type'"
    );
    wait_connection_dead(&conn).await;
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn publishing_with_immediate_is_not_implemented() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let mut events = conn.events_listener();
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("q")).await;
    let _ = within(
        "basic.publish immediate",
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions {
                immediate: true,
                ..Default::default()
            },
            b"now",
            BasicProperties::default(),
        ),
    )
    .await;
    let (code, text) = next_error_event(&mut events).await;
    report("basic.publish immediate=true", code, &text);
    assert_eq!(code, 540, "{text}");
    assert_eq!(text, "NOT_IMPLEMENTED - immediate=true");
    wait_connection_dead(&conn).await;
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn channel_flow_inactive_is_not_implemented() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let (code, text) = expect_refused(
        "channel.flow active=false",
        ch.channel_flow(ChannelFlowOptions { active: false }),
    )
    .await;
    report("channel.flow active=false", code, &text);
    assert_eq!(code, 540, "{text}");
    assert_eq!(text, "NOT_IMPLEMENTED - active=false");
    wait_connection_dead(&conn).await;
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn channel_flow_active_is_accepted() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let active = within(
        "channel.flow active=true",
        ch.channel_flow(ChannelFlowOptions { active: true }),
    )
    .await
    .expect("channel.flow(active=true) is accepted");
    assert!(active);
}

#[tokio::test]
async fn basic_recover_without_requeue_is_not_implemented() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let (code, text) = expect_refused(
        "basic.recover requeue=false",
        ch.basic_recover(BasicRecoverOptions { requeue: false }),
    )
    .await;
    report("basic.recover requeue=false", code, &text);
    assert_eq!(code, 540, "{text}");
    assert_eq!(text, "NOT_IMPLEMENTED - requeue=false");
    wait_connection_dead(&conn).await;
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn nonzero_prefetch_size_is_not_implemented() {
    // lapin cannot send prefetch_size, so this one is spoken raw.
    let broker = start().await;
    let mut raw = RawConn::open(broker.addr).await;
    raw.open_channel(1).await;
    // basic.qos: prefetch-size (long) = 1024, prefetch-count (short) = 10, global (bit) = 0
    let mut args = Vec::new();
    args.extend_from_slice(&1024u32.to_be_bytes());
    args.extend_from_slice(&10u16.to_be_bytes());
    args.push(0);
    raw.send_bytes(&raw_method_frame(1, 60, 10, &args)).await;
    let close = raw.expect_connection_close().await;
    report(
        "basic.qos prefetch_size=1024",
        close.reply_code,
        &close.reply_text,
    );
    assert_eq!(close.reply_code, 540, "{close:?}");
    assert_eq!(
        close.reply_text,
        "NOT_IMPLEMENTED - prefetch_size!=0 (1024)"
    );
    assert_eq!((close.class_id, close.method_id), (60, 10));
    assert_broker_alive(&broker).await;
}
