//! Cases from third-party client test suites (aiormq, amqplib, aio-pika) that pass against
//! RabbitMQ, reproduced with lapin so they stay fixed.
mod common;

use common::*;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::ExchangeKind;

/// aiormq `test_channel_closed_reuse`: a passive `exchange.declare` of the default exchange
/// closes the channel with 403, as RabbitMQ does (it answered declare-ok).
#[tokio::test]
async fn a_passive_declare_of_the_default_exchange_is_access_refused() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let (code, text) = expect_refused(
        "passive exchange.declare ''",
        ch.exchange_declare(
            "".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(code, 403, "{text}");
    assert_eq!(
        text,
        "ACCESS_REFUSED - operation not permitted on the default exchange"
    );
    assert_only_channel_closed(&conn, &ch).await;
}

/// aiormq `test_update_secret` and amqplib `updateSecret`: `connection.update-secret` is
/// answered with update-secret-ok (it was 540). A password does not expire, so as with
/// RabbitMQ's internal users any new secret is accepted, and the connection goes on working.
#[tokio::test]
async fn update_secret_is_accepted_and_the_connection_goes_on() {
    let broker = start().await;
    let conn = connect(&broker).await;
    for secret in ["guest", "new secret"] {
        within(
            "connection.update-secret",
            conn.update_secret(secret.into(), "token refresh".into()),
        )
        .await
        .expect("update-secret-ok");
    }
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("after-update-secret")).await;
    publish(&ch, "", &q, b"still here").await;
    assert_eq!(drain(&ch, &q).await, vec!["still here".to_owned()]);
}
