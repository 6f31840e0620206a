//! Proves that a confirmed persistent message survives `kill -9` of the real broker at any
//! point: while publishing, while consuming and acking, while requeueing. After each crash every
//! confirmed, unacked message is back exactly once and in order, nothing unpublished appears,
//! and a message whose ack may have been lost comes back only flagged redelivered.

mod binary;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use binary::{temp_dir, Server};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const QUEUE: &str = "crash-durable";

/// What the test knows about the queue's content.
#[derive(Default)]
struct Model {
    /// Confirmed and never acked: must be there after a crash.
    must: BTreeSet<u64>,
    /// Published without a confirm yet, or acked: may be there (at most once).
    maybe: HashSet<u64>,
    /// Acked: if they come back, they must be flagged redelivered.
    acked: HashSet<u64>,
    /// Next message id.
    next: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn open(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connecting to the restarted broker");
    let ch = conn.create_channel().await.expect("opening a channel");
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declaring the durable queue");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    (conn, ch)
}

/// Reads the whole queue after a restart (one consumer, all unacked), checks it against the
/// model, then requeues it all.
async fn verify(ch: &Channel, model: &mut Model, cycle: u32) {
    use futures_util::StreamExt;
    let count = ch
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare")
        .message_count();
    let mut seen = Vec::new();
    let mut last_tag = 0;
    if count > 0 {
        let mut consumer = ch
            .basic_consume(
                QUEUE.into(),
                "verify".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("basic.consume");
        while seen.len() < count as usize {
            let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("cycle {cycle}: only {} of {count} delivered", seen.len())
                })
                .expect("consumer ended")
                .expect("delivery");
            let id: u64 = std::str::from_utf8(&d.data)
                .expect("utf-8 body")
                .parse()
                .expect("numeric body");
            last_tag = d.delivery_tag;
            seen.push((id, d.redelivered));
        }
        ch.basic_cancel("verify".into(), BasicCancelOptions::default())
            .await
            .expect("basic.cancel");
    }
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    let unique: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "cycle {cycle}: duplicates in {ids:?}"
    );
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "cycle {cycle}: out of order: {ids:?}"
    );
    for id in &model.must {
        assert!(
            unique.contains(id),
            "cycle {cycle}: confirmed message {id} lost"
        );
    }
    for (id, redelivered) in &seen {
        assert!(
            model.must.contains(id) || model.maybe.contains(id),
            "cycle {cycle}: message {id} was never published"
        );
        if model.acked.contains(id) {
            assert!(
                *redelivered,
                "cycle {cycle}: acked message {id} came back not redelivered"
            );
        }
    }
    // Everything recovered is on disk now: it must survive the next crash too.
    model.must = unique.into_iter().collect();
    model.maybe.clear();
    model.acked.clear();
    if last_tag != 0 {
        ch.basic_nack(
            last_tag,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        )
        .await
        .expect("requeueing the drained messages");
    }
}

/// Random publishes, acks and requeues until the broker dies under it.
async fn work(ch: &Channel, model: &mut Model, rng: &mut Rng) {
    let props = BasicProperties::default().with_delivery_mode(2);
    loop {
        match rng.below(2) {
            0 => {
                let n = 1 + rng.below(40);
                let mut pending = Vec::new();
                for _ in 0..n {
                    let id = model.next;
                    model.next += 1;
                    model.maybe.insert(id);
                    let body = id.to_string();
                    match ch
                        .basic_publish(
                            "".into(),
                            QUEUE.into(),
                            BasicPublishOptions::default(),
                            body.as_bytes(),
                            props.clone(),
                        )
                        .await
                    {
                        Ok(confirm) => pending.push((id, confirm)),
                        Err(_) => return,
                    }
                }
                for (id, confirm) in pending {
                    match confirm.await {
                        Ok(c) if c.is_ack() => {
                            model.maybe.remove(&id);
                            model.must.insert(id);
                        }
                        _ => return,
                    }
                }
            }
            _ => {
                let n = 1 + rng.below(40);
                for _ in 0..n {
                    let got = match ch
                        .basic_get(QUEUE.into(), BasicGetOptions { no_ack: false })
                        .await
                    {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(_) => return,
                    };
                    let id: u64 = std::str::from_utf8(&got.delivery.data)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .expect("numeric body");
                    let tag = got.delivery.delivery_tag;
                    if rng.below(4) == 0 {
                        if ch
                            .basic_nack(
                                tag,
                                BasicNackOptions {
                                    multiple: false,
                                    requeue: true,
                                },
                            )
                            .await
                            .is_err()
                        {
                            return;
                        }
                    } else {
                        // From the moment the ack is sent it may or may not be on disk.
                        model.must.remove(&id);
                        model.maybe.insert(id);
                        model.acked.insert(id);
                        if ch.basic_ack(tag, BasicAckOptions::default()).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

async fn crash_cycles(seed: u64, cycles: u32) -> usize {
    let dir = temp_dir(&format!("crash-{seed}"));
    let mut model = Model {
        next: 1,
        ..Model::default()
    };
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for cycle in 0..cycles {
        let server = Server::start(&dir).await;
        let (conn, ch) = open(&server.url).await;
        verify(&ch, &mut model, cycle).await;
        let kill_after = Duration::from_millis(20 + rng.below(250));
        let _ = tokio::time::timeout(kill_after, work(&ch, &mut model, &mut rng)).await;
        server.kill9().await;
        drop(ch);
        drop(conn);
    }
    // A last restart checks the final crash too.
    let server = Server::start(&dir).await;
    let (_conn, ch) = open(&server.url).await;
    verify(&ch, &mut model, cycles).await;
    let survived = model.must.len();
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    survived
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_twenty_kill_nine_cycles() {
    let survived = crash_cycles(1, 20).await;
    assert!(survived > 0, "the test never got a message confirmed");
}

/// The long run: `cargo test --test durability_crash -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn confirmed_messages_survive_many_kill_nine_cycles() {
    for seed in 2..12 {
        crash_cycles(seed, 50).await;
    }
}
