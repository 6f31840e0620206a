//! Definitions export and import in RabbitMQ's format: a file RabbitMQ 3.10.8 exported
//! (tests/data/rabbitmq-3.10.8-definitions.json) imports into Warren and works; Warren's
//! export holds the same objects and imports back. With WARREN_TEST_RABBITMQ_HTTP set (a
//! RabbitMQ management URL), Warren's export is also imported into that RabbitMQ.
mod common;

use std::collections::BTreeSet;

use common::http::*;
use common::*;
use serde_json::{json, Value};

const RABBITMQ_EXPORT: &str = include_str!("data/rabbitmq-3.10.8-definitions.json");

/// The objects of a definitions file, comparable whatever their order.
fn objects(defs: &Value, key: &str) -> BTreeSet<String> {
    defs[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {defs}"))
        .iter()
        .filter(|o| {
            let name = o.get("name").or_else(|| o.get("source")).unwrap();
            name.as_str().unwrap().starts_with("fixture-")
        })
        .map(|o| o.to_string())
        .collect()
}

async fn post_definitions(t: &Target, path: &str, body: &str) -> Reply {
    t.send("POST", path, body, &[]).await
}

#[tokio::test]
async fn a_rabbitmq_export_imports_and_exports_back_the_same() {
    let t = target().await;
    let r = post_definitions(&t, "/api/definitions", RABBITMQ_EXPORT).await;
    assert_eq!(r.status, 204, "importing RabbitMQ's export: {}", r.body);

    // What it declared works: order.* through the topic exchange reaches fixture-orders;
    // a headers match through the exchange-to-exchange binding too.
    let conn = connect(&t.amqp).await;
    let ch = confirm_channel(&conn).await;
    publish_confirmed(&ch, "fixture-events", "order.new", b"o1").await;
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "format".into(),
        lapin::types::AMQPValue::LongString("pdf".into()),
    );
    publish_confirmed_with(
        &ch,
        "fixture-events",
        "doc.a",
        b"d1",
        lapin::BasicProperties::default().with_headers(headers),
    )
    .await;
    assert_eq!(drain(&ch, "fixture-orders").await, vec!["o1", "d1"]);
    let q = t.get_json("/api/queues/%2F/fixture-orders").await;
    assert_eq!(
        q["arguments"],
        json!({"x-dead-letter-exchange": "fixture-dlx", "x-max-length": 1000})
    );

    // The export holds exactly what RabbitMQ's did.
    let r = t.get("/api/definitions").await;
    assert_eq!(r.status, 200);
    let exported = r.json();
    let original: Value = serde_json::from_str(RABBITMQ_EXPORT).unwrap();
    for key in ["queues", "exchanges", "bindings"] {
        assert_eq!(objects(&exported, key), objects(&original, key), "{key}");
    }
    assert_eq!(exported["rabbit_version"], "3.10.8");
    let guest = exported["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "guest")
        .expect("guest is exported");
    assert_eq!(guest["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert!(guest["tags"].is_array(), "tags are a list, as RabbitMQ's");
    assert!(exported["vhosts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "/"));

    // Importing it again changes nothing and is not an error; an inequivalent queue in a
    // file is skipped, as RabbitMQ skips it.
    let r = post_definitions(&t, "/api/definitions", &exported.to_string()).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let clash = json!({"queues": [{"name": "fixture-orders", "vhost": "/", "durable": false,
        "auto_delete": false, "arguments": {}}]});
    let r = post_definitions(&t, "/api/definitions", &clash.to_string()).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        t.get_json("/api/queues/%2F/fixture-orders").await["durable"],
        true
    );

    // Per vhost: no vhost fields, and it imports back into the vhost named by the path.
    let v = t.get_json("/api/definitions/%2F").await;
    assert!(v.get("users").is_none(), "{v}");
    assert!(v["queues"][0].get("vhost").is_none(), "{v}");
    assert_eq!(objects(&v, "exchanges").len(), 3);
    let r = post_definitions(&t, "/api/definitions/%2F", &v.to_string()).await;
    assert_eq!(r.status, 204, "{}", r.body);

    if let Ok(rabbit) = std::env::var("WARREN_TEST_RABBITMQ_HTTP") {
        let url = format!("{rabbit}/api/definitions");
        let body = exported.to_string();
        let r = curl(&[
            "-u",
            "guest:guest",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
            &url,
        ])
        .await;
        assert_eq!(
            r.status, 204,
            "RabbitMQ importing Warren's export: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn definitions_errors_are_answered_as_rabbitmq_answers_them() {
    let t = target().await;
    let r = t.send("POST", "/api/definitions", "{bad", &[]).await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"error": "bad_request", "reason": "failed_to_parse_json"})
        )
    );
    let r = curl(&[
        "-u",
        "guest:guest",
        "-X",
        "POST",
        "-H",
        "content-type: text/plain",
        "--data-binary",
        "{}",
        &format!("{}/api/definitions", t.http),
    ])
    .await;
    assert_eq!(r.status, 415);
    let r = t.get("/api/definitions/no-such-vhost").await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"error": "bad_request", "reason": "vhost_not_found"})
        )
    );
    let r = t.get("/api/definitions?download=defs.json").await;
    assert!(
        r.headers
            .contains("content-disposition: attachment; filename=defs.json"),
        "{}",
        r.headers
    );
}

#[tokio::test]
async fn users_vhosts_permissions_and_policies_are_imported() {
    let t = target().await;
    let vhost = unique("imported-v");
    let user = unique("imported-u");
    // guest's hash from RabbitMQ's export is of "guest": the same scheme logs in here.
    let hash = "CciT812XZXBdiq8XlKICTmR/zyPl9Rs7tycjG8QTyxKWDSrL";
    let defs = json!({
        "users": [{"name": user, "password_hash": hash,
            "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["management"],
            "limits": {"max-connections": 3}}],
        "vhosts": [{"name": vhost, "description": "imported", "tags": ["t"]}],
        "permissions": [{"user": user, "vhost": vhost, "configure": "^mine-",
            "write": ".*", "read": ".*"}],
        "topic_permissions": [{"user": user, "vhost": vhost, "exchange": "amq.topic",
            "write": "^a", "read": ".*"}],
        "queues": [{"name": "mine-q", "vhost": vhost, "durable": true, "auto_delete": false,
            "arguments": {}}],
        "policies": [{"vhost": vhost, "name": "imported-p", "pattern": "^mine-",
            "apply-to": "queues", "definition": {"max-length": 5}, "priority": 0}],
    });
    let r = post_definitions(&t, "/api/definitions", &defs.to_string()).await;
    assert_eq!(r.status, 204, "{defs}: {}", r.body);
    let u = t.get_json(&format!("/api/users/{user}")).await;
    assert_eq!(u["password_hash"], hash);
    assert_eq!(u["tags"], json!(["management"]));
    assert_eq!(u["limits"], json!({"max-connections": 3}));
    let v = t.get_json(&format!("/api/vhosts/{vhost}")).await;
    assert_eq!(v["description"], "imported");
    let q = t.get_json(&format!("/api/queues/{vhost}/mine-q")).await;
    assert_eq!(q["durable"], true);
    // Its policy came with it and is in force on the imported queue.
    let p = t
        .get_json(&format!("/api/policies/{vhost}/imported-p"))
        .await;
    assert_eq!(p["definition"], json!({"max-length": 5}));
    t.eventually(
        &format!("/api/queues/{vhost}/mine-q"),
        "the imported policy in force",
        |q| q["policy"] == "imported-p",
    )
    .await;
    // The imported user logs in with RabbitMQ's password for that hash, within its patterns.
    let base = t
        .amqp
        .url
        .replace("guest:guest@", &format!("{user}:guest@"));
    let url = format!("{}/{vhost}", &base[..base.rfind('/').unwrap()]);
    let conn = connect_url(&url).await;
    let ch = channel(&conn).await;
    declare_queue(&ch, "mine-2").await;
    let (code, _) = expect_refused(
        "outside the imported configure pattern",
        ch.queue_declare("other".into(), Default::default(), Default::default()),
    )
    .await;
    assert_eq!(code, 403);
    drop(conn);
    // Exported back as they were imported.
    let all = t.get_json("/api/definitions").await;
    let p = all["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user"] == user.as_str())
        .expect("the imported permission is exported");
    assert_eq!(p["configure"], "^mine-");
    assert!(all["topic_permissions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["user"] == user.as_str() && t["write"] == "^a"));

    // A file with an invalid policy is refused before anything in it is declared.
    if std::env::var("WARREN_TEST_URL").is_err() {
        let before = t.get_json("/api/queues").await;
        let policies = json!({"policies": [{"vhost": "/", "name": "p", "pattern": ".*",
                "definition": {"max-length": "one"}}],
            "queues": [{"name": "fixture-never", "vhost": "/", "durable": true}]});
        let r = post_definitions(&t, "/api/definitions", &policies.to_string()).await;
        assert_eq!(r.status, 400, "{}", r.body);
        let reason = r.json()["reason"].as_str().unwrap().to_owned();
        assert!(
            reason.contains("is not a valid maximum length"),
            "{reason:?}"
        );
        assert_eq!(
            t.get_json("/api/queues").await,
            before,
            "a refused import declares nothing"
        );
    }
    t.send("DELETE", &format!("/api/vhosts/{vhost}"), "", &[])
        .await;
    t.send("DELETE", &format!("/api/users/{user}"), "", &[])
        .await;
}
