//! Message deduplication with LavinMQ's arguments: `x-message-deduplication` on an exchange or
//! a queue drops a message whose id (the `x-deduplication-header` header, or the header that
//! argument names) it has seen, still confirming it; `x-cache-size` and `x-cache-ttl` bound the
//! cache; a durable exchange's or queue's cache survives a restart. Warren only (RabbitMQ needs
//! a third-party plugin for this).
mod cli_support;
mod common;

use std::time::Duration;

use common::*;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn on() -> (&'static str, AMQPValue) {
    ("x-message-deduplication", AMQPValue::Boolean(true))
}

fn with_id(header: &str, id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(table(&[(header, AMQPValue::LongString(id.into()))]))
}

/// Publishes with confirms; every publish must be acked (duplicates too).
async fn publish_ids(ch: &Channel, exchange: &str, key: &str, header: &str, ids: &[String]) {
    let mut confirms = Vec::new();
    for id in ids {
        confirms.push(
            ch.basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                id.as_bytes(),
                with_id(header, id),
            )
            .await
            .expect("publish"),
        );
    }
    for c in confirms {
        let c = within("a confirm", c).await.expect("confirm");
        assert!(c.is_ack(), "a duplicate is confirmed too");
        assert!(c.take_message().is_none(), "a duplicate is not returned");
    }
}

fn ids(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("id-{i}")).collect()
}

async fn dedup_exchange(ch: &Channel, name: &str, durable: bool, extra: &[(&str, AMQPValue)]) {
    let mut args = vec![on()];
    args.extend(extra.iter().cloned());
    ch.exchange_declare(
        name.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable,
            ..Default::default()
        },
        table(&args),
    )
    .await
    .expect("declaring a deduplicating exchange");
}

#[tokio::test]
async fn an_exchange_drops_repeats_across_a_connection_drop_and_confirms_them() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let x = unique("dedup-x");
    dedup_exchange(&ch, &x, false, &[]).await;
    let q = declare_queue(&ch, &format!("{x}-q")).await;
    bind(&ch, &q, &x, "").await;

    // A publisher sends 100 messages and loses its connection before it sees the confirms...
    let first = connect(&broker).await;
    let pch = confirm_channel(&first).await;
    let mut unseen = Vec::new();
    for id in ids(0..100) {
        let confirm = pch
            .basic_publish(
                x.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                id.as_bytes(),
                with_id("x-deduplication-header", &id),
            )
            .await
            .expect("publish");
        unseen.push(confirm);
    }
    // ...so, once the broker has them, it sends all 100 again on a new connection.
    wait_message_count(&ch, &q, 100).await;
    drop((pch, unseen));
    let _ = first.close(320, "dropped".into()).await;
    let second = connect(&broker).await;
    let pch = confirm_channel(&second).await;
    publish_ids(&pch, &x, "", "x-deduplication-header", &ids(0..100)).await;
    // And 50 new ones, each twice.
    publish_ids(&pch, &x, "", "x-deduplication-header", &ids(100..150)).await;
    publish_ids(&pch, &x, "", "x-deduplication-header", &ids(100..150)).await;

    let mut got = drain(&ch, &q).await;
    got.sort();
    let mut want = ids(0..150);
    want.sort();
    assert_eq!(got, want, "each message exactly once");

    // A message without an id always passes.
    for _ in 0..2 {
        publish_confirmed(&ch, &x, "", b"no id").await;
    }
    assert_eq!(drain(&ch, &q).await, ["no id", "no id"]);
}

#[tokio::test]
async fn a_named_header_the_cache_size_and_ttls_are_honoured() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;

    let x = unique("dedup-custom");
    dedup_exchange(
        &ch,
        &x,
        false,
        &[
            (
                "x-deduplication-header",
                AMQPValue::LongString("order".into()),
            ),
            ("x-cache-size", AMQPValue::LongLongInt(2)),
        ],
    )
    .await;
    let q = declare_queue(&ch, &format!("{x}-q")).await;
    bind(&ch, &q, &x, "").await;
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // a, b, a (dropped), c (evicts a), a (passes again), c (dropped).
    publish_ids(
        &ch,
        &x,
        "",
        "order",
        &names(&["a", "b", "a", "c", "a", "c"]),
    )
    .await;
    assert_eq!(drain(&ch, &q).await, ["a", "b", "c", "a"]);
    // The default header means nothing here.
    publish_ids(&ch, &x, "", "x-deduplication-header", &names(&["z", "z"])).await;
    assert_eq!(drain(&ch, &q).await, ["z", "z"]);

    // x-cache-ttl: a message's own header sets its entry's lifetime.
    let x = unique("dedup-ttl");
    dedup_exchange(
        &ch,
        &x,
        false,
        &[("x-cache-ttl", AMQPValue::LongLongInt(3_600_000))],
    )
    .await;
    let q = declare_queue(&ch, &format!("{x}-q")).await;
    bind(&ch, &q, &x, "").await;
    let short_lived = BasicProperties::default().with_headers(table(&[
        ("x-deduplication-header", AMQPValue::LongString("t".into())),
        ("x-cache-ttl", AMQPValue::LongLongInt(1)),
    ]));
    publish_confirmed_with(&ch, &x, "", b"t", short_lived.clone()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish_confirmed_with(&ch, &x, "", b"t", short_lived).await;
    publish_ids(
        &ch,
        &x,
        "",
        "x-deduplication-header",
        &names(&["long", "long"]),
    )
    .await;
    assert_eq!(drain(&ch, &q).await, ["t", "t", "long"]);
}

#[tokio::test]
async fn a_queue_deduplicates_what_reaches_it() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = unique("dedup-q");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        table(&[on()]),
    )
    .await
    .unwrap();
    publish_ids(&ch, "", &q, "x-deduplication-header", &ids(0..10)).await;
    publish_ids(&ch, "", &q, "x-deduplication-header", &ids(0..10)).await;
    assert_eq!(drain(&ch, &q).await, ids(0..10));
}

#[tokio::test]
async fn bad_arguments_are_refused_with_406() {
    let broker = start().await;
    let conn = connect(&broker).await;
    for args in [
        table(&[on(), ("x-cache-size", AMQPValue::LongLongInt(0))]),
        table(&[on(), ("x-cache-ttl", AMQPValue::LongLongInt(-5))]),
        table(&[(
            "x-message-deduplication",
            AMQPValue::LongString("yes".into()),
        )]),
    ] {
        let ch = channel(&conn).await;
        let (code, text) = expect_refused(
            "a bad deduplication argument",
            ch.exchange_declare(
                unique("dedup-bad").as_str().into(),
                ExchangeKind::Fanout,
                Default::default(),
                args.clone(),
            ),
        )
        .await;
        assert_eq!(code, 406, "{text}");
        let ch = channel(&conn).await;
        let (code, text) = expect_refused(
            "a bad deduplication argument on a queue",
            ch.queue_declare(
                unique("dedup-bad").as_str().into(),
                Default::default(),
                args,
            ),
        )
        .await;
        assert_eq!(code, 406, "{text}");
    }
    assert_broker_alive(&broker).await;
}

/// A durable exchange's and a durable queue's caches survive a restart: a publisher retrying
/// after the broker came back does not create duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_caches_survive_a_restart() {
    let dir = std::env::temp_dir().join(unique("dedup-restart"));
    let start_at = || {
        let dir = dir.clone();
        async move {
            let mut c = warren::Config::ephemeral();
            c.persistence = true;
            c.data_dir = dir;
            warren::Broker::start(c).await.expect("starting a broker")
        }
    };
    let x = "orders-in";
    let q = "orders";
    let dq = "dedup-durable-q";
    {
        let broker = start_at().await;
        let conn = connect_url(&broker.url()).await;
        let ch = confirm_channel(&conn).await;
        dedup_exchange(&ch, x, true, &[]).await;
        declare_durable_queue(&ch, q).await;
        bind(&ch, q, x, "").await;
        ch.queue_declare(
            dq.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            table(&[on()]),
        )
        .await
        .unwrap();
        publish_ids(&ch, x, "", "x-deduplication-header", &ids(0..20)).await;
        publish_ids(&ch, "", dq, "x-deduplication-header", &ids(0..20)).await;
        let _ = conn.close(200, "bye".into()).await;
        broker.shutdown().await;
    }
    let broker = start_at().await;
    let conn = connect_url(&broker.url()).await;
    let ch = confirm_channel(&conn).await;
    publish_ids(&ch, x, "", "x-deduplication-header", &ids(10..30)).await;
    publish_ids(&ch, "", dq, "x-deduplication-header", &ids(10..30)).await;
    let mut got = drain(&ch, q).await;
    got.sort();
    let mut want = ids(0..30);
    want.sort();
    assert_eq!(
        got, want,
        "the exchange remembered ids 10..19 across the restart"
    );
    let mut got = drain(&ch, dq).await;
    got.sort();
    assert_eq!(
        got, want,
        "the queue remembered ids 10..19 across the restart"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_publish_dedup_sets_the_header() {
    let broker = cli_support::broker().await;
    let url = broker.url();
    cli_support::warren(
        &url,
        &[
            "declare",
            "queue",
            "payments",
            "--arg",
            "x-message-deduplication:bool=true",
        ],
    )
    .await
    .ok();
    for _ in 0..3 {
        cli_support::warren(
            &url,
            &[
                "publish",
                "",
                "payments",
                "pay #42",
                "--message-id",
                "pay-42",
                "--dedup",
                "--confirm",
            ],
        )
        .await
        .ok();
    }
    assert_eq!(cli_support::queue_counts(&url, "payments").await.0, 1);
}

#[tokio::test]
async fn the_api_and_metrics_count_duplicates() {
    let t = common::http::target().await;
    let conn = connect(&t.amqp).await;
    let ch = confirm_channel(&conn).await;
    let x = unique("dedup-api");
    dedup_exchange(
        &ch,
        &x,
        false,
        &[("x-cache-size", AMQPValue::LongLongInt(500))],
    )
    .await;
    let q = unique("dedup-api-q");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        table(&[on()]),
    )
    .await
    .unwrap();
    bind(&ch, &q, &x, "").await;
    publish_ids(&ch, &x, "", "x-deduplication-header", &ids(0..5)).await;
    publish_ids(&ch, &x, "", "x-deduplication-header", &ids(0..5)).await;
    publish_ids(&ch, "", &q, "x-deduplication-header", &ids(0..3)).await;
    let xj = t.get_json(&format!("/api/exchanges/%2F/{x}")).await;
    assert_eq!(xj["deduplication"]["duplicates"], 5, "{xj}");
    assert_eq!(xj["deduplication"]["cache_entries"], 5, "{xj}");
    assert_eq!(xj["deduplication"]["cache_size"], 500, "{xj}");
    let qj = t
        .eventually(
            &format!("/api/queues/%2F/{q}"),
            "the queue's duplicates",
            |v| v["deduplication"]["duplicates"] == 3,
        )
        .await;
    assert_eq!(qj["deduplication"]["cache_entries"], 5, "{qj}");
    let metrics =
        common::http::curl(&[&format!("{}/metrics", t.prometheus.as_ref().unwrap())]).await;
    assert!(
        metrics
            .body
            .contains("warren_messages_deduplicated_total 8"),
        "{}",
        metrics.body
    );
}

/// A message a queue refused (nack: `x-overflow: reject-publish` on a full queue) was not
/// taken, so its retry is not a duplicate, on a deduplicating exchange and on a
/// deduplicating queue alike.
#[tokio::test]
async fn a_refused_message_can_be_retried() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let full = [
        ("x-max-length", AMQPValue::LongLongInt(1)),
        ("x-overflow", AMQPValue::LongString("reject-publish".into())),
    ];
    let publish = |exchange: String, key: String, id: &'static str| {
        let ch = ch.clone();
        async move {
            let c = ch
                .basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    id.as_bytes(),
                    with_id("x-deduplication-header", id),
                )
                .await
                .expect("publish");
            within("a confirm", c).await.expect("confirm").is_ack()
        }
    };

    let x = unique("dedup-refused");
    dedup_exchange(&ch, &x, false, &[]).await;
    let q = unique("dedup-refused-q");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        table(&full),
    )
    .await
    .unwrap();
    bind(&ch, &q, &x, "").await;
    assert!(publish(x.clone(), String::new(), "a").await);
    assert!(
        !publish(x.clone(), String::new(), "b").await,
        "the full queue refuses b"
    );
    assert_eq!(drain(&ch, &q).await, ["a"]);
    assert!(
        publish(x.clone(), String::new(), "b").await,
        "b's retry is taken"
    );
    assert!(
        publish(x.clone(), String::new(), "b").await,
        "and its repeat confirmed"
    );
    assert_eq!(drain(&ch, &q).await, ["b"]);

    let q = unique("dedup-refused-own");
    let mut args = full.to_vec();
    args.push(on());
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        table(&args),
    )
    .await
    .unwrap();
    assert!(publish(String::new(), q.clone(), "a").await);
    assert!(!publish(String::new(), q.clone(), "b").await);
    assert_eq!(drain(&ch, &q).await, ["a"]);
    assert!(publish(String::new(), q.clone(), "b").await);
    assert!(publish(String::new(), q.clone(), "b").await);
    assert_eq!(drain(&ch, &q).await, ["b"]);
}
