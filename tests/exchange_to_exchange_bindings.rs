//! Proves exchange-to-exchange bindings: messages flow from a source exchange to a bound
//! destination exchange using the source's routing rules, chains work, cycles do not loop or
//! duplicate, a queue reachable by several paths gets one copy, and exchange.unbind stops the
//! flow.
mod common;

use common::*;
use lapin::options::{ExchangeBindOptions, ExchangeUnbindOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

async fn e2e_bind(ch: &Channel, destination: &str, source: &str, key: &str) {
    within(
        "exchange.bind",
        ch.exchange_bind(
            destination.into(),
            source.into(),
            key.into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.bind");
}

#[tokio::test]
async fn messages_flow_through_exchange_bindings() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let src = unique("e2e-src");
    let dst = unique("e2e-dst");
    declare_exchange(&ch, &src, ExchangeKind::Direct).await;
    declare_exchange(&ch, &dst, ExchangeKind::Fanout).await;
    let q = declare_queue(&ch, &unique("q")).await;
    bind(&ch, &q, &dst, "").await;
    e2e_bind(&ch, &dst, &src, "route-me").await;

    publish_confirmed(&ch, &src, "route-me", b"through").await;
    publish_confirmed(&ch, &src, "other", b"filtered").await;
    publish_confirmed(&ch, &dst, "whatever", b"direct-to-dst").await;
    assert_eq!(drain(&ch, &q).await, vec!["through", "direct-to-dst"]);
}

#[tokio::test]
async fn chained_exchanges_and_routing_key_is_preserved() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let a = unique("chain-a");
    let b = unique("chain-b");
    let c = unique("chain-c");
    declare_exchange(&ch, &a, ExchangeKind::Topic).await;
    declare_exchange(&ch, &b, ExchangeKind::Fanout).await;
    declare_exchange(&ch, &c, ExchangeKind::Direct).await;
    e2e_bind(&ch, &b, &a, "logs.#").await;
    e2e_bind(&ch, &c, &b, "").await;
    let q = declare_queue(&ch, &unique("q")).await;
    // c is direct: the original routing key is what c routes on.
    bind(&ch, &q, &c, "logs.error").await;

    publish_confirmed(&ch, &a, "logs.error", b"err").await;
    publish_confirmed(&ch, &a, "logs.info", b"info").await;
    publish_confirmed(&ch, &a, "metrics.error", b"metric").await;
    assert_eq!(drain(&ch, &q).await, vec!["err"]);
}

#[tokio::test]
async fn cycles_and_diamonds_deliver_exactly_one_copy() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let x = unique("cycle-x");
    let y = unique("cycle-y");
    declare_exchange(&ch, &x, ExchangeKind::Fanout).await;
    declare_exchange(&ch, &y, ExchangeKind::Fanout).await;
    e2e_bind(&ch, &y, &x, "").await;
    e2e_bind(&ch, &x, &y, "").await; // cycle x -> y -> x
    let q = declare_queue(&ch, &unique("q")).await;
    bind(&ch, &q, &x, "").await; // reachable directly from x
    bind(&ch, &q, &y, "").await; // and via y
    publish_confirmed(&ch, &x, "", b"one").await;
    publish_confirmed(&ch, &y, "", b"two").await;
    assert_eq!(drain(&ch, &q).await, vec!["one", "two"]);
}

#[tokio::test]
async fn exchange_unbind_stops_the_flow() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let src = unique("unbind-src");
    let dst = unique("unbind-dst");
    declare_exchange(&ch, &src, ExchangeKind::Fanout).await;
    declare_exchange(&ch, &dst, ExchangeKind::Fanout).await;
    let q = declare_queue(&ch, &unique("q")).await;
    let keep = declare_queue(&ch, &unique("keep")).await;
    bind(&ch, &q, &dst, "").await;
    bind(&ch, &keep, &src, "").await; // keeps the auto-delete source alive after the unbind
    e2e_bind(&ch, &dst, &src, "").await;
    publish_confirmed(&ch, &src, "", b"before").await;
    within(
        "exchange.unbind",
        ch.exchange_unbind(
            dst.as_str().into(),
            src.as_str().into(),
            "".into(),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.unbind");
    publish_confirmed(&ch, &src, "", b"after").await;
    assert_eq!(drain(&ch, &q).await, vec!["before"]);
    assert_eq!(drain(&ch, &keep).await, vec!["before", "after"]);
}

#[tokio::test]
async fn binding_to_a_missing_exchange_is_not_found() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let dst = unique("present");
    declare_exchange(&ch, &dst, ExchangeKind::Fanout).await;
    let missing = unique("missing");
    let (code, text) = expect_refused(
        "exchange.bind from a missing source",
        ch.exchange_bind(
            dst.as_str().into(),
            missing.as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(code, 404, "{text}");
    assert!(text.starts_with("NOT_FOUND - "), "{text}");
    assert_only_channel_closed(&conn, &ch).await;
}
