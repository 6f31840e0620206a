//! `--ack auto|manual`, `--nack`, `--reject` and `--requeue` settle messages as asked: requeued
//! ones come back marked redelivered, rejected ones are gone, `get --requeue` only peeks.

mod cli_support;
use cli_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_brings_a_message_back_redelivered() {
    let b = broker().await;
    let url = b.url();
    warren(&url, &["declare", "queue", "ack-retry"]).await.ok();
    warren(&url, &["publish", "", "ack-retry", "flaky"])
        .await
        .ok();
    let r = warren(
        &url,
        &[
            "subscribe",
            "ack-retry",
            "--requeue",
            "--count",
            "3",
            "--format",
            "json",
        ],
    )
    .await
    .ok();
    let seen: Vec<(String, bool)> = r
        .json_lines()
        .iter()
        .map(|m| {
            (
                m["body"].as_str().unwrap().to_owned(),
                m["redelivered"] == true,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("flaky".to_owned(), false),
            ("flaky".to_owned(), true),
            ("flaky".to_owned(), true)
        ],
        "{r}"
    );
    assert_eq!(queue_counts(&url, "ack-retry").await, (1, 0));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_and_nack_without_requeue_drop_the_message() {
    let b = broker().await;
    let url = b.url();
    warren(&url, &["declare", "queue", "ack-drop"]).await.ok();
    warren(&url, &["publish", "", "ack-drop", "a"]).await.ok();
    warren(&url, &["publish", "", "ack-drop", "b"]).await.ok();
    let r = warren(&url, &["subscribe", "ack-drop", "--reject", "--count", "1"])
        .await
        .ok();
    assert_eq!(r.lines(), ["a"]);
    let r = warren(&url, &["get", "ack-drop", "--nack"]).await.ok();
    assert_eq!(r.lines(), ["b"]);
    assert_eq!(queue_counts(&url, "ack-drop").await, (0, 0));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_requeue_peeks_and_auto_ack_takes() {
    let b = broker().await;
    let url = b.url();
    warren(&url, &["declare", "queue", "ack-peek"]).await.ok();
    for body in ["1", "2", "3"] {
        warren(&url, &["publish", "", "ack-peek", body]).await.ok();
    }
    let r = warren(&url, &["get", "ack-peek", "--requeue", "--count", "3"])
        .await
        .ok();
    assert_eq!(r.lines(), ["1", "2", "3"], "{r}");
    assert_eq!(queue_counts(&url, "ack-peek").await, (3, 0));

    let r = warren(
        &url,
        &["subscribe", "ack-peek", "--ack", "auto", "--count", "3"],
    )
    .await
    .ok();
    assert_eq!(r.lines(), ["1", "2", "3"], "{r}");
    eventually("the queue to drain", || {
        let url = url.clone();
        async move { queue_counts(&url, "ack-peek").await == (0, 0) }
    })
    .await;
    b.shutdown().await;
}
