//! Proves headers-exchange matching: `x-match=all` (the default) needs every binding header to
//! be present with an equal value, `x-match=any` needs at least one, binding arguments starting
//! with `x-` are not matched, values of different types do not match, and the routing key is
//! ignored.
mod common;

use common::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, ExchangeKind};

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn int(v: i32) -> AMQPValue {
    AMQPValue::LongInt(v)
}

fn with_headers(pairs: &[(&str, AMQPValue)]) -> BasicProperties {
    BasicProperties::default().with_headers(table(pairs))
}

#[tokio::test]
async fn headers_exchange_all_and_any() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("headers");
    declare_exchange(&ch, &ex, ExchangeKind::Headers).await;

    let q_all = declare_queue(&ch, &unique("all")).await;
    let q_default = declare_queue(&ch, &unique("default-is-all")).await;
    let q_any = declare_queue(&ch, &unique("any")).await;
    let q_int = declare_queue(&ch, &unique("int")).await;
    let q_all_empty = declare_queue(&ch, &unique("all-empty")).await;
    let q_any_empty = declare_queue(&ch, &unique("any-empty")).await;

    bind_with(
        &ch,
        &q_all,
        &ex,
        "ignored",
        table(&[
            ("x-match", s("all")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
    )
    .await;
    bind_with(
        &ch,
        &q_default,
        &ex,
        "",
        table(&[("format", s("pdf")), ("type", s("report"))]),
    )
    .await;
    bind_with(
        &ch,
        &q_any,
        &ex,
        "",
        table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
    )
    .await;
    bind_with(
        &ch,
        &q_int,
        &ex,
        "",
        table(&[("x-match", s("all")), ("n", int(1))]),
    )
    .await;
    // No headers to match besides x-match.
    bind_with(&ch, &q_all_empty, &ex, "", table(&[("x-match", s("all"))])).await;
    bind_with(&ch, &q_any_empty, &ex, "", table(&[("x-match", s("any"))])).await;

    // m1: both headers (plus an extra one) -> all, default, any.
    publish_confirmed_with(
        &ch,
        &ex,
        "k1",
        b"m1",
        with_headers(&[
            ("format", s("pdf")),
            ("type", s("report")),
            ("extra", s("x")),
        ]),
    )
    .await;
    // m2: only one header -> any.
    publish_confirmed_with(&ch, &ex, "k2", b"m2", with_headers(&[("format", s("pdf"))])).await;
    // m3: one header with a different value, one equal -> any.
    publish_confirmed_with(
        &ch,
        &ex,
        "",
        b"m3",
        with_headers(&[("format", s("zip")), ("type", s("report"))]),
    )
    .await;
    // m4: no headers at all.
    publish_confirmed_with(&ch, &ex, "", b"m4", BasicProperties::default()).await;
    // m5: n=1 as an integer -> int.
    publish_confirmed_with(&ch, &ex, "", b"m5", with_headers(&[("n", int(1))])).await;
    // m6: n="1" as a string does not equal the integer 1.
    publish_confirmed_with(&ch, &ex, "", b"m6", with_headers(&[("n", s("1"))])).await;
    // m7: header names are case-sensitive.
    publish_confirmed_with(
        &ch,
        &ex,
        "",
        b"m7",
        with_headers(&[("FORMAT", s("pdf")), ("TYPE", s("report"))]),
    )
    .await;

    assert_eq!(drain(&ch, &q_all).await, vec!["m1"]);
    assert_eq!(drain(&ch, &q_default).await, vec!["m1"]);
    assert_eq!(drain(&ch, &q_any).await, vec!["m1", "m2", "m3"]);
    assert_eq!(drain(&ch, &q_int).await, vec!["m5"]);
    // x-match=all with nothing to match accepts everything; x-match=any accepts nothing.
    assert_eq!(
        drain(&ch, &q_all_empty).await,
        vec!["m1", "m2", "m3", "m4", "m5", "m6", "m7"]
    );
    assert!(drain(&ch, &q_any_empty).await.is_empty());
}

#[tokio::test]
async fn x_prefixed_binding_arguments_are_not_matched() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("headers-x");
    declare_exchange(&ch, &ex, ExchangeKind::Headers).await;
    let q = declare_queue(&ch, &unique("q")).await;
    bind_with(
        &ch,
        &q,
        &ex,
        "",
        table(&[
            ("x-match", s("all")),
            ("x-custom", s("ignored")),
            ("color", s("red")),
        ]),
    )
    .await;
    publish_confirmed_with(&ch, &ex, "", b"red", with_headers(&[("color", s("red"))])).await;
    publish_confirmed_with(&ch, &ex, "", b"blue", with_headers(&[("color", s("blue"))])).await;
    assert_eq!(drain(&ch, &q).await, vec!["red"]);
}

#[tokio::test]
async fn amq_headers_and_amq_match_are_headers_exchanges() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("q")).await;
    let token = unique("token");
    let args = table(&[("token", s(&token))]);
    bind_with(&ch, &q, "amq.headers", "", args.clone()).await;
    publish_confirmed_with(
        &ch,
        "amq.headers",
        "",
        b"hit",
        with_headers(&[("token", s(&token))]),
    )
    .await;
    publish_confirmed_with(
        &ch,
        "amq.headers",
        "",
        b"miss",
        with_headers(&[("token", s("other"))]),
    )
    .await;
    assert_eq!(drain(&ch, &q).await, vec!["hit"]);
    within(
        "queue.unbind",
        ch.queue_unbind(q.as_str().into(), "amq.headers".into(), "".into(), args),
    )
    .await
    .unwrap();
}
