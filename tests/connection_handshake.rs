//! Proves the connection handshake: connection.start announces AMQP 0-9, PLAIN, en_US and a
//! capabilities table; tune values are negotiated down to the client's; bad credentials
//! (403 ACCESS_REFUSED), an unknown vhost (530 NOT_ALLOWED), an unknown SASL mechanism and
//! out-of-range tune-ok values are refused with connection.close; connection.close is answered
//! with close-ok.
mod common;

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, LongString};
use common::*;
use lapin::{Connection, ConnectionProperties};

fn report(case: &str, code: u16, text: &str) {
    eprintln!("[observed] {case}: {code} {text:?}");
}

#[tokio::test]
async fn connection_start_announces_version_mechanisms_and_capabilities() {
    let broker = start().await;
    let mut raw = RawConn::tcp(broker.addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    let start = raw.read_start().await;
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let mechanisms: Vec<&str> = raw.mechanisms.split(' ').collect();
    assert!(mechanisms.contains(&"PLAIN"), "{mechanisms:?}");
    assert!(
        raw.locales.split(' ').any(|l| l == "en_US"),
        "{}",
        raw.locales
    );
    eprintln!(
        "[observed] mechanisms={:?} locales={:?}",
        raw.mechanisms, raw.locales
    );
    let props = raw.server_properties.inner();
    eprintln!(
        "[observed] server-properties keys: {:?}",
        props.keys().map(|k| k.as_str()).collect::<Vec<_>>()
    );
    assert!(
        matches!(props.get("product"), Some(AMQPValue::LongString(_))),
        "product: {:?}",
        props.get("product")
    );
    assert!(
        matches!(props.get("version"), Some(AMQPValue::LongString(_))),
        "version: {:?}",
        props.get("version")
    );
    let caps = match props.get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => t.clone(),
        other => panic!("capabilities must be a table, got {other:?}"),
    };
    eprintln!("[observed] capabilities: {:?}", caps.inner());
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "per_consumer_qos",
        "authentication_failure_close",
    ] {
        assert_eq!(
            caps.inner().get(cap),
            Some(&AMQPValue::Boolean(true)),
            "capability {cap}"
        );
    }
}

#[tokio::test]
async fn tune_offers_sane_limits_and_lapin_negotiates_down() {
    let broker = start().await;
    let mut raw = RawConn::tcp(broker.addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    raw.read_start().await;
    raw.send_start_ok("guest", "guest").await;
    let tune = match raw.recv_method().await {
        AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
        other => panic!("expected connection.tune, got {other:?}"),
    };
    eprintln!(
        "[observed] tune: channel_max={} frame_max={} heartbeat={}",
        tune.channel_max, tune.frame_max, tune.heartbeat
    );
    assert!(tune.frame_max == 0 || tune.frame_max >= 4096, "{tune:?}");
    assert!(tune.channel_max == 0 || tune.channel_max >= 1, "{tune:?}");

    let url = format!("{}?frame_max=8192&heartbeat=7&channel_max=16", broker.url);
    let conn = connect_url(&url).await;
    let cfg = conn.configuration();
    assert_eq!(cfg.frame_max(), 8192);
    assert_eq!(cfg.heartbeat(), 7);
    assert_eq!(cfg.channel_max(), 16);
    // And it works with those values: a message bigger than frame_max is split and rejoined.
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "").await;
    let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    publish_confirmed(&ch, "", &q, &big).await;
    let got = within(
        "basic.get",
        ch.basic_get(
            q.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(got.delivery.data == big);
}

#[tokio::test]
async fn client_close_is_answered_with_close_ok() {
    let broker = start().await;
    let mut raw = RawConn::open(broker.addr).await;
    raw.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await;
    match raw.recv_method().await {
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {}
        other => panic!("expected connection.close-ok, got {other:?}"),
    }
    // RabbitMQ leaves closing the socket to the client after close-ok; nothing else is sent.
    if let Some(Incoming::Frame(f)) = raw
        .recv_timeout(std::time::Duration::from_millis(200))
        .await
    {
        panic!("nothing may follow connection.close-ok, got {f:?}");
    }
    drop(raw);
    // And the lapin client's graceful close.
    let conn = connect(&broker).await;
    within("connection.close", conn.close(200, "bye".into()))
        .await
        .expect("graceful close");
}

#[tokio::test]
async fn wrong_password_is_access_refused() {
    let broker = start().await;
    let bad_url = format!("amqp://guest:wrong@{}/%2f", broker.addr);
    let err = within(
        "lapin connect",
        Connection::connect(&bad_url, ConnectionProperties::default()),
    )
    .await
    .expect_err("wrong password must be refused");
    eprintln!("[observed] lapin with wrong password: {err}");

    // On the wire, for a client announcing authentication_failure_close.
    let mut raw = RawConn::tcp(broker.addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    raw.read_start().await;
    raw.send_start_ok_with(
        "guest",
        "wrong",
        client_properties_with_capabilities(&["authentication_failure_close"]),
    )
    .await;
    let close = raw.expect_connection_close().await;
    report("wrong password", close.reply_code, &close.reply_text);
    assert_eq!(close.reply_code, 403, "{close:?}");
    assert_eq!(
        close.reply_text,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
    );
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn unknown_user_is_access_refused() {
    let broker = start().await;
    let mut raw = RawConn::tcp(broker.addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    raw.read_start().await;
    raw.send_start_ok_with(
        "nobody-here",
        "pw",
        client_properties_with_capabilities(&["authentication_failure_close"]),
    )
    .await;
    let close = raw.expect_connection_close().await;
    report("unknown user", close.reply_code, &close.reply_text);
    assert_eq!(close.reply_code, 403, "{close:?}");
}

#[tokio::test]
async fn unknown_vhost_is_not_allowed() {
    let broker = start().await;
    let url = format!("amqp://guest:guest@{}/no-such-vhost", broker.addr);
    let err = within(
        "lapin connect",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect_err("unknown vhost must be refused");
    let (code, text) = amqp_error(&err);
    report("unknown vhost (lapin)", code, &text);
    assert_eq!(code, 530);
    assert_eq!(text, "NOT_ALLOWED - vhost no-such-vhost not found");

    let mut raw = RawConn::tcp(broker.addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    raw.read_start().await;
    raw.send_start_ok("guest", "guest").await;
    let tune = match raw.recv_method().await {
        AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
        other => panic!("expected connection.tune, got {other:?}"),
    };
    raw.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        })),
    )
    .await;
    raw.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/nope".into(),
        })),
    )
    .await;
    let close = raw.expect_connection_close().await;
    report("unknown vhost (raw)", close.reply_code, &close.reply_text);
    assert_eq!(close.reply_code, 530);
    assert_eq!(close.reply_text, "NOT_ALLOWED - vhost /nope not found");
    assert_eq!((close.class_id, close.method_id), (10, 40));
}

#[tokio::test]
async fn unknown_sasl_mechanism_is_refused() {
    let broker = start().await;
    let mut raw = RawConn::tcp(broker.addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    raw.read_start().await;
    raw.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: client_properties_with_capabilities(&[
                "authentication_failure_close",
            ]),
            mechanism: "NOT-A-MECHANISM".into(),
            response: LongString::from("\0guest\0guest"),
            locale: "en_US".into(),
        })),
    )
    .await;
    // RabbitMQ does not trust a client before login: it closes the socket (after a 3 s delay)
    // without a connection.close.
    let close = raw.expect_handshake_refused().await;
    eprintln!("[observed] unknown SASL mechanism: {close:?} then socket closed");
    assert_broker_alive(&broker).await;
}

async fn raw_tune_ok(
    broker: &TestBroker,
    frame_max: Option<u32>,
    channel_max: Option<u16>,
) -> Option<CloseInfo> {
    let mut raw = RawConn::tcp(broker.addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    raw.read_start().await;
    raw.send_start_ok("guest", "guest").await;
    let tune = match raw.recv_method().await {
        AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
        other => panic!("expected connection.tune, got {other:?}"),
    };
    raw.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: channel_max.unwrap_or(tune.channel_max),
            frame_max: frame_max.unwrap_or(tune.frame_max),
            heartbeat: 0,
        })),
    )
    .await;
    raw.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    )
    .await;
    raw.expect_handshake_refused().await
}

#[tokio::test]
async fn tune_ok_frame_max_out_of_range_is_refused() {
    // Checked while tuning, i.e. before the connection is open: RabbitMQ closes the socket
    // (after a 3 s delay) without a connection.close.
    let broker = start().await;
    let (low, high) = tokio::join!(
        raw_tune_ok(&broker, Some(1024), None),
        raw_tune_ok(&broker, Some(u32::MAX), None)
    );
    eprintln!("[observed] tune-ok frame_max=1024: {low:?} then socket closed");
    eprintln!("[observed] tune-ok frame_max=u32::MAX: {high:?} then socket closed");
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn wrong_password_without_authentication_failure_close_is_a_silent_close() {
    let broker = start().await;
    let mut raw = RawConn::tcp(broker.addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    raw.read_start().await;
    raw.send_start_ok("guest", "wrong").await;
    let close = raw.expect_handshake_refused().await;
    eprintln!("[observed] wrong password, no capability: {close:?} then socket closed");
    assert!(
        close.is_none(),
        "RabbitMQ only sends connection.close to clients announcing authentication_failure_close"
    );
}

/// With a dual-stack listener (`--bind [::]`), a client on 127.0.0.1 arrives as the
/// IPv4-mapped `::ffff:127.0.0.1`: still loopback, so guest may log in.
#[tokio::test]
async fn guest_logs_in_from_mapped_ipv4_loopback_on_a_dual_stack_listener() {
    if std::env::var_os("WARREN_TEST_URL").is_some() {
        eprintln!("skipped: needs an embedded Warren bound to [::]");
        return;
    }
    let listener = match tokio::net::TcpListener::bind("[::]:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("skipped: this machine cannot listen on [::] ({e})");
            return;
        }
    };
    let port = listener.local_addr().unwrap().port();
    // An IPv6-only stack (net.ipv6.bindv6only=1) takes no IPv4 clients on [::].
    if let Err(e) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        eprintln!("skipped: [::]:{port} does not accept IPv4 clients here ({e})");
        return;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(warren::run(listener, warren::Config::ephemeral(), async {
        let _ = stopped.await;
    }));
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let conn = within(
        "connection",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("guest from 127.0.0.1 through [::]:{port} was refused: {e}"));
    let ch = channel(&conn).await;
    declare_queue(&ch, &unique("dual-stack")).await;
    conn.close(200, "bye".into()).await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
