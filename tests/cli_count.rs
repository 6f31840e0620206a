//! `--count`: publish sends exactly N messages and reports them; subscribe exits after N and
//! the broker delivered no more than N (the rest stay ready, never marked redelivered); stdin
//! and files feed one message per line with `--lines`.

mod cli_support;
use cli_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_counts() {
    let b = broker().await;
    let url = b.url();
    warren(&url, &["declare", "queue", "cnt-q"]).await.ok();
    let r = warren(
        &url,
        &["publish", "", "cnt-q", "load", "--count", "50", "--confirm"],
    )
    .await
    .ok();
    assert!(
        r.stderr
            .contains("sent 50, confirmed 50, nacked 0, returned 0"),
        "{r}"
    );
    assert_eq!(queue_counts(&url, "cnt-q").await, (50, 0));

    let r = warren(&url, &["subscribe", "cnt-q", "--count", "20"])
        .await
        .ok();
    assert_eq!(r.lines().len(), 20, "{r}");
    assert_eq!(queue_counts(&url, "cnt-q").await, (30, 0));
    let r = warren(&url, &["get", "cnt-q", "--format", "json", "--count", "30"])
        .await
        .ok();
    let rest = r.json_lines();
    assert_eq!(rest.len(), 30, "{r}");
    assert!(
        rest.iter().all(|m| m["redelivered"] == false),
        "messages past --count were delivered and requeued:\n{r}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_from_stdin_and_from_a_file() {
    let b = broker().await;
    let url = b.url();
    warren(&url, &["declare", "queue", "cnt-lines"]).await.ok();
    let r = warren_with_input(
        &url,
        &["publish", "", "cnt-lines", "--lines", "--confirm"],
        b"one\ntwo\r\nthree\n",
    )
    .await
    .ok();
    assert!(r.stderr.contains("sent 3, confirmed 3"), "{r}");

    let path = std::env::temp_dir().join(format!("warren-cli-lines-{}.txt", std::process::id()));
    std::fs::write(&path, "a\nb\n").unwrap();
    warren(
        &url,
        &[
            "publish",
            "",
            "cnt-lines",
            "--file",
            path.to_str().unwrap(),
            "--lines",
            "--count",
            "2",
        ],
    )
    .await
    .ok();
    std::fs::remove_file(&path).unwrap();

    let r = warren(&url, &["get", "cnt-lines", "--count", "100"])
        .await
        .ok();
    assert_eq!(
        r.lines(),
        ["one", "two", "three", "a", "b", "a", "b"],
        "{r}"
    );
    let r = warren(&url, &["get", "cnt-lines"]).await.ok();
    assert!(r.stdout.is_empty() && r.stderr.contains("is empty"), "{r}");
    b.shutdown().await;
}
