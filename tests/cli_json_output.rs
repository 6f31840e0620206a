//! `--format json` prints one JSON object per line with the body, properties, headers,
//! delivery tag, redelivered flag, exchange and routing key; binary bodies come as base64.

mod cli_support;
use cli_support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_prints_every_field_as_json() {
    let b = broker().await;
    let url = b.url();
    warren(&url, &["declare", "queue", "js-q"]).await.ok();
    warren(
        &url,
        &[
            "publish",
            "",
            "js-q",
            "{\"id\":7}",
            "--content-type",
            "application/json",
            "-H",
            "source=shop",
            "-H",
            "attempt:long=2",
            "--persistent",
            "--expiration",
            "60000",
            "--message-id",
            "m-7",
            "--correlation-id",
            "c-7",
            "--reply-to",
            "js-replies",
            "--priority",
            "5",
        ],
    )
    .await
    .ok();
    let r = warren(
        &url,
        &["subscribe", "js-q", "--count", "1", "--format", "json"],
    )
    .await
    .ok();
    let lines = r.json_lines();
    assert_eq!(lines.len(), 1, "{r}");
    let m = &lines[0];
    assert_eq!(m["body"], "{\"id\":7}");
    assert_eq!(m["headers"], json!({"source": "shop", "attempt": 2}));
    assert_eq!(
        m["properties"],
        json!({
            "content_type": "application/json",
            "delivery_mode": 2,
            "expiration": "60000",
            "message_id": "m-7",
            "correlation_id": "c-7",
            "reply_to": "js-replies",
            "priority": 5,
        })
    );
    assert_eq!(m["delivery_tag"], 1);
    assert_eq!(m["redelivered"], false);
    assert_eq!(m["exchange"], "");
    assert_eq!(m["routing_key"], "js-q");
    assert!(m.get("body_encoding").is_none(), "{r}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_adds_the_message_count_and_binary_bodies_are_base64() {
    let b = broker().await;
    let url = b.url();
    warren(&url, &["declare", "queue", "js-bin"]).await.ok();
    warren_with_input(&url, &["publish", "", "js-bin"], &[0xff, 0x00, 0x01])
        .await
        .ok();
    warren(&url, &["publish", "", "js-bin", "text"]).await.ok();
    let r = warren(&url, &["get", "js-bin", "--format", "json"])
        .await
        .ok();
    let m = &r.json_lines()[0];
    assert_eq!(m["body"], "/wAB", "{r}");
    assert_eq!(m["body_encoding"], "base64", "{r}");
    assert_eq!(m["message_count"], 1, "{r}");
    assert_eq!(m["headers"], json!({}), "{r}");
    b.shutdown().await;
}
