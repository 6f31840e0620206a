//! Proves the `alternate-exchange` argument: messages the exchange cannot route go to its
//! alternate exchange (and are then not returned to a mandatory publisher), routable messages
//! do not, and a missing alternate exchange leaves the message unroutable.
mod common;

use common::*;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, ExchangeKind};

fn ae_args(ae: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(LongString::from(ae)),
    );
    t
}

#[tokio::test]
async fn unroutable_messages_go_to_the_alternate_exchange() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ae = unique("ae");
    let main_ex = unique("main");
    declare_exchange(&ch, &ae, ExchangeKind::Fanout).await;
    declare_exchange_with(&ch, &main_ex, ExchangeKind::Direct, ae_args(&ae)).await;
    let q_main = declare_queue(&ch, &unique("main-q")).await;
    let q_ae = declare_queue(&ch, &unique("ae-q")).await;
    bind(&ch, &q_main, &main_ex, "known").await;
    bind(&ch, &q_ae, &ae, "").await;

    publish_confirmed(&ch, &main_ex, "known", b"routed").await;
    publish_confirmed(&ch, &main_ex, "unknown", b"unroutable").await;

    assert_eq!(drain(&ch, &q_main).await, vec!["routed"]);
    assert_eq!(drain(&ch, &q_ae).await, vec!["unroutable"]);
}

#[tokio::test]
async fn mandatory_message_taken_by_the_alternate_exchange_is_not_returned() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ae = unique("ae");
    let main_ex = unique("main");
    declare_exchange(&ch, &ae, ExchangeKind::Fanout).await;
    declare_exchange_with(&ch, &main_ex, ExchangeKind::Direct, ae_args(&ae)).await;
    let q_ae = declare_queue(&ch, &unique("ae-q")).await;
    bind(&ch, &q_ae, &ae, "").await;

    let confirm = within(
        "publish",
        ch.basic_publish(
            main_ex.as_str().into(),
            "nobody".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"caught",
            BasicProperties::default(),
        ),
    )
    .await
    .unwrap();
    let confirmation = within("confirm", confirm).await.unwrap();
    assert!(confirmation.is_ack());
    assert!(
        confirmation.take_message().is_none(),
        "a message routed by the alternate exchange must not be returned"
    );
    assert_eq!(drain(&ch, &q_ae).await, vec!["caught"]);
}

#[tokio::test]
async fn missing_alternate_exchange_leaves_message_unroutable() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let main_ex = unique("main");
    // The alternate exchange named here is never declared.
    declare_exchange_with(
        &ch,
        &main_ex,
        ExchangeKind::Direct,
        ae_args(&unique("absent-ae")),
    )
    .await;
    let confirm = within(
        "publish",
        ch.basic_publish(
            main_ex.as_str().into(),
            "nobody".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            BasicProperties::default(),
        ),
    )
    .await
    .unwrap();
    let confirmation = within("confirm", confirm).await.unwrap();
    assert!(confirmation.is_ack(), "{confirmation:?}");
    let returned = confirmation
        .take_message()
        .expect("unroutable mandatory message must be returned");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
}

#[tokio::test]
async fn alternate_exchange_with_its_own_routing_rules() {
    // The AE routes with the original routing key using its own type.
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ae = unique("ae-direct");
    let main_ex = unique("main");
    declare_exchange(&ch, &ae, ExchangeKind::Direct).await;
    declare_exchange_with(&ch, &main_ex, ExchangeKind::Direct, ae_args(&ae)).await;
    let q_ae = declare_queue(&ch, &unique("ae-q")).await;
    bind(&ch, &q_ae, &ae, "for-ae").await;
    publish_confirmed(&ch, &main_ex, "for-ae", b"kept").await;
    publish_confirmed(&ch, &main_ex, "neither", b"dropped").await;
    assert_eq!(drain(&ch, &q_ae).await, vec!["kept"]);
}
