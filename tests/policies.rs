//! Policies and operator policies, as RabbitMQ's: set through the management API, they apply
//! to existing and new queues and exchanges at once, the highest priority wins, the lower of
//! a numeric limit wins between argument, policy and operator policy, other client arguments
//! win over the policy, and clearing a policy lifts it. With WARREN_TEST_URL and
//! WARREN_TEST_HTTP set (RabbitMQ's AMQP and management URLs) the shared tests run against
//! RabbitMQ, which applies policies asynchronously too (hence the polling).
mod cli_support;
mod common;

use std::time::Duration;

use common::http::{find, target, Target};
use common::*;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use serde_json::{json, Value};

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn is_warren(t: &Target) -> bool {
    t.amqp.broker.is_some()
}

async fn set_policy(t: &Target, kind: &str, name: &str, body: Value) -> u16 {
    let r = t
        .send(
            "PUT",
            &format!("/api/{kind}/%2F/{name}"),
            &body.to_string(),
            &[],
        )
        .await;
    assert!(
        r.status == 201 || r.status == 204,
        "PUT {kind}/{name}: {} {}",
        r.status,
        r.body
    );
    r.status
}

async fn clear_policy(t: &Target, kind: &str, name: &str) {
    let r = t
        .send("DELETE", &format!("/api/{kind}/%2F/{name}"), "", &[])
        .await;
    assert_eq!(r.status, 204, "DELETE {kind}/{name}: {}", r.body);
}

async fn queue(ch: &Channel, name: &str, args: FieldTable) {
    within(
        "queue.declare",
        ch.queue_declare(name.into(), QueueDeclareOptions::default(), args),
    )
    .await
    .expect("queue.declare");
}

async fn publish_n(ch: &Channel, queue: &str, from: u32, to: u32) {
    for i in from..to {
        publish(ch, "", queue, i.to_string().as_bytes()).await;
    }
}

/// Polls until the queue's ready count satisfies `check`.
async fn wait_count(ch: &Channel, queue: &str, what: &str, check: impl Fn(u32) -> bool) -> u32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = message_count(ch, queue).await;
        if check(n) {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: queue {queue} has {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The queue as the API lists it, once its policy shows `name` (RabbitMQ applies them
/// asynchronously).
async fn queue_with_policy(t: &Target, queue: &str, name: Option<&str>) -> Value {
    t.eventually(
        &format!("/api/queues/%2F/{queue}"),
        "the queue's policy",
        |q| q["policy"].as_str().filter(|s| !s.is_empty()) == name,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_applies_to_existing_and_new_queues_at_once_and_clearing_it_lifts_it() {
    let t = target().await;
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    let prefix = unique("pol-len");
    let (q1, q2) = (format!("{prefix}-1"), format!("{prefix}-2"));
    queue(&ch, &q1, FieldTable::default()).await;
    publish_n(&ch, &q1, 0, 10).await;
    wait_message_count(&ch, &q1, 10).await;

    let name = unique("limit");
    let status = set_policy(
        &t,
        "policies",
        &name,
        json!({"pattern": format!("^{prefix}-"), "apply-to": "queues", "definition": {"max-length": 3}}),
    )
    .await;
    assert_eq!(status, 201, "a new policy is created");
    // The existing queue drops its oldest messages at once.
    wait_count(&ch, &q1, "the existing queue follows the policy", |n| {
        n == 3
    })
    .await;
    assert_eq!(
        drain(&ch, &q1).await,
        ["7", "8", "9"],
        "drop-head keeps the newest"
    );
    let q = queue_with_policy(&t, &q1, Some(&name)).await;
    assert_eq!(q["effective_policy_definition"], json!({"max-length": 3}));
    assert_eq!(
        q["arguments"],
        json!({}),
        "the queue's own arguments are unchanged"
    );

    // A queue declared afterwards gets it too.
    queue(&ch, &q2, FieldTable::default()).await;
    publish_n(&ch, &q2, 0, 10).await;
    wait_count(&ch, &q2, "a new queue gets the policy", |n| n == 3).await;

    // Setting it again replaces it (204), and the new limit applies.
    let status = set_policy(
        &t,
        "policies",
        &name,
        json!({"pattern": format!("^{prefix}-"), "apply-to": "queues", "definition": {"max-length": 1}}),
    )
    .await;
    assert_eq!(status, 204, "a replaced policy answers 204");
    wait_count(&ch, &q2, "the replaced policy", |n| n == 1).await;

    let listed = t.get_json("/api/policies/%2F").await;
    let p = find(&listed, &name);
    assert_eq!(p["pattern"], json!(format!("^{prefix}-")));
    assert_eq!(p["apply-to"], "queues");
    assert_eq!(p["priority"], 0);
    assert_eq!(p["definition"], json!({"max-length": 1}));
    assert_eq!(p["vhost"], "/");
    assert_eq!(
        t.get_json(&format!("/api/policies/%2F/{name}")).await["name"],
        json!(name)
    );

    clear_policy(&t, "policies", &name).await;
    queue_with_policy(&t, &q2, None).await;
    publish_n(&ch, &q2, 10, 15).await;
    wait_count(&ch, &q2, "no limit once the policy is cleared", |n| n == 6).await;
    assert_eq!(
        t.get(&format!("/api/policies/%2F/{name}")).await.status,
        404
    );
    let r = t
        .send("DELETE", &format!("/api/policies/%2F/{name}"), "", &[])
        .await;
    assert_eq!(r.status, 404, "deleting a missing policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_priority_wins_and_arguments_meet_policies_as_in_rabbitmq() {
    let t = target().await;
    let conn = connect(&t.amqp).await;
    let ch = confirm_channel(&conn).await;
    let prefix = unique("pol-prio");
    let (low, high) = (unique("low"), unique("high"));
    set_policy(
        &t,
        "policies",
        &low,
        json!({"pattern": format!("^{prefix}"), "priority": 1,
        "apply-to": "queues", "definition": {"max-length": 5, "overflow": "reject-publish"}}),
    )
    .await;
    set_policy(
        &t,
        "policies",
        &high,
        json!({"pattern": format!("^{prefix}"), "priority": 2,
        "apply-to": "queues", "definition": {"max-length": 2, "overflow": "reject-publish"}}),
    )
    .await;

    // Only the highest-priority policy applies: at most 2, the third publish is refused.
    let plain = format!("{prefix}-plain");
    queue(&ch, &plain, FieldTable::default()).await;
    queue_with_policy(&t, &plain, Some(&high)).await;
    let mut acks = Vec::new();
    for i in 0..3 {
        let c = publish_confirmed_outcome(&ch, &plain, i).await;
        acks.push(c);
    }
    assert_eq!(acks, [true, true, false], "reject-publish from the policy");

    // A lower x-max-length of its own wins (the lower limit wins, as RabbitMQ's res_min)...
    let own_lower = format!("{prefix}-lower");
    queue(
        &ch,
        &own_lower,
        table(&[("x-max-length", AMQPValue::LongInt(1))]),
    )
    .await;
    queue_with_policy(&t, &own_lower, Some(&high)).await;
    let outcome = [
        publish_confirmed_outcome(&ch, &own_lower, 0).await,
        publish_confirmed_outcome(&ch, &own_lower, 1).await,
    ];
    assert_eq!(outcome, [true, false], "its own lower limit");

    // ... a higher one does not; and its own x-overflow wins over the policy's.
    let own = format!("{prefix}-own");
    queue(
        &ch,
        &own,
        table(&[
            ("x-max-length", AMQPValue::LongInt(10)),
            ("x-overflow", AMQPValue::LongString("drop-head".into())),
        ]),
    )
    .await;
    queue_with_policy(&t, &own, Some(&high)).await;
    for i in 0..5 {
        assert!(
            publish_confirmed_outcome(&ch, &own, i).await,
            "drop-head, its own overflow, never refuses"
        );
    }
    wait_message_count(&ch, &own, 2).await;
    assert_eq!(drain(&ch, &own).await, ["3", "4"]);

    clear_policy(&t, "policies", &high).await;
    clear_policy(&t, "policies", &low).await;
}

/// Publishes `i` to `queue` with confirms: whether the broker acked it.
async fn publish_confirmed_outcome(ch: &Channel, queue: &str, i: u32) -> bool {
    let c = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            i.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    within("a confirm", c).await.expect("confirm").is_ack()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_policy_caps_what_policies_and_arguments_set() {
    let t = target().await;
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    let prefix = unique("pol-op");
    let (user, op) = (unique("user"), unique("op"));
    set_policy(
        &t,
        "policies",
        &user,
        json!({"pattern": format!("^{prefix}"), "apply-to": "queues",
        "definition": {"max-length": 100, "message-ttl": 60000}}),
    )
    .await;
    set_policy(
        &t,
        "operator-policies",
        &op,
        json!({"pattern": format!("^{prefix}"),
        "apply-to": "queues", "definition": {"max-length": 3, "message-ttl": 600000}}),
    )
    .await;
    let q = format!("{prefix}-q");
    queue(&ch, &q, table(&[("x-max-length", AMQPValue::LongInt(50))])).await;
    let listed = t
        .eventually(
            &format!("/api/queues/%2F/{q}"),
            "both policies in force",
            |v| v["operator_policy"] == json!(op) && v["policy"] == json!(user),
        )
        .await;
    assert_eq!(
        listed["effective_policy_definition"],
        json!({"max-length": 3, "message-ttl": 60000}),
        "the lower of each limit"
    );
    publish_n(&ch, &q, 0, 10).await;
    wait_count(&ch, &q, "the operator's cap", |n| n == 3).await;

    let ops = t.get_json("/api/operator-policies").await;
    assert_eq!(find(&ops, &op)["definition"]["max-length"], 3);
    if is_warren(&t) {
        // Operator policies hold limits only (RabbitMQ 3.10 accepts and ignores others).
        let r = t
            .send(
                "PUT",
                &format!("/api/operator-policies/%2F/{}", unique("bad")),
                &json!({"pattern": ".", "definition": {"dead-letter-exchange": "x"}}).to_string(),
                &[],
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            r.body.contains("are not recognised policy settings"),
            "{}",
            r.body
        );
    }
    clear_policy(&t, "operator-policies", &op).await;
    clear_policy(&t, "policies", &user).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_dead_lettering_and_alternate_exchanges_come_from_policies() {
    let t = target().await;
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    let prefix = unique("pol-dl");
    let dlx = format!("{prefix}-dlx");
    let dlq = format!("{prefix}-dead");
    declare_exchange(&ch, &dlx, ExchangeKind::Fanout).await;
    queue(&ch, &dlq, FieldTable::default()).await;
    bind(&ch, &dlq, &dlx, "").await;
    let work = format!("{prefix}-work");
    queue(&ch, &work, FieldTable::default()).await;
    let p = unique("dl");
    set_policy(
        &t,
        "policies",
        &p,
        json!({"pattern": format!("^{work}$"), "apply-to": "queues",
        "definition": {"message-ttl": 50, "dead-letter-exchange": dlx}}),
    )
    .await;
    queue_with_policy(&t, &work, Some(&p)).await;
    publish(&ch, "", &work, b"expires").await;
    wait_message_count(&ch, &dlq, 1).await;
    let got = within(
        "basic.get",
        ch.basic_get(dlq.as_str().into(), Default::default()),
    )
    .await
    .unwrap()
    .expect("the dead letter");
    let headers = got
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    let reason = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => match a.as_slice().first() {
            Some(AMQPValue::FieldTable(t)) => match t.inner().get("reason") {
                Some(AMQPValue::LongString(s)) => {
                    String::from_utf8_lossy(s.as_bytes()).into_owned()
                }
                other => format!("{other:?}"),
            },
            other => format!("{other:?}"),
        },
        other => format!("{other:?}"),
    };
    assert_eq!(reason, "expired", "x-death says why");

    // An alternate exchange from a policy on an exchange.
    let x = format!("{prefix}-x");
    let ae = format!("{prefix}-ae");
    let unrouted = format!("{prefix}-unrouted");
    within(
        "exchange.declare",
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    declare_exchange(&ch, &ae, ExchangeKind::Fanout).await;
    queue(&ch, &unrouted, FieldTable::default()).await;
    bind(&ch, &unrouted, &ae, "").await;
    let ap = unique("ae");
    set_policy(
        &t,
        "policies",
        &ap,
        json!({"pattern": format!("^{x}$"), "apply-to": "exchanges",
        "definition": {"alternate-exchange": ae}}),
    )
    .await;
    t.eventually(
        &format!("/api/exchanges/%2F/{x}"),
        "the exchange's policy",
        |v| v["policy"] == json!(ap),
    )
    .await;
    publish(&ch, &x, "nobody", b"unroutable").await;
    wait_message_count(&ch, &unrouted, 1).await;
    clear_policy(&t, "policies", &ap).await;
    clear_policy(&t, "policies", &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies_are_refused_with_rabbitmqs_reasons() {
    let t = target().await;
    for (body, needle) in [
        (
            json!({"pattern": ".", "definition": {"message-ttl": "soon"}}),
            "is not a valid message TTL",
        ),
        (
            json!({"pattern": ".", "definition": {"max-length": -1}}),
            "is not a valid maximum length",
        ),
        (
            json!({"pattern": ".", "definition": {"overflow": "sometimes"}}),
            "is not a valid overflow value",
        ),
        (
            json!({"pattern": ".", "definition": {"no-such-setting": 1}}),
            "are not recognised policy settings",
        ),
        (
            json!({"pattern": ".", "apply-to": "topics", "definition": {"max-length": 1}}),
            "apply-to 'topics' unrecognised",
        ),
        (json!({"pattern": "(", "definition": {"max-length": 1}}), ""),
    ] {
        let name = unique("bad");
        let r = t
            .send(
                "PUT",
                &format!("/api/policies/%2F/{name}"),
                &body.to_string(),
                &[],
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(needle), "{body}: {}", r.body);
        assert_eq!(
            t.get(&format!("/api/policies/%2F/{name}")).await.status,
            404
        );
    }
    if is_warren(&t) {
        // Settings RabbitMQ has and Warren does not are refused, not silently ignored.
        let r = t
            .send(
                "PUT",
                &format!("/api/policies/%2F/{}", unique("ha")),
                &json!({"pattern": ".", "definition": {"ha-mode": "all"}}).to_string(),
                &[],
            )
            .await;
        assert_eq!(r.status, 400);
        assert!(r.body.contains("does not implement"), "{}", r.body);
        let r = t
            .send(
                "PUT",
                "/api/policies/no-such-vhost/p",
                &json!({"pattern": ".", "definition": {"max-length": 1}}).to_string(),
                &[],
            )
            .await;
        assert_eq!(r.status, 404, "{}", r.body);
    }
}

/// Queues follow policy changes while a publisher floods them: after each change, every queue
/// comes within the new limit and stays there; clearing the policy lets them grow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_follow_policy_changes_under_load() {
    let t = target().await;
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    let prefix = unique("pol-load");
    let queues: Vec<String> = (0..3).map(|i| format!("{prefix}-{i}")).collect();
    for q in &queues {
        queue(&ch, q, FieldTable::default()).await;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let conn = connect(&t.amqp).await;
        let queues = queues.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let ch = confirm_channel(&conn).await;
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut confirms = Vec::new();
                for q in &queues {
                    for _ in 0..20 {
                        confirms.push(
                            ch.basic_publish(
                                "".into(),
                                q.as_str().into(),
                                BasicPublishOptions::default(),
                                b"x",
                                BasicProperties::default(),
                            )
                            .await
                            .expect("publish"),
                        );
                    }
                }
                for c in confirms {
                    assert!(
                        c.await.expect("confirm").is_ack(),
                        "drop-head never refuses"
                    );
                    sent += 1;
                }
            }
            sent
        })
    };
    let name = unique("load");
    for limit in [200u32, 20, 75] {
        set_policy(
            &t,
            "policies",
            &name,
            json!({"pattern": format!("^{prefix}-"),
            "apply-to": "queues", "definition": {"max-length": limit}}),
        )
        .await;
        for q in &queues {
            wait_count(&ch, q, &format!("within {limit}"), |n| n <= limit).await;
        }
        // And it stays within it while the flood goes on. The count of a declare-ok
        // includes publishes on their way to the queue (as RabbitMQ's does): at most one
        // batch of the publisher's.
        for _ in 0..10 {
            for q in &queues {
                let n = message_count(&ch, q).await;
                assert!(n <= limit + 20, "{q} has {n}, over the limit {limit}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    clear_policy(&t, "policies", &name).await;
    for q in &queues {
        wait_count(&ch, q, "growing without the policy", |n| n > 300).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = within("the publisher", publisher).await.unwrap();
    assert!(sent > 0);
    for q in &queues {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
}

/// Warren only (a data directory): policies survive a restart, a stream's retention follows
/// its policy, and definitions export and import policies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_survive_a_restart_and_travel_in_definitions() {
    let dir = std::env::temp_dir().join(unique("policies-restart"));
    let start_at = |dir: std::path::PathBuf| async move {
        let mut c = warren::Config::ephemeral();
        c.persistence = true;
        c.data_dir = dir;
        common::http::target_with(c).await
    };
    let policy = json!({"pattern": "^kept", "apply-to": "queues", "priority": 7,
        "definition": {"max-length": 2}});
    let op = json!({"pattern": "^kept", "apply-to": "queues", "definition": {"max-length": 1000}});
    {
        let t = start_at(dir.clone()).await;
        set_policy(&t, "policies", "keep", policy.clone()).await;
        set_policy(&t, "operator-policies", "cap", op.clone()).await;
        let conn = connect(&t.amqp).await;
        let ch = channel(&conn).await;
        declare_durable_queue(&ch, "kept").await;
        let _ = conn.close(200, "bye".into()).await;
        t.amqp.broker.unwrap().shutdown().await;
    }
    let t = start_at(dir.clone()).await;
    let p = t.get_json("/api/policies/%2F/keep").await;
    assert_eq!(p["definition"], policy["definition"]);
    assert_eq!(p["priority"], 7);
    let q = t.get_json("/api/queues/%2F/kept").await;
    assert_eq!(q["policy"], "keep");
    assert_eq!(q["operator_policy"], "cap");
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    publish_n(&ch, "kept", 0, 5).await;
    wait_count(&ch, "kept", "the recovered policy", |n| n == 2).await;

    // A stream's retention follows a policy set after it was declared.
    let stream = unique("stream");
    within(
        "stream declare",
        ch.queue_declare(
            stream.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            table(&[
                ("x-queue-type", AMQPValue::LongString("stream".into())),
                (
                    "x-stream-max-segment-size-bytes",
                    AMQPValue::LongLongInt(20_000),
                ),
            ]),
        ),
    )
    .await
    .unwrap();
    let pch = confirm_channel(&conn).await;
    for i in 0..100 {
        publish_confirmed(&pch, "", &stream, format!("{i:0>1000}").as_bytes()).await;
    }
    let before = t.get_json(&format!("/api/queues/%2F/{stream}")).await["messages"].clone();
    assert_eq!(before, 100);
    set_policy(
        &t,
        "policies",
        "short",
        json!({"pattern": format!("^{stream}$"),
        "apply-to": "streams", "definition": {"max-length-bytes": 30_000}}),
    )
    .await;
    t.eventually(
        &format!("/api/queues/%2F/{stream}"),
        "old segments dropped by the policy's retention",
        |q| q["messages"].as_u64().is_some_and(|n| n < 60),
    )
    .await;

    // Export carries them; import into a fresh broker sets them there.
    let defs = t.get_json("/api/definitions").await;
    let exported = find(&defs["policies"], "keep");
    assert_eq!(exported["vhost"], "/");
    assert_eq!(exported["apply-to"], "queues");
    assert_eq!(
        find(&defs["operator_policies"], "cap")["definition"]["max-length"],
        1000
    );
    let fresh = target().await;
    let r = fresh
        .send("POST", "/api/definitions", &defs.to_string(), &[])
        .await;
    assert!(
        r.status == 204 || r.status == 200,
        "{} {}",
        r.status,
        r.body
    );
    assert_eq!(
        fresh.get_json("/api/policies/%2F/keep").await["definition"],
        policy["definition"]
    );
    assert_eq!(
        fresh.get_json("/api/queues/%2F/kept").await["policy"],
        "keep"
    );
    // An import with a bad policy changes nothing.
    let bad = json!({"policies": [{"vhost": "/", "name": "bad", "pattern": ".",
        "definition": {"message-ttl": -5}}], "queues": [{"vhost": "/", "name": "not-made",
        "durable": true, "auto_delete": false, "arguments": {}}]});
    let r = fresh
        .send("POST", "/api/definitions", &bad.to_string(), &[])
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(fresh.get("/api/queues/%2F/not-made").await.status, 404);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `warren policy set|list|clear`, checked by what a queue does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_lists_and_clears_policies() {
    let t = target().await;
    let http_url = t.http.replacen("http://", "http://guest:guest@", 1);
    let run = |args: Vec<String>| {
        let url = t.amqp.url.clone();
        let http_url = http_url.clone();
        async move {
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            all.extend(["--http-url", &http_url]);
            cli_support::warren(&url, &all).await
        }
    };
    let prefix = unique("pol-cli");
    let name = unique("cli");
    let s = |v: &str| v.to_owned();
    run(vec![
        s("policy"),
        s("set"),
        name.clone(),
        format!("^{prefix}"),
        s(r#"{"max-length": 4}"#),
        s("--apply-to"),
        s("queues"),
        s("--priority"),
        s("3"),
    ])
    .await
    .ok();
    let r = run(vec![s("policy"), s("list"), s("--format"), s("tsv")])
        .await
        .ok();
    assert!(
        r.lines().iter().any(|l| l.starts_with(&format!(
            "/\t{name}\t^{prefix}\tqueues\t{{\"max-length\":4}}\t3"
        ))),
        "{r}"
    );
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    let q = format!("{prefix}-q");
    queue(&ch, &q, FieldTable::default()).await;
    publish_n(&ch, &q, 0, 10).await;
    wait_count(&ch, &q, "the policy set from the CLI", |n| n == 4).await;
    // A bad definition is the API's 400, said plainly.
    run(vec![
        s("policy"),
        s("set"),
        unique("bad"),
        s("."),
        s(r#"{"max-length": "many"}"#),
    ])
    .await
    .fails(1, "is not a valid maximum length");
    run(vec![s("policy"), s("clear"), name.clone()]).await.ok();
    publish_n(&ch, &q, 10, 20).await;
    wait_count(&ch, &q, "no limit once cleared", |n| n == 14).await;
    let r = run(vec![s("policy"), s("list"), s("--format"), s("tsv")])
        .await
        .ok();
    assert!(!r.to_string().contains(&name), "{r}");
}
