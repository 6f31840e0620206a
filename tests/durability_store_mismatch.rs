//! Proves that the real broker refuses a data directory whose store database and message
//! segments do not belong together, instead of starting empty and deleting the segments as
//! orphans: the sled files deleted, or another store's segments put in place. The refusal
//! names the path and deletes nothing, and once the right files are back the messages are.

mod binary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use binary::{temp_dir, Server};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const QUEUE: &str = "kept";

/// Starts a broker on `dir`, stores `bodies` as confirmed persistent messages in the durable
/// queue `kept`, and stops the broker cleanly.
async fn store_messages(dir: &Path, bodies: &[&str]) {
    let server = Server::start(dir).await;
    let conn = Connection::connect(&server.url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(QUEUE.into(), durable, FieldTable::default())
        .await
        .expect("queue.declare");
    for body in bodies {
        let confirm = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "publish of {body:?} was not confirmed");
    }
    let _ = conn.close(200, "done".into()).await;
    server.stop().await;
}

/// Every file under `dir` with its length.
fn files(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("reading a directory") {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(files(&entry.path()));
        } else {
            out.insert(entry.path(), meta.len());
        }
    }
    out
}

fn segment_files(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let all = files(&dir.join("segments"));
    let segs: BTreeMap<_, _> = all
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert!(!segs.is_empty(), "the store wrote no segment in {dir:?}");
    segs
}

/// Moves sled's files (everything but the lock and the segments) from `dir` to `to`.
fn move_sled_files(dir: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name != "segments" && name != "warren.lock" {
            std::fs::rename(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Starts the broker on `dir`, expecting a refusal; returns its error output.
async fn refused(dir: &Path) -> String {
    match Server::try_start(dir).await {
        Ok(server) => {
            server.stop().await;
            panic!("the broker started on {dir:?}, whose store does not match its segments");
        }
        Err((_, stderr)) => stderr,
    }
}

async fn messages_in(dir: &Path) -> Vec<String> {
    let server = Server::start(dir).await;
    let conn = Connection::connect(&server.url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(QUEUE.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        out.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    let _ = conn.close(200, "done".into()).await;
    server.stop().await;
    out
}

#[tokio::test]
async fn segments_without_their_database_are_refused_and_kept() {
    let dir = temp_dir("store-no-db");
    store_messages(&dir, &["one", "two", "three"]).await;
    let segments = segment_files(&dir);
    let aside = dir.with_extension("sled-aside");
    move_sled_files(&dir, &aside);

    let stderr = refused(&dir).await;
    assert!(
        stderr.contains(&dir.display().to_string()) && stderr.contains("no database"),
        "the refusal names the directory and the missing database:\n{stderr}"
    );
    assert_eq!(
        segment_files(&dir),
        segments,
        "a segment was deleted or changed"
    );
    // A second attempt is refused the same way: the first created no database.
    assert!(refused(&dir).await.contains("no database"));

    move_sled_files(&aside, &dir);
    assert_eq!(messages_in(&dir).await, ["one", "two", "three"]);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&aside);
}

#[tokio::test]
async fn another_stores_segments_are_refused_and_kept() {
    let a = temp_dir("store-a");
    let b = temp_dir("store-b");
    store_messages(&a, &["a1", "a2"]).await;
    store_messages(&b, &["b1"]).await;
    let a_segments = a.with_extension("segments-aside");
    std::fs::rename(a.join("segments"), &a_segments).unwrap();
    std::fs::rename(b.join("segments"), a.join("segments")).unwrap();
    let segments = segment_files(&a);
    let before = files(&a);

    let stderr = refused(&a).await;
    assert!(
        stderr.contains(&a.display().to_string()) && stderr.contains("does not match"),
        "the refusal names the directory and the mismatch:\n{stderr}"
    );
    assert_eq!(
        segment_files(&a),
        segments,
        "a segment was deleted or changed"
    );
    // sled rewrites its own files when opened; none of them is gone.
    let after = files(&a);
    assert!(
        before.keys().all(|f| after.contains_key(f)),
        "a file was deleted"
    );

    // Without any segments, a store whose database holds messages is refused too.
    std::fs::rename(a.join("segments"), b.join("segments")).unwrap();
    let stderr = refused(&a).await;
    assert!(
        stderr.contains("segments were removed or replaced"),
        "{stderr}"
    );

    std::fs::rename(&a_segments, a.join("segments")).unwrap();
    assert_eq!(messages_in(&a).await, ["a1", "a2"]);
    assert_eq!(messages_in(&b).await, ["b1"]);
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(&d);
    }
}
