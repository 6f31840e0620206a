//! Proves that redeclaring a queue with different `x-` arguments is refused with 406
//! `inequivalent arg`, naming the argument and both values as RabbitMQ prints them, while the
//! same arguments redeclare fine and the existing queue is left as it was.
mod common;
mod queue_support;

use amq_protocol::types::AMQPValue;
use common::*;
use lapin::options::*;
use queue_support::*;

fn shared() -> QueueDeclareOptions {
    QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    }
}

async fn redeclare(
    conn: &lapin::Connection,
    name: &str,
    args: &[(&str, AMQPValue)],
) -> lapin::Result<()> {
    let ch = channel(conn).await;
    within(
        "queue.declare again",
        ch.queue_declare(name.into(), shared(), table(args)),
    )
    .await
    .map(|_| ())
}

#[tokio::test]
async fn a_different_value_is_refused_naming_the_argument_and_both_values() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_opts(
        &ch,
        &unique("ineq"),
        shared(),
        &[("x-message-ttl", int(100))],
    )
    .await;
    let err = redeclare(&conn, &q, &[("x-message-ttl", int(200))])
        .await
        .expect_err("a different TTL");
    let (code, msg) = amqp_error(&err);
    assert_eq!(code, 406);
    assert!(
        msg.starts_with(&format!(
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': received "
        )) && msg.contains("'200'")
            && msg.contains("but current is")
            && msg.contains("'100'"),
        "{msg}"
    );
    // The queue is unchanged: still a 100 ms TTL, still declarable as before.
    redeclare(&conn, &q, &[("x-message-ttl", int(100))])
        .await
        .expect("the same arguments redeclare fine");
    delete_queue(&ch, &q).await;
}

#[tokio::test]
async fn an_added_or_missing_argument_is_refused() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_opts(
        &ch,
        &unique("ineq-add"),
        shared(),
        &[("x-max-length", int(10))],
    )
    .await;

    let err = redeclare(&conn, &q, &[])
        .await
        .expect_err("missing argument");
    let (code, msg) = amqp_error(&err);
    assert_eq!(code, 406);
    assert!(
        msg.contains("inequivalent arg 'x-max-length'") && msg.contains("received none"),
        "{msg}"
    );

    let err = redeclare(
        &conn,
        &q,
        &[
            ("x-max-length", int(10)),
            ("x-dead-letter-exchange", text("dlx")),
        ],
    )
    .await
    .expect_err("added argument");
    let (code, msg) = amqp_error(&err);
    assert_eq!(code, 406);
    assert!(
        msg.contains("inequivalent arg 'x-dead-letter-exchange'")
            && msg.contains("current is none"),
        "{msg}"
    );
    delete_queue(&ch, &q).await;
}

#[tokio::test]
async fn each_queue_argument_is_compared() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let cases: Vec<(&str, AMQPValue, AMQPValue)> = vec![
        ("x-expires", int(60_000), int(70_000)),
        ("x-max-length-bytes", int(1000), int(2000)),
        ("x-overflow", text("drop-head"), text("reject-publish")),
        ("x-dead-letter-exchange", text("a"), text("b")),
        ("x-max-priority", int(5), int(6)),
        (
            "x-single-active-consumer",
            AMQPValue::Boolean(true),
            AMQPValue::Boolean(false),
        ),
    ];
    for (arg, first, second) in cases {
        let q = declare_opts(&ch, &unique("ineq-each"), shared(), &[(arg, first)]).await;
        let err = redeclare(&conn, &q, &[(arg, second)]).await.expect_err(arg);
        let (code, msg) = amqp_error(&err);
        assert_eq!(code, 406, "{arg}: {msg}");
        assert!(msg.contains(&format!("inequivalent arg '{arg}'")), "{msg}");
        delete_queue(&ch, &q).await;
    }
}

// RabbitMQ compares integer arguments by value, whatever their width: a queue declared with
// x-message-ttl as a long (Java clients) can be redeclared with a signed int (pika). Checked
// against RabbitMQ 3.10.
#[tokio::test]
async fn the_same_integer_in_another_width_is_equivalent() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_opts(
        &ch,
        &unique("ineq-width"),
        shared(),
        &[("x-message-ttl", AMQPValue::LongLongInt(100))],
    )
    .await;
    redeclare(&conn, &q, &[("x-message-ttl", int(100))])
        .await
        .expect("100 as a signed int is 100 as a long");
    delete_queue(&ch, &q).await;
}

// RabbitMQ checks equivalence of the arguments it knows only; others (an application's own)
// may differ. Checked against RabbitMQ 3.10.
#[tokio::test]
async fn arguments_the_broker_does_not_know_are_not_compared() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_opts(
        &ch,
        &unique("ineq-custom"),
        shared(),
        &[("x-app", text("v1"))],
    )
    .await;
    redeclare(&conn, &q, &[("x-app", text("v2"))])
        .await
        .expect("an unknown argument is not compared");
    redeclare(&conn, &q, &[]).await.expect("nor required");
    delete_queue(&ch, &q).await;
}

// RabbitMQ prints two present values of the same type as bare values (and only an absent one
// next to "the value '10' of type 'signedint'"). Checked against RabbitMQ 3.10.
#[tokio::test]
async fn the_message_is_rabbitmqs_word_for_word() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_opts(
        &ch,
        &unique("ineq-text"),
        shared(),
        &[("x-message-ttl", int(100))],
    )
    .await;
    let err = redeclare(&conn, &q, &[("x-message-ttl", int(200))])
        .await
        .expect_err("a different TTL");
    assert_eq!(
        amqp_error(&err).1,
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': \
             received '200' but current is '100'"
        )
    );
    delete_queue(&ch, &q).await;
}
