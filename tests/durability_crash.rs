//! Proves that a confirmed persistent message survives `kill -9` of the real broker at any
//! point: while publishing with confirms outstanding, while consuming and acking, while
//! requeueing. After each crash every confirmed, unacked message is back exactly once and in
//! order, nothing unpublished appears, and every recovered message is flagged redelivered (the
//! broker cannot know which were delivered before the crash). Most kills land while publishes
//! wait for their confirms, and a confirm that reached the client before the kill counts.
//!
//! `WARREN_CRASH_CYCLES` sets the number of kill cycles of the default run (200: about a minute
//! and a half on a debug build; the `--ignored` run does 10 seeds of 50).

mod binary;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use binary::{temp_dir, Server};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use lapin::{Confirmation, PublisherConfirm};

const QUEUE: &str = "crash-durable";

/// What the test knows about the queue's content.
#[derive(Default)]
struct Model {
    /// Confirmed and never acked: must be there after a crash.
    must: BTreeSet<u64>,
    /// Published without a confirm yet, or acked: may be there (at most once).
    maybe: HashSet<u64>,
    /// Acked: may come back (flagged redelivered, as every recovered message is).
    acked: HashSet<u64>,
    /// Published, confirm not seen yet (oldest first): in `maybe` until the broker acks.
    unconfirmed: VecDeque<(u64, PublisherConfirm)>,
    /// Next message id.
    next: u64,
    /// Publishes the broker confirmed, over the whole run.
    confirmed_total: u64,
}

impl Model {
    /// Records the broker's answer to the publish of `id`: an ack makes it a must, unless a
    /// consumer already acked it. False if the broker refused it or the channel failed.
    fn confirmed(&mut self, id: u64, answer: lapin::Result<Confirmation>) -> bool {
        match answer {
            Ok(c) if c.is_ack() => {
                self.confirmed_total += 1;
                if !self.acked.contains(&id) {
                    self.maybe.remove(&id);
                    self.must.insert(id);
                }
                true
            }
            _ => false,
        }
    }

    /// Takes the confirms that already arrived, without waiting.
    fn take_arrived_confirms(&mut self) -> bool {
        use futures_util::FutureExt;
        while let Some((id, confirm)) = self.unconfirmed.front_mut() {
            let id = *id;
            let Some(answer) = confirm.now_or_never() else {
                return true;
            };
            self.unconfirmed.pop_front();
            if !self.confirmed(id, answer) {
                return false;
            }
        }
        true
    }

    /// After the broker was killed: a confirm that reached the client before the kill makes
    /// its message a must; the others were outstanding when the kill landed. Returns how many
    /// were outstanding.
    async fn settle_after_kill(&mut self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut outstanding = 0;
        while let Some((id, confirm)) = self.unconfirmed.pop_front() {
            match tokio::time::timeout_at(deadline, confirm).await {
                Ok(answer) => {
                    if !self.confirmed(id, answer) {
                        outstanding += 1;
                    }
                }
                Err(_) => outstanding += 1,
            }
        }
        outstanding
    }
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
        // As RabbitMQ does, and as the README promises: the broker cannot know which messages
        // were delivered before the crash, so every recovered one is flagged.
        assert!(
            *redelivered,
            "cycle {cycle}: message {id} recovered after a crash not flagged redelivered"
        );
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

/// Publishes message `model.next` (persistent); its confirm joins `model.unconfirmed`.
async fn publish(ch: &Channel, model: &mut Model) -> bool {
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
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
    {
        Ok(confirm) => {
            model.unconfirmed.push_back((id, confirm));
            true
        }
        Err(_) => false,
    }
}

/// Random publishes, acks and requeues until the broker dies under it. Publishing goes on
/// while consuming, and confirms are taken as they arrive (waited for only when many are
/// outstanding), so that a kill usually lands while some are. Publishes and acks are about
/// balanced, so the queue stays short and each cycle's check stays quick.
async fn work(ch: &Channel, model: &mut Model, rng: &mut Rng) {
    loop {
        if !model.take_arrived_confirms() {
            return;
        }
        // Publish in bulk only while the queue is short: each cycle's check reads all of it.
        if rng.below(3) == 0 && model.must.len() < 100 {
            for _ in 0..1 + rng.below(10) {
                if !publish(ch, model).await {
                    return;
                }
            }
            while model.unconfirmed.len() > 200 {
                let Some((id, confirm)) = model.unconfirmed.front_mut() else {
                    break;
                };
                let id = *id;
                let answer = confirm.await;
                model.unconfirmed.pop_front();
                if !model.confirmed(id, answer) {
                    return;
                }
            }
            continue;
        }
        for _ in 0..1 + rng.below(40) {
            if rng.below(3) != 0 && !publish(ch, model).await {
                return;
            }
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
                let requeue = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                if ch.basic_nack(tag, requeue).await.is_err() {
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

/// What a run of crash cycles saw.
struct Crashes {
    /// Publishes confirmed over the run.
    confirmed: u64,
    /// Confirmed messages in the queue at the end.
    survived: usize,
    /// Cycles whose kill landed while at least one publish waited for its confirm.
    with_confirms_outstanding: u32,
}

async fn crash_cycles(seed: u64, cycles: u32) -> Crashes {
    let dir = temp_dir(&format!("crash-{seed}"));
    let mut model = Model {
        next: 1,
        ..Model::default()
    };
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut with_confirms_outstanding = 0;
    for cycle in 0..cycles {
        let server = Server::start(&dir).await;
        let (conn, ch) = open(&server.url).await;
        verify(&ch, &mut model, cycle).await;
        let kill_after = Duration::from_millis(20 + rng.below(250));
        let _ = tokio::time::timeout(kill_after, work(&ch, &mut model, &mut rng)).await;
        server.kill9().await;
        if model.settle_after_kill().await > 0 {
            with_confirms_outstanding += 1;
        }
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
    Crashes {
        confirmed: model.confirmed_total,
        survived,
        with_confirms_outstanding,
    }
}

/// Checks what a run saw: the test did confirm messages, and most kills landed while
/// confirms were outstanding (else it proves little about them).
fn check(c: &Crashes, cycles: u32) {
    assert!(c.confirmed > 0, "the test never got a message confirmed");
    assert!(
        c.with_confirms_outstanding * 2 > cycles,
        "only {} of {cycles} kills landed while confirms were outstanding",
        c.with_confirms_outstanding
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_kill_nine_cycles() {
    let cycles = std::env::var("WARREN_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let c = crash_cycles(1, cycles).await;
    eprintln!(
        "{cycles} kill -9 cycles, {} with confirms outstanding, {} publishes confirmed, {} in \
         the queue at the end",
        c.with_confirms_outstanding, c.confirmed, c.survived
    );
    check(&c, cycles);
}

/// The long run: `cargo test --test durability_crash -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn confirmed_messages_survive_many_kill_nine_cycles() {
    for seed in 2..12 {
        check(&crash_cycles(seed, 50).await, 50);
    }
}
