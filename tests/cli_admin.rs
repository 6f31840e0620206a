//! `warren list`, `show overview`, `close connection`, `definitions export|import` and
//! `status` drive the management HTTP API. With WARREN_TEST_URL and WARREN_TEST_HTTP set
//! (RabbitMQ's AMQP and management URLs) the same tests run against RabbitMQ.

mod cli_support;
mod common;

use cli_support::warren;
use common::{
    channel, confirm_channel, connect, declare_queue, publish_confirmed, unique, TestBroker,
};
use serde_json::Value;

/// A broker with its API, and the --http-url for it.
struct Target {
    amqp: TestBroker,
    http_url: String,
}

async fn target() -> Target {
    let t = common::http::target().await;
    // With credentials, as the CLI takes them.
    let http_url = t.http.replacen("http://", "http://guest:guest@", 1);
    Target {
        amqp: t.amqp,
        http_url,
    }
}

impl Target {
    async fn run(&self, args: &[&str]) -> cli_support::Run {
        let mut all = args.to_vec();
        all.extend(["--http-url", &self.http_url]);
        warren(&self.amqp.url, &all).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_queues_exchanges_and_bindings_as_table_tsv_or_json() {
    let t = target().await;
    let conn = connect(&t.amqp).await;
    let ch = confirm_channel(&conn).await;
    let q = unique("cli-list");
    declare_queue(&ch, &q).await;
    publish_confirmed(&ch, "", &q, b"one").await;
    publish_confirmed(&ch, "", &q, b"two").await;

    // TSV when piped: a header, then one line per queue; counts reach the API within 5 s
    // on RabbitMQ, at once on Warren.
    let mut line = String::new();
    for _ in 0..120 {
        let r = t
            .run(&["list", "queues", "--columns", "name,messages,consumers"])
            .await
            .ok();
        assert_eq!(r.lines()[0], "name\tmessages\tconsumers");
        line = r
            .lines()
            .into_iter()
            .find(|l| l.starts_with(&format!("{q}\t")))
            .unwrap_or("")
            .to_owned();
        if line == format!("{q}\t2\t0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(line, format!("{q}\t2\t0"));

    let r = t
        .run(&["list", "queues", "--vhost", "/", "--format", "table"])
        .await
        .ok();
    let header = r.lines()[0].to_owned();
    assert!(
        header.starts_with("vhost  name") && header.contains("messages_ready"),
        "{header}"
    );
    assert!(r.stdout.contains(&q));

    let r = t.run(&["list", "queues", "--format", "json"]).await.ok();
    let all: Value = serde_json::from_str(&r.stdout).unwrap();
    let mine = all
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == q.as_str())
        .expect("the queue, whole");
    assert_eq!(mine["vhost"], "/");
    assert!(mine.get("arguments").is_some(), "whole objects: {mine}");

    let r = t
        .run(&["list", "exchanges", "--columns", "name,type"])
        .await
        .ok();
    assert!(r.lines().contains(&"amq.topic\ttopic"), "{}", r.stdout);
    let r = t
        .run(&[
            "list",
            "bindings",
            "--columns",
            "source,destination,routing_key",
        ])
        .await
        .ok();
    assert!(
        r.lines().contains(&format!("\t{q}\t{q}").as_str()),
        "the default exchange's binding: {}",
        r.stdout
    );
    let r = t.run(&["list", "vhosts", "--columns", "name"]).await.ok();
    assert!(r.lines().contains(&"/"));
    let r = t.run(&["list", "users", "--columns", "name"]).await.ok();
    assert!(r.lines().contains(&"guest"));
    t.run(&["list", "users", "--vhost", "/"])
        .await
        .fails(1, "users are not listed per vhost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_channels_and_consumers_are_listed_and_closed() {
    let t = target().await;
    let given = unique("cli-closed");
    let conn = lapin::Connection::connect(
        &t.amqp.url,
        lapin::ConnectionProperties::default().with_connection_name(given.as_str().into()),
    )
    .await
    .unwrap();
    let ch = channel(&conn).await;
    let q = unique("cli-consumed");
    declare_queue(&ch, &q).await;
    let tag = unique("cli-tag");
    let _consumer = ch
        .basic_consume(
            q.as_str().into(),
            tag.as_str().into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();

    // The connection's name, by the name the client gave it.
    let mut name = String::new();
    for _ in 0..120 {
        let r = t
            .run(&[
                "list",
                "connections",
                "--columns",
                "user_provided_name,name",
            ])
            .await
            .ok();
        if let Some(l) = r.lines().into_iter().find(|l| l.starts_with(&given)) {
            name = l.split('\t').nth(1).unwrap().to_owned();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!name.is_empty(), "the connection is listed");
    let mut consumers = String::new();
    for _ in 0..120 {
        consumers = t
            .run(&["list", "consumers", "--columns", "queue.name,consumer_tag"])
            .await
            .ok()
            .stdout;
        if consumers.contains(&tag) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(consumers.contains(&format!("{q}\t{tag}")), "{consumers}");
    let r = t.run(&["list", "channels", "--format", "json"]).await.ok();
    let chans: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        chans
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["connection_details"]["name"] == name.as_str()),
        "{chans}"
    );

    let mut events = Box::pin(conn.events_listener());
    let r = t
        .run(&["close", "connection", &name, "--reason", "going away"])
        .await
        .ok();
    assert_eq!(r.stdout, format!("closed connection '{name}'\n"));
    assert_eq!(
        common::next_error_event(&mut events).await,
        (320, "CONNECTION_FORCED - going away".to_owned())
    );
    t.run(&["close", "connection", &name])
        .await
        .fails(1, "not found (HTTP 404)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_status_and_definitions() {
    let t = target().await;
    let r = t.run(&["show", "overview", "--format", "json"]).await.ok();
    let o: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(o["object_totals"]["queues"].is_number(), "{o}");
    let r = t.run(&["show", "overview"]).await.ok();
    assert!(
        r.lines().iter().any(|l| l.starts_with("node\t")),
        "{}",
        r.stdout
    );

    let r = t.run(&["status"]).await.ok();
    assert!(r.lines()[0].contains(" is up: "), "{}", r.stdout);
    assert!(r.stdout.contains("listener: amqp on "), "{}", r.stdout);
    assert!(r.stdout.contains("alarms: none"), "{}", r.stdout);

    // Export to a file, delete the queue, import the file: the queue is back.
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    let q = unique("cli-defs");
    common::declare_durable_queue(&ch, &q).await;
    let dir = std::env::temp_dir().join(unique("cli-defs-dir"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("defs.json");
    let file = file.to_str().unwrap();
    let r = t.run(&["definitions", "export", file]).await.ok();
    assert_eq!(r.stderr, format!("exported definitions to {file}\n"));
    let defs: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert!(defs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == q.as_str()));
    ch.queue_delete(q.as_str().into(), Default::default())
        .await
        .unwrap();
    let r = t.run(&["definitions", "import", file]).await.ok();
    assert_eq!(r.stdout, format!("imported definitions from {file}\n"));
    assert_eq!(common::message_count(&ch, &q).await, 0, "the queue is back");
    std::fs::write(dir.join("bad.json"), "{not json").unwrap();
    t.run(&[
        "definitions",
        "import",
        dir.join("bad.json").to_str().unwrap(),
    ])
    .await
    .fails(1, "is not JSON");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_no_api_are_one_clear_line() {
    let t = target().await;
    let wrong = t.http_url.replacen("guest:guest@", "guest:wrong@", 1);
    warren(&t.amqp.url, &["list", "queues", "--http-url", &wrong])
        .await
        .fails(1, "refused the credentials");
    warren(
        &t.amqp.url,
        &["status", "--http-url", "http://guest:guest@127.0.0.1:1"],
    )
    .await
    .fails(
        1,
        "cannot connect to the management API at http://127.0.0.1:1",
    );
    warren(&t.amqp.url, &["list", "queues", "--http-url", "https://h"])
        .await
        .fails(1, "https:// is not supported");
}
