//! Stream queues over AMQP 0-9-1, as RabbitMQ's: declared with `x-queue-type: stream`,
//! messages stay after they are read, every consumer reads on its own from its
//! `x-stream-offset`, acks are credit, and what makes no sense on a log is refused with
//! RabbitMQ's codes and texts. Run against RabbitMQ with `WARREN_TEST_URL` (the tests marked
//! Warren-only need the embedded broker).
mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};

/// A broker with a data directory (streams need one), or `WARREN_TEST_URL`'s.
struct Target {
    url: String,
    _broker: Option<warren::Broker>,
    dir: std::path::PathBuf,
}

async fn target() -> Target {
    let dir = std::env::temp_dir().join(unique("streams"));
    if let Ok(url) = std::env::var("WARREN_TEST_URL") {
        return Target {
            url,
            _broker: None,
            dir,
        };
    }
    let broker = start_at(&dir).await;
    Target {
        url: broker.url(),
        _broker: Some(broker),
        dir,
    }
}

async fn start_at(dir: &std::path::Path) -> warren::Broker {
    let mut c = warren::Config::ephemeral();
    c.persistence = true;
    c.data_dir = dir.to_owned();
    warren::Broker::start(c).await.expect("starting a broker")
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stream_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    t
}

async fn declare_stream(ch: &Channel, name: &str, args: FieldTable) {
    within(
        "queue.declare",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        ),
    )
    .await
    .expect("declaring a stream");
}

/// Publishes `bodies` with confirms, in order.
async fn publish_all(conn: &Connection, stream: &str, bodies: &[String]) {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for b in bodies {
        let c = ch
            .basic_publish(
                "".into(),
                stream.into(),
                BasicPublishOptions::default(),
                b.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        assert!(within("a confirm", c).await.unwrap().is_ack());
    }
    let _ = ch.close(200, "done".into()).await;
}

fn offset_arg(v: AMQPValue) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-stream-offset".into(), v);
    t
}

/// The `x-stream-offset` header of a delivery.
fn offset_of(d: &lapin::message::Delivery) -> i64 {
    match d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-stream-offset").cloned())
    {
        Some(AMQPValue::LongLongInt(n)) => n,
        other => panic!("no x-stream-offset header: {other:?}"),
    }
}

/// Consumes as consumer `tag` ("" for a server-named one) with prefetch 10 and `args`, acking
/// each delivery, until `n` arrived; returns (body, x-stream-offset header) of each.
async fn read_tagged(
    conn: &Connection,
    stream: &str,
    tag: &str,
    args: FieldTable,
    n: usize,
) -> Vec<(String, i64)> {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            stream.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .expect("basic.consume");
    let mut got = Vec::new();
    while got.len() < n {
        let d = within("a delivery", consumer.next())
            .await
            .expect("the consumer ended")
            .expect("a delivery");
        got.push((String::from_utf8(d.data.clone()).unwrap(), offset_of(&d)));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = ch.close(200, "done".into()).await;
    got
}

/// [`read_tagged`] as a server-named consumer from `offset`.
async fn read(conn: &Connection, stream: &str, offset: FieldTable, n: usize) -> Vec<(String, i64)> {
    read_tagged(conn, stream, "", offset, n).await
}

/// Nothing more arrives within a short wait.
async fn nothing_more(conn: &Connection, stream: &str, offset: FieldTable) {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            stream.into(),
            "".into(),
            BasicConsumeOptions::default(),
            offset,
        )
        .await
        .unwrap();
    let extra = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(extra.is_err(), "unexpected delivery: {extra:?}");
    let _ = ch.close(200, "done".into()).await;
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test]
async fn messages_stay_and_every_consumer_reads_from_its_own_offset() {
    let t = target().await;
    let conn = connect_url(&t.url).await;
    let ch = conn.create_channel().await.unwrap();
    let s = unique("stream");
    declare_stream(&ch, &s, stream_args()).await;
    let sent = bodies("m", 10);
    publish_all(&conn, &s, &sent).await;

    let first = offset_arg(AMQPValue::LongString("first".into()));
    let a = read(&conn, &s, first.clone(), 10).await;
    let b = read(&conn, &s, first.clone(), 10).await;
    assert_eq!(a, b, "two consumers read the same log");
    let got: Vec<&str> = a.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(got, sent.iter().map(String::as_str).collect::<Vec<_>>());
    let base = a[0].1;
    assert_eq!(
        a.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
        (base..base + 10).collect::<Vec<_>>(),
        "consecutive offsets"
    );

    // An absolute offset, and a negative one (the start, as RabbitMQ reads it).
    let from5 = read(&conn, &s, offset_arg(AMQPValue::LongLongInt(base + 5)), 5).await;
    assert_eq!(from5[0], (sent[5].clone(), base + 5));
    assert_eq!(
        read(&conn, &s, offset_arg(AMQPValue::LongLongInt(-1)), 10).await,
        a
    );
    // An interval reaching before the first message, and a timestamp in the past.
    assert_eq!(
        read(
            &conn,
            &s,
            offset_arg(AMQPValue::LongString("1h".into())),
            10
        )
        .await,
        a
    );
    assert_eq!(
        read(
            &conn,
            &s,
            offset_arg(AMQPValue::Timestamp(1_000_000_000)),
            10
        )
        .await,
        a
    );
    // `last`: the last chunk (each publish here waited for its confirm: one message).
    let last = read(
        &conn,
        &s,
        offset_arg(AMQPValue::LongString("last".into())),
        1,
    )
    .await;
    assert_eq!(last[0], (sent[9].clone(), base + 9));

    // `next` (and no argument): only what is published from now on.
    nothing_more(&conn, &s, FieldTable::default()).await;
    let ch2 = conn.create_channel().await.unwrap();
    ch2.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut live = ch2
        .basic_consume(
            s.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            offset_arg(AMQPValue::LongString("next".into())),
        )
        .await
        .unwrap();
    publish_all(&conn, &s, &["new".to_owned()]).await;
    let d = within("the new message", live.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.data, b"new");
    conn.close(200, "done".into()).await.unwrap();
}

#[tokio::test]
async fn the_prefetch_is_credit_that_acks_give_back() {
    let t = target().await;
    let conn = connect_url(&t.url).await;
    let ch = conn.create_channel().await.unwrap();
    let s = unique("stream-credit");
    declare_stream(&ch, &s, stream_args()).await;
    publish_all(&conn, &s, &bodies("c", 6)).await;
    ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            s.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            offset_arg(AMQPValue::LongString("first".into())),
        )
        .await
        .unwrap();
    let mut tags = Vec::new();
    for _ in 0..2 {
        tags.push(
            within("a delivery", consumer.next())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let more = tokio::time::timeout(Duration::from_millis(400), consumer.next()).await;
    assert!(more.is_err(), "more than the prefetch arrived: {more:?}");
    tags[1]
        .ack(BasicAckOptions { multiple: true })
        .await
        .unwrap();
    for _ in 0..2 {
        within("a delivery after the ack", consumer.next())
            .await
            .unwrap()
            .unwrap();
    }
    // The messages are still there for another consumer.
    assert_eq!(
        read(
            &conn,
            &s,
            offset_arg(AMQPValue::LongString("first".into())),
            6
        )
        .await
        .len(),
        6
    );
    conn.close(200, "done".into()).await.unwrap();
}

#[tokio::test]
async fn declarations_are_checked_as_rabbitmq_checks_them() {
    let t = target().await;
    let conn = connect_url(&t.url).await;
    let s = unique("stream-decl");
    for (durable, exclusive, auto_delete, word) in [
        (false, false, false, "non-durable"),
        (true, true, false, "exclusive-owner"),
        (true, false, true, "auto-delete"),
    ] {
        let ch = conn.create_channel().await.unwrap();
        let (code, text) = expect_refused(
            "a bad stream declaration",
            ch.queue_declare(
                s.as_str().into(),
                QueueDeclareOptions {
                    durable,
                    exclusive,
                    auto_delete,
                    ..Default::default()
                },
                stream_args(),
            ),
        )
        .await;
        assert_eq!(code, 406);
        assert!(
            text.contains(&format!(
                "invalid property '{word}' for queue '{s}' in vhost '/'"
            )),
            "{text}"
        );
    }
    for (arg, v) in [
        ("x-message-ttl", AMQPValue::LongInt(1000)),
        ("x-max-length", AMQPValue::LongInt(10)),
        (
            "x-dead-letter-exchange",
            AMQPValue::LongString("dlx".into()),
        ),
        ("x-max-priority", AMQPValue::LongInt(5)),
    ] {
        let ch = conn.create_channel().await.unwrap();
        let mut args = stream_args();
        args.insert(arg.into(), v);
        let (code, text) = expect_refused(
            "an argument streams do not take",
            ch.queue_declare(
                s.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            ),
        )
        .await;
        assert_eq!(code, 406);
        assert!(
            text.contains(&format!(
                "invalid arg '{arg}' for queue '{s}' in vhost '/' of queue type rabbit_stream_queue"
            )),
            "{text}"
        );
    }
    // Retention arguments are taken.
    let ch = conn.create_channel().await.unwrap();
    let mut args = stream_args();
    args.insert("x-max-age".into(), AMQPValue::LongString("7D".into()));
    args.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(1_000_000),
    );
    args.insert(
        "x-stream-max-segment-size-bytes".into(),
        AMQPValue::LongLongInt(100_000),
    );
    declare_stream(&ch, &s, args).await;
    conn.close(200, "done".into()).await.unwrap();
}

/// Opens a connection and a channel, declares stream `s` and publishes one message.
async fn with_message(t: &Target, s: &str) -> (Connection, Channel) {
    let conn = connect_url(&t.url).await;
    let ch = conn.create_channel().await.unwrap();
    declare_stream(&ch, s, stream_args()).await;
    publish_all(&conn, s, &["one".to_owned()]).await;
    (conn, ch)
}

/// The broker's reply is `code` with `text`.
fn assert_reply(got: (u16, String), code: u16, text: &str) {
    assert_eq!((got.0, got.1.as_str()), (code, text));
}

#[tokio::test]
async fn what_makes_no_sense_on_a_log_is_refused_with_rabbitmqs_codes() {
    let t = target().await;
    let s = unique("stream-refused");
    let q = format!("queue '{s}' in vhost '/'");

    let (_conn, ch) = with_message(&t, &s).await;
    let (code, text) = expect_refused(
        "basic.get",
        ch.basic_get(s.as_str().into(), BasicGetOptions::default()),
    )
    .await;
    assert_reply(
        (code, text),
        540,
        &format!("NOT_IMPLEMENTED - basic.get not supported by stream queues {q}"),
    );

    let (_conn, ch) = with_message(&t, &s).await;
    let (code, text) = expect_refused(
        "queue.purge",
        ch.queue_purge(s.as_str().into(), QueuePurgeOptions::default()),
    )
    .await;
    assert_reply(
        (code, text),
        540,
        &format!("NOT_IMPLEMENTED - queue.purge not supported by stream queues {q}"),
    );

    let (_conn, ch) = with_message(&t, &s).await;
    let (code, text) = expect_refused(
        "a consumer without a prefetch",
        ch.basic_consume(
            s.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_reply(
        (code, text),
        406,
        &format!("PRECONDITION_FAILED - consumer prefetch count is not set for '{q}'"),
    );

    let (_conn, ch) = with_message(&t, &s).await;
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let (code, text) = expect_refused(
        "a consumer without acks",
        ch.basic_consume(
            s.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    assert_reply(
        (code, text),
        540,
        &format!("NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues {q}"),
    );

    let (conn, ch) = with_message(&t, &s).await;
    let mut events = conn.events_listener();
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            s.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            offset_arg(AMQPValue::LongString("first".into())),
        )
        .await
        .unwrap();
    let d = within("a delivery", consumer.next())
        .await
        .unwrap()
        .unwrap();
    d.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let (code, text) = next_error_event(&mut events).await;
    assert_reply(
        (code, text),
        540,
        &format!(
            "NOT_IMPLEMENTED - basic.nack and basic.reject not supported by stream queues {q}"
        ),
    );
}

#[tokio::test]
async fn a_stream_survives_a_restart_and_keeps_its_offsets() {
    if std::env::var("WARREN_TEST_URL").is_ok() {
        return; // Warren-only: restarts the embedded broker.
    }
    let dir = std::env::temp_dir().join(unique("streams-restart"));
    let s = unique("stream-restart");
    let sent = bodies("r", 300);
    let before = {
        let broker = start_at(&dir).await;
        let conn = connect_url(&broker.url()).await;
        let ch = conn.create_channel().await.unwrap();
        declare_stream(&ch, &s, stream_args()).await;
        publish_all(&conn, &s, &sent).await;
        let got = read(
            &conn,
            &s,
            offset_arg(AMQPValue::LongString("first".into())),
            300,
        )
        .await;
        conn.close(200, "done".into()).await.unwrap();
        broker.shutdown().await;
        got
    };
    let broker = start_at(&dir).await;
    let conn = connect_url(&broker.url()).await;
    let after = read(
        &conn,
        &s,
        offset_arg(AMQPValue::LongString("first".into())),
        300,
    )
    .await;
    assert_eq!(before, after, "the same messages at the same offsets");
    // New messages continue the offsets.
    publish_all(&conn, &s, &["after".to_owned()]).await;
    let last = read(
        &conn,
        &s,
        offset_arg(AMQPValue::LongString("last".into())),
        1,
    )
    .await;
    assert_eq!(last[0], ("after".to_owned(), before[299].1 + 1));
    conn.close(200, "done".into()).await.unwrap();
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn retention_drops_the_oldest_segments() {
    if std::env::var("WARREN_TEST_URL").is_ok() {
        return; // RabbitMQ applies retention later, on its own schedule.
    }
    let t = target().await;
    let conn = connect_url(&t.url).await;
    let ch = conn.create_channel().await.unwrap();
    let s = unique("stream-retention");
    let mut args = stream_args();
    args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(20_000));
    args.insert(
        "x-stream-max-segment-size-bytes".into(),
        AMQPValue::LongLongInt(5_000),
    );
    declare_stream(&ch, &s, args).await;
    let sent: Vec<String> = (0..100).map(|i| format!("{i:0>500}")).collect();
    publish_all(&conn, &s, &sent).await;
    let first = read(
        &conn,
        &s,
        offset_arg(AMQPValue::LongString("first".into())),
        1,
    )
    .await;
    assert!(
        first[0].1 > 50,
        "the oldest were dropped: the first is {}",
        first[0].1
    );
    assert_eq!(first[0].0, sent[first[0].1 as usize]);
    let (code, _) = {
        let ch = conn.create_channel().await.unwrap();
        let mut bad = stream_args();
        bad.insert("x-max-age".into(), AMQPValue::LongString("soon".into()));
        expect_refused(
            "a bad x-max-age",
            ch.queue_declare(
                unique("stream-bad-age").as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                bad,
            ),
        )
        .await
    };
    assert_eq!(
        code, 406,
        "RabbitMQ 3.10 answers 541 INTERNAL_ERROR; Warren names the argument"
    );
    conn.close(200, "done".into()).await.unwrap();
    drop(t);
}

/// The offsets [`read_tagged`] got.
async fn read_as(
    conn: &Connection,
    stream: &str,
    tag: &str,
    args: FieldTable,
    n: usize,
) -> Vec<i64> {
    let got = read_tagged(conn, stream, tag, args, n).await;
    got.into_iter().map(|(_, o)| o).collect()
}

#[tokio::test]
async fn a_named_consumer_resumes_after_what_it_acked_across_restarts() {
    if std::env::var("WARREN_TEST_URL").is_ok() {
        return; // Warren-only: RabbitMQ has no server-side offsets over AMQP 0-9-1.
    }
    let dir = std::env::temp_dir().join(unique("streams-tracking"));
    let s = unique("stream-tracking");
    let broker = start_at(&dir).await;
    let conn = connect_url(&broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    declare_stream(&ch, &s, stream_args()).await;
    publish_all(&conn, &s, &bodies("t", 20)).await;
    let first = offset_arg(AMQPValue::LongString("first".into()));
    let a = read_as(&conn, &s, "tracker", first.clone(), 4).await;
    // Same tag, no x-stream-offset: it goes on after the last acked message.
    let b = read_as(&conn, &s, "tracker", FieldTable::default(), 3).await;
    assert_eq!(b[0], a[3] + 1, "resumed after {a:?}: {b:?}");
    // A name in x-stream-consumer-name works with a server-named consumer tag.
    let mut named = first.clone();
    named.insert(
        "x-stream-consumer-name".into(),
        AMQPValue::LongString("billing".into()),
    );
    let c = read_as(&conn, &s, "", named, 5).await;
    let mut by_name = FieldTable::default();
    by_name.insert(
        "x-stream-consumer-name".into(),
        AMQPValue::LongString("billing".into()),
    );
    conn.close(200, "done".into()).await.unwrap();
    broker.shutdown().await;

    // After a restart both names resume where they were.
    let broker = start_at(&dir).await;
    let conn = connect_url(&broker.url()).await;
    let b2 = read_as(&conn, &s, "tracker", FieldTable::default(), 2).await;
    assert_eq!(b2[0], b[2] + 1);
    let c2 = read_as(&conn, &s, "", by_name, 2).await;
    assert_eq!(c2[0], c[4] + 1);
    // An explicit offset still wins over the tracked one.
    let again = read_as(&conn, &s, "tracker", first, 1).await;
    assert_eq!(again[0], a[0]);
    conn.close(200, "done".into()).await.unwrap();
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_consumer_with_a_filter_gets_only_the_values_it_asks_for() {
    if std::env::var("WARREN_TEST_URL").is_ok() {
        return; // Filtering is RabbitMQ 3.13's; the comparison node is 3.10.
    }
    let t = target().await;
    let conn = connect_url(&t.url).await;
    let ch = conn.create_channel().await.unwrap();
    let s = unique("stream-filter");
    declare_stream(&ch, &s, stream_args()).await;
    let pch = conn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..30 {
        let mut props = BasicProperties::default();
        if i % 3 != 2 {
            let mut h = FieldTable::default();
            let v = if i % 3 == 0 { "eu" } else { "us" };
            h.insert(
                "x-stream-filter-value".into(),
                AMQPValue::LongString(v.into()),
            );
            props = props.with_headers(h);
        }
        let c = pch
            .basic_publish(
                "".into(),
                s.as_str().into(),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                props,
            )
            .await
            .unwrap();
        assert!(c.await.unwrap().is_ack());
    }
    let mut args = offset_arg(AMQPValue::LongString("first".into()));
    args.insert("x-stream-filter".into(), AMQPValue::LongString("eu".into()));
    let eu = read(&conn, &s, args.clone(), 10).await;
    assert_eq!(
        eu.iter()
            .map(|(b, _)| b.parse::<u32>().unwrap())
            .collect::<Vec<_>>(),
        (0..30).filter(|i| i % 3 == 0).collect::<Vec<_>>()
    );
    nothing_more_after(&conn, &s, args.clone(), 10).await;
    args.insert("x-stream-match-unfiltered".into(), AMQPValue::Boolean(true));
    let with_unfiltered = read(&conn, &s, args, 20).await;
    assert_eq!(
        with_unfiltered
            .iter()
            .map(|(b, _)| b.parse::<u32>().unwrap())
            .collect::<Vec<_>>(),
        (0..30).filter(|i| i % 3 != 1).collect::<Vec<_>>()
    );
    // A list of values.
    let mut both = offset_arg(AMQPValue::LongString("first".into()));
    both.insert(
        "x-stream-filter".into(),
        AMQPValue::FieldArray(
            vec![
                AMQPValue::LongString("eu".into()),
                AMQPValue::LongString("us".into()),
            ]
            .into(),
        ),
    );
    assert_eq!(read(&conn, &s, both, 20).await.len(), 20);
    conn.close(200, "done".into()).await.unwrap();
}

/// After `n` deliveries with `args`, nothing more arrives.
async fn nothing_more_after(conn: &Connection, stream: &str, args: FieldTable, n: usize) {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            stream.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .unwrap();
    for _ in 0..n {
        within("a delivery", consumer.next())
            .await
            .unwrap()
            .unwrap();
    }
    let extra = tokio::time::timeout(Duration::from_millis(400), consumer.next()).await;
    assert!(
        extra.is_err(),
        "a message the filter does not take arrived: {extra:?}"
    );
    let _ = ch.close(200, "done".into()).await;
}

#[tokio::test]
async fn a_full_channel_prefetch_holds_messages_back_without_skipping_any() {
    if std::env::var("WARREN_TEST_URL").is_ok() {
        return; // RabbitMQ refuses a channel-wide prefetch on streams.
    }
    let t = target().await;
    let conn = connect_url(&t.url).await;
    let ch = conn.create_channel().await.unwrap();
    let s = unique("stream-global-qos");
    declare_stream(&ch, &s, stream_args()).await;
    publish_all(&conn, &s, &bodies("g", 9)).await;
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    ch.basic_qos(3, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            s.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            offset_arg(AMQPValue::LongString("first".into())),
        )
        .await
        .unwrap();
    let mut offsets = Vec::new();
    while offsets.len() < 9 {
        let mut batch = Vec::new();
        for _ in 0..3 {
            batch.push(
                within("a delivery", consumer.next())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let more = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
        assert!(
            more.is_err(),
            "more than the channel's prefetch arrived: {more:?}"
        );
        offsets.extend(batch.iter().map(offset_of));
        batch[2]
            .ack(BasicAckOptions { multiple: true })
            .await
            .unwrap();
    }
    let base = offsets[0];
    assert_eq!(
        offsets,
        (base..base + 9).collect::<Vec<_>>(),
        "no message skipped"
    );
    conn.close(200, "done".into()).await.unwrap();
}
