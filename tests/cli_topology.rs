//! `warren bind`, `unbind`, `delete` and `purge` change the broker's topology over AMQP, for
//! queue and exchange destinations, and report what they did.

mod cli_support;
use cli_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_route_unbind() {
    let b = broker().await;
    let url = b.url();
    warren(
        &url,
        &["declare", "exchange", "tp-events", "--type", "topic"],
    )
    .await
    .ok();
    warren(&url, &["declare", "queue", "tp-orders"]).await.ok();
    let r = warren(&url, &["bind", "tp-orders", "tp-events", "order.*"])
        .await
        .ok();
    assert_eq!(
        r.stdout,
        "bound queue 'tp-orders' to exchange 'tp-events' with key 'order.*'\n"
    );
    warren(
        &url,
        &[
            "publish",
            "tp-events",
            "order.created",
            "o-1",
            "--mandatory",
        ],
    )
    .await
    .ok();
    warren(&url, &["unbind", "tp-orders", "tp-events", "order.*"])
        .await
        .ok();
    warren(
        &url,
        &[
            "publish",
            "tp-events",
            "order.created",
            "o-2",
            "--mandatory",
        ],
    )
    .await
    .fails(3, "312 NO_ROUTE");
    let r = warren(&url, &["get", "tp-orders", "--count", "5"])
        .await
        .ok();
    assert_eq!(r.lines(), ["o-1"]);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_and_headers_bindings() {
    let b = broker().await;
    let url = b.url();
    warren(&url, &["declare", "exchange", "tp-in", "--type", "topic"])
        .await
        .ok();
    warren(
        &url,
        &["declare", "exchange", "tp-docs", "--type", "headers"],
    )
    .await
    .ok();
    warren(&url, &["declare", "queue", "tp-pdfs"]).await.ok();
    warren(
        &url,
        &["bind", "tp-docs", "tp-in", "#", "--dest-type", "exchange"],
    )
    .await
    .ok();
    warren(
        &url,
        &[
            "bind",
            "tp-pdfs",
            "tp-docs",
            "--arg",
            "x-match=all",
            "--arg",
            "format=pdf",
        ],
    )
    .await
    .ok();
    warren(
        &url,
        &["publish", "tp-in", "any.key", "a.pdf", "-H", "format=pdf"],
    )
    .await
    .ok();
    warren(
        &url,
        &["publish", "tp-in", "any.key", "b.txt", "-H", "format=txt"],
    )
    .await
    .ok();
    let r = warren(&url, &["get", "tp-pdfs", "--count", "5"]).await.ok();
    assert_eq!(r.lines(), ["a.pdf"], "{r}");
    warren(
        &url,
        &["unbind", "tp-docs", "tp-in", "#", "--dest-type", "exchange"],
    )
    .await
    .ok();
    warren(
        &url,
        &[
            "publish",
            "tp-in",
            "any.key",
            "c.pdf",
            "-H",
            "format=pdf",
            "--mandatory",
        ],
    )
    .await
    .fails(3, "312 NO_ROUTE");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_delete() {
    let b = broker().await;
    let url = b.url();
    warren(&url, &["declare", "queue", "tp-trash"]).await.ok();
    warren(&url, &["publish", "", "tp-trash", "x", "--count", "4"])
        .await
        .ok();
    let r = warren(&url, &["purge", "tp-trash"]).await.ok();
    assert_eq!(r.stdout, "purged 4 messages from queue 'tp-trash'\n");
    warren(&url, &["publish", "", "tp-trash", "x", "--count", "2"])
        .await
        .ok();
    let r = warren(&url, &["delete", "queue", "tp-trash"]).await.ok();
    assert_eq!(r.stdout, "deleted queue 'tp-trash' (2 messages)\n");
    warren(&url, &["get", "tp-trash"])
        .await
        .fails(1, "(404 NOT_FOUND)");

    warren(&url, &["declare", "exchange", "tp-gone"]).await.ok();
    let r = warren(&url, &["delete", "exchange", "tp-gone"]).await.ok();
    assert_eq!(r.stdout, "deleted exchange 'tp-gone'\n");
    warren(&url, &["publish", "tp-gone", "k", "x"])
        .await
        .fails(1, "(404 NOT_FOUND)");

    // Deleting what is not there still succeeds (the protocol's delete is idempotent), and
    // says so instead of claiming a deletion.
    let r = warren(&url, &["delete", "queue", "tp-nosuchq"]).await.ok();
    assert_eq!(
        r.stdout,
        "queue 'tp-nosuchq' did not exist; nothing to delete\n"
    );
    let r = warren(&url, &["delete", "exchange", "tp-nosuchx"])
        .await
        .ok();
    assert_eq!(
        r.stdout,
        "exchange 'tp-nosuchx' did not exist; nothing to delete\n"
    );
    b.shutdown().await;
}
