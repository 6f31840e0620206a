//! `x-delayed-message` exchanges, as `rabbitmq-delayed-message-exchange`: a message with a
//! positive `x-delay` header is routed, as the `x-delayed-type` type routes, once its delay has
//! passed. Ordering by due time, the plugin's refusals, delays past 49.7 days, durability across
//! `kill -9` of the real binary, and memory that does not grow with the schedule.
mod binary;
mod common;

use std::time::{Duration, Instant};

use binary::{rss_bytes, temp_dir, Server};
use common::*;
use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

fn delayed() -> ExchangeKind {
    ExchangeKind::Custom("x-delayed-message".into())
}

fn of_type(t: &str) -> FieldTable {
    let mut a = FieldTable::default();
    a.insert("x-delayed-type".into(), AMQPValue::LongString(t.into()));
    a
}

fn delay(ms: i64) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert("x-delay".into(), AMQPValue::LongLongInt(ms));
    BasicProperties::default()
        .with_headers(h)
        .with_delivery_mode(2)
}

async fn declare(ch: &Channel, name: &str, kind: &str, durable: bool) {
    ch.exchange_declare(
        name.into(),
        delayed(),
        ExchangeDeclareOptions {
            durable,
            ..Default::default()
        },
        of_type(kind),
    )
    .await
    .expect("declaring a delayed exchange");
}

/// A broker with a data directory (the schedule on disk), or without one (in memory).
async fn broker(with_disk: bool) -> (warren::Broker, Option<std::path::PathBuf>) {
    let mut c = warren::Config::ephemeral();
    c.http_bind = Some("127.0.0.1:0".parse().unwrap());
    let dir = with_disk.then(|| std::env::temp_dir().join(unique("delayed")));
    if let Some(d) = &dir {
        c.persistence = true;
        c.data_dir = d.clone();
    }
    (
        warren::Broker::start(c).await.expect("starting a broker"),
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_out_in_due_order_routed_as_the_delayed_type() {
    for with_disk in [true, false] {
        let (b, dir) = broker(with_disk).await;
        let conn = connect_url(&b.url()).await;
        let ch = confirm_channel(&conn).await;
        let x = unique("later");
        declare(&ch, &x, "topic", false).await;
        let q = declare_queue(&ch, &format!("{x}-q")).await;
        bind(&ch, &q, &x, "orders.*").await;
        let mut consumer = consume(&ch, &q, true).await;
        let started = Instant::now();
        // (body, delay, routing key): published out of due order; two with no delay at all.
        let plan: [(&str, i64, &str); 7] = [
            ("600", 600, "orders.paid"),
            ("200", 200, "orders.paid"),
            ("400", 400, "orders.new"),
            ("now", 0, "orders.new"),
            ("negative", -5, "orders.new"),
            ("unbound", 100, "invoices.new"),
            ("also-200", 200, "orders.paid"),
        ];
        for (body, ms, key) in plan {
            publish_confirmed_with(&ch, &x, key, body.as_bytes(), delay(ms)).await;
        }
        let mut got = Vec::new();
        let mut late = Vec::new();
        for _ in 0..6 {
            let d = within("a delayed delivery", consumer.next())
                .await
                .expect("a delivery")
                .expect("a delivery");
            let b = body(&d);
            if let Ok(ms) = b.trim_start_matches("also-").parse::<u64>() {
                late.push(started.elapsed().as_millis() as i64 - ms as i64);
            }
            got.push(b);
        }
        assert_eq!(got, ["now", "negative", "200", "also-200", "400", "600"]);
        assert_no_delivery(&mut consumer, Duration::from_millis(200)).await;
        eprintln!(
            "disk={with_disk}: delivered after due by {late:?} ms (includes the publish round trips)"
        );
        drop(b);
        if let Some(d) = dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[tokio::test]
async fn the_delayed_type_is_required_and_checked() {
    let b = start().await;
    let conn = connect(&b).await;
    for args in [
        FieldTable::default(),
        of_type("nope"),
        of_type("x-delayed-message"),
    ] {
        let ch = channel(&conn).await;
        let (code, text) = expect_refused(
            "a delayed exchange without a valid x-delayed-type",
            ch.exchange_declare(
                unique("bad-delayed").as_str().into(),
                delayed(),
                Default::default(),
                args,
            ),
        )
        .await;
        assert_eq!(code, 406, "{text}");
        assert!(text.contains("x-delayed-type"), "{text}");
    }
    assert_broker_alive(&b).await;
}

/// 60 days is past the 49.7 days where a 32-bit millisecond timer wraps (LavinMQ delivers such
/// messages at once); the message must stay scheduled, and show in the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_of_sixty_days_waits() {
    let (b, dir) = broker(true).await;
    let conn = connect_url(&b.url()).await;
    let ch = confirm_channel(&conn).await;
    let x = unique("far");
    declare(&ch, &x, "fanout", true).await;
    let q = declare_queue(&ch, &format!("{x}-q")).await;
    bind(&ch, &q, &x, "").await;
    publish_confirmed_with(&ch, &x, "", b"in sixty days", delay(60 * 86_400_000)).await;
    publish_confirmed_with(&ch, &x, "", b"soon", delay(50)).await;
    wait_message_count(&ch, &q, 1).await;
    assert_eq!(drain(&ch, &q).await, ["soon"]);
    let http = format!("http://{}", b.http_addr().unwrap());
    let r = common::http::curl(&[
        "-u",
        "guest:guest",
        &format!("{http}/api/exchanges/%2F/{x}"),
    ])
    .await;
    assert_eq!(r.json()["messages_delayed"], 1, "{}", r.body);
    assert_eq!(message_count(&ch, &q).await, 0);
    // Its bucket is an hour-wide file on disk, not memory.
    let files: Vec<String> = walk(dir.as_ref().unwrap());
    assert!(files.iter().any(|f| f.starts_with("c-")), "{files:?}");
    drop(b);
    let _ = std::fs::remove_dir_all(dir.unwrap());
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Persistent messages on a durable delayed exchange survive `kill -9`: those due before the
/// kill were delivered then; those due while the broker was down, or after it came back, are
/// delivered after the restart, in due order. Delivery is at least once: a second that was being
/// routed when the broker died may be routed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_delayed_messages_survive_kill_9() {
    let dir = temp_dir("delayed-kill");
    let server = Server::start(&dir).await;
    let conn = connect_url(&server.url).await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "later", "direct", true).await;
    declare_durable_queue(&ch, "due").await;
    bind(&ch, "due", "later", "k").await;
    // Ten due at once-ish, ten due in 2.5 to 3.4 s (published in reverse order).
    for i in 0..10 {
        publish_confirmed_with(
            &ch,
            "later",
            "k",
            format!("early-{i}").as_bytes(),
            delay(100),
        )
        .await;
    }
    for i in (0..10).rev() {
        let ms = 2500 + i * 100;
        publish_confirmed_with(&ch, "later", "k", format!("late-{i}").as_bytes(), delay(ms)).await;
    }
    wait_message_count(&ch, "due", 10).await;
    server.kill9().await;

    let server = Server::start(&dir).await;
    let conn = connect_url(&server.url).await;
    let ch = confirm_channel(&conn).await;
    let mut consumer = consume(&ch, "due", true).await;
    let mut seen = Vec::new();
    let want: std::collections::HashSet<String> = (0..10)
        .flat_map(|i| [format!("early-{i}"), format!("late-{i}")])
        .collect();
    while !want.iter().all(|w| seen.iter().any(|s: &String| s == w)) {
        let d = tokio::time::timeout(Duration::from_secs(15), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("still missing some after the restart; got {seen:?}"))
            .expect("a delivery")
            .expect("a delivery");
        seen.push(body(&d));
    }
    let late: Vec<&String> = seen.iter().filter(|s| s.starts_with("late-")).collect();
    let mut first_seen: Vec<&String> = Vec::new();
    for s in late {
        if !first_seen.contains(&s) {
            first_seen.push(s);
        }
    }
    let expected: Vec<String> = (0..10).map(|i| format!("late-{i}")).collect();
    assert_eq!(
        first_seen.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        expected.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "in due order"
    );
    eprintln!(
        "{} deliveries after the restart for 10 due then and 10 already delivered",
        seen.len()
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Schedules `n` messages of `size` bytes spread over `span_ms`, and returns the broker's RSS
/// growth.
async fn schedule_flood(n: u64, size: usize, span_ms: u64) -> (u64, u64) {
    let dir = temp_dir("delayed-flood");
    let server = Server::start(&dir).await;
    let pid = server.child.id().expect("pid");
    let conn = connect_url(&server.url).await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "flood", "direct", true).await;
    declare_durable_queue(&ch, "flood-q").await;
    bind(&ch, "flood-q", "flood", "k").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes(pid);
    let mut most = before;
    let body = vec![7u8; size];
    let mut pending = Vec::with_capacity(2000);
    for i in 0..n {
        // From 10 minutes out to 10 minutes + span: nothing fires during the test.
        let ms = 600_000 + (i * 7919) % span_ms.max(1);
        let c = ch
            .basic_publish(
                "flood".into(),
                "k".into(),
                BasicPublishOptions::default(),
                &body,
                delay(ms as i64),
            )
            .await
            .expect("publish");
        pending.push(c);
        if pending.len() == 2000 || i + 1 == n {
            for c in pending.drain(..) {
                assert!(c.await.expect("confirm").is_ack());
            }
            most = most.max(rss_bytes(pid));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    most = most.max(rss_bytes(pid));
    assert_eq!(message_count(&ch, "flood-q").await, 0, "nothing due yet");
    server.kill9().await;
    let _ = std::fs::remove_dir_all(&dir);
    (before, most)
}

/// 200,000 persistent 1 KiB messages (200 MB) scheduled over two hours: the broker holds them
/// on disk, not in memory. A resource bound, not a timing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_schedule_stays_on_disk() {
    if !std::path::Path::new("/proc/self/status").exists() {
        return;
    }
    let (before, most) = schedule_flood(200_000, 1024, 7_200_000).await;
    eprintln!(
        "200,000 x 1 KiB scheduled: RSS {} MiB before, at most {} MiB",
        before >> 20,
        most >> 20
    );
    assert!(
        most.saturating_sub(before) < 64 << 20,
        "the broker grew by {} MiB holding 195 MiB of delayed messages",
        (most - before) >> 20
    );
}

/// Ten million 64-byte messages over ten days (`cargo test --release --test delayed_messages
/// -- --ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn ten_million_scheduled_messages() {
    let (before, most) = schedule_flood(10_000_000, 64, 10 * 86_400_000).await;
    eprintln!(
        "10,000,000 x 64 B scheduled over 10 days: RSS {} MiB before, at most {} MiB",
        before >> 20,
        most >> 20
    );
}

/// Deleting a delayed exchange drops what it held: declared again, it starts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_exchange_takes_its_schedule_with_it() {
    let (b, dir) = broker(true).await;
    let conn = connect_url(&b.url()).await;
    let ch = confirm_channel(&conn).await;
    let x = unique("gone");
    declare(&ch, &x, "fanout", true).await;
    publish_confirmed_with(&ch, &x, "", b"old", delay(300)).await;
    ch.exchange_delete(x.as_str().into(), Default::default())
        .await
        .unwrap();
    declare(&ch, &x, "fanout", true).await;
    let q = declare_queue(&ch, &format!("{x}-q")).await;
    bind(&ch, &q, &x, "").await;
    publish_confirmed_with(&ch, &x, "", b"new", delay(600)).await;
    wait_message_count(&ch, &q, 1).await;
    assert_eq!(drain(&ch, &q).await, ["new"]);
    drop(b);
    let _ = std::fs::remove_dir_all(dir.unwrap());
}
