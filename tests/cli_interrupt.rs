//! Ctrl-C (SIGINT) or SIGTERM stops `warren subscribe` cleanly: exit code 0, the consumer is
//! cancelled, and messages it never printed stay in the queue.
#![cfg(unix)]

mod cli_support;
use cli_support::*;

async fn stop_with(signal: &str) {
    let b = broker().await;
    let url = b.url();
    let queue = format!("int-{}", signal.to_lowercase());
    warren(&url, &["declare", "queue", &queue]).await.ok();
    let sub = command(&url, &["subscribe", &queue]).spawn().unwrap();
    eventually("the consumer", || {
        let (url, queue) = (url.clone(), queue.clone());
        async move { queue_counts(&url, &queue).await.1 == 1 }
    })
    .await;
    warren(&url, &["publish", "", &queue, "seen", "--confirm"])
        .await
        .ok();
    eventually("the delivery to be acknowledged", || {
        let (url, queue) = (url.clone(), queue.clone());
        async move { queue_counts(&url, &queue).await.0 == 0 }
    })
    .await;

    let pid = sub.id().expect("subscriber pid").to_string();
    let killed = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let r = finish(sub, "warren subscribe").await.ok();
    assert_eq!(r.lines(), ["seen"], "{r}");
    assert!(r.stderr.is_empty(), "{r}");
    assert_eq!(queue_counts(&url, &queue).await, (0, 0));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_cancels_the_consumer_and_exits_0() {
    stop_with("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_the_consumer_and_exits_0() {
    stop_with("TERM").await;
}

/// README: "130 publish interrupted". A paced `--count` load runs long enough to be
/// interrupted once its first message is in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_interrupts_a_publish_with_exit_code_130() {
    let b = broker().await;
    let url = b.url();
    let queue = "int-publish";
    warren(&url, &["declare", "queue", queue]).await.ok();
    let publisher = command(
        &url,
        &[
            "publish", "", queue, "tick", "--count", "1000000", "--rate", "20",
        ],
    )
    .spawn()
    .unwrap();
    eventually("the first published message", || {
        let url = url.clone();
        async move { queue_counts(&url, queue).await.0 >= 1 }
    })
    .await;

    let pid = publisher.id().expect("publisher pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let r = finish(publisher, "warren publish").await;
    assert_eq!(r.code, Some(130), "{r}");
    assert!(r.stderr.contains("interrupted after"), "{r}");
    b.shutdown().await;
}
