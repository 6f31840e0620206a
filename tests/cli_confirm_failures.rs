//! With confirms, a message the broker returns (mandatory, unroutable) or nacks (a full queue
//! with x-overflow=reject-publish) makes `warren publish` exit 3, a refused publish (missing
//! exchange) exits 1, each with one error line naming the reply code.

mod cli_support;
use cli_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_exit_3() {
    let b = broker().await;
    let url = b.url();
    let r = warren(
        &url,
        &[
            "publish",
            "amq.direct",
            "nobody-binds-this",
            "lost",
            "--mandatory",
        ],
    )
    .await
    .fails(3, "(312 NO_ROUTE)");
    assert_eq!(
        r.stderr,
        "error: 1 of 1 messages returned: unroutable (312 NO_ROUTE)\n"
    );

    // Without --mandatory an unroutable message is simply dropped: success.
    warren(
        &url,
        &[
            "publish",
            "amq.direct",
            "nobody-binds-this",
            "lost",
            "--confirm",
        ],
    )
    .await
    .ok();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_exit_3() {
    let b = broker().await;
    let url = b.url();
    warren(
        &url,
        &[
            "declare",
            "queue",
            "cf-full",
            "--arg",
            "x-max-length=1",
            "--arg",
            "x-overflow=reject-publish",
        ],
    )
    .await
    .ok();
    let r = warren(
        &url,
        &["publish", "", "cf-full", "m", "--count", "3", "--confirm"],
    )
    .await
    .fails(3, "2 of 3 messages nacked");
    assert!(r.stderr.contains("sent 3, confirmed 1, nacked 2"), "{r}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_exits_1_with_or_without_confirms() {
    let b = broker().await;
    let url = b.url();
    for extra in [&["--confirm"][..], &[][..], &["--count", "500"][..]] {
        let mut args = vec!["publish", "cf-no-such-exchange", "k", "hi"];
        args.extend_from_slice(extra);
        warren(&url, &args).await.fails(
            1,
            "no exchange 'cf-no-such-exchange' in vhost '/' (404 NOT_FOUND)",
        );
    }
    b.shutdown().await;
}
