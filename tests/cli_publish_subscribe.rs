//! `warren publish` then `warren subscribe` (and its `consume` alias) round-trips bodies in
//! order, straight to a queue and through `--exchange`'s temporary queue.

mod cli_support;
use cli_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_go_through_a_queue_in_order() {
    let b = broker().await;
    let url = b.url();
    warren(&url, &["declare", "queue", "rt-orders"]).await.ok();
    for body in ["first", "second", "third"] {
        warren(&url, &["publish", "", "rt-orders", body]).await.ok();
    }
    let r = warren(&url, &["subscribe", "rt-orders", "--count", "3"])
        .await
        .ok();
    assert_eq!(r.lines(), ["first", "second", "third"], "{r}");

    warren(&url, &["publish", "", "rt-orders", "again"])
        .await
        .ok();
    let r = warren(&url, &["consume", "rt-orders", "--count", "1"])
        .await
        .ok();
    assert_eq!(r.lines(), ["again"], "{r}");
    assert_eq!(queue_counts(&url, "rt-orders").await, (0, 0));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_to_an_exchange_through_a_temporary_queue() {
    let b = broker().await;
    let url = b.url();
    warren(
        &url,
        &["declare", "exchange", "rt-events", "--type", "topic"],
    )
    .await
    .ok();
    let sub = command(
        &url,
        &[
            "subscribe",
            "--exchange",
            "rt-events",
            "--binding-key",
            "order.*",
            "--count",
            "2",
        ],
    )
    .spawn()
    .unwrap();
    // The temporary queue is bound once a mandatory publish stops coming back.
    let mut probes = 0;
    eventually("the subscriber's binding", || {
        probes += 1;
        let url = url.clone();
        async move {
            warren(
                &url,
                &[
                    "publish",
                    "rt-events",
                    "order.probe",
                    "probe",
                    "--mandatory",
                ],
            )
            .await
            .code
                == Some(0)
        }
    })
    .await;
    warren(
        &url,
        &["publish", "rt-events", "invoice.created", "not for us"],
    )
    .await
    .ok();
    warren(&url, &["publish", "rt-events", "order.created", "o-1"])
        .await
        .ok();
    let r = finish(sub, "warren subscribe --exchange").await.ok();
    assert_eq!(r.lines(), ["probe", "o-1"], "{r}");
    b.shutdown().await;
}
