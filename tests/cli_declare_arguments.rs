//! `warren declare` sends typed x-arguments (integers as longs, words as strings, `key:type=`
//! to force a type) that the broker acts on, and a conflicting redeclare fails with 406.

mod cli_support;
use cli_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_arguments_are_integers() {
    let b = broker().await;
    let url = b.url();
    let r = warren(
        &url,
        &["declare", "queue", "da-capped", "--arg", "x-max-length=2"],
    )
    .await
    .ok();
    assert_eq!(
        r.stdout,
        "declared queue 'da-capped' (0 messages, 0 consumers)\n"
    );
    warren(
        &url,
        &["publish", "", "da-capped", "m", "--count", "5", "--confirm"],
    )
    .await
    .ok();
    assert_eq!(queue_counts(&url, "da-capped").await, (2, 0));

    // The same declaration again is fine; another value or type is not.
    warren(
        &url,
        &["declare", "queue", "da-capped", "--arg", "x-max-length=2"],
    )
    .await
    .ok();
    warren(
        &url,
        &["declare", "queue", "da-capped", "--arg", "x-max-length=3"],
    )
    .await
    .fails(1, "(406 PRECONDITION_FAILED)");
    warren(&url, &["declare", "queue", "da-capped"])
        .await
        .fails(1, "x-max-length");
    // A string where the broker wants a number is refused.
    warren(
        &url,
        &["declare", "queue", "da-str", "--arg", "x-max-length:str=2"],
    )
    .await
    .fails(1, "(406 PRECONDITION_FAILED)");
    // ... in words a person reads, with RabbitMQ's code.
    let r = warren(
        &url,
        &["declare", "queue", "da-abc", "--arg", "x-max-length=abc"],
    )
    .await
    .fails(1, "(406 PRECONDITION_FAILED)");
    assert!(r.stderr.contains("expected an integer"), "{r}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_exchange_argument_routes_nacked_messages() {
    let b = broker().await;
    let url = b.url();
    warren(
        &url,
        &[
            "declare",
            "exchange",
            "da-dlx",
            "--type",
            "fanout",
            "--durable",
        ],
    )
    .await
    .ok();
    warren(&url, &["declare", "queue", "da-dead"]).await.ok();
    warren(&url, &["bind", "da-dead", "da-dlx"]).await.ok();
    warren(
        &url,
        &[
            "declare",
            "queue",
            "da-work",
            "--arg",
            "x-dead-letter-exchange=da-dlx",
        ],
    )
    .await
    .ok();
    warren(&url, &["publish", "", "da-work", "job-1"])
        .await
        .ok();
    let r = warren(&url, &["subscribe", "da-work", "--nack", "--count", "1"])
        .await
        .ok();
    assert_eq!(r.lines(), ["job-1"]);
    let r = warren(&url, &["get", "da-dead", "--format", "json"])
        .await
        .ok();
    let m = &r.json_lines()[0];
    assert_eq!(m["body"], "job-1", "{r}");
    assert_eq!(m["exchange"], "da-dlx", "{r}");
    assert_eq!(m["headers"]["x-death"][0]["reason"], "rejected", "{r}");
    assert_eq!(m["headers"]["x-death"][0]["queue"], "da-work", "{r}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_of_each_type() {
    let b = broker().await;
    let url = b.url();
    for kind in ["direct", "fanout", "topic", "headers"] {
        let name = format!("da-{kind}");
        let r = warren(&url, &["declare", "exchange", &name, "--type", kind])
            .await
            .ok();
        assert_eq!(r.stdout, format!("declared exchange '{name}' ({kind})\n"));
        warren(&url, &["declare", "exchange", &name, "--passive"])
            .await
            .ok();
    }
    warren(
        &url,
        &["declare", "exchange", "da-topic", "--type", "fanout"],
    )
    .await
    .fails(1, "(406 PRECONDITION_FAILED)");
    b.shutdown().await;
}
