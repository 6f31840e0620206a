//! Every failure is one line, `error: <text> (<code> <NAME>)` where the broker gave a reason,
//! with a non-zero exit code: no panic, no Debug dump. A refused connection names the address
//! and suggests `warren serve`.

mod cli_support;
use cli_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_suggests_warren_serve() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let r = warren(&url, &["get", "anything"]).await.fails(1, "");
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot connect to 127.0.0.1:{port} (connection refused); is the broker \
             running? Start one with: warren serve\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_refusals_carry_code_and_text() {
    let b = broker().await;
    let url = b.url();
    let r = warren(&url, &["get", "er-orders"]).await.fails(1, "");
    assert_eq!(
        r.stderr,
        "error: no queue 'er-orders' in vhost '/' (404 NOT_FOUND)\n"
    );
    warren(&url, &["subscribe", "er-orders"])
        .await
        .fails(1, "no queue 'er-orders' in vhost '/' (404 NOT_FOUND)");
    warren(&url, &["purge", "er-orders"])
        .await
        .fails(1, "(404 NOT_FOUND)");
    warren(&url, &["bind", "er-orders", "amq.direct", "k"])
        .await
        .fails(1, "(404 NOT_FOUND)");
    warren(&url, &["publish", "er-missing", "k", "body"])
        .await
        .fails(1, "no exchange 'er-missing' in vhost '/' (404 NOT_FOUND)");
    warren(&url, &["declare", "queue", "er-q"]).await.ok();
    warren(&url, &["declare", "queue", "er-q", "--durable"])
        .await
        .fails(1, "(406 PRECONDITION_FAILED)");
    warren(&url, &["declare", "exchange", "amq.custom"])
        .await
        .fails(1, "(403 ACCESS_REFUSED)");
    warren(&url, &["publish", "", "er-q", "x"]).await.ok();
    warren(&url, &["delete", "queue", "er-q", "--if-empty"])
        .await
        .fails(1, "(406 PRECONDITION_FAILED)");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_vhost_failures() {
    let b = broker().await;
    let addr = b.local_addr();
    warren(&format!("amqp://guest:wrong@{addr}/%2f"), &["get", "q"])
        .await
        .fails(1, "(403 ACCESS_REFUSED)");
    warren(
        &format!("amqp://guest:guest@{addr}/no-such-vhost"),
        &["get", "q"],
    )
    .await
    .fails(1, "(530 NOT_ALLOWED)");
    // A trailing '/' names the vhost "", not "/": say so, and how to write '/'.
    let r = warren(&format!("amqp://guest:guest@{addr}/"), &["get", "q"])
        .await
        .fails(1, "(530 NOT_ALLOWED)");
    assert!(r.stderr.contains("vhost '' not found"), "{r}");
    assert!(r.stderr.contains("%2f"), "no hint about %2f:\n{r}");
    assert!(!r.stderr.contains("  "), "double space:\n{r}");
    b.shutdown().await;
}

/// A publisher the broker cuts off (320 CONNECTION_FORCED when it shuts down) still prints
/// what it sent and what was confirmed, as an interrupted one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_cut_off_by_the_broker_prints_its_summary() {
    let b = broker().await;
    let url = b.url();
    warren(&url, &["declare", "queue", "er-cut"]).await.ok();
    let child = command(
        &url,
        &[
            "publish",
            "",
            "er-cut",
            "x",
            "--count",
            "1000000",
            "--rate",
            "200",
            "--confirm",
        ],
    )
    .spawn()
    .expect("starting warren publish");
    eventually("some messages to arrive", || async {
        queue_counts(&url, "er-cut").await.0 >= 2
    })
    .await;
    b.shutdown().await;
    let r = finish(child, "publish --count 1000000 --confirm")
        .await
        .fails(1, "(320 CONNECTION_FORCED)");
    let summary = r
        .stderr
        .lines()
        .find(|l| l.starts_with("sent "))
        .unwrap_or_else(|| panic!("no summary:\n{r}"));
    assert!(summary.contains("confirmed "), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_connecting() {
    // Nothing listens on this URL's port, so any of these reaching the network would say so.
    let url = "amqp://guest:guest@127.0.0.1:1/%2f";
    warren("not a url", &["get", "q"])
        .await
        .fails(1, "invalid URL 'not a url'");
    warren(url, &["declare", "queue", "q", "--arg", "no-equals-sign"])
        .await
        .fails(2, "KEY=VALUE");
    warren(url, &["declare", "queue", "q", "--arg", "n:int=lots"])
        .await
        .fails(2, "not a 32-bit integer");
    warren(
        url,
        &["declare", "queue", "q", "--arg", "x-max-priority:bytes=10"],
    )
    .await
    .fails(2, "unknown type 'bytes'");
    warren(url, &["get", "q", "--ack", "auto", "--nack"])
        .await
        .fails(2, "need --ack manual");
    warren(url, &["publish", "", "q", "x", "--rate", "0"])
        .await
        .fails(2, "--rate");
    let long = "q".repeat(300);
    warren(url, &["get", &long]).await.fails(1, "at most 255");
    warren(
        url,
        &["publish", "", "q", "--file", "/nonexistent/warren-body"],
    )
    .await
    .fails(1, "cannot read /nonexistent/warren-body");
}
