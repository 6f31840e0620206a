//! Partitioned streams and consumer groups (Warren only: RabbitMQ 3.10 has neither over
//! AMQP 0-9-1). A partitioned stream is streams NAME-0..N-1 behind an `x-consistent-hash`
//! exchange; consumers with the same `x-consumer-group` share the partitions, one active member
//! on each, and a member that joins, leaves or dies moves partitions, the new reader starting at
//! the group's last acked offset.
mod cli_support;
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{confirm_channel, connect_url, unique, within};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use tokio::io::AsyncBufReadExt;

struct Node {
    broker: warren::Broker,
    dir: std::path::PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn node() -> Node {
    let dir = std::env::temp_dir().join(unique("stream-groups"));
    let mut c = warren::Config::ephemeral();
    c.persistence = true;
    c.data_dir = dir.clone();
    Node {
        broker: warren::Broker::start(c).await.expect("starting a broker"),
        dir,
    }
}

async fn declare(ch: &Channel, name: &str, partitions: u32) {
    warren::stream::partitions::declare(
        ch,
        name,
        partitions,
        &FieldTable::default(),
        Default::default(),
    )
    .await
    .expect("declaring a partitioned stream");
}

/// Publishes `key:seq` for each (key, seq), routed by key, and waits for the confirms.
async fn publish(ch: &Channel, exchange: &str, messages: &[(String, u32)]) {
    let mut confirms = Vec::new();
    for (key, seq) in messages {
        confirms.push(
            ch.basic_publish(
                exchange.into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                format!("{key}:{seq}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish"),
        );
    }
    for c in confirms {
        assert!(within("a confirm", c).await.expect("confirm").is_ack());
    }
}

fn messages(keys: usize, seqs: std::ops::Range<u32>) -> Vec<(String, u32)> {
    seqs.flat_map(|s| (0..keys).map(move |k| (format!("k{k}"), s)))
        .collect()
}

/// A group member: one channel consuming every partition with tags `partition-i`. Its
/// deliveries are (partition, body), acked as they arrive.
struct Member {
    conn: Connection,
    got: Arc<Mutex<Vec<(usize, String)>>>,
    /// Acks sent.
    acked: Arc<std::sync::atomic::AtomicUsize>,
}

async fn member(url: &str, name: &str, partitions: usize, group: &str, offset: &str) -> Member {
    let conn = connect_url(url).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(20, BasicQosOptions::default()).await.unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for p in 0..partitions {
        let mut args = FieldTable::default();
        args.insert(
            "x-consumer-group".into(),
            AMQPValue::LongString(group.into()),
        );
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString(offset.into()),
        );
        let mut consumer = ch
            .basic_consume(
                format!("{name}-{p}").as_str().into(),
                format!("partition-{p}").as_str().into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .expect("joining the group");
        let got = got.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                got.lock()
                    .unwrap()
                    .push((p, String::from_utf8_lossy(&d.data).into_owned()));
                if d.acker.ack(BasicAckOptions::default()).await.is_err() {
                    return;
                }
                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    Member { conn, got, acked }
}

impl Member {
    fn got(&self) -> Vec<(usize, String)> {
        self.got.lock().unwrap().clone()
    }

    fn acked(&self) -> usize {
        self.acked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn parse(body: &str) -> (String, u32) {
    let (k, s) = body.split_once(':').expect("key:seq");
    (k.to_owned(), s.parse().expect("seq"))
}

/// Each key's sequence numbers, as one reader saw them, must only go up.
fn assert_in_order_per_key(who: &str, bodies: impl IntoIterator<Item = String>) {
    let mut last: HashMap<String, u32> = HashMap::new();
    for b in bodies {
        let (k, s) = parse(&b);
        if let Some(prev) = last.insert(k.clone(), s) {
            assert!(s > prev, "{who} read {k}:{s} after {k}:{prev}");
        }
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_the_partitions_and_take_over_from_the_group_offset() {
    let node = node().await;
    let url = node.broker.url();
    let conn = connect_url(&url).await;
    let ch = confirm_channel(&conn).await;
    let name = unique("orders");
    declare(&ch, &name, 3).await;

    // Two members join before anything is published: the first reads partitions 0 and 2,
    // the second partition 1.
    let a = member(&url, &name, 3, "billing", "first").await;
    let b = member(&url, &name, 3, "billing", "first").await;
    publish(&ch, &name, &messages(30, 0..10)).await;
    wait_for("300 deliveries", || a.got().len() + b.got().len() == 300).await;
    let parts = |m: &Member| {
        let mut p: Vec<usize> = m.got().iter().map(|(p, _)| *p).collect();
        p.sort();
        p.dedup();
        p
    };
    assert_eq!(
        parts(&a),
        [0, 2],
        "the first member reads partitions 0 and 2"
    );
    assert_eq!(parts(&b), [1], "the second member reads partition 1");
    // A key lives in one partition.
    let mut partition_of: HashMap<String, usize> = HashMap::new();
    for (p, body) in a.got().into_iter().chain(b.got()) {
        let (k, _) = parse(&body);
        assert_eq!(
            *partition_of.entry(k.clone()).or_insert(p),
            p,
            "{k} in two partitions"
        );
    }
    assert_in_order_per_key("member a", a.got().into_iter().map(|(_, b)| b));
    assert_in_order_per_key("member b", b.got().into_iter().map(|(_, b)| b));

    // Another group reads the same data on its own.
    let other = member(&url, &name, 3, "audit", "first").await;
    wait_for("the other group's 300", || other.got().len() == 300).await;

    // The second member leaves: the first takes partition 1 over where the group's acks got
    // to, so it gets only what is published from now on.
    wait_for("b's acks", || b.acked() == b.got().len()).await;
    b.conn.close(200, "bye".into()).await.unwrap();
    let before = a.got().len();
    publish(&ch, &name, &messages(30, 10..12)).await;
    wait_for("60 more deliveries to the first member", || {
        a.got().len() == before + 60
    })
    .await;
    let new: Vec<(usize, String)> = a.got()[before..].to_vec();
    assert!(
        new.iter().any(|(p, _)| *p == 1),
        "partition 1 moved to the first member"
    );
    for (_, body) in &new {
        assert!(
            parse(body).1 >= 10,
            "{body} was read again after a clean handover"
        );
    }
    assert_in_order_per_key("member a", a.got().into_iter().map(|(_, b)| b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_at_its_acked_offset_whatever_offset_a_new_member_asks_for() {
    let node = node().await;
    let url = node.broker.url();
    let conn = connect_url(&url).await;
    let ch = confirm_channel(&conn).await;
    let name = unique("events");
    declare(&ch, &name, 1).await;
    publish(&ch, &name, &messages(1, 0..50)).await;
    let a = member(&url, &name, 1, "g", "first").await;
    wait_for("50 acks", || a.acked() == 50).await;
    a.conn.close(200, "bye".into()).await.unwrap();
    publish(&ch, &name, &messages(1, 50..60)).await;
    // `first` is where a group starts only before it has acked anything.
    let b = member(&url, &name, 1, "g", "first").await;
    wait_for("10 deliveries", || b.got().len() >= 10).await;
    let seqs: Vec<u32> = b.got().iter().map(|(_, body)| parse(body).1).collect();
    assert_eq!(seqs, (50..60).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_are_refused_on_classic_queues() {
    let node = node().await;
    let conn = connect_url(&node.broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = common::declare_queue(&ch, &unique("classic")).await;
    let mut args = FieldTable::default();
    args.insert("x-consumer-group".into(), AMQPValue::LongString("g".into()));
    let (code, text) = common::expect_refused(
        "x-consumer-group on a classic queue",
        ch.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        ),
    )
    .await;
    assert_eq!(code, 406, "{text}");
}

/// Three `warren subscribe --group` processes share a partitioned stream while it is being
/// written; one is killed (SIGKILL) partway through. Every message must still be printed by the
/// group, and each member prints each key's messages in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_loses_nothing_and_order_per_key_holds() {
    let node = node().await;
    let url = node.broker.url();
    cli_support::warren(&url, &["declare", "stream", "orders", "--partitions", "3"])
        .await
        .ok();
    let mut children = Vec::new();
    let mut outputs = Vec::new();
    for _ in 0..3 {
        let mut child = cli_support::command(
            &url,
            &[
                "subscribe",
                "orders",
                "--group",
                "workers",
                "--offset",
                "first",
                "--prefetch",
                "20",
            ],
        )
        .spawn()
        .expect("spawning warren subscribe");
        let out = Arc::new(Mutex::new(Vec::<String>::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = out.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        children.push(child);
        outputs.push(out);
    }
    for p in 0..3 {
        cli_support::eventually("three members on every partition", || {
            let url = url.clone();
            async move {
                cli_support::queue_counts(&url, &format!("orders-{p}"))
                    .await
                    .1
                    == 3
            }
        })
        .await;
    }

    let conn = connect_url(&url).await;
    let ch = confirm_channel(&conn).await;
    let all = messages(20, 0..150);
    let printed = |outputs: &[Arc<Mutex<Vec<String>>>]| -> usize {
        outputs.iter().map(|o| o.lock().unwrap().len()).sum()
    };
    let (first, rest) = all.split_at(1000);
    publish(&ch, "orders", first).await;
    wait_for("the members to print a few hundred", || {
        printed(&outputs) >= 300
    })
    .await;
    let victim = (0..3)
        .find(|i| !outputs[*i].lock().unwrap().is_empty())
        .expect("a member that printed something");
    children[victim].start_kill().expect("kill -9");
    children[victim].wait().await.unwrap();
    for chunk in rest.chunks(250) {
        publish(&ch, "orders", chunk).await;
    }
    let expected: std::collections::HashSet<String> =
        all.iter().map(|(k, s)| format!("{k}:{s}")).collect();
    wait_for("every message printed by the group", || {
        let seen: std::collections::HashSet<String> = outputs
            .iter()
            .flat_map(|o| o.lock().unwrap().clone())
            .collect();
        expected.is_subset(&seen)
    })
    .await;
    let mut total = 0;
    for (i, o) in outputs.iter().enumerate() {
        let lines = o.lock().unwrap().clone();
        total += lines.len();
        for l in &lines {
            assert!(
                expected.contains(l),
                "member {i} printed {l:?}, never published"
            );
        }
        assert_in_order_per_key(&format!("member {i}"), lines);
    }
    eprintln!(
        "{} messages, {total} printed by the group ({} again after the kill)",
        expected.len(),
        total - expected.len()
    );
}

/// `PUT /api/stream/super-streams/{vhost}/{name}` declares the same as the CLI, and the
/// consumers listing says which member of a group is active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_declares_partitioned_streams_and_shows_active_members() {
    let dir = std::env::temp_dir().join(unique("stream-groups-api"));
    let mut c = warren::Config::ephemeral();
    c.persistence = true;
    c.data_dir = dir.clone();
    c.http_bind = Some("127.0.0.1:0".parse().unwrap());
    let broker = warren::Broker::start(c).await.expect("starting a broker");
    let node = Node { broker, dir };
    let http = format!("http://{}", node.broker.http_addr().unwrap());
    let send = |method: &'static str, path: String, body: &'static str| {
        let url = format!("{http}{path}");
        async move {
            common::http::curl(&[
                "-u",
                "guest:guest",
                "-X",
                method,
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
                &url,
            ])
            .await
        }
    };
    let path = "/api/stream/super-streams/%2F/invoices".to_owned();
    let r = send(
        "PUT",
        path.clone(),
        r#"{"partitions": 3, "arguments": {"max-age": "7D", "hash-header": "customer"}}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = send("GET", "/api/exchanges/%2F/invoices".into(), "").await;
    let x = r.json();
    assert_eq!(x["type"], "x-consistent-hash", "{x}");
    assert_eq!(x["arguments"]["hash-header"], "customer", "{x}");
    let q = send("GET", "/api/queues/%2F/invoices-2".into(), "")
        .await
        .json();
    assert_eq!(q["arguments"]["x-queue-type"], "stream", "{q}");
    assert_eq!(q["arguments"]["x-max-age"], "7D", "{q}");
    assert_eq!(q["arguments"]["x-stream-partition-order"], 2, "{q}");
    let b = send(
        "GET",
        "/api/exchanges/%2F/invoices/bindings/source".into(),
        "",
    )
    .await
    .json();
    assert_eq!(b.as_array().map(Vec::len), Some(3), "{b}");
    // Again: nothing new.
    let r = send(
        "PUT",
        path.clone(),
        r#"{"partitions": 3, "arguments": {"max-age": "7D", "hash-header": "customer"}}"#,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    for bad in [
        r#"{}"#,
        r#"{"partitions": 0}"#,
        r#"{"partitions": "many"}"#,
        r#"{"binding-keys": "a,b"}"#,
        r#"{"partitions": 2, "arguments": {"x-message-ttl": 5}}"#,
    ] {
        let r = send("PUT", "/api/stream/super-streams/%2F/other".into(), bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }

    let url = node.broker.url();
    let _a = member(&url, "invoices", 3, "g", "first").await;
    let _b = member(&url, "invoices", 3, "g", "first").await;
    let consumers = || async { send("GET", "/api/consumers/%2F".into(), "").await.json() };
    let mut states = Vec::new();
    for _ in 0..100 {
        let list = consumers().await;
        states = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["queue"]["name"] == "invoices-0")
            .map(|c| c["activity_status"].as_str().unwrap().to_owned())
            .collect();
        states.sort();
        if states == ["single_active", "waiting"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(states, ["single_active", "waiting"]);
}
