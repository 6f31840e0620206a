//! Proves that a publisher confirm means "on disk", with failures injected into the store's
//! file operations of an embedded broker: a publish whose segment write fails is nacked and is
//! not left in the queue (so a publisher that retries makes no duplicate); a publish whose
//! sync fails is nacked; no basic.ack arrives while the sync that would cover it is held; and
//! the broker carries on normally once the disk works again, across a restart.
mod common;

use std::time::Duration;

use common::*;
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn start_durable(dir: &std::path::Path) -> warren::Broker {
    let mut config = warren::Config::ephemeral();
    config.persistence = true;
    config.data_dir = dir.to_owned();
    // sled's background threads may hold the directory's lock for a moment after the broker
    // that used it stopped.
    for _ in 0..100 {
        match warren::Broker::start(config.clone()).await {
            Ok(b) => return b,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    warren::Broker::start(config)
        .await
        .expect("starting a broker with a store")
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(unique(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Publishes `n` persistent messages and returns how many were acked and nacked.
async fn publish_n(ch: &lapin::Channel, queue: &str, n: usize) -> (usize, usize) {
    let mut pending = Vec::new();
    for i in 0..n {
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                persistent(),
            )
            .await
            .expect("basic.publish");
        pending.push(confirm);
    }
    let (mut acked, mut nacked) = (0, 0);
    for c in pending {
        let c = within("publisher confirm", c).await.expect("confirm");
        if c.is_ack() {
            acked += 1;
        } else {
            nacked += 1;
        }
    }
    (acked, nacked)
}

#[tokio::test]
async fn failed_writes_are_nacked_and_not_enqueued() {
    let dir = temp_dir("faults-write");
    let broker = start_durable(&dir).await;
    let faults = broker.faults().expect("a store").clone();
    let conn = connect_url(&broker.url()).await;
    let ch = confirm_channel(&conn).await;
    let q = unique("full-disk");
    declare_durable_queue(&ch, &q).await;

    assert_eq!(publish_n(&ch, &q, 20).await, (20, 0));
    faults.fail_writes(true);
    assert_eq!(
        publish_n(&ch, &q, 30).await,
        (0, 30),
        "every publish whose write failed is nacked"
    );
    assert_eq!(
        declare_durable_queue(&ch, &q).await,
        20,
        "nacked publishes are not in the queue"
    );
    faults.fail_writes(false);
    assert_eq!(publish_n(&ch, &q, 10).await, (10, 0), "writes work again");
    conn.close(200, "bye".into()).await.ok();
    broker.shutdown().await;

    let broker = start_durable(&dir).await;
    let conn = connect_url(&broker.url()).await;
    let ch = channel(&conn).await;
    assert_eq!(
        declare_durable_queue(&ch, &q).await,
        30,
        "exactly the acked messages survive a restart"
    );
    let bodies = drain(&ch, &q).await;
    let expected: Vec<String> = (0..20).chain(0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, expected);
    conn.close(200, "bye".into()).await.ok();
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn failed_syncs_are_nacked() {
    let dir = temp_dir("faults-sync");
    let broker = start_durable(&dir).await;
    let faults = broker.faults().expect("a store").clone();
    let conn = connect_url(&broker.url()).await;
    let ch = confirm_channel(&conn).await;
    let q = unique("bad-sync");
    declare_durable_queue(&ch, &q).await;
    faults.fail_syncs(true);
    let (acked, nacked) = publish_n(&ch, &q, 25).await;
    assert_eq!(
        (acked, nacked),
        (0, 25),
        "no publish is acked while its fsync fails"
    );
    assert_eq!(
        declare_durable_queue(&ch, &q).await,
        0,
        "a publish nacked because its fsync failed is not in the queue"
    );
    faults.fail_syncs(false);
    assert_eq!(publish_n(&ch, &q, 5).await, (5, 0));
    conn.close(200, "bye".into()).await.ok();
    broker.shutdown().await;

    // Nor does it come back after a restart: exactly the acked ones do.
    let broker = start_durable(&dir).await;
    let conn = connect_url(&broker.url()).await;
    let ch = channel(&conn).await;
    assert_eq!(declare_durable_queue(&ch, &q).await, 5);
    let bodies = drain(&ch, &q).await;
    let expected: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, expected);
    conn.close(200, "bye".into()).await.ok();
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn no_ack_arrives_while_the_sync_is_held() {
    let dir = temp_dir("faults-hold");
    let broker = start_durable(&dir).await;
    let faults = broker.faults().expect("a store").clone();
    let conn = connect_url(&broker.url()).await;
    let ch = confirm_channel(&conn).await;
    let q = unique("held-sync");
    declare_durable_queue(&ch, &q).await;
    faults.hold_syncs(true);
    let confirm = ch
        .basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"held",
            persistent(),
        )
        .await
        .expect("basic.publish");
    tokio::pin!(confirm);
    // Not a timing assertion: nothing may arrive however long we wait; a second is plenty
    // for a broker that confirms before the sync to show it.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut confirm)
            .await
            .is_err(),
        "a confirm arrived while the fsync covering it was held"
    );
    faults.hold_syncs(false);
    let c = within("confirm after the sync", confirm)
        .await
        .expect("confirm");
    assert!(c.is_ack());
    conn.close(200, "bye".into()).await.ok();
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A durable queue.declare answers only once its definition is on disk, and waits for that
/// without blocking routing: while the sync is held, no declare-ok arrives, and messages keep
/// flowing through other queues on another connection. A failed sync closes the declaring
/// connection with 541 instead of answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_definitions_answer_after_their_sync_without_blocking_routing() {
    let dir = temp_dir("faults-defs");
    let broker = start_durable(&dir).await;
    let faults = broker.faults().expect("a store").clone();
    let conn = connect_url(&broker.url()).await;
    let ch = channel(&conn).await;
    let other = connect_url(&broker.url()).await;
    let och = channel(&other).await;
    let flowing = declare_queue(&och, &unique("flowing")).await;

    faults.hold_syncs(true);
    let q = unique("held-def");
    let declare = {
        let (ch, q) = (ch.clone(), q.clone());
        tokio::spawn(async move { declare_durable_queue(&ch, &q).await })
    };
    for i in 0..100 {
        publish(&och, "", &flowing, format!("m{i}").as_bytes()).await;
    }
    let got = drain(&och, &flowing).await;
    assert_eq!(
        got.len(),
        100,
        "routing goes on while a declaration waits for the disk"
    );
    // Not a timing assertion: nothing may arrive however long we wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !declare.is_finished(),
        "declare-ok arrived while the fsync covering the definition was held"
    );
    faults.hold_syncs(false);
    within("declare-ok after the sync", declare)
        .await
        .expect("declare task");

    faults.fail_syncs(true);
    let err = ch
        .queue_declare(
            unique("bad-sync-def").as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect_err("a declaration whose sync failed is not answered with declare-ok");
    assert_eq!(amqp_error(&err).0, 541, "{err}");
    faults.fail_syncs(false);
    other.close(200, "bye".into()).await.ok();
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
