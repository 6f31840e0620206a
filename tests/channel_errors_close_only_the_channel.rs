//! Proves that soft errors (403 ACCESS_REFUSED, 404 NOT_FOUND, 405 RESOURCE_LOCKED,
//! 406 PRECONDITION_FAILED) are answered with channel.close carrying RabbitMQ's reply code and
//! text, and that only the offending channel dies: the connection and its other channels keep
//! working.
mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

fn report(case: &str, code: u16, text: &str) {
    eprintln!("[observed] {case}: {code} {text:?}");
}

async fn check(
    case: &str,
    conn: &Connection,
    ch: &Channel,
    (code, text): (u16, String),
    want_code: u16,
    want_text: &str,
) {
    report(case, code, &text);
    assert_eq!(code, want_code, "{case}: {text}");
    assert_eq!(text, want_text, "{case}");
    assert_only_channel_closed(conn, ch).await;
}

fn vhost_suffix() -> &'static str {
    "in vhost '/'"
}

#[tokio::test]
async fn declaring_an_amq_prefixed_exchange_is_access_refused() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let name = format!("amq.{}", unique("foo"));
    let err = expect_refused(
        "exchange.declare amq.*",
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let want = format!("ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'");
    check("exchange.declare amq.*", &conn, &ch, err, 403, &want).await;
}

#[tokio::test]
async fn declaring_an_amq_prefixed_queue_is_access_refused() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let name = format!("amq.{}", unique("q"));
    let err = expect_refused(
        "queue.declare amq.*",
        ch.queue_declare(
            name.as_str().into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let want = format!("ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'");
    check("queue.declare amq.*", &conn, &ch, err, 403, &want).await;
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_is_not_found() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let mut events = conn.events_listener();
    let ch = channel(&conn).await;
    let missing = unique("no-such-exchange");
    publish(&ch, &missing, "k", b"x").await; // basic.publish has no reply: the error is async
    let err = next_error_event(&mut events).await;
    let want = format!("NOT_FOUND - no exchange '{missing}' {}", vhost_suffix());
    check(
        "basic.publish to missing exchange",
        &conn,
        &ch,
        err,
        404,
        &want,
    )
    .await;
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_fails_the_pending_confirm() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let missing = unique("no-such-exchange");
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            missing.as_str().into(),
            "k".into(),
            Default::default(),
            b"x",
            BasicProperties::default(),
        ),
    )
    .await
    .unwrap();
    let err = within("the confirm to fail", confirm)
        .await
        .expect_err("a publish the broker refused must not be confirmed");
    let (code, text) = amqp_error(&err);
    assert_eq!(code, 404, "{text}");
    assert_only_channel_closed(&conn, &ch).await;
}

#[tokio::test]
async fn publishing_to_an_internal_exchange_is_access_refused() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let mut events = conn.events_listener();
    let ch = channel(&conn).await;
    let name = unique("internal");
    within(
        "exchange.declare internal",
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                internal: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    publish(&ch, &name, "", b"x").await;
    let err = next_error_event(&mut events).await;
    let want = format!(
        "ACCESS_REFUSED - cannot publish to internal exchange '{name}' {}",
        vhost_suffix()
    );
    check(
        "basic.publish to internal exchange",
        &conn,
        &ch,
        err,
        403,
        &want,
    )
    .await;
}

#[tokio::test]
async fn inequivalent_queue_redeclare_is_precondition_failed() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let name = unique("q-ineq");
    // Non-exclusive (so that `durable` is compared), auto-delete so it cannot outlive the test
    // for long; deleted explicitly at the end.
    within(
        "queue.declare",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();

    let err = expect_refused(
        "queue.declare durable",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    let want = format!(
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' {}: received 'true' but current is 'false'",
        vhost_suffix()
    );
    check("queue redeclare durable", &conn, &ch, err, 406, &want).await;

    let ch = channel(&conn).await;
    let err = expect_refused(
        "queue.declare without auto-delete",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let want = format!(
        "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{name}' {}: received 'false' but current is 'true'",
        vhost_suffix()
    );
    check("queue redeclare auto_delete", &conn, &ch, err, 406, &want).await;

    // Inequivalent arguments.
    let ch = channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    let err = expect_refused(
        "queue.declare with x-max-length",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            args,
        ),
    )
    .await;
    let want = format!(
        "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{name}' {}: received the value '10' of type 'signedint' but current is none",
        vhost_suffix()
    );
    check("queue redeclare x-max-length", &conn, &ch, err, 406, &want).await;

    // The same declaration again is fine.
    let ch = channel(&conn).await;
    within(
        "queue.declare",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("an equivalent redeclare succeeds");
    within(
        "queue.delete",
        ch.queue_delete(name.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn exclusive_queues_are_never_durable_so_durable_is_not_compared() {
    // RabbitMQ forces exclusive queues to be transient: `durable` is ignored when declaring
    // (or redeclaring) an exclusive queue, so this redeclare is *not* an inequivalence.
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let name = unique("q-excl");
    declare_queue(&ch, &name).await;
    within(
        "queue.declare durable exclusive",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("durable is ignored for exclusive queues");
}

#[tokio::test]
async fn inequivalent_exchange_redeclare_is_precondition_failed() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let name = unique("ex-ineq");
    declare_exchange(&ch, &name, ExchangeKind::Direct).await;
    // Keep it alive (auto-delete) for the duration of the test.
    let q = declare_queue(&ch, &unique("q")).await;
    bind(&ch, &q, &name, "k").await;
    let err = expect_refused(
        "exchange.declare fanout over direct",
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    let want = format!(
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' {}: received 'fanout' but current is 'direct'",
        vhost_suffix()
    );
    check("exchange redeclare type", &conn, &ch, err, 406, &want).await;

    let ch = channel(&conn).await;
    let err = expect_refused(
        "exchange.declare durable over transient",
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                auto_delete: true,
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    let want = format!(
        "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{name}' {}: received 'true' but current is 'false'",
        vhost_suffix()
    );
    check("exchange redeclare durable", &conn, &ch, err, 406, &want).await;
}

#[tokio::test]
async fn exclusive_queue_of_another_connection_is_resource_locked() {
    let broker = start().await;
    let owner = connect(&broker).await;
    let owner_ch = channel(&owner).await;
    let name = unique("excl");
    declare_queue(&owner_ch, &name).await;

    let other = connect(&broker).await;
    let lock_text = format!(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' {}. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
        vhost_suffix()
    );

    let ch = channel(&other).await;
    let err = expect_refused(
        "queue.declare of another connection's exclusive queue",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    check(
        "queue.declare other's exclusive",
        &other,
        &ch,
        err,
        405,
        &lock_text,
    )
    .await;

    let ch = channel(&other).await;
    let err = expect_refused(
        "passive queue.declare of another connection's exclusive queue",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    check(
        "passive queue.declare other's exclusive",
        &other,
        &ch,
        err,
        405,
        &lock_text,
    )
    .await;

    let ch = channel(&other).await;
    let err = expect_refused(
        "basic.consume on another connection's exclusive queue",
        ch.basic_consume(
            name.as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    check(
        "basic.consume other's exclusive",
        &other,
        &ch,
        err,
        405,
        &lock_text,
    )
    .await;

    let ch = channel(&other).await;
    let err = expect_refused(
        "basic.get from another connection's exclusive queue",
        ch.basic_get(name.as_str().into(), Default::default()),
    )
    .await;
    check(
        "basic.get other's exclusive",
        &other,
        &ch,
        err,
        405,
        &lock_text,
    )
    .await;

    let ch = channel(&other).await;
    let err = expect_refused(
        "queue.purge of another connection's exclusive queue",
        ch.queue_purge(name.as_str().into(), Default::default()),
    )
    .await;
    check(
        "queue.purge other's exclusive",
        &other,
        &ch,
        err,
        405,
        &lock_text,
    )
    .await;

    let ch = channel(&other).await;
    let err = expect_refused(
        "queue.bind of another connection's exclusive queue",
        ch.queue_bind(
            name.as_str().into(),
            "amq.fanout".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    check(
        "queue.bind other's exclusive",
        &other,
        &ch,
        err,
        405,
        &lock_text,
    )
    .await;

    let ch = channel(&other).await;
    let err = expect_refused(
        "queue.delete of another connection's exclusive queue",
        ch.queue_delete(name.as_str().into(), Default::default()),
    )
    .await;
    check(
        "queue.delete other's exclusive",
        &other,
        &ch,
        err,
        405,
        &lock_text,
    )
    .await;

    // Publishing to it from another connection is allowed.
    let ch = confirm_channel(&other).await;
    publish_confirmed(&ch, "", &name, b"allowed").await;
    assert_eq!(drain(&owner_ch, &name).await, vec!["allowed"]);
}

#[tokio::test]
async fn the_default_exchange_cannot_be_bound_declared_or_deleted() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("q")).await;
    let want = "ACCESS_REFUSED - operation not permitted on the default exchange";

    let err = expect_refused(
        "queue.bind to the default exchange",
        ch.queue_bind(
            q.as_str().into(),
            "".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    check("queue.bind default exchange", &conn, &ch, err, 403, want).await;

    let ch = channel(&conn).await;
    let err = expect_refused(
        "queue.unbind from the default exchange",
        ch.queue_unbind(
            q.as_str().into(),
            "".into(),
            q.as_str().into(),
            FieldTable::default(),
        ),
    )
    .await;
    check("queue.unbind default exchange", &conn, &ch, err, 403, want).await;

    let ch = channel(&conn).await;
    let err = expect_refused(
        "exchange.delete of the default exchange",
        ch.exchange_delete("".into(), Default::default()),
    )
    .await;
    check(
        "exchange.delete default exchange",
        &conn,
        &ch,
        err,
        403,
        want,
    )
    .await;

    let ch = channel(&conn).await;
    let err = expect_refused(
        "exchange.declare of the default exchange",
        ch.exchange_declare(
            "".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    check(
        "exchange.declare default exchange",
        &conn,
        &ch,
        err,
        403,
        want,
    )
    .await;
}

#[tokio::test]
async fn acking_an_unknown_delivery_tag_is_precondition_failed() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let mut events = conn.events_listener();
    let ch = channel(&conn).await;
    let _ = within("basic.ack", ch.basic_ack(42, BasicAckOptions::default())).await;
    let err = next_error_event(&mut events).await;
    check(
        "basic.ack unknown tag",
        &conn,
        &ch,
        err,
        406,
        "PRECONDITION_FAILED - unknown delivery tag 42",
    )
    .await;
}

#[tokio::test]
async fn acking_the_same_delivery_twice_is_precondition_failed() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let mut events = conn.events_listener();
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("q")).await;
    publish_confirmed(&ch, "", &q, b"m").await;
    let m = within(
        "basic.get",
        ch.basic_get(q.as_str().into(), Default::default()),
    )
    .await
    .unwrap()
    .expect("a message");
    let tag = m.delivery.delivery_tag;
    within("basic.ack", ch.basic_ack(tag, BasicAckOptions::default()))
        .await
        .unwrap();
    let _ = within(
        "second basic.ack",
        ch.basic_ack(tag, BasicAckOptions::default()),
    )
    .await;
    let err = next_error_event(&mut events).await;
    let want = format!("PRECONDITION_FAILED - unknown delivery tag {tag}");
    check("double basic.ack", &conn, &ch, err, 406, &want).await;
}

#[tokio::test]
async fn rejecting_and_nacking_unknown_delivery_tags_are_precondition_failed() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let mut events = conn.events_listener();
    let ch = channel(&conn).await;
    let _ = within(
        "basic.reject",
        ch.basic_reject(7, BasicRejectOptions { requeue: true }),
    )
    .await;
    let err = next_error_event(&mut events).await;
    check(
        "basic.reject unknown tag",
        &conn,
        &ch,
        err,
        406,
        "PRECONDITION_FAILED - unknown delivery tag 7",
    )
    .await;

    let ch = channel(&conn).await;
    let _ = within(
        "basic.nack",
        ch.basic_nack(
            9,
            BasicNackOptions {
                requeue: true,
                multiple: false,
            },
        ),
    )
    .await;
    let err = next_error_event(&mut events).await;
    check(
        "basic.nack unknown tag",
        &conn,
        &ch,
        err,
        406,
        "PRECONDITION_FAILED - unknown delivery tag 9",
    )
    .await;
}

#[tokio::test]
async fn conditional_deletes_are_precondition_failed() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let setup = confirm_channel(&conn).await;
    let q = declare_queue(&setup, &unique("q")).await;
    publish_confirmed(&setup, "", &q, b"keeps it non-empty").await;

    let ch = channel(&conn).await;
    let err = expect_refused(
        "queue.delete if-empty on a non-empty queue",
        ch.queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        ),
    )
    .await;
    let want = format!(
        "PRECONDITION_FAILED - queue '{q}' {} not empty",
        vhost_suffix()
    );
    check("queue.delete if-empty", &conn, &ch, err, 406, &want).await;

    let consumer_ch = channel(&conn).await;
    let _consumer = consume(&consumer_ch, &q, false).await;
    let ch = channel(&conn).await;
    let err = expect_refused(
        "queue.delete if-unused on a queue with a consumer",
        ch.queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        ),
    )
    .await;
    let want = format!(
        "PRECONDITION_FAILED - queue '{q}' {} in use",
        vhost_suffix()
    );
    check("queue.delete if-unused", &conn, &ch, err, 406, &want).await;

    let ex = unique("ex");
    declare_exchange(&setup, &ex, ExchangeKind::Direct).await;
    bind(&setup, &q, &ex, "k").await;
    let ch = channel(&conn).await;
    let err = expect_refused(
        "exchange.delete if-unused on a bound exchange",
        ch.exchange_delete(
            ex.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        ),
    )
    .await;
    let want = format!(
        "PRECONDITION_FAILED - exchange '{ex}' {} in use",
        vhost_suffix()
    );
    check("exchange.delete if-unused", &conn, &ch, err, 406, &want).await;
}

#[tokio::test]
async fn passive_declares_of_missing_entities_are_not_found() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = unique("missing-q");
    let err = expect_refused(
        "passive queue.declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    let want = format!("NOT_FOUND - no queue '{q}' {}", vhost_suffix());
    check("passive queue.declare missing", &conn, &ch, err, 404, &want).await;

    let ch = channel(&conn).await;
    let ex = unique("missing-ex");
    let err = expect_refused(
        "passive exchange.declare",
        ch.exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    let want = format!("NOT_FOUND - no exchange '{ex}' {}", vhost_suffix());
    check(
        "passive exchange.declare missing",
        &conn,
        &ch,
        err,
        404,
        &want,
    )
    .await;
}

#[tokio::test]
async fn operations_on_missing_queues_and_exchanges_are_not_found() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let q = unique("missing-q");

    let ch = channel(&conn).await;
    let err = expect_refused(
        "basic.consume",
        ch.basic_consume(
            q.as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let want = format!("NOT_FOUND - no queue '{q}' {}", vhost_suffix());
    check("basic.consume missing queue", &conn, &ch, err, 404, &want).await;

    let ch = channel(&conn).await;
    let err = expect_refused(
        "basic.get",
        ch.basic_get(q.as_str().into(), Default::default()),
    )
    .await;
    check("basic.get missing queue", &conn, &ch, err, 404, &want).await;

    let ch = channel(&conn).await;
    let err = expect_refused(
        "queue.purge",
        ch.queue_purge(q.as_str().into(), Default::default()),
    )
    .await;
    check("queue.purge missing queue", &conn, &ch, err, 404, &want).await;

    let ch = channel(&conn).await;
    let err = expect_refused(
        "queue.bind of a missing queue",
        ch.queue_bind(
            q.as_str().into(),
            "amq.direct".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    check("queue.bind missing queue", &conn, &ch, err, 404, &want).await;

    let ch = channel(&conn).await;
    let present = declare_queue(&ch, &unique("present")).await;
    let ex = unique("missing-ex");
    let err = expect_refused(
        "queue.bind to a missing exchange",
        ch.queue_bind(
            present.as_str().into(),
            ex.as_str().into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let want = format!("NOT_FOUND - no exchange '{ex}' {}", vhost_suffix());
    check("queue.bind missing exchange", &conn, &ch, err, 404, &want).await;
}

#[tokio::test]
async fn other_channels_keep_consuming_after_a_channel_error() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let consumer_ch = channel(&conn).await;
    let q = declare_queue(&consumer_ch, &unique("q")).await;
    let mut consumer = consume(&consumer_ch, &q, true).await;

    let bad = channel(&conn).await;
    let _ = expect_refused(
        "passive declare of a missing queue",
        bad.queue_declare(
            unique("nope").as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    assert_only_channel_closed(&conn, &bad).await;

    let publisher = confirm_channel(&conn).await;
    publish_confirmed(&publisher, "", &q, b"still flowing").await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(body(&d), "still flowing");
    assert!(consumer_ch.status().connected());
    // The closed channel refuses further use on the client side.
    assert!(bad.basic_qos(1, Default::default()).await.is_err());
}
