//! Proves, on the real binary, that a full disk never costs a confirmed message: with the data
//! directory and the broker's log on one small tmpfs, 10 KiB persistent messages are published
//! with confirms until the disk fills; every acked message comes back after the broker is
//! killed and restarted with room again, no nacked one is left in the queue or comes back after
//! the restart, and failed writes leave no pile of segment files. Also: a log that cannot be written (stderr on
//! /dev/full) does not stop the broker. The tmpfs needs root and `mount`; without them that
//! test says so and passes without running.
mod binary;
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use binary::*;
use common::*;
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `warren serve` with stderr going to `stderr` and returns it with its AMQP URL.
async fn spawn(data_dir: &Path, stderr: std::fs::File, log: &str) -> (Child, String) {
    // The store's own handling of a full disk: the disk alarm, which would block publishers
    // before the disk fills, is off (see the alarm test below for it).
    spawn_with(data_dir, stderr, log, "0").await
}

/// [`spawn`] with the disk alarm's limit in bytes.
async fn spawn_with(
    data_dir: &Path,
    stderr: std::fs::File,
    log: &str,
    disk_free_limit: &str,
) -> (Child, String) {
    let mut child = Command::new(warren_binary())
        .args([
            "serve",
            "--http-bind",
            "127.0.0.1:0",
            "--prometheus-bind",
            "127.0.0.1:0",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("WARREN_LOG", log)
        .env("WARREN_DISK_FREE_LIMIT_BYTES", disk_free_limit)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .expect("spawning warren serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("an address within 60 s")
        .expect("reading stdout")
        .expect("warren serve exited before listening");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let addr = line
        .strip_prefix("warren: listening on ")
        .expect("the listening line")
        .to_owned();
    (child, format!("amqp://guest:guest@{addr}/%2f"))
}

#[tokio::test]
async fn a_log_that_cannot_be_written_does_not_stop_the_broker() {
    let dir = temp_dir("log-full");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    // debug: a log line for every connection, channel and queue.
    let (mut child, url) = spawn(&dir.join("data"), full, "debug").await;
    for round in 0..3 {
        let conn = connect_url(&url).await;
        let ch = confirm_channel(&conn).await;
        let q = format!("logless-{round}");
        declare_durable_queue(&ch, &q).await;
        publish_confirmed(&ch, "", &q, b"still here").await;
        conn.close(200, "bye".into()).await.ok();
    }
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the broker exited when its log could not be written"
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs of `mb` MiB mounted at a fresh directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(mb: u32) -> Option<Tmpfs> {
        let dir = temp_dir("tmpfs");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }

    fn resize(&self, mb: u32) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mb}m")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remounting the tmpfs larger");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The broker's logs live here: show their ends before they go.
            for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
                let path = e.path();
                if path.extension().is_some_and(|x| x == "log") {
                    // Each distinct line (without its timestamp) once, with a count.
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut seen: Vec<(String, usize)> = Vec::new();
                    for l in text.lines() {
                        let l = l.split_once(' ').map_or(l, |(_, rest)| rest).to_owned();
                        match seen.iter_mut().find(|(s, _)| *s == l) {
                            Some((_, n)) => *n += 1,
                            None => seen.push((l, 1)),
                        }
                    }
                    eprintln!("--- {} (distinct lines, with counts):", path.display());
                    for (l, n) in seen.iter().take(60) {
                        eprintln!("{n:>6} {l}");
                    }
                }
            }
        }
        // A broker killed on drop may not have exited yet: try again, then detach.
        let unmounted = (0..20).any(|_| {
            let ok = std::process::Command::new("umount")
                .arg(&self.0)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            ok
        });
        if !unmounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_full_disk_loses_no_confirmed_message() {
    let Some(fs) = Tmpfs::mount(24) else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
        );
        return;
    };
    let data = fs.0.join("data");
    let log = std::fs::File::create(fs.0.join("warren.log")).expect("log on the tmpfs");
    let (mut child, url) = spawn(&data, log, "info").await;
    let conn = connect_url(&url).await;
    let ch = confirm_channel(&conn).await;
    let q = "fills-the-disk";
    declare_durable_queue(&ch, q).await;

    let body = vec![b'x'; 10 * 1024];
    let (mut acked, mut nacked) = (BTreeSet::new(), BTreeSet::new());
    let mut id = 0u32;
    // Publish in windows of 100 until the disk has refused a good number of them.
    while nacked.len() < 300 && id < 20_000 {
        let mut window = Vec::new();
        for _ in 0..100 {
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(&body);
            let confirm = ch
                .basic_publish(
                    "".into(),
                    q.into(),
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("basic.publish");
            window.push((id, confirm));
            id += 1;
        }
        for (id, confirm) in window {
            let c = within("publisher confirm", confirm).await.expect("confirm");
            if c.is_ack() {
                acked.insert(id);
            } else {
                nacked.insert(id);
            }
        }
    }
    eprintln!(
        "[observed] {} published, {} acked, {} nacked",
        id,
        acked.len(),
        nacked.len()
    );
    assert!(!nacked.is_empty(), "the disk never filled up");
    assert!(
        !acked.is_empty(),
        "nothing was acked before the disk filled"
    );
    assert_eq!(
        declare_durable_queue(&ch, q).await as usize,
        acked.len(),
        "the queue holds exactly the acked messages (nacked ones are not enqueued)"
    );
    let segments = std::fs::read_dir(data.join("segments"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        segments <= 4,
        "{segments} segment files: failed writes must not each leave one"
    );

    // Crash, make room, restart: every acked message is back, no nacked one.
    let _ = child.start_kill();
    let _ = child.wait().await;
    drop(conn);
    fs.resize(200);
    let log = std::fs::File::create(fs.0.join("warren-2.log")).expect("log");
    let (mut child, url) = spawn(&data, log, "info").await;
    let conn = connect_url(&url).await;
    let ch = channel(&conn).await;
    declare_durable_queue(&ch, q).await;
    let mut back = BTreeSet::new();
    loop {
        let got = ch
            .basic_get(q.into(), lapin::options::BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        let Some(m) = got else { break };
        let id = u32::from_be_bytes(m.delivery.data[..4].try_into().unwrap());
        assert!(
            m.delivery.redelivered,
            "recovered after a crash: redelivered"
        );
        back.insert(id);
    }
    let lost: Vec<_> = acked.difference(&back).collect();
    assert!(
        lost.is_empty(),
        "{} acked messages lost: {lost:?}",
        lost.len()
    );
    let returned: Vec<_> = nacked.intersection(&back).collect();
    eprintln!(
        "[observed] after the restart: {} back, {} of them nacked",
        back.len(),
        returned.len()
    );
    assert!(
        returned.is_empty(),
        "{} nacked messages came back (a publisher that retried has duplicates): {returned:?}",
        returned.len()
    );
    assert_eq!(back, acked, "exactly the acked messages come back");
    conn.close(200, "bye".into()).await.ok();
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// The disk alarm on a real small file system: as free space falls under the limit the
/// publisher is blocked (connection.blocked "low on disk") before anything is refused; when
/// the file system grows, it carries on; after a crash every acked message is back.
#[tokio::test]
async fn a_disk_alarm_blocks_publishers_before_the_disk_fills_and_releases_them() {
    let Some(fs) = Tmpfs::mount(48) else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the disk alarm test did not run"
        );
        return;
    };
    let data = fs.0.join("data");
    let log = std::fs::File::create(fs.0.join("warren.log")).expect("log on the tmpfs");
    let (mut child, url) = spawn_with(&data, log, "info", "24000000").await;
    let conn = connect_url(&url).await;
    let mut events = conn.events_listener();
    let ch = confirm_channel(&conn).await;
    let q = "alarm-fills";
    declare_durable_queue(&ch, q).await;
    // Publishes until told to stop, each confirmed before the next.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let publisher = tokio::spawn(async move {
        let body = vec![b'x'; 10 * 1024];
        let mut acked = BTreeSet::new();
        let mut id = 0u32;
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(&body);
            let c = ch
                .basic_publish(
                    "".into(),
                    q.into(),
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("basic.publish")
                .await
                .expect("confirm");
            assert!(
                c.is_ack(),
                "message {id} was nacked: the alarm should have come first"
            );
            acked.insert(id);
            id += 1;
        }
        acked
    });
    // The free space falls under 24 MB after about 2,300 messages.
    assert_eq!(
        next_block_event(&mut events).await.as_deref(),
        Some("low on disk")
    );
    if publisher.is_finished() {
        publisher.await.expect("the publisher failed");
        panic!("the publisher stopped by itself");
    }
    // Room again: unblocked within the disk check's second, and publishing goes on.
    fs.resize(200);
    assert_eq!(next_block_event(&mut events).await, None);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = tokio::time::timeout(Duration::from_secs(60), publisher)
        .await
        .expect("the publisher finishes once space returns")
        .expect("publisher task");
    let total = acked.len() as u32;
    assert!(total > 2000, "only {total} messages before the alarm");
    assert_eq!(acked, (0..total).collect::<BTreeSet<_>>());

    // Crash and restart: every acked message is back.
    let _ = child.start_kill();
    let _ = child.wait().await;
    drop(conn);
    let log = std::fs::File::create(fs.0.join("warren-2.log")).expect("log");
    let (mut child, url) = spawn(&data, log, "info").await;
    let conn = connect_url(&url).await;
    let ch = channel(&conn).await;
    assert_eq!(declare_durable_queue(&ch, q).await, total);
    conn.close(200, "bye".into()).await.ok();
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// The next connection.blocked (its reason) or unblocked (`None`); other events are skipped.
async fn next_block_event(
    events: &mut (impl futures_util::Stream<Item = lapin::Event> + Unpin),
) -> Option<String> {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.next().await {
                Some(lapin::Event::ConnectionBlocked(reason)) => return Some(reason),
                Some(lapin::Event::ConnectionUnblocked) => return None,
                Some(_) => continue,
                None => panic!("the connection's events ended"),
            }
        }
    })
    .await
    .expect("a connection.blocked or unblocked within 60 s")
}
