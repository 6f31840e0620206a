//! Claims the README makes that no other test proves, one test each, named after the claim:
//! - `max_message_size`: a larger body is refused with 406, the connection stays;
//! - the handshake timeout: a client that sends the protocol header and then nothing is
//!   disconnected;
//! - a stream needs a data directory: an embedded broker without one answers 540;
//! - `basic.recover-async` with requeue=true redelivers unacked messages flagged redelivered;
//!   requeue=false (recover and recover-async) is 540 NOT_IMPLEMENTED, as RabbitMQ;
//! - `[[users]]` replace guest (refused with 403) and `loopback_only = false` lets a user in;
//! - unknown TOML keys are an error that names the key;
//! - SIGTERM of the real binary sends connection.close 320 CONNECTION_FORCED to its clients.
//!
//! CLI exit code 130 (publish interrupted) is proven in `cli_interrupt.rs`.

mod binary;
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use common::*;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::BasicProperties;
use warren::config::UserConfig;

/// Starts an embedded broker with `config` (an ephemeral one the test modified).
async fn start_with(config: warren::Config) -> (warren::Broker, SocketAddr) {
    let broker = warren::Broker::start(config)
        .await
        .expect("starting an embedded broker");
    let addr = broker.local_addr();
    (broker, addr)
}

fn test_broker(broker: warren::Broker) -> TestBroker {
    TestBroker {
        url: broker.url(),
        addr: broker.local_addr(),
        broker: Some(broker),
    }
}

#[tokio::test]
async fn max_message_size_larger_body_is_refused_with_406() {
    let mut config = warren::Config::ephemeral();
    config.max_message_size = 1000;
    let (broker, _) = start_with(config).await;
    let broker = test_broker(broker);
    let conn = connect(&broker).await;
    let mut events = conn.events_listener();
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("max-size")).await;

    // At the limit: accepted.
    let ok_ch = confirm_channel(&conn).await;
    publish_confirmed(&ok_ch, "", &q, &[b'a'; 1000]).await;

    publish(&ch, "", &q, &[b'x'; 2000]).await;
    let (code, text) = next_error_event(&mut events).await;
    assert_eq!(code, 406, "{text}");
    assert!(text.starts_with("PRECONDITION_FAILED"), "{text}");
    assert_only_channel_closed(&conn, &ch).await;
    assert_eq!(
        message_count(&ok_ch, &q).await,
        1,
        "only the 1000-byte body"
    );
}

#[tokio::test]
async fn handshake_timeout_disconnects_a_silent_client() {
    let mut config = warren::Config::ephemeral();
    config.handshake_timeout_ms = 300;
    let (broker, addr) = start_with(config).await;
    let mut raw = RawConn::tcp(addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    raw.read_start().await;
    // Then nothing: the broker must hang up on its own. The bound is generous (not a timing
    // assertion) yet half the 10 s default, so a broker that ignored the setting fails.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match raw.recv_timeout(left).await {
            None => panic!("the broker kept a silent client past the handshake timeout"),
            Some(Incoming::Eof) => break,
            Some(Incoming::Frame(_)) => continue,
        }
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_stream_needs_a_data_directory() {
    if std::env::var("WARREN_TEST_URL").is_ok() {
        return; // About Warren's embedded broker without a data directory.
    }
    let broker = start().await; // Config::ephemeral: no data directory
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("stream")),
    );
    let name = unique("stream");
    let (code, text) = expect_refused(
        "queue.declare x-queue-type=stream",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        ),
    )
    .await;
    assert_eq!(code, 540, "{text}");
    assert!(
        text.starts_with("NOT_IMPLEMENTED") && text.contains("streams need a data directory"),
        "{text}"
    );
    broker.broker.expect("the embedded broker").shutdown().await;
}

/// A raw connection with channel 1 consuming (manual acks) from a queue holding `bodies`.
/// Returns the connection and the delivery tags of the first deliveries.
async fn raw_consumer_with_unacked(broker: &TestBroker, bodies: &[&str]) -> (RawConn, Vec<u64>) {
    let q = unique("recover-async");
    let conn = connect(broker).await;
    let ch = confirm_channel(&conn).await;
    within(
        "queue.declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.declare");
    for b in bodies {
        publish_confirmed(&ch, "", &q, b.as_bytes()).await;
    }

    let mut raw = RawConn::open(broker.addr).await;
    raw.open_channel(1).await;
    raw.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: q.as_str().into(),
            consumer_tag: "c1".into(),
            ..Default::default()
        })),
    )
    .await;
    match raw.recv_method().await {
        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)) => {}
        other => panic!("expected basic.consume-ok, got {other:?}"),
    }
    let first = recv_deliveries(&mut raw, bodies.len()).await;
    assert!(
        first.iter().all(|(_, redelivered)| !redelivered),
        "{first:?}"
    );
    let _ = within("connection.close", conn.close(200, "bye".into())).await;
    (raw, first.into_iter().map(|(tag, _)| tag).collect())
}

/// Reads `n` basic.deliver on channel 1 (skipping their content frames): (tag, redelivered).
async fn recv_deliveries(raw: &mut RawConn, n: usize) -> Vec<(u64, bool)> {
    let mut out = Vec::new();
    while out.len() < n {
        match raw.recv().await {
            Incoming::Frame(AMQPFrame::Method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Deliver(d)),
            )) => out.push((d.delivery_tag, d.redelivered)),
            Incoming::Frame(AMQPFrame::Method(ch, m)) => {
                panic!("expected basic.deliver, got {m:?} on channel {ch}")
            }
            Incoming::Frame(_) => continue, // content header, body, heartbeat
            Incoming::Eof => panic!("the broker closed the socket; expected deliveries"),
        }
    }
    out
}

const BASIC: u16 = 60;
const RECOVER_ASYNC: u16 = 100;
const RECOVER: u16 = 110;

#[tokio::test]
async fn basic_recover_async_requeue_true_redelivers_unacked_messages() {
    let broker = start().await;
    let (mut raw, first) = raw_consumer_with_unacked(&broker, &["one", "two"]).await;
    // basic.recover-async has no reply: the redeliveries are the answer.
    raw.send_bytes(&raw_method_frame(1, BASIC, RECOVER_ASYNC, &[1]))
        .await;
    let again = recv_deliveries(&mut raw, 2).await;
    assert!(
        again.iter().all(|(_, redelivered)| *redelivered),
        "{again:?}"
    );
    // Delivery tags keep counting on the channel.
    assert!(
        again.iter().all(|(tag, _)| !first.contains(tag)),
        "{first:?} then {again:?}"
    );
}

#[tokio::test]
async fn basic_recover_requeue_false_is_540_not_implemented() {
    for (method, name) in [(RECOVER_ASYNC, "recover-async"), (RECOVER, "recover")] {
        let broker = start().await;
        let (mut raw, _) = raw_consumer_with_unacked(&broker, &["one"]).await;
        raw.send_bytes(&raw_method_frame(1, BASIC, method, &[0]))
            .await;
        let close = raw.expect_connection_close().await;
        assert_eq!(close.reply_code, 540, "{name}: {close:?}");
        assert!(
            close.reply_text.starts_with("NOT_IMPLEMENTED"),
            "{name}: {close:?}"
        );
        assert_eq!((close.class_id, close.method_id), (BASIC, method), "{name}");
    }
}

#[tokio::test]
async fn users_replace_guest_and_loopback_only_false_lets_the_user_in() {
    let mut config = warren::Config::ephemeral();
    config.users = vec![UserConfig {
        name: "app".into(),
        password: "secret".into(),
        loopback_only: false,
        tags: None,
    }];
    let (broker, addr) = start_with(config).await;

    // guest is gone: refused with 403 (to a client announcing authentication_failure_close).
    let mut raw = RawConn::tcp(addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    raw.read_start().await;
    raw.send_start_ok_with(
        "guest",
        "guest",
        client_properties_with_capabilities(&["authentication_failure_close"]),
    )
    .await;
    let close = raw
        .expect_handshake_refused()
        .await
        .expect("a connection.close for the refused guest");
    assert_eq!(close.reply_code, 403, "{close:?}");
    assert!(close.reply_text.starts_with("ACCESS_REFUSED"), "{close:?}");

    // The configured user logs in and works.
    let conn = connect_url(&format!("amqp://app:secret@{addr}/%2f")).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("app")).await;
    within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"hi",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish");
    assert_eq!(drain(&ch, &q).await, ["hi"]);
    let _ = within("connection.close", conn.close(200, "bye".into())).await;

    // A wrong password for the configured user is still refused.
    let mut raw = RawConn::tcp(addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    raw.read_start().await;
    raw.send_start_ok_with(
        "app",
        "wrong",
        client_properties_with_capabilities(&["authentication_failure_close"]),
    )
    .await;
    let close = raw.expect_handshake_refused().await.expect("a close");
    assert_eq!(close.reply_code, 403, "{close:?}");
    broker.shutdown().await;
}

#[test]
fn unknown_toml_keys_are_refused_naming_the_key() {
    let dir = binary::temp_dir("readme-claims-toml");
    let path = dir.join("warren.toml");
    std::fs::write(&path, "bnid = \"127.0.0.1:5672\"\n").expect("writing the config file");
    let err = warren::Config::load(Some(&path)).expect_err("an unknown key must be an error");
    let text = err.to_string();
    assert!(text.contains("bnid"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");

    // The same file with the key spelled right loads.
    std::fs::write(&path, "bind = \"127.0.0.1:5672\"\n").expect("writing the config file");
    let config = warren::Config::load(Some(&path)).expect("a valid config");
    assert_eq!(config.bind, "127.0.0.1:5672".parse().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_binary_sends_320_connection_forced() {
    let dir = binary::temp_dir("readme-claims-sigterm");
    let server = binary::Server::start(&dir).await;
    let addr: SocketAddr = server
        .url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {}", server.url));
    let mut raw = RawConn::open(addr).await;
    raw.open_channel(1).await;
    let (close, ()) = tokio::join!(raw.expect_connection_close(), server.stop());
    assert_eq!(close.reply_code, 320, "{close:?}");
    assert!(
        close.reply_text.starts_with("CONNECTION_FORCED"),
        "{close:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
