//! A deep queue of transient messages takes disk, not RAM: `warren serve` is flooded with
//! 1 KiB transient messages that nobody consumes (400,000 by default, 390 MiB;
//! `WARREN_PAGING_MESSAGES` to change the count), its resident memory is sampled throughout,
//! the queue's blocks must be in the data directory's `paged/` files, and then every message
//! comes back, in order and unchanged, and the page files are gone.
//! A resource bound, not a timing one.

mod binary;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use binary::{rss_bytes, temp_dir, Server};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const BODY: usize = 1024;
/// What the broker may grow by while it holds the whole flood, in bytes. Without paging it
/// holds the bodies: about 430 MiB for the default flood. With it, a deep queue keeps about
/// 12 MiB (`HOT_BYTES` and `PAGE_AFTER`); the rest is the allocator's and the buffers'.
const GROWTH_BOUND: u64 = 128 << 20;

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn body(i: u64) -> Vec<u8> {
    let mut b = vec![(i % 251) as u8; BODY];
    b[..8].copy_from_slice(&i.to_be_bytes());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_flood_pages_to_disk_and_comes_back_in_order() {
    if !Path::new("/proc/self/status").exists() {
        return;
    }
    let n: u64 = std::env::var("WARREN_PAGING_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let dir = temp_dir("paging");
    let server = Server::start(&dir).await;
    let pid = server.child.id().expect("the broker's pid");
    let conn = Connection::connect(&server.url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    ch.queue_declare(
        "flood".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue.declare");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes(pid);

    // Samples the broker's memory until told to stop.
    let most = Arc::new(AtomicU64::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (most, sampling) = (most.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                most.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Publish with up to 2,000 confirms outstanding; every message must be confirmed.
    let mut pending = Vec::with_capacity(2000);
    for i in 0..n {
        let confirm = ch
            .basic_publish(
                "".into(),
                "flood".into(),
                BasicPublishOptions::default(),
                &body(i),
                BasicProperties::default(),
            )
            .await
            .expect("basic.publish");
        pending.push(confirm);
        if pending.len() == 2000 || i + 1 == n {
            for c in pending.drain(..) {
                assert!(c.await.expect("a confirm").is_ack(), "a nack");
            }
        }
    }
    let q = ch
        .queue_declare(
            "flood".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue.declare passive");
    assert_eq!(u64::from(q.message_count()), n, "every message is queued");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = most.load(Ordering::Relaxed);
    let paged = dir_bytes(&dir.join("paged"));
    eprintln!(
        "{n} messages of {BODY} bytes: broker RSS {} MiB before, at most {} MiB while \
         publishing; page files {} MiB",
        before >> 20,
        held >> 20,
        paged >> 20
    );
    assert!(
        held.saturating_sub(before) < GROWTH_BOUND,
        "the broker grew by {} MiB holding {} MiB of messages",
        held.saturating_sub(before) >> 20,
        (n * BODY as u64) >> 20
    );
    assert!(
        paged > n * BODY as u64 * 9 / 10,
        "only {} MiB of {} MiB is in page files",
        paged >> 20,
        (n * BODY as u64) >> 20
    );

    // Every message comes back, in order, unchanged.
    let consumer = conn.create_channel().await.expect("channel");
    consumer
        .basic_qos(2000, BasicQosOptions::default())
        .await
        .expect("basic.qos");
    let mut deliveries = consumer
        .basic_consume(
            "flood".into(),
            "reader".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    for i in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(60), deliveries.next())
            .await
            .unwrap_or_else(|_| panic!("message {i} did not come within a minute"))
            .expect("the consumer ended")
            .expect("a delivery");
        assert!(
            d.data == body(i),
            "message {i} came back different or out of order"
        );
        if i % 1000 == 999 || i + 1 == n {
            consumer
                .basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .expect("basic.ack");
        }
    }
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let held = most.load(Ordering::Relaxed);
    assert!(
        held.saturating_sub(before) < GROWTH_BOUND,
        "the broker grew by {} MiB reading the messages back",
        held.saturating_sub(before) >> 20
    );
    let left = dir_bytes(&dir.join("paged"));
    assert_eq!(left, 0, "page files are deleted once read");
    let _ = conn.close(200, "done".into()).await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
