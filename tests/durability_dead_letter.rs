//! Proves, on the real binary, that dead-lettering and retries keep their promises across
//! restarts: a persistent message waiting out a retry delay survives a restart (clean or
//! kill -9) with its delivery count; a message dead-lettered between two durable queues is,
//! after any kill -9, in exactly one of them; message TTLs still apply after a restart.
mod binary;
mod common;
mod queue_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use amq_protocol::types::AMQPValue;
use binary::{temp_dir, Server};
use common::*;
use lapin::options::*;
use lapin::{BasicProperties, Channel, Connection};
use queue_support::*;

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

async fn open(server: &Server) -> (Connection, Channel) {
    let conn = connect_url(&server.url).await;
    let ch = confirm_channel(&conn).await;
    (conn, ch)
}

async fn stop(server: Server, kill: bool) {
    if kill {
        server.kill9().await;
    } else {
        server.stop().await;
    }
}

/// Waits until `queue` has a message to get (recovery and dead-lettering are asynchronous).
async fn get_eventually(ch: &Channel, queue: &str) -> lapin::message::Delivery {
    within("a message", async {
        loop {
            if let Some(d) = get(ch, queue).await {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Declares the retry queue (delayed retry on failures, a long delay, delivery limit 1,
/// dead-lettering to `dead`) and `dead`, both durable.
async fn declare_retry_topology(ch: &Channel) {
    declare_opts(ch, "dead", durable(), &[]).await;
    let mut args = dlx_to("dead");
    args.extend([
        ("x-delayed-retry-type", text("failed")),
        ("x-delayed-retry-min", int(600_000)),
        ("x-delivery-limit", int(1)),
    ]);
    declare_opts(ch, "retry", durable(), &args).await;
}

async fn delayed_message_survives(kill: bool) {
    let dir = temp_dir(if kill {
        "dl-delay-kill"
    } else {
        "dl-delay-stop"
    });
    let server = Server::start(&dir).await;
    let (_conn, ch) = open(&server).await;
    declare_retry_topology(&ch).await;
    publish_confirmed_with(&ch, "", "retry", b"job", persistent()).await;
    let d = get(&ch, "retry").await.expect("the job");
    within(
        "nack requeue",
        d.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        }),
    )
    .await
    .unwrap();
    // It is waiting out its (ten-minute) delay, not ready.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(get(&ch, "retry").await.is_none());
    if kill {
        // Let the store's periodic flush (200 ms) write the new delivery count.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop(server, kill).await;

    let server = Server::start(&dir).await;
    let (_conn, ch) = open(&server).await;
    let d = get_eventually(&ch, "retry").await;
    assert_eq!(body(&d), "job");
    assert!(d.redelivered);
    assert_eq!(
        delivery_count(&d),
        Some(1),
        "the count survives the restart"
    );
    // A second failure is past the limit of 1: the count really was kept.
    within(
        "nack requeue",
        d.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        }),
    )
    .await
    .unwrap();
    let dl = get_eventually(&ch, "dead").await;
    assert_eq!(
        deaths(&dl),
        vec![("retry".into(), "delivery_limit".into(), 1)]
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_persistent_message_survives_a_clean_restart() {
    delayed_message_survives(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_persistent_message_survives_kill_9() {
    delayed_message_survives(true).await;
}

/// Every message of `queue`, taken with basic.get (no-ack), as body → count.
async fn take_all(ch: &Channel, queue: &str, into: &mut BTreeMap<String, u32>) {
    for body in drain(ch, queue).await {
        *into.entry(body).or_default() += 1;
    }
}

/// Rejects (requeue=false) up to 97 messages `work` delivers to a consumer, without waiting
/// for the broker, and kills it `after` that: mid-flight, or once some of it reached the disk.
/// Returns how many it rejected.
async fn reject_some_then_kill(server: Server, ch: &Channel, after: Duration) -> usize {
    let mut c = consume(ch, "work", false).await;
    let mut rejected = 0;
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(300), {
        use futures_util::StreamExt;
        c.next()
    })
    .await
    {
        let _ = ch
            .basic_reject(d.delivery_tag, BasicRejectOptions { requeue: false })
            .await;
        rejected += 1;
        if rejected % 97 == 0 {
            break;
        }
    }
    tokio::time::sleep(after).await;
    server.kill9().await;
    rejected
}

async fn check_exactly_once(dir: &Path, n: usize) -> BTreeMap<String, u32> {
    let server = Server::start(dir).await;
    let (_conn, ch) = open(&server).await;
    let mut seen = BTreeMap::new();
    take_all(&ch, "dead", &mut seen).await;
    let dead = seen.len();
    take_all(&ch, "work", &mut seen).await;
    eprintln!("{dead} dead-lettered, {} still in work", seen.len() - dead);
    assert!(
        dead > 0,
        "nothing was dead-lettered: the crashes proved nothing about moving messages"
    );
    assert_eq!(
        seen.len(),
        n,
        "every confirmed message is in work or dead ({dead} in dead)"
    );
    let dupes: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dupes.is_empty(), "messages in both queues: {dupes:?}");
    server.stop().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettering_between_durable_queues_is_atomic_across_kill_9() {
    const N: usize = 400;
    let dir = temp_dir("dl-atomic");
    let server = Server::start(&dir).await;
    let (_conn, ch) = open(&server).await;
    declare_opts(&ch, "dead", durable(), &[]).await;
    declare_opts(&ch, "work", durable(), &dlx_to("dead")).await;
    for i in 0..N {
        publish_confirmed_with(&ch, "", "work", format!("m{i:04}").as_bytes(), persistent()).await;
    }
    // Several crashes, each in the middle of a burst of dead-lettering.
    let mut server = Some(server);
    let mut ch = ch;
    let mut _conn = _conn;
    let mut rejected = 0;
    for round in 0..4 {
        let after = Duration::from_millis(150 * round);
        rejected += reject_some_then_kill(server.take().unwrap(), &ch, after).await;
        let s = Server::start(&dir).await;
        (_conn, ch) = open(&s).await;
        server = Some(s);
    }
    server.take().unwrap().stop().await;
    assert!(rejected > 0, "no message was rejected to dead-letter");
    let seen = check_exactly_once(&dir, N).await;
    assert!(seen.keys().all(|b| b.starts_with('m')));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_messages_keep_their_history_across_a_restart() {
    let dir = temp_dir("dl-history");
    let server = Server::start(&dir).await;
    let (_conn, ch) = open(&server).await;
    declare_opts(&ch, "dead", durable(), &[]).await;
    declare_opts(&ch, "work", durable(), &dlx_to("dead")).await;
    publish_confirmed_with(&ch, "", "work", b"x", persistent()).await;
    let d = get(&ch, "work").await.expect("x");
    within("reject", d.reject(BasicRejectOptions { requeue: false }))
        .await
        .unwrap();
    get_eventually(&ch, "dead").await; // unacked: comes back after the restart
    server.stop().await;

    let server = Server::start(&dir).await;
    let (_conn, ch) = open(&server).await;
    let d = get_eventually(&ch, "dead").await;
    assert_eq!(deaths(&d), vec![("work".into(), "rejected".into(), 1)]);
    assert_eq!(header_str(&d, "x-first-death-queue"), "work");
    assert!(matches!(
        header(&d, "x-death"),
        Some(AMQPValue::FieldArray(_))
    ));
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// RabbitMQ stores each message's expiry with it: after a restart, a recovered message still
// expires (and is dead-lettered) when its TTL runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ttl_still_applies_after_a_restart() {
    let dir = temp_dir("dl-ttl");
    let server = Server::start(&dir).await;
    let (_conn, ch) = open(&server).await;
    declare_opts(&ch, "dead", durable(), &[]).await;
    let mut args = dlx_to("dead");
    args.push(("x-message-ttl", int(1500)));
    declare_opts(&ch, "ttl-queue", durable(), &args).await;
    declare_opts(&ch, "plain", durable(), &dlx_to("dead")).await;
    publish_confirmed_with(&ch, "", "ttl-queue", b"queue ttl", persistent()).await;
    publish_confirmed_with(
        &ch,
        "",
        "plain",
        b"expiration",
        persistent().with_expiration("1500".into()),
    )
    .await;
    server.stop().await;

    let server = Server::start(&dir).await;
    let (_conn, ch) = open(&server).await;
    let mut dead = consume(&ch, "dead", true).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = next_delivery(&mut dead).await;
        assert_eq!(x_death(&d)[0].reason(), "expired");
        got.push(body(&d));
    }
    got.sort();
    assert_eq!(got, ["expiration", "queue ttl"]);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// A durable dead-letter queue that refuses the message (full, `x-overflow` reject-publish)
// drops it, as RabbitMQ does; the dropped message must not come back to the queue it died in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_refused_by_a_full_durable_queue_stays_gone_after_a_restart() {
    let dir = temp_dir("dl-refused");
    let server = Server::start(&dir).await;
    let (_conn, ch) = open(&server).await;
    declare_opts(
        &ch,
        "dead",
        durable(),
        &[
            ("x-max-length", int(1)),
            ("x-overflow", text("reject-publish")),
        ],
    )
    .await;
    declare_opts(&ch, "work", durable(), &dlx_to("dead")).await;
    publish_confirmed_with(&ch, "", "dead", b"filler", persistent()).await;
    publish_confirmed_with(&ch, "", "work", b"refused", persistent()).await;
    let d = get(&ch, "work").await.expect("the message");
    within("reject", d.reject(BasicRejectOptions { requeue: false }))
        .await
        .unwrap();
    wait_message_count(&ch, "work", 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(drain(&ch, "dead").await, ["filler"]);
    server.stop().await;

    let server = Server::start(&dir).await;
    let (_conn, ch) = open(&server).await;
    assert_eq!(
        drain(&ch, "work").await,
        Vec::<String>::new(),
        "the dropped message came back"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// The delivery count is the queue's own: an `x-delivery-count` header that came with the
// message (set by its publisher, or left by the queue it was dead-lettered from) does not
// count, before or after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_x_delivery_count_is_not_trusted_after_a_restart() {
    let dir = temp_dir("dl-forged-count");
    let server = Server::start(&dir).await;
    let (_conn, ch) = open(&server).await;
    declare_opts(&ch, "dead", durable(), &[]).await;
    let mut args = dlx_to("dead");
    args.push(("x-delivery-limit", int(2)));
    declare_opts(&ch, "limited", durable(), &args).await;
    let props = with_header(persistent(), "x-delivery-count", AMQPValue::LongLongInt(5));
    publish_confirmed_with(&ch, "", "limited", b"forged", props).await;
    server.stop().await;

    let server = Server::start(&dir).await;
    let (_conn, ch) = open(&server).await;
    let d = get_eventually(&ch, "limited").await;
    within(
        "nack requeue",
        d.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        }),
    )
    .await
    .unwrap();
    // One failure of the two allowed: redelivered with count 1, not dead-lettered.
    let d = get_eventually(&ch, "limited").await;
    assert_eq!(delivery_count(&d), Some(1));
    assert!(get(&ch, "dead").await.is_none());
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
