//! Vhosts, users, permissions and limits: set up over the management API (as an operator
//! would, with `curl`), checked with a real AMQP client (lapin). The codes and reply texts are
//! RabbitMQ 3.10's; run against RabbitMQ with WARREN_TEST_URL and WARREN_TEST_HTTP, as
//! tests/management_api.rs, to see the same table pass there.
mod common;

use common::http::*;
use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use serde_json::json;

/// A vhost and a user with permissions in it, made over the API as guest (an administrator).
struct Tenant {
    vhost: String,
    user: String,
    password: String,
}

async fn put(t: &Target, path: &str, body: &str) {
    let r = t.send("PUT", path, body, &[]).await;
    assert!(
        r.status == 201 || r.status == 204,
        "PUT {path} {body}: {} {}",
        r.status,
        r.body
    );
}

async fn tenant(t: &Target, prefix: &str, configure: &str, write: &str, read: &str) -> Tenant {
    let vhost = unique(&format!("{prefix}-v"));
    let user = unique(&format!("{prefix}-u"));
    let password = "s3cret".to_owned();
    put(t, &format!("/api/vhosts/{vhost}"), "").await;
    put(
        t,
        &format!("/api/users/{user}"),
        &json!({"password": password, "tags": ""}).to_string(),
    )
    .await;
    put(
        t,
        &format!("/api/permissions/{vhost}/{user}"),
        &json!({"configure": configure, "write": write, "read": read}).to_string(),
    )
    .await;
    Tenant {
        vhost,
        user,
        password,
    }
}

impl Tenant {
    /// The AMQP URL of `user` (its password) in `vhost`.
    fn url_as(&self, t: &Target, user: &str, password: &str, vhost: &str) -> String {
        let base = t
            .amqp
            .url
            .replace("guest:guest@", &format!("{user}:{password}@"));
        let at = base.rfind('/').expect("a vhost in the URL");
        format!("{}/{vhost}", &base[..at])
    }

    fn url(&self, t: &Target) -> String {
        self.url_as(t, &self.user, &self.password, &self.vhost)
    }

    fn guest_url(&self, t: &Target) -> String {
        self.url_as(t, "guest", "guest", &self.vhost)
    }

    fn refused(&self, kind: &str, name: &str) -> String {
        format!(
            "ACCESS_REFUSED - access to {kind} '{name}' in vhost '{}' refused for user '{}'",
            self.vhost, self.user
        )
    }

    async fn delete(&self, t: &Target) {
        t.send("DELETE", &format!("/api/vhosts/{}", self.vhost), "", &[])
            .await;
        t.send("DELETE", &format!("/api/users/{}", self.user), "", &[])
            .await;
    }
}

/// One AMQP method in the permission table.
#[derive(Debug)]
enum Op {
    DeclareQueue(&'static str),
    DeclareQueuePassive(&'static str),
    DeclareServerNamedQueue,
    DeclareQueueWithDlx(&'static str, &'static str),
    DeleteQueue(&'static str),
    PurgeQueue(&'static str),
    BindQueue(&'static str, &'static str),
    UnbindQueue(&'static str, &'static str),
    DeclareExchange(&'static str),
    DeclareExchangePassive(&'static str),
    DeclareExchangeWithAlternate(&'static str, &'static str),
    DeleteExchange(&'static str),
    BindExchange(&'static str, &'static str),
    UnbindExchange(&'static str, &'static str),
    Publish(&'static str),
    Get(&'static str),
    Consume(&'static str),
}

async fn run(ch: &lapin::Channel, op: &Op) -> lapin::Result<()> {
    let args = FieldTable::default();
    let with = |k: &str, v: &str| {
        let mut a = FieldTable::default();
        a.insert(k.into(), AMQPValue::LongString(v.into()));
        a
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match *op {
        Op::DeclareQueue(q) => ch
            .queue_declare(q.into(), Default::default(), args)
            .await
            .map(drop),
        Op::DeclareQueuePassive(q) => ch.queue_declare(q.into(), passive, args).await.map(drop),
        Op::DeclareServerNamedQueue => ch
            .queue_declare("".into(), Default::default(), args)
            .await
            .map(drop),
        Op::DeclareQueueWithDlx(q, x) => ch
            .queue_declare(
                q.into(),
                Default::default(),
                with("x-dead-letter-exchange", x),
            )
            .await
            .map(drop),
        Op::DeleteQueue(q) => ch
            .queue_delete(q.into(), Default::default())
            .await
            .map(drop),
        Op::PurgeQueue(q) => ch.queue_purge(q.into(), Default::default()).await.map(drop),
        Op::BindQueue(q, x) => {
            ch.queue_bind(q.into(), x.into(), "k".into(), Default::default(), args)
                .await
        }
        Op::UnbindQueue(q, x) => ch.queue_unbind(q.into(), x.into(), "k".into(), args).await,
        Op::DeclareExchange(x) => {
            ch.exchange_declare(x.into(), ExchangeKind::Direct, Default::default(), args)
                .await
        }
        Op::DeclareExchangePassive(x) => {
            let o = ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            };
            ch.exchange_declare(x.into(), ExchangeKind::Direct, o, args)
                .await
        }
        Op::DeclareExchangeWithAlternate(x, ae) => {
            ch.exchange_declare(
                x.into(),
                ExchangeKind::Direct,
                Default::default(),
                with("alternate-exchange", ae),
            )
            .await
        }
        Op::DeleteExchange(x) => ch.exchange_delete(x.into(), Default::default()).await,
        Op::BindExchange(dest, src) => {
            ch.exchange_bind(
                dest.into(),
                src.into(),
                "k".into(),
                Default::default(),
                args,
            )
            .await
        }
        Op::UnbindExchange(dest, src) => {
            ch.exchange_unbind(
                dest.into(),
                src.into(),
                "k".into(),
                Default::default(),
                args,
            )
            .await
        }
        Op::Publish(x) => {
            ch.confirm_select(Default::default()).await?;
            ch.basic_publish(
                x.into(),
                "k".into(),
                Default::default(),
                b"m",
                BasicProperties::default(),
            )
            .await?
            .await
            .map(drop)
        }
        Op::Get(q) => ch
            .basic_get(q.into(), BasicGetOptions { no_ack: true })
            .await
            .map(drop),
        Op::Consume(q) => ch
            .basic_consume(q.into(), "".into(), Default::default(), args)
            .await
            .map(drop),
    }
}

#[tokio::test]
async fn every_method_checks_the_permission_rabbitmq_checks() {
    let t = target().await;
    // Names starting with "allowed" are configurable, writable and readable; the rest not.
    let tn = tenant(&t, "perm", "^allowed", "^allowed", "^allowed").await;
    // What the table works on, made by guest (who gets every permission in a vhost it
    // creates, as in RabbitMQ).
    let admin = connect_url(&tn.guest_url(&t)).await;
    let ach = channel(&admin).await;
    for q in ["allowed-q", "other-q", "allowed-doomed"] {
        ach.queue_declare(q.into(), Default::default(), FieldTable::default())
            .await
            .unwrap();
    }
    for x in ["allowed-x", "other-x"] {
        declare_exchange(&ach, x, ExchangeKind::Direct).await;
    }
    bind(&ach, "other-q", "allowed-x", "k").await;

    use Op::*;
    let v = &tn;
    let table: Vec<(Op, Option<String>)> = vec![
        (DeclareQueue("allowed-new"), None),
        (
            DeclareQueue("other-new"),
            Some(v.refused("queue", "other-new")),
        ),
        (DeclareQueue("other-q"), Some(v.refused("queue", "other-q"))),
        // Passive declares check nothing, as in RabbitMQ.
        (DeclareQueuePassive("other-q"), None),
        (
            DeclareServerNamedQueue,
            Some(v.refused("queue", "amq.gen-")),
        ),
        (
            DeclareQueueWithDlx("allowed-dl", "other-x"),
            Some(v.refused("exchange", "other-x")),
        ),
        (
            DeclareQueueWithDlx("allowed-dl", ""),
            Some(v.refused("exchange", "amq.default")),
        ),
        (DeclareQueueWithDlx("allowed-dl2", "allowed-x"), None),
        (DeleteQueue("other-q"), Some(v.refused("queue", "other-q"))),
        // Checked before the queue is looked for.
        (
            DeleteQueue("other-missing"),
            Some(v.refused("queue", "other-missing")),
        ),
        (DeleteQueue("allowed-doomed"), None),
        (PurgeQueue("other-q"), Some(v.refused("queue", "other-q"))),
        (PurgeQueue("allowed-q"), None),
        (
            BindQueue("other-q", "allowed-x"),
            Some(v.refused("queue", "other-q")),
        ),
        (
            BindQueue("allowed-q", "other-x"),
            Some(v.refused("exchange", "other-x")),
        ),
        // Both denied: the destination is reported.
        (
            BindQueue("other-q", "other-x"),
            Some(v.refused("queue", "other-q")),
        ),
        (BindQueue("allowed-q", "allowed-x"), None),
        (
            UnbindQueue("other-q", "allowed-x"),
            Some(v.refused("queue", "other-q")),
        ),
        (UnbindQueue("allowed-q", "allowed-x"), None),
        (
            DeclareExchange("other-new-x"),
            Some(v.refused("exchange", "other-new-x")),
        ),
        (DeclareExchange("allowed-new-x"), None),
        (DeclareExchangePassive("other-x"), None),
        (
            DeclareExchangeWithAlternate("allowed-ae-x", "other-x"),
            Some(v.refused("exchange", "other-x")),
        ),
        (
            DeleteExchange("other-x"),
            Some(v.refused("exchange", "other-x")),
        ),
        (
            BindExchange("other-x", "allowed-x"),
            Some(v.refused("exchange", "other-x")),
        ),
        (
            BindExchange("allowed-x", "other-x"),
            Some(v.refused("exchange", "other-x")),
        ),
        (BindExchange("allowed-new-x", "allowed-x"), None),
        (
            UnbindExchange("other-x", "allowed-x"),
            Some(v.refused("exchange", "other-x")),
        ),
        (Publish("other-x"), Some(v.refused("exchange", "other-x"))),
        (Publish(""), Some(v.refused("exchange", "amq.default"))),
        (Publish("allowed-x"), None),
        (Get("other-q"), Some(v.refused("queue", "other-q"))),
        (Get("allowed-q"), None),
        (Consume("other-q"), Some(v.refused("queue", "other-q"))),
        (Consume("allowed-q"), None),
    ];
    let conn = connect_url(&tn.url(&t)).await;
    for (op, expected) in &table {
        let ch = channel(&conn).await;
        let got = within(&format!("{op:?}"), run(&ch, op)).await;
        match (expected, got) {
            (None, Ok(())) => {}
            (None, Err(e)) => panic!("{op:?} should be allowed: {e}"),
            (Some(text), Ok(())) => panic!("{op:?} should be refused with {text}"),
            (Some(text), Err(e)) => {
                let (code, got) = amqp_error(&e);
                assert_eq!(code, 403, "{op:?}: {got}");
                if let Some(prefix) = text.strip_suffix("' in vhost") {
                    assert!(got.starts_with(prefix), "{op:?}: {got}");
                } else if text.contains("'amq.gen-'") {
                    let (head, tail) = text.split_once("amq.gen-").unwrap();
                    assert!(
                        got.starts_with(&format!("{head}amq.gen-"))
                            && got.ends_with(tail.trim_start_matches('\'')),
                        "{op:?}: {got}"
                    );
                } else {
                    assert_eq!(&got, text, "{op:?}");
                }
                // Only the channel closed.
                assert!(conn.status().connected(), "{op:?} closed the connection");
            }
        }
    }
    // The default exchange takes no bindings, whatever the permissions.
    let ch = channel(&conn).await;
    let (code, text) = expect_refused(
        "binding to the default exchange",
        ch.queue_bind(
            "allowed-q".into(),
            "".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        (code, text.as_str()),
        (
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange"
        )
    );
    drop(conn);
    drop(admin);
    tn.delete(&t).await;
}

#[tokio::test]
async fn empty_patterns_deny_and_changes_apply_to_new_channels() {
    let t = target().await;
    let tn = tenant(&t, "empty", "", "", "").await;
    let conn = connect_url(&tn.url(&t)).await;
    let ch = channel(&conn).await;
    let (code, text) = expect_refused(
        "declare with empty patterns",
        ch.queue_declare("q".into(), Default::default(), FieldTable::default()),
    )
    .await;
    assert_eq!((code, text), (403, tn.refused("queue", "q")));
    // Granted now: a new channel of the same connection may.
    put(
        &t,
        &format!("/api/permissions/{}/{}", tn.vhost, tn.user),
        r#"{"configure":".*","write":".*","read":".*"}"#,
    )
    .await;
    let ch = channel(&conn).await;
    ch.queue_declare("q".into(), Default::default(), FieldTable::default())
        .await
        .expect("allowed once granted");
    drop(conn);
    tn.delete(&t).await;
}

#[tokio::test]
async fn topic_permissions_check_routing_keys_with_variables_expanded() {
    let t = target().await;
    let tn = tenant(&t, "topic", ".*", ".*", ".*").await;
    put(
        &t,
        &format!("/api/topic-permissions/{}/{}", tn.vhost, tn.user),
        &json!({"exchange": "amq.topic", "write": "^{username}\\.", "read": "^{vhost}\\."})
            .to_string(),
    )
    .await;
    let got = t
        .get_json(&format!("/api/topic-permissions/{}/{}", tn.vhost, tn.user))
        .await;
    assert_eq!(
        got,
        json!([{"user": tn.user, "vhost": tn.vhost, "exchange": "amq.topic",
            "write": "^{username}\\.", "read": "^{vhost}\\."}])
    );
    let conn = connect_url(&tn.url(&t)).await;
    let ch = confirm_channel(&conn).await;
    ch.basic_publish(
        "amq.topic".into(),
        format!("{}.x", tn.user).as_str().into(),
        Default::default(),
        b"m",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .expect("its own user name as the prefix is allowed");
    let refused = |key: &str| {
        format!(
            "ACCESS_REFUSED - access to topic '{key}' in exchange 'amq.topic' in vhost '{}' refused for user '{}'",
            tn.vhost, tn.user
        )
    };
    let r = ch
        .basic_publish(
            "amq.topic".into(),
            "b.x".into(),
            Default::default(),
            b"m",
            BasicProperties::default(),
        )
        .await;
    let err = match r {
        Ok(confirm) => confirm.await.expect_err("b.x is refused"),
        Err(e) => e,
    };
    assert_eq!(amqp_error(&err), (403, refused("b.x")));
    // Other exchanges, and the direct ones, have no topic restrictions.
    let ch = confirm_channel(&conn).await;
    publish_confirmed(&ch, "amq.direct", "b.x", b"m").await;
    // Bindings from amq.topic check the read pattern.
    let q = declare_queue(&ch, "topic-q").await;
    ch.queue_bind(
        q.as_str().into(),
        "amq.topic".into(),
        format!("{}.#", tn.vhost).as_str().into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .expect("its vhost as the prefix is allowed");
    let (code, text) = expect_refused(
        "binding b.#",
        ch.queue_bind(
            q.as_str().into(),
            "amq.topic".into(),
            "b.#".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!((code, text), (403, refused("b.#")));
    drop(conn);
    tn.delete(&t).await;
}

/// lapin's error for a connection the broker refused.
async fn refused_connection(url: &str) -> (u16, String) {
    match within(
        "a refused connection",
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()),
    )
    .await
    {
        Ok(_) => panic!("{url}: expected the broker to refuse the connection"),
        Err(e) => amqp_error(&e),
    }
}

#[tokio::test]
async fn connection_open_is_refused_for_missing_vhosts_and_users_without_permissions() {
    let t = target().await;
    let tn = tenant(&t, "open", ".*", ".*", ".*").await;
    let missing = unique("missing");
    assert_eq!(
        refused_connection(&tn.url_as(&t, &tn.user, &tn.password, &missing)).await,
        (530, format!("NOT_ALLOWED - vhost {missing} not found"))
    );
    let r = t
        .send(
            "DELETE",
            &format!("/api/permissions/{}/{}", tn.vhost, tn.user),
            "",
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        refused_connection(&tn.url(&t)).await,
        (
            530,
            format!(
                "NOT_ALLOWED - access to vhost '{}' refused for user '{}'",
                tn.vhost, tn.user
            )
        )
    );
    assert_eq!(
        refused_connection(&tn.url_as(&t, &tn.user, "wrong", &tn.vhost)).await,
        (
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.".into()
        )
    );
    tn.delete(&t).await;
}

#[tokio::test]
async fn vhost_and_user_limits_refuse_as_rabbitmq() {
    let t = target().await;
    let tn = tenant(&t, "limits", ".*", ".*", ".*").await;
    put(
        &t,
        &format!("/api/vhost-limits/{}/max-connections", tn.vhost),
        r#"{"value":1}"#,
    )
    .await;
    put(
        &t,
        &format!("/api/vhost-limits/{}/max-queues", tn.vhost),
        r#"{"value":1}"#,
    )
    .await;
    let got = t.get_json(&format!("/api/vhost-limits/{}", tn.vhost)).await;
    assert_eq!(
        got,
        json!([{"vhost": tn.vhost, "value": {"max-connections": 1, "max-queues": 1}}])
    );
    let r = t
        .send(
            "PUT",
            &format!("/api/vhost-limits/{}/max-queues", tn.vhost),
            r#"{"value":"x"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "Validation failed\n\nmax-queues should be a number, actually was <<\"x\">>\n"
    );

    let conn = connect_url(&tn.url(&t)).await;
    assert_eq!(
        refused_connection(&tn.url(&t)).await,
        (
            530,
            format!(
                "NOT_ALLOWED - access to vhost '{}' refused for user '{}': connection limit (1) is reached",
                tn.vhost, tn.user
            )
        )
    );
    let ch = channel(&conn).await;
    declare_queue(&ch, "q1").await;
    // Declaring it again is fine at the limit; a second queue is not.
    declare_queue(&ch, "q1").await;
    let (code, text) = expect_refused(
        "a queue over max-queues",
        ch.queue_declare("q2".into(), Default::default(), FieldTable::default()),
    )
    .await;
    assert_eq!(
        (code, text),
        (
            406,
            format!(
                "PRECONDITION_FAILED - cannot declare queue 'q2': queue limit in vhost '{}' (1) is reached",
                tn.vhost
            )
        )
    );
    drop(conn);

    // max-channels closes the whole connection.
    let r = t
        .send(
            "DELETE",
            &format!("/api/vhost-limits/{}/max-connections", tn.vhost),
            "",
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    put(
        &t,
        &format!("/api/user-limits/{}/max-channels", tn.user),
        r#"{"value":1}"#,
    )
    .await;
    let got = t.get_json(&format!("/api/user-limits/{}", tn.user)).await;
    assert_eq!(
        got,
        json!([{"user": tn.user, "value": {"max-channels": 1}}])
    );
    let conn = connect_url(&tn.url(&t)).await;
    let _first = channel(&conn).await;
    let err = within("a second channel", conn.create_channel())
        .await
        .expect_err("over max-channels");
    assert_eq!(
        amqp_error(&err),
        (
            530,
            format!(
                "NOT_ALLOWED - number of channels opened for user '{}' has reached the maximum allowed user limit of (1)",
                tn.user
            )
        )
    );
    wait_connection_dead(&conn).await;
    tn.delete(&t).await;
}

#[tokio::test]
async fn deleting_a_vhost_or_user_closes_its_connections_and_takes_everything_with_it() {
    let t = target().await;
    let tn = tenant(&t, "del", ".*", ".*", ".*").await;
    let conn = connect_url(&tn.url(&t)).await;
    let ch = confirm_channel(&conn).await;
    declare_queue(&ch, "kept").await;
    publish_confirmed(&ch, "", "kept", b"m").await;
    let mut events = conn.events_listener();
    let r = t
        .send("DELETE", &format!("/api/vhosts/{}", tn.vhost), "", &[])
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    if std::env::var("WARREN_TEST_URL").is_err() {
        // RabbitMQ sends the same close, but resets the socket at once: lapin often sees only
        // the reset there.
        assert_eq!(
            next_error_event(&mut events).await,
            (
                320,
                format!("CONNECTION_FORCED - vhost '{}' is deleted", tn.vhost)
            )
        );
    } else {
        wait_connection_dead(&conn).await;
    }
    let r = t.get(&format!("/api/queues/{}", tn.vhost)).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        t.send("DELETE", &format!("/api/vhosts/{}", tn.vhost), "", &[])
            .await
            .status,
        404
    );
    // Created again, it is empty.
    put(&t, &format!("/api/vhosts/{}", tn.vhost), "").await;
    let r = t.get_json(&format!("/api/queues/{}", tn.vhost)).await;
    assert_eq!(r, json!([]));
    put(
        &t,
        &format!("/api/permissions/{}/{}", tn.vhost, tn.user),
        r#"{"configure":".*","write":".*","read":".*"}"#,
    )
    .await;
    let conn = connect_url(&tn.url(&t)).await;
    let mut events = conn.events_listener();
    let r = t
        .send("DELETE", &format!("/api/users/{}", tn.user), "", &[])
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        next_error_event(&mut events).await,
        (
            320,
            format!("CONNECTION_FORCED - user '{}' is deleted", tn.user)
        )
    );
    assert_eq!(t.get(&format!("/api/users/{}", tn.user)).await.status, 404);
    tn.delete(&t).await;
}

/// Base64 of a 4-byte salt and SHA-256 of salt and password: RabbitMQ's scheme, computed here
/// independently of the broker (with `sha256sum`).
async fn rabbit_hash(password: &str) -> String {
    let salt = [0x90u8, 0x8d, 0xc6, 0x0a];
    let mut input = salt.to_vec();
    input.extend_from_slice(password.as_bytes());
    let dir = temp_dir("hash");
    let path = dir.join("in");
    std::fs::write(&path, &input).unwrap();
    let out = tokio::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .await
        .unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.split_whitespace().next().unwrap();
    let digest: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut all = salt.to_vec();
    all.extend_from_slice(&digest);
    std::fs::write(&path, &all).unwrap();
    let out = tokio::process::Command::new("base64")
        .args(["-w0"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(unique(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn users_are_managed_as_rabbitmq_manages_them() {
    let t = target().await;
    let name = unique("api-user");
    let path = format!("/api/users/{name}");
    let r = t.send("PUT", &path, r#"{"password":"x"}"#, &[]).await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"error":"bad_request","reason":"tags_not_present"})
        )
    );
    let r = t
        .send(
            "PUT",
            &path,
            r#"{"password":"x","password_hash":"abc","tags":""}"#,
            &[],
        )
        .await;
    assert_eq!(
        r.json()["reason"],
        "both_password_and_password_hash_are_provided"
    );
    // A hash made the way RabbitMQ makes them logs in.
    let hash = rabbit_hash("from-rabbit").await;
    let body = json!({"password_hash": hash, "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": "monitoring, management"});
    let r = t.send("PUT", &path, &body.to_string(), &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = t.send("PUT", &path, &body.to_string(), &[]).await;
    assert_eq!(r.status, 204);
    let got = t.get_json(&path).await;
    assert_eq!(got["password_hash"], hash);
    assert_eq!(got["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert_eq!(got["tags"], json!(["monitoring", "management"]));
    put(
        &t,
        &format!("/api/permissions/%2F/{name}"),
        r#"{"configure":"","write":"","read":".*"}"#,
    )
    .await;
    let conn = connect_url(
        &t.amqp
            .url
            .replace("guest:guest@", &format!("{name}:from-rabbit@")),
    )
    .await;
    drop(conn);

    // A management user: its own whoami, not the user list.
    let as_user = |p: &str| {
        let url = format!("{}{p}", t.http);
        let cred = format!("{name}:from-rabbit");
        async move { curl(&["-u", &cred, &url]).await }
    };
    let r = as_user("/api/whoami").await;
    assert_eq!(
        r.json(),
        json!({"name": name, "tags": ["monitoring", "management"]})
    );
    let r = as_user("/api/users").await;
    assert_eq!(
        (r.status, r.json()),
        (
            401,
            json!({"error":"not_authorised","reason":"Not administrator user"})
        )
    );
    // Permissions: read back, bad patterns refused.
    let got = t.get_json(&format!("/api/permissions/%2F/{name}")).await;
    let entry = json!({"user": name, "vhost": "/", "configure": "", "write": "", "read": ".*"});
    assert_eq!(got, entry);
    assert_eq!(
        t.get_json(&format!("/api/users/{name}/permissions")).await,
        json!([entry])
    );
    let of_vhost = t.get_json("/api/vhosts/%2F/permissions").await;
    assert!(of_vhost.as_array().unwrap().contains(&entry), "{of_vhost}");
    assert_eq!(
        t.get("/api/users/no-such-user/permissions").await.status,
        404
    );
    let r = t
        .send(
            "PUT",
            &format!("/api/permissions/%2F/{name}"),
            r#"{"configure":".*","write":".*"}"#,
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (400, json!("[{key_missing,read}]"))
    );
    let r = t
        .send(
            "PUT",
            &format!("/api/permissions/no-such-vhost/{name}"),
            r#"{"configure":".*","write":".*","read":".*"}"#,
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (400, json!("vhost_or_user_not_found"))
    );
    let r = t
        .send(
            "PUT",
            &format!("/api/permissions/%2F/{name}"),
            r#"{"configure":"(","write":".*","read":".*"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // No tags: no API at all.
    put(&t, &path, r#"{"password":"plain","tags":""}"#).await;
    let r = curl(&[
        "-u",
        &format!("{name}:plain"),
        &format!("{}/api/whoami", t.http),
    ])
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            401,
            json!({"error":"not_authorised","reason":"Not management user"})
        )
    );
    let r = t.send("DELETE", &path, "", &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(t.send("DELETE", &path, "", &[]).await.status, 404);
}

#[tokio::test]
async fn vhosts_are_created_described_and_listed() {
    let t = target().await;
    let name = unique("api-vhost");
    let path = format!("/api/vhosts/{name}");
    let r = t
        .send(
            "PUT",
            &path,
            r#"{"description":"my desc","tags":"a,b"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = t
        .send("PUT", &path, r#"{"description":"other"}"#, &[])
        .await;
    assert_eq!(r.status, 204);
    let got = t.get_json(&path).await;
    assert_eq!(got["name"], name.as_str());
    assert_eq!(got["description"], "other");
    // A PUT replaces the metadata: tags not given are gone, as in RabbitMQ.
    assert_eq!(got["tags"], json!([]));
    let r = t
        .send(
            "PUT",
            &path,
            r#"{"description":"other","tags":["a","b"]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(t.get_json(&path).await["tags"], json!(["a", "b"]));
    let all = t.get_json("/api/vhosts").await;
    assert_eq!(find(&all, &name)["description"], "other");
    // Its creator may use it at once.
    let got = t.get_json(&format!("/api/permissions/{name}/guest")).await;
    assert_eq!(got["configure"], ".*");
    let url = {
        let base = &t.amqp.url;
        let at = base.rfind('/').unwrap();
        format!("{}/{name}", &base[..at])
    };
    let conn = connect_url(&url).await;
    let ch = channel(&conn).await;
    declare_queue(&ch, "in-new-vhost").await;
    // Isolated: "/" does not see it.
    let r = t.get("/api/queues/%2F/in-new-vhost").await;
    assert_eq!(r.status, 404);
    drop(conn);
    assert_eq!(t.send("DELETE", &path, "", &[]).await.status, 204);
}

#[tokio::test]
async fn users_vhosts_and_permissions_survive_a_restart() {
    if std::env::var("WARREN_TEST_URL").is_ok() {
        return; // Restarts the broker it started.
    }
    let dir = temp_dir("tenancy-restart");
    let config = || {
        let mut c = warren::Config::ephemeral();
        c.persistence = true;
        c.data_dir = dir.clone();
        c
    };
    let broker = warren::Broker::start(config()).await.unwrap();
    let access = broker.access().clone();
    access
        .put_vhost("kept", Some("d".into()), None, None, None)
        .unwrap();
    access.put_vhost("gone", None, None, None, None).unwrap();
    access
        .put_user("app", Some("pw"), None, vec!["management".into()])
        .unwrap();
    access
        .set_permission(warren::access::PermissionRecord {
            user: "app".into(),
            vhost: "kept".into(),
            configure: "^app-".into(),
            write: ".*".into(),
            read: ".*".into(),
        })
        .unwrap();
    access
        .set_vhost_limit("kept", "max-queues", Some(5))
        .unwrap();
    assert!(access.delete_vhost("gone").await.unwrap());
    drop(access);
    broker.shutdown().await;

    let broker = warren::Broker::start(config()).await.unwrap();
    let access = broker.access();
    assert!(broker.registry().vhost("kept").is_some());
    assert!(broker.registry().vhost("gone").is_none());
    assert!(broker.registry().vhost("/").is_some());
    let kept = broker.registry().vhost("kept").unwrap();
    assert_eq!(kept.def().description, "d");
    assert_eq!(kept.limit("max-queues"), Some(5));
    let app = access.user("app").expect("app is kept");
    assert_eq!(app.tags, vec!["management".to_owned()]);
    assert_eq!(access.permission("kept", "app").unwrap().configure, "^app-");
    // Its password works over AMQP; guest was seeded on the first start only, and is kept.
    let url = format!("amqp://app:pw@{}/kept", broker.local_addr());
    let conn = connect_url(&url).await;
    let ch = channel(&conn).await;
    let (code, _) = expect_refused(
        "outside its configure pattern",
        ch.queue_declare("other".into(), Default::default(), FieldTable::default()),
    )
    .await;
    assert_eq!(code, 403);
    drop(conn);
    assert!(access.user("guest").is_some());
    // What this test still holds of the broker goes first: shutdown waits for the store.
    drop(kept);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
