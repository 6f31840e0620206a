//! Proves that queue.declare refuses an `x-` argument of the wrong type or value with 406
//! PRECONDITION_FAILED, in a message naming the argument, and creates nothing.
//!
//! The `x-delivery-limit` and `x-delayed-retry-*` cases are Warren's (RabbitMQ 3.10 ignores
//! those arguments on classic queues) and are skipped against a `WARREN_TEST_URL` broker.
mod common;
mod queue_support;

use amq_protocol::types::AMQPValue;
use common::*;
use lapin::options::*;
use queue_support::*;

/// Declares `name` with `args` on a fresh channel and returns the refusal.
async fn refused(
    conn: &lapin::Connection,
    name: &str,
    args: &[(&str, AMQPValue)],
) -> (u16, String) {
    let ch = channel(conn).await;
    expect_refused(
        "queue.declare with a bad argument",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            table(args),
        ),
    )
    .await
}

async fn exists(conn: &lapin::Connection, name: &str) -> bool {
    let ch = channel(conn).await;
    within(
        "passive queue.declare",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        ),
    )
    .await
    .is_ok()
}

async fn check_refusals(broker: &TestBroker, cases: Vec<(&str, Vec<(&str, AMQPValue)>)>) {
    let conn = connect(broker).await;
    for (arg, args) in cases {
        let name = unique("badarg");
        let (code, text) = refused(&conn, &name, &args).await;
        eprintln!("{arg} {args:?}: {code} {text}");
        assert_eq!(code, 406, "{arg} {args:?}: {text}");
        assert!(
            text.starts_with("PRECONDITION_FAILED - ") && text.contains(&format!("'{arg}'")),
            "{arg} {args:?}: the message must name the argument: {text}"
        );
        assert!(!exists(&conn, &name).await, "{arg}: no queue is created");
    }
}

#[tokio::test]
async fn ttl_and_expiry_arguments_must_be_non_negative_integers() {
    let broker = start().await;
    check_refusals(
        &broker,
        vec![
            ("x-message-ttl", vec![("x-message-ttl", text("ten"))]),
            ("x-message-ttl", vec![("x-message-ttl", int(-1))]),
            ("x-expires", vec![("x-expires", int(0))]),
            ("x-expires", vec![("x-expires", int(-5))]),
            ("x-expires", vec![("x-expires", AMQPValue::Boolean(true))]),
        ],
    )
    .await;
}

#[tokio::test]
async fn length_arguments_must_be_non_negative_integers_and_overflow_a_known_mode() {
    let broker = start().await;
    check_refusals(
        &broker,
        vec![
            ("x-max-length", vec![("x-max-length", int(-1))]),
            ("x-max-length", vec![("x-max-length", text("10"))]),
            ("x-max-length-bytes", vec![("x-max-length-bytes", int(-1))]),
            ("x-overflow", vec![("x-overflow", text("sometimes"))]),
            ("x-overflow", vec![("x-overflow", int(1))]),
        ],
    )
    .await;
}

#[tokio::test]
async fn dead_letter_arguments_must_be_strings_and_the_key_needs_an_exchange() {
    let broker = start().await;
    check_refusals(
        &broker,
        vec![
            (
                "x-dead-letter-exchange",
                vec![("x-dead-letter-exchange", int(5))],
            ),
            (
                "x-dead-letter-routing-key",
                vec![
                    ("x-dead-letter-exchange", text("")),
                    ("x-dead-letter-routing-key", int(5)),
                ],
            ),
            (
                "x-dead-letter-routing-key",
                vec![("x-dead-letter-routing-key", text("dead"))],
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn priority_and_single_active_consumer_arguments_are_checked() {
    let broker = start().await;
    check_refusals(
        &broker,
        vec![
            ("x-max-priority", vec![("x-max-priority", int(256))]),
            ("x-max-priority", vec![("x-max-priority", int(-1))]),
            ("x-max-priority", vec![("x-max-priority", text("high"))]),
            (
                "x-single-active-consumer",
                vec![("x-single-active-consumer", text("yes"))],
            ),
            (
                "x-single-active-consumer",
                vec![("x-single-active-consumer", int(1))],
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn delivery_limit_and_delayed_retry_arguments_are_checked() {
    let broker = start().await;
    if !on_warren(&broker) {
        eprintln!("skipped: RabbitMQ 3.10 ignores these arguments on classic queues");
        return;
    }
    check_refusals(
        &broker,
        vec![
            ("x-delivery-limit", vec![("x-delivery-limit", int(-1))]),
            ("x-delivery-limit", vec![("x-delivery-limit", text("3"))]),
            (
                "x-delayed-retry-type",
                vec![("x-delayed-retry-type", text("sometimes"))],
            ),
            (
                "x-delayed-retry-type",
                vec![("x-delayed-retry-type", int(1))],
            ),
            (
                "x-delayed-retry-min",
                vec![("x-delayed-retry-min", int(-1))],
            ),
            (
                "x-delayed-retry-max",
                vec![("x-delayed-retry-max", text("1s"))],
            ),
        ],
    )
    .await;
}

// RabbitMQ caps TTLs and expiries at ten years, 315360000000 ms ({value_too_large,N}), and
// the expiration property likewise. Checked against RabbitMQ 3.10.
#[tokio::test]
async fn ttls_above_ten_years_are_refused() {
    let broker = start().await;
    let too_big = AMQPValue::LongLongInt(315_360_000_001);
    check_refusals(
        &broker,
        vec![
            ("x-message-ttl", vec![("x-message-ttl", too_big.clone())]),
            ("x-expires", vec![("x-expires", too_big)]),
        ],
    )
    .await;
}

#[tokio::test]
async fn valid_arguments_of_any_integer_width_are_accepted() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare_with(
        &ch,
        &unique("goodargs"),
        &[
            ("x-message-ttl", AMQPValue::LongLongInt(60_000)),
            ("x-expires", AMQPValue::LongUInt(600_000)),
            ("x-max-length", AMQPValue::ShortInt(100)),
            ("x-max-length-bytes", AMQPValue::LongInt(1 << 20)),
            ("x-overflow", text("reject-publish-dlx")),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("somewhere")),
            ("x-max-priority", AMQPValue::ShortShortUInt(9)),
            ("x-single-active-consumer", AMQPValue::Boolean(false)),
            ("x-custom-app-argument", text("ignored")),
        ],
    )
    .await;
}
