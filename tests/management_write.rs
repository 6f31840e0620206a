//! The management API's operations that change things (declare, delete, purge, get, publish,
//! bind, close a connection), driven with `curl` and checked against what real AMQP clients
//! then see. The answers (status codes, error reasons, the Location header, `properties: []`)
//! are RabbitMQ 3.10's for the same requests. Run against RabbitMQ with WARREN_TEST_URL and
//! WARREN_TEST_HTTP, as tests/management_api.rs.
mod common;

use common::http::*;
use common::*;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{json, Value};

fn q_path(name: &str) -> String {
    format!("/api/queues/%2F/{name}")
}

#[tokio::test]
async fn queues_are_declared_purged_and_deleted_over_http() {
    let t = target().await;
    let q = unique("http-q");
    let body = r#"{"durable":true,"auto_delete":false,"arguments":{"x-max-length":10}}"#;
    let r = t.send("PUT", &q_path(&q), body, &[]).await;
    assert_eq!(r.status, 201, "a new queue: {}", r.body);
    let r = t.send("PUT", &q_path(&q), body, &[]).await;
    assert_eq!(r.status, 204, "the same declaration again: {}", r.body);
    let r = t
        .send(
            "PUT",
            &q_path(&q),
            r#"{"durable":false,"arguments":{"x-max-length":10}}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "bad_request", "reason": format!(
            "inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'false' but current is 'true'")})
    );
    let r = t.send("PUT", &q_path(&q), "{bad", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "bad_request", "reason": "not_json"})
    );
    let r = t
        .send("PUT", "/api/queues/no-such-vhost/x", "{}", &[])
        .await;
    assert_eq!(r.status, 404, "{}", r.body);

    let got = t.get_json(&q_path(&q)).await;
    assert_eq!(got["durable"], true);
    assert_eq!(got["arguments"], json!({"x-max-length": 10}));

    // The queue is a real one: AMQP clients see it, and what they put in, HTTP takes out.
    let conn = connect(&t.amqp).await;
    let ch = confirm_channel(&conn).await;
    for i in 0..3 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    let r = t
        .send("DELETE", &format!("{}?if-empty=true", q_path(&q)), "", &[])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        format!("queue '{q}' in vhost '/' not empty")
    );
    let r = t
        .send("DELETE", &format!("{}/contents", q_path(&q)), "", &[])
        .await;
    assert_eq!(r.status, 204, "purge: {}", r.body);
    assert_eq!(
        message_count(&ch, &q).await,
        0,
        "the purge emptied the queue"
    );

    let ch2 = channel(&conn).await;
    let _consumer = consume(&ch2, &q, false).await;
    let r = t
        .send("DELETE", &format!("{}?if-unused=true", q_path(&q)), "", &[])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        format!("queue '{q}' in vhost '/' in use")
    );
    let r = t.send("DELETE", &q_path(&q), "", &[]).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = t.get(&q_path(&q)).await;
    assert_eq!(r.status, 404, "deleted: {}", r.body);
    let r = t.send("DELETE", &q_path(&q), "", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": "Object Not Found", "reason": "Not Found"})
    );

    // amq.* names are the broker's.
    let r = t.send("PUT", "/api/queues/%2F/amq.mine", "{}", &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"error": "not_authorised", "reason": "Access refused."})
    );
}

/// Publishes `payload` through the API and returns the reply's JSON.
async fn http_publish(t: &Target, exchange: &str, key: &str, extra: Value) -> Reply {
    let mut body = json!({"properties": {}, "routing_key": key, "payload": "hello",
        "payload_encoding": "string"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    t.send(
        "POST",
        &format!("/api/exchanges/%2F/{exchange}/publish"),
        &body.to_string(),
        &[],
    )
    .await
}

#[tokio::test]
async fn messages_are_published_and_fetched_over_http() {
    let t = target().await;
    let q = unique("http-get");
    assert_eq!(t.send("PUT", &q_path(&q), "{}", &[]).await.status, 201);

    let r = http_publish(&t, "amq.default", &q, json!({})).await;
    assert_eq!((r.status, r.json()), (200, json!({"routed": true})));
    let r = http_publish(&t, "amq.default", "no-such-queue-here", json!({})).await;
    assert_eq!((r.status, r.json()), (200, json!({"routed": false})));
    let props = json!({"delivery_mode": 2, "headers": {"a": 1}, "content_type": "text/plain",
        "message_id": "m-2"});
    let r = http_publish(
        &t,
        "amq.default",
        &q,
        json!({"properties": props, "payload": "AAH+/w==", "payload_encoding": "base64"}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"routed": true})));
    let r = t
        .send(
            "POST",
            "/api/exchanges/%2F/amq.default/publish",
            r#"{"properties":{},"routing_key":"x","payload":"p"}"#,
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"error": "bad_request", "reason": "[{key_missing,payload_encoding}]"})
        )
    );
    let r = http_publish(&t, "no-such-exchange", "k", json!({})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["reason"],
        "404 NOT_FOUND - no exchange 'no-such-exchange' in vhost '/'"
    );

    // Both messages are there; ack_requeue_true hands them back, redelivered.
    let get = |body: Value| {
        let t = &t;
        let path = format!("{}/get", q_path(&q));
        async move { t.send("POST", &path, &body.to_string(), &[]).await }
    };
    let r = get(json!({"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = r.json();
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["payload"], "hello");
    assert_eq!(got[0]["payload_encoding"], "string");
    assert_eq!(got[0]["payload_bytes"], 5);
    assert_eq!(got[0]["exchange"], "");
    assert_eq!(got[0]["routing_key"], q.as_str());
    assert_eq!(got[0]["redelivered"], false);
    assert_eq!(
        got[0]["properties"],
        json!([]),
        "no properties: an empty list"
    );
    assert_eq!(got[1]["payload"], "AAH+/w==", "not UTF-8: base64");
    assert_eq!(got[1]["payload_encoding"], "base64");
    assert_eq!(got[1]["properties"], props);

    let r = get(
        json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "base64",
        "truncate": 3}),
    )
    .await;
    let got = r.json();
    assert_eq!(got[0]["redelivered"], true, "requeued by the first get");
    assert_eq!(got[0]["payload"], "aGVs", "'hel' in base64");
    assert_eq!(got[0]["payload_bytes"], 5, "the size before truncation");
    assert_eq!(got[0]["message_count"], 1, "one left");

    let r = get(json!({"count": 1, "ackmode": "reject_requeue_false", "encoding": "auto"})).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let r = get(json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"})).await;
    assert_eq!(r.json(), json!([]), "both messages are gone");

    let r = get(json!({"count": 1, "encoding": "auto"})).await;
    assert_eq!(r.json()["reason"], "[{key_missing,ackmode}]");
    let r = get(json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "hex"})).await;
    assert_eq!(
        r.json()["reason"],
        "Unsupported encoding. Please use auto or base64."
    );
}

#[tokio::test]
async fn exchanges_and_bindings_are_made_and_removed_over_http() {
    let t = target().await;
    let x = unique("http-x");
    let q = unique("http-bq");
    let xp = format!("/api/exchanges/%2F/{x}");
    let r = t
        .send("PUT", &xp, r#"{"type":"topic","durable":true}"#, &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        t.send("PUT", &xp, r#"{"type":"topic","durable":true}"#, &[])
            .await
            .status,
        204
    );
    let r = t
        .send("PUT", &xp, r#"{"type":"direct","durable":true}"#, &[])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        format!("inequivalent arg 'type' for exchange '{x}' in vhost '/': received 'direct' but current is 'topic'")
    );
    assert_eq!(t.get_json(&xp).await["type"], "topic");
    assert_eq!(
        t.send("PUT", "/api/exchanges/%2F/amq.default", "{}", &[])
            .await
            .status,
        401
    );
    assert_eq!(t.send("PUT", &q_path(&q), "{}", &[]).await.status, 201);

    // A binding: 201 with its address relative to the request, props key escaped again.
    let bp = format!("/api/bindings/%2F/e/{x}/q/{q}");
    let r = t
        .send("POST", &bp, r#"{"routing_key":"k.#","arguments":{}}"#, &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        r.headers.contains(&format!("location: {q}/k.%2523")),
        "{}",
        r.headers
    );
    let r = t
        .send(
            "POST",
            &bp,
            r#"{"routing_key":"","arguments":{"x-a":1}}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 201);
    let listed = t.get_json(&bp).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let with_args = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["routing_key"] == "")
        .unwrap();
    let key = with_args["properties_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("~"), "{key}");
    // The props key works escaped once or twice.
    assert_eq!(
        t.get_json(&format!("{bp}/k.%23")).await["routing_key"],
        "k.#"
    );
    assert_eq!(
        t.get_json(&format!("{bp}/k.%2523")).await["routing_key"],
        "k.#"
    );

    // It routes: a publish through the exchange reaches the queue.
    let r = http_publish(&t, &x, "k.anything", json!({})).await;
    assert_eq!(r.json(), json!({"routed": true}));

    let r = t
        .send("DELETE", &format!("{xp}?if-unused=true"), "", &[])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        format!("exchange '{x}' in vhost '/' in use")
    );
    assert_eq!(
        t.send("DELETE", &format!("{bp}/k.%23"), "", &[])
            .await
            .status,
        204
    );
    assert_eq!(
        t.send("DELETE", &format!("{bp}/k.%23"), "", &[])
            .await
            .status,
        404
    );
    assert_eq!(
        t.send("DELETE", &format!("{bp}/{key}"), "", &[])
            .await
            .status,
        204
    );
    assert_eq!(t.get_json(&bp).await, json!([]));
    let r = http_publish(&t, &x, "k.anything", json!({})).await;
    assert_eq!(r.json(), json!({"routed": false}), "no binding left");

    // Exchange to exchange.
    let x2 = unique("http-x2");
    assert_eq!(
        t.send(
            "PUT",
            &format!("/api/exchanges/%2F/{x2}"),
            r#"{"type":"fanout"}"#,
            &[]
        )
        .await
        .status,
        201
    );
    let r = t
        .send(
            "POST",
            &format!("/api/bindings/%2F/e/{x}/e/{x2}"),
            r#"{"routing_key":"r"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let src = t.get_json(&format!("{xp}/bindings/source")).await;
    assert_eq!(src[0]["destination"], x2.as_str());
    assert_eq!(src[0]["destination_type"], "exchange");

    assert_eq!(
        t.send("DELETE", &format!("/api/exchanges/%2F/{x2}"), "", &[])
            .await
            .status,
        204
    );
    assert_eq!(t.send("DELETE", &xp, "", &[]).await.status, 204);
    assert_eq!(t.get(&xp).await.status, 404);
    assert_eq!(t.send("DELETE", &xp, "", &[]).await.status, 404);
    assert_eq!(
        t.send("DELETE", "/api/exchanges/%2F/amq.direct", "", &[])
            .await
            .status,
        401
    );
}

/// The API's name for the connection the client named `given`.
async fn connection_named(t: &Target, given: &str) -> String {
    let list = t
        .eventually("/api/connections", "the new connection", |v| {
            v.as_array()
                .unwrap()
                .iter()
                .any(|c| c["user_provided_name"] == given)
        })
        .await;
    let c = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["user_provided_name"] == given)
        .unwrap();
    c["name"].as_str().unwrap().to_owned()
}

fn encode_path(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn closing_a_connection_over_http_tells_the_client_why() {
    let t = target().await;
    for (reason, expected) in [
        (Some("maintenance"), "CONNECTION_FORCED - maintenance"),
        (None, "CONNECTION_FORCED - Closed via management plugin"),
    ] {
        let given = unique("closed-over-http");
        let conn = lapin::Connection::connect(
            &t.amqp.url,
            lapin::ConnectionProperties::default().with_connection_name(given.as_str().into()),
        )
        .await
        .unwrap();
        let _ch = channel(&conn).await;
        let mut events = Box::pin(conn.events_listener());
        let name = connection_named(&t, &given).await;
        let path = format!("/api/connections/{}", encode_path(&name));
        let header = reason.map(|r| format!("X-Reason: {r}"));
        let extra: Vec<&str> = match &header {
            Some(h) => vec!["-H", h],
            None => vec![],
        };
        let r = t.send("DELETE", &path, "", &extra).await;
        assert_eq!(r.status, 204, "{}", r.body);
        let got = next_error_event(&mut events).await;
        assert_eq!(got, (320, expected.to_owned()), "what the client was told");
        assert_eq!(t.send("DELETE", &path, "", &[]).await.status, 404);
    }
}

#[tokio::test]
async fn consumers_are_listed_with_their_channel_and_queue() {
    let t = target().await;
    let q = unique("http-consumers");
    let conn = connect(&t.amqp).await;
    let ch = channel(&conn).await;
    declare_queue(&ch, &q).await;
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-priority".into(), AMQPValue::LongInt(3));
    let tag = unique("ctag");
    let _c = ch
        .basic_consume(
            q.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .unwrap();
    let list = t
        .eventually("/api/consumers/%2F", "the consumer", |v| {
            v.as_array()
                .unwrap()
                .iter()
                .any(|c| c["consumer_tag"] == tag.as_str())
        })
        .await;
    let c = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["consumer_tag"] == tag.as_str())
        .unwrap()
        .clone();
    assert_eq!(c["queue"], json!({"name": q, "vhost": "/"}));
    assert_eq!(c["ack_required"], true);
    assert_eq!(c["exclusive"], false);
    assert_eq!(c["prefetch_count"], 10);
    assert_eq!(c["arguments"], json!({"x-priority": 3}));
    assert_eq!(c["active"], true);
    assert_eq!(c["activity_status"], "up");
    let d = &c["channel_details"];
    assert_eq!(d["number"], 1);
    assert_eq!(d["user"], "guest");
    assert_eq!(d["peer_host"], "127.0.0.1");
    assert!(d["name"].as_str().unwrap().ends_with(" (1)"), "{d}");
    assert!(t
        .get_json("/api/consumers")
        .await
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["consumer_tag"] == tag.as_str()));

    ch.basic_cancel(tag.as_str().into(), Default::default())
        .await
        .unwrap();
    t.eventually("/api/consumers/%2F", "the consumer gone", |v| {
        !v.as_array()
            .unwrap()
            .iter()
            .any(|c| c["consumer_tag"] == tag.as_str())
    })
    .await;
    assert_eq!(t.get("/api/consumers/no-such-vhost").await.status, 404);
}

#[tokio::test]
async fn aliveness_test_round_trips_a_message() {
    let t = target().await;
    let r = t.get("/api/aliveness-test/%2F").await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = t.get("/api/aliveness-test/no-such-vhost").await;
    assert_eq!(r.status, 404, "{}", r.body);
}
