//! The management HTTP API and the Prometheus endpoint, driven with `curl` against a broker
//! with real AMQP clients on it. The same tests run against RabbitMQ with its management
//! plugin (`WARREN_TEST_URL=amqp://guest:guest@127.0.0.1:5674/%2f
//! WARREN_TEST_HTTP=http://127.0.0.1:15673`), so each checked field means what it means there.
mod common;

use std::time::Duration;

use common::http::*;
use common::*;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;

#[tokio::test]
async fn queues_show_their_depth_consumers_and_flags() {
    let t = target().await;
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    let q = unique("api-depth");
    declare_durable_queue(&ch, &q).await;
    for i in 0..3 {
        publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    let path = format!("/api/queues/%2F/{q}");
    let v = t
        .eventually(&path, "3 ready messages", |v| v["messages_ready"] == 3)
        .await;
    assert_eq!(v["name"], q.as_str());
    assert_eq!(v["vhost"], "/");
    assert_eq!(v["type"], "classic");
    assert_eq!(v["durable"], true);
    assert_eq!(v["auto_delete"], false);
    assert_eq!(v["exclusive"], false);
    assert_eq!(v["arguments"], serde_json::json!({}));
    assert_eq!(v["state"], "running");
    assert_eq!(v["messages"], 3);
    assert_eq!(v["messages_unacknowledged"], 0);
    assert_eq!(v["consumers"], 0);
    assert!(v["node"].is_string());

    // Two of them delivered and held unacked by a consumer with prefetch 2.
    let consumer_ch = channel(&conn).await;
    consumer_ch
        .basic_qos(2, BasicQosOptions::default())
        .await
        .unwrap();
    let _consumer = consumer_ch
        .basic_consume(
            q.as_str().into(),
            "api-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let v = t
        .eventually(&path, "2 unacked, 1 ready, 1 consumer", |v| {
            v["messages_unacknowledged"] == 2 && v["messages_ready"] == 1 && v["consumers"] == 1
        })
        .await;
    assert_eq!(v["messages"], 3);

    // The list has it too, with the same fields; a paged list has RabbitMQ's envelope.
    let all = t.get_json("/api/queues").await;
    assert_eq!(find(&all, &q)["messages"], 3);
    let mine = t.get_json("/api/queues/%2F").await;
    assert_eq!(find(&mine, &q)["durable"], true);
    let paged = t
        .get_json(&format!("/api/queues/%2F?page=1&page_size=1&name={q}"))
        .await;
    for key in [
        "filtered_count",
        "item_count",
        "items",
        "page",
        "page_count",
        "page_size",
        "total_count",
    ] {
        assert!(paged.get(key).is_some(), "no {key} in {paged}");
    }
    assert_eq!(paged["filtered_count"], 1);
    assert_eq!(paged["items"][0]["name"], q.as_str());
    let r = t.get("/api/queues?page=1&page_size=501").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_pagination_parameters");
    let cols = t.get_json("/api/queues/%2F?columns=name,messages").await;
    assert_eq!(
        find(&cols, &q),
        &serde_json::json!({"name": q.as_str(), "messages": 3})
    );
}

#[tokio::test]
async fn errors_are_answered_as_rabbitmq_answers_them() {
    let t = target().await;
    let r = t.get("/api/queues/%2F/no-such-queue-here").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "Object Not Found", "reason": "Not Found"})
    );
    let r = t.get("/api/vhosts/no-such-vhost").await;
    assert_eq!(r.status, 404);
    let r = t.get("/api/no-such-endpoint").await;
    assert_eq!(r.status, 404);

    // No credentials: 401 and a challenge; wrong ones: 401 with RabbitMQ's body.
    let r = curl(&[&format!("{}/api/overview", t.http)]).await;
    assert_eq!(r.status, 401);
    assert!(
        r.headers
            .contains("www-authenticate: basic realm=\"rabbitmq management\""),
        "{}",
        r.headers
    );
    let r = curl(&["-u", "guest:wrong", &format!("{}/api/overview", t.http)]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "not_authorized", "reason": "Login failed"})
    );
}

#[tokio::test]
async fn overview_counts_objects_and_messages() {
    let t = target().await;
    let before = t.get_json("/api/overview").await;
    for key in [
        "product_name",
        "product_version",
        "rabbitmq_version",
        "node",
        "cluster_name",
        "object_totals",
        "queue_totals",
        "message_stats",
        "listeners",
    ] {
        assert!(before.get(key).is_some(), "no {key} in the overview");
    }
    let published_before = before["message_stats"]["publish"].as_u64().unwrap_or(0);
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("api-overview")).await;
    for _ in 0..5 {
        publish(&ch, "", &q, b"x").await;
    }
    let v = t
        .eventually("/api/overview", "5 more publishes", |v| {
            v["message_stats"]["publish"].as_u64().unwrap_or(0) >= published_before + 5
        })
        .await;
    // RabbitMQ lists only the statistics that have counted something; Warren all of them.
    let warren = v["product_name"] == "Warren";
    for stat in [
        "publish",
        "deliver_get",
        "ack",
        "confirm",
        "redeliver",
        "deliver_no_ack",
        "drop_unroutable",
        "return_unroutable",
    ] {
        let rate = &v["message_stats"][format!("{stat}_details")]["rate"];
        assert!(
            rate.is_number() || (!warren && rate.is_null()),
            "no {stat}_details.rate"
        );
    }
    assert!(v["object_totals"]["connections"].as_u64().unwrap() >= 1);
    assert!(v["object_totals"]["channels"].as_u64().unwrap() >= 1);
    assert!(v["object_totals"]["queues"].as_u64().unwrap() >= 1);
    assert!(v["object_totals"]["exchanges"].as_u64().unwrap() >= 6);
    assert!(v["queue_totals"]["messages_ready"].as_u64().unwrap() >= 5);
    assert!(v["queue_totals"]["messages_ready_details"]["rate"].is_number());
    let amqp = v["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["protocol"] == "amqp")
        .expect("the AMQP listener");
    assert_eq!(amqp["port"], t.amqp.addr.port());
    let me = t.get_json("/api/whoami").await;
    assert_eq!(me["name"], "guest");
    assert!(me["tags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("administrator")));
    let vhosts = t.get_json("/api/vhosts").await;
    assert_eq!(find(&vhosts, "/")["name"], "/");
    let users = t.get_json("/api/users").await;
    let guest = find(&users, "guest");
    assert_eq!(guest["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert!(guest["password_hash"].is_string());
    let perms = t.get_json("/api/permissions").await;
    assert!(perms
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["user"] == "guest" && p["vhost"] == "/" && p["configure"] == ".*"));
    let alarms = t.get("/api/health/checks/alarms").await;
    assert_eq!(alarms.status, 200);
    assert_eq!(alarms.json()["status"], "ok");
    let port = t.amqp.addr.port();
    let r = t
        .get(&format!("/api/health/checks/port-listener/{port}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = t.get("/api/health/checks/port-listener/1").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["status"], "failed");
}

#[tokio::test]
async fn message_rates_come_from_samples_five_seconds_apart() {
    let t = target().await;
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("api-rates")).await;
    // Publish steadily for a little over one sampling interval.
    let until = tokio::time::Instant::now() + Duration::from_millis(6500);
    while tokio::time::Instant::now() < until {
        for _ in 0..20 {
            publish(&ch, "", &q, b"r").await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = format!("/api/queues/%2F/{q}");
    let v = t
        .eventually(&path, "a publish rate", |v| {
            v["message_stats"]["publish_details"]["rate"]
                .as_f64()
                .is_some_and(|r| r > 0.0)
        })
        .await;
    assert!(v["messages_ready"].as_u64().unwrap() > 0);
    let o = t.get_json("/api/overview").await;
    assert!(
        o["message_stats"]["publish_details"]["rate"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[tokio::test]
async fn exchanges_and_bindings_are_listed_with_properties_keys() {
    let t = target().await;
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    let x = unique("api-x");
    declare_exchange(&ch, &x, ExchangeKind::Direct).await;
    let q = declare_queue(&ch, &unique("api-bound")).await;
    bind(&ch, &q, &x, "k").await;
    let mut args = FieldTable::default();
    args.insert("n".into(), lapin::types::AMQPValue::LongInt(42));
    bind_with(&ch, &q, &x, "k2", args).await;

    let xs = t.get_json("/api/exchanges/%2F").await;
    let default = find(&xs, "");
    assert_eq!(default["type"], "direct");
    assert_eq!(default["durable"], true);
    assert_eq!(find(&xs, "amq.topic")["type"], "topic");
    let mine = t.get_json(&format!("/api/exchanges/%2F/{x}")).await;
    assert_eq!(mine["type"], "direct");
    assert_eq!(mine["durable"], false);
    assert_eq!(mine["internal"], false);
    let d = t.get_json("/api/exchanges/%2F/amq.default").await;
    assert_eq!(d["name"], "");

    let from_x = t
        .get_json(&format!("/api/exchanges/%2F/{x}/bindings/source"))
        .await;
    let from_x = from_x.as_array().unwrap();
    assert_eq!(from_x.len(), 2, "{from_x:?}");
    let plain = from_x.iter().find(|b| b["routing_key"] == "k").unwrap();
    assert_eq!(plain["source"], x.as_str());
    assert_eq!(plain["destination"], q.as_str());
    assert_eq!(plain["destination_type"], "queue");
    assert_eq!(plain["properties_key"], "k");
    let with_args = from_x.iter().find(|b| b["routing_key"] == "k2").unwrap();
    assert_eq!(with_args["arguments"], serde_json::json!({"n": 42}));
    let key = with_args["properties_key"].as_str().unwrap();
    assert!(
        key.starts_with("k2~") && key.len() == "k2~".len() + 6,
        "RabbitMQ's shape: key, ~, 6 characters of hash: {key}"
    );
    // The queue's bindings include the default exchange's implicit one.
    let to_q = t.get_json(&format!("/api/queues/%2F/{q}/bindings")).await;
    let to_q = to_q.as_array().unwrap();
    assert_eq!(to_q.len(), 3, "{to_q:?}");
    let implicit = to_q.iter().find(|b| b["source"] == "").unwrap();
    assert_eq!(implicit["routing_key"], q.as_str());
    assert_eq!(implicit["properties_key"], q.as_str());
    let all = t.get_json("/api/bindings/%2F").await;
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["source"] == x.as_str() && b["routing_key"] == "k"));
}

#[tokio::test]
async fn connections_and_channels_say_who_is_connected() {
    let t = target().await;
    let name = unique("api-conn");
    let conn = Connection::connect(
        &t.amqp.url,
        ConnectionProperties::default().with_connection_name(name.as_str().into()),
    )
    .await
    .expect("connecting");
    let ch = channel(&conn).await;
    ch.basic_qos(7, BasicQosOptions::default()).await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _c = ch
        .basic_consume(
            q.name().as_str().into(),
            "tag".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let conns = t
        .eventually("/api/connections", "the named connection", |v| {
            v.as_array().unwrap().iter().any(|c| {
                c["client_properties"]["connection_name"] == name.as_str() && c["channels"] == 1
            })
        })
        .await;
    let c = conns
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_properties"]["connection_name"] == name.as_str())
        .unwrap();
    assert_eq!(c["user"], "guest");
    assert_eq!(c["vhost"], "/");
    assert_eq!(c["protocol"], "AMQP 0-9-1");
    assert_eq!(c["user_provided_name"], name.as_str());
    assert_eq!(c["peer_host"], "127.0.0.1");
    assert!(c["peer_port"].as_u64().unwrap() > 0);
    assert!(c["connected_at"].as_u64().unwrap() > 1_600_000_000_000);
    let cname = c["name"].as_str().unwrap().to_owned();
    assert!(cname.contains(" -> "), "{cname}");
    let one = t
        .get_json(&format!(
            "/api/connections/{}",
            cname.replace(' ', "%20").replace('>', "%3E")
        ))
        .await;
    assert_eq!(one["name"], cname.as_str());

    let chans = t
        .eventually(
            "/api/channels",
            "its channel's consumer and prefetch",
            |v| {
                v.as_array().unwrap().iter().any(|c| {
                    c["connection_details"]["name"] == cname.as_str()
                        && c["consumer_count"] == 1
                        && c["prefetch_count"] == 7
                })
            },
        )
        .await;
    let chan = chans
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connection_details"]["name"] == cname.as_str())
        .unwrap();
    assert_eq!(chan["number"], 1);
    assert_eq!(chan["name"], format!("{cname} (1)"));
    assert_eq!(chan["user"], "guest");
    assert_eq!(chan["confirm"], false);
    conn.close(200, "bye".into()).await.ok();
}

#[tokio::test]
async fn prometheus_metrics_use_rabbitmqs_names_and_parse() {
    let t = target().await;
    let Some(prom) = t.prometheus.clone() else {
        eprintln!("SKIPPED: no Prometheus endpoint given (WARREN_TEST_PROMETHEUS)");
        return;
    };
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("prom")).await;
    for _ in 0..4 {
        publish(&ch, "", &q, b"p").await;
    }
    wait_message_count(&ch, &q, 4).await;
    let value = |text: &str, metric: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(metric) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    // RabbitMQ's queue metrics lag by its 5 s statistics interval; Warren's do not.
    let mut r = curl(&[&format!("{prom}/metrics")]).await;
    for _ in 0..150 {
        if value(&r.body, "rabbitmq_queue_messages_ready ").is_some_and(|v| v >= 4.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = curl(&[&format!("{prom}/metrics")]).await;
    }
    assert_eq!(r.status, 200);
    assert!(
        r.headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.headers
    );
    for family in [
        "rabbitmq_identity_info",
        "rabbitmq_build_info",
        "rabbitmq_connections",
        "rabbitmq_channels",
        "rabbitmq_consumers",
        "rabbitmq_queues",
        "rabbitmq_connections_opened_total",
        "rabbitmq_channels_closed_total",
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked",
        "rabbitmq_queue_messages",
        "rabbitmq_queue_consumers",
        "rabbitmq_global_messages_received_total",
        "rabbitmq_global_messages_delivered_total",
        "rabbitmq_global_messages_acknowledged_total",
        "rabbitmq_process_resident_memory_bytes",
        "rabbitmq_process_open_fds",
        "rabbitmq_process_max_fds",
    ] {
        assert!(
            r.body.contains(&format!("# TYPE {family} ")),
            "no {family} in /metrics"
        );
    }
    assert!(value(&r.body, "rabbitmq_queue_messages_ready ").unwrap() >= 4.0);
    assert!(value(&r.body, "rabbitmq_global_messages_received_total").unwrap() >= 4.0);
    let per = curl(&[&format!("{prom}/metrics/per-object")]).await;
    let line = format!("rabbitmq_queue_messages_ready{{vhost=\"/\",queue=\"{q}\"}} 4");
    assert!(
        per.body.contains(&line),
        "no {line:?} in /metrics/per-object"
    );

    // Prometheus' own checker accepts the exposition (`promtool`, Debian package prometheus),
    // lint included. (RabbitMQ's own fails its lint: two erlang_mnesia counters lack _total.)
    if r.body.contains("product_name=\"Warren\"") {
        promtool_accepts(&r.body);
    }
}

/// The value of the sample of `metric` whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} sample in /metrics"))
}

#[tokio::test]
async fn prometheus_counts_queues_routing_and_dead_letters() {
    let t = target().await;
    let Some(prom) = t.prometheus.clone() else {
        eprintln!("SKIPPED: no Prometheus endpoint given (WARREN_TEST_PROMETHEUS)");
        return;
    };
    let metrics = || async { curl(&[&format!("{prom}/metrics")]).await.body };
    let rejected = "rabbitmq_global_messages_dead_lettered_rejected_total{queue_type=\"rabbit_classic_queue\",dead_letter_strategy=\"at_most_once\"}";
    let read = |text: &str| {
        [
            sample(text, "rabbitmq_queues_declared_total "),
            sample(text, "rabbitmq_queues_created_total "),
            sample(text, "rabbitmq_queues_deleted_total "),
            sample(text, "rabbitmq_global_messages_received_confirm_total{"),
            sample(text, "rabbitmq_global_messages_routed_total{"),
            sample(text, rejected),
        ]
    };
    let before = read(&metrics().await);

    let conn = connect(&t.amqp).await;
    let ch = confirm_channel(&conn).await;
    let dead = declare_queue(&ch, &unique("prom-dead")).await;
    let q = unique("prom-work");
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        lapin::types::AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        lapin::types::AMQPValue::LongString(dead.as_str().into()),
    );
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        args.clone(),
    )
    .await
    .unwrap();
    // Declared again, the same: declared, not created.
    ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    for _ in 0..3 {
        publish_confirmed(&ch, "", &q, b"m").await;
    }
    publish_confirmed(&ch, "", &unique("prom-nowhere"), b"lost").await;
    let got = ch
        .basic_get(q.as_str().into(), Default::default())
        .await
        .unwrap()
        .expect("a message");
    got.delivery
        .acker
        .reject(lapin::options::BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    wait_message_count(&ch, &dead, 1).await;
    ch.queue_delete(q.as_str().into(), Default::default())
        .await
        .unwrap();

    // RabbitMQ's counters reach /metrics within its 5 s statistics interval.
    let expected = [3.0, 2.0, 1.0, 4.0, 3.0, 1.0];
    let mut delta = [0.0; 6];
    for _ in 0..150 {
        let now = read(&metrics().await);
        delta = std::array::from_fn(|i| now[i] - before[i]);
        if delta == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        delta, expected,
        "declared, created, deleted, received_confirm, routed, dead-lettered (rejected)"
    );
}

#[tokio::test]
async fn detailed_metrics_give_the_families_and_vhosts_asked_for() {
    let t = target().await;
    let Some(prom) = t.prometheus.clone() else {
        eprintln!("SKIPPED: no Prometheus endpoint given (WARREN_TEST_PROMETHEUS)");
        return;
    };
    let conn = connect(&t.amqp).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("detailed")).await;
    publish_confirmed(&ch, "", &q, b"1").await;
    publish_confirmed(&ch, "", &q, b"2").await;
    let url = format!(
        "{prom}/metrics/detailed?family=queue_coarse_metrics&family=connection_churn_metrics&vhost=%2F"
    );
    let line = format!("rabbitmq_detailed_queue_messages_ready{{vhost=\"/\",queue=\"{q}\"}} 2");
    let mut body = String::new();
    for _ in 0..150 {
        body = curl(&[&url]).await.body;
        if body.contains(&line) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(body.contains(&line), "no {line:?} in {body}");
    // connection_churn_metrics holds every churn counter, as RabbitMQ 3.10's does.
    assert!(body.contains("# TYPE rabbitmq_detailed_connections_opened_total counter"));
    assert!(body.contains("# TYPE rabbitmq_detailed_queues_declared_total counter"));
    assert!(
        !body.contains("rabbitmq_detailed_queue_consumers"),
        "a family not asked for"
    );
    assert!(body.contains("rabbitmq_identity_info{"));
    let other = curl(&[&format!(
        "{prom}/metrics/detailed?family=queue_coarse_metrics&vhost=no-such-vhost"
    )])
    .await
    .body;
    assert!(!other.contains(&q), "another vhost's queue: {other}");
}

/// promtool's verdict on an exposition (`check metrics`, lint included).
fn promtool_accepts(text: &str) {
    let file = std::env::temp_dir().join(format!("{}.prom", unique("metrics")));
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool (tests/run-all.sh installs it: apt prometheus)");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn detailed_metrics_have_the_per_object_families() {
    let t = target().await;
    let Some(prom) = t.prometheus.clone() else {
        eprintln!("SKIPPED: no Prometheus endpoint given (WARREN_TEST_PROMETHEUS)");
        return;
    };
    let conn = connect(&t.amqp).await;
    let ch = confirm_channel(&conn).await;
    let q = unique("detailed-objects");
    declare_durable_queue(&ch, &q).await;
    let x = unique("detailed-x");
    declare_exchange(&ch, &x, ExchangeKind::Direct).await;
    bind(&ch, &q, &x, "k").await;
    let persistent = lapin::BasicProperties::default().with_delivery_mode(2);
    for _ in 0..3 {
        publish_confirmed_with(&ch, &x, "k", &[b'b'; 100], persistent.clone()).await;
    }
    // Two of the three go to a consumer with prefetch 2 and stay unacknowledged.
    let consumer_ch = channel(&conn).await;
    consumer_ch
        .basic_qos(2, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consume(&consumer_ch, &q, false).await;
    next_delivery(&mut consumer).await;
    next_delivery(&mut consumer).await;

    let families = [
        "queue_metrics",
        "connection_coarse_metrics",
        "connection_metrics",
        "channel_metrics",
        "exchange_names",
        "exchange_bindings",
        "vhost_status",
        "node_coarse_metrics",
        "node_metrics",
    ];
    let url = format!(
        "{prom}/metrics/detailed?{}",
        families.map(|f| format!("family={f}")).join("&")
    );
    let at = format!("{{vhost=\"/\",queue=\"{q}\"}}");
    let expected = [
        format!("rabbitmq_detailed_queue_consumers{at} 1"),
        format!("rabbitmq_detailed_queue_messages_ready_bytes{at} 100"),
        format!("rabbitmq_detailed_queue_messages_unacked_bytes{at} 200"),
        format!("rabbitmq_detailed_queue_messages_bytes{at} 300"),
        format!("rabbitmq_detailed_queue_messages_persistent{at} 3"),
        format!(
            "rabbitmq_cluster_exchange_bindings{{vhost=\"/\",exchange=\"{x}\",type=\"direct\"}} 1"
        ),
        format!("rabbitmq_cluster_exchange_name{{vhost=\"/\",exchange=\"{x}\",type=\"direct\"}} 1"),
        "rabbitmq_cluster_vhost_status{vhost=\"/\"} 1".to_owned(),
    ];
    // What is missing from an exposition, if anything. Per connection and per channel, the
    // samples are labelled `channel`, as RabbitMQ labels both.
    let missing = |body: &str| -> Option<String> {
        if let Some(l) = expected
            .iter()
            .find(|l| !body.lines().any(|b| b == l.as_str()))
        {
            return Some(format!("no {l:?}"));
        }
        if body.contains("exchange=\"\"") {
            return Some("the default exchange is listed".into());
        }
        let samples = |name: &str| -> Vec<f64> {
            body.lines()
                .filter(|l| l.starts_with(&format!("{name}{{channel=")))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect()
        };
        let checks: [(&str, bool); 6] = [
            (
                "incoming bytes",
                samples("rabbitmq_detailed_connection_incoming_bytes_total")
                    .iter()
                    .any(|&v| v > 0.0),
            ),
            (
                "outgoing bytes",
                !samples("rabbitmq_detailed_connection_outgoing_bytes_total").is_empty(),
            ),
            (
                "2 channels",
                samples("rabbitmq_detailed_connection_channels").contains(&2.0),
            ),
            (
                "a consumer",
                samples("rabbitmq_detailed_channel_consumers").contains(&1.0),
            ),
            (
                "2 unacked",
                samples("rabbitmq_detailed_channel_messages_unacked").contains(&2.0),
            ),
            (
                "prefetch 2",
                samples("rabbitmq_detailed_consumer_prefetch").contains(&2.0),
            ),
        ];
        checks
            .iter()
            .find(|(_, ok)| !ok)
            .map(|(what, _)| format!("no sample with {what}"))
    };
    // RabbitMQ refreshes its statistics every 5 s.
    let mut body = String::new();
    for _ in 0..150 {
        body = curl(&[&url]).await.body;
        if missing(&body).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(what) = missing(&body) {
        panic!("{what} in {body}");
    }
    for node in [
        "rabbitmq_detailed_process_open_fds ",
        "rabbitmq_detailed_process_resident_memory_bytes ",
        "rabbitmq_detailed_process_max_fds ",
        "rabbitmq_detailed_resident_memory_limit_bytes ",
        "rabbitmq_detailed_disk_space_available_limit_bytes ",
    ] {
        assert!(body.contains(node), "no {node:?} in {body}");
    }
    if body.contains("product_name=\"Warren\"") {
        promtool_accepts(&body);
    }
}

#[tokio::test]
async fn channels_show_what_a_transaction_holds() {
    let t = target().await;
    let conn = connect(&t.amqp).await;
    let plain = confirm_channel(&conn).await;
    let q = declare_queue(&plain, &unique("api-tx")).await;
    publish_confirmed(&plain, "", &q, b"to ack").await;
    let tx = channel(&conn).await;
    tx.tx_select().await.unwrap();
    for body in [b"held 1", b"held 2"] {
        publish(&tx, "", &q, body).await;
    }
    let got = tx
        .basic_get(
            q.as_str().into(),
            lapin::options::BasicGetOptions::default(),
        )
        .await
        .unwrap()
        .expect("the committed message");
    got.ack(lapin::options::BasicAckOptions::default())
        .await
        .unwrap();
    let holds = |c: &Value, publishes: u64, acks: u64| {
        c["transactional"] == true
            && c["messages_uncommitted"] == publishes
            && c["acks_uncommitted"] == acks
    };
    // RabbitMQ's channel statistics arrive every 5 s.
    t.eventually(
        "/api/channels",
        "the channel's uncommitted publishes and acks",
        |list: &Value| list.as_array().unwrap().iter().any(|c| holds(c, 2, 1)),
    )
    .await;
    if let Some(prom) = &t.prometheus {
        let body = curl(&[&format!("{prom}/metrics/detailed?family=channel_metrics")])
            .await
            .body;
        for name in [
            "rabbitmq_detailed_channel_messages_uncommitted",
            "rabbitmq_detailed_channel_acks_uncommitted",
            "rabbitmq_detailed_channel_messages_unconfirmed",
        ] {
            assert!(
                body.contains(&format!("# TYPE {name} gauge")),
                "{name}: {body}"
            );
        }
    }
    tx.tx_commit().await.unwrap();
    t.eventually(
        "/api/channels",
        "nothing held after commit",
        |list: &Value| {
            let list = list.as_array().unwrap();
            !list.iter().any(|c| holds(c, 2, 1)) && list.iter().any(|c| holds(c, 0, 0))
        },
    )
    .await;
    assert_eq!(message_count(&plain, &q).await, 2, "the two held publishes");
}

#[tokio::test]
async fn messages_persistent_counts_persistent_messages_of_durable_queues() {
    let t = target().await;
    let conn = connect(&t.amqp).await;
    let ch = confirm_channel(&conn).await;
    let durable = unique("api-persistent");
    declare_durable_queue(&ch, &durable).await;
    let transient = declare_queue(&ch, &unique("api-transient")).await;
    let persistent = lapin::BasicProperties::default().with_delivery_mode(2);
    for q in [&durable, &transient] {
        publish_confirmed_with(&ch, "", q, b"p1", persistent.clone()).await;
        publish_confirmed(&ch, "", q, b"t1").await;
        publish_confirmed_with(&ch, "", q, b"p2", persistent.clone()).await;
    }
    let path = format!("/api/queues/%2F/{durable}");
    let has = |n: u64, unacked: u64| {
        move |v: &Value| v["messages_persistent"] == n && v["messages_unacknowledged"] == unacked
    };
    t.eventually(&path, "2 persistent of 3", has(2, 0)).await;
    t.eventually(
        &format!("/api/queues/%2F/{transient}"),
        "none in a transient queue",
        |v| v["messages"] == 3 && v["messages_persistent"] == 0,
    )
    .await;
    // Delivered and not acked: still held, still counted.
    let got = ch
        .basic_get(durable.as_str().into(), Default::default())
        .await
        .unwrap()
        .expect("p1");
    t.eventually(&path, "p1 unacked, still counted", has(2, 1))
        .await;
    got.delivery.acker.ack(Default::default()).await.unwrap();
    t.eventually(&path, "p1 acked", has(1, 0)).await;
    ch.queue_purge(durable.as_str().into(), Default::default())
        .await
        .unwrap();
    t.eventually(&path, "purged", has(0, 0)).await;
}
