//! Shared helpers for the integration tests: where the broker is, lapin helpers, and a tiny
//! raw-socket AMQP client for the tests that must send bytes no well-behaved client would send.
#![allow(dead_code)]

pub mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, ProtocolVersion, WriteContext};
use amq_protocol::protocol::{channel, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The broker under test.
pub struct TestBroker {
    /// amqp://guest:guest@127.0.0.1:PORT/%2f
    pub url: String,
    pub addr: SocketAddr,
    /// The embedded Warren (None when the tests run against another broker).
    pub broker: Option<warren::Broker>,
}

/// Starts an embedded Warren on 127.0.0.1:0, in memory. With `WARREN_TEST_URL` set (for
/// example to a RabbitMQ), the tests run against that broker instead, to compare behaviour.
pub async fn start() -> TestBroker {
    if let Ok(url) = std::env::var("WARREN_TEST_URL") {
        let hostport = url
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("WARREN_TEST_URL like amqp://guest:guest@127.0.0.1:5673/%2f");
        let addr: SocketAddr = hostport.parse().expect("an IP:port in WARREN_TEST_URL");
        return TestBroker {
            url,
            addr,
            broker: None,
        };
    }
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .expect("starting an embedded broker");
    TestBroker {
        url: broker.url(),
        addr: broker.local_addr(),
        broker: Some(broker),
    }
}

/// Upper bound for any single wait in the tests: a broken broker fails fast instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Awaits `fut`, panicking if it takes longer than [`TIMEOUT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{}-{:x}-{n}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
}

/// Opens a lapin connection to the broker.
pub async fn connect(broker: &TestBroker) -> Connection {
    connect_url(&broker.url).await
}

pub async fn connect_url(url: &str) -> Connection {
    within(
        "connection",
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// The (reply code, reply text) of a broker-sent channel.close / connection.close carried by a
/// lapin error. Panics if the error is not an AMQP protocol error.
pub fn amqp_error(err: &lapin::Error) -> (u16, String) {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => (e.get_id(), e.get_message().as_str().to_owned()),
        other => panic!("expected an AMQP protocol error, got {other:?} ({err})"),
    }
}

/// Awaits a lapin operation that the broker must refuse, returning (reply code, reply text).
pub async fn expect_refused<T: std::fmt::Debug>(
    what: &str,
    fut: impl Future<Output = lapin::Result<T>>,
) -> (u16, String) {
    match within(what, fut).await {
        Ok(v) => panic!("{what}: expected the broker to refuse it, but it succeeded: {v:?}"),
        Err(e) => amqp_error(&e),
    }
}

/// Waits for the next error that the connection reports through its events listener (a
/// channel.close or connection.close sent by the broker) and returns (code, text).
pub async fn next_error_event(
    events: &mut (impl futures_util::Stream<Item = lapin::Event> + Unpin),
) -> (u16, String) {
    within("an error event", async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => return amqp_error(&e),
                Some(_) => continue,
                None => panic!("events stream ended without an error"),
            }
        }
    })
    .await
}

/// The next delivery of `consumer`, panicking on timeout, error or cancellation.
pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    match within("a delivery", consumer.next()).await {
        Some(Ok(d)) => d,
        Some(Err(e)) => panic!("consumer error: {e}"),
        None => panic!("consumer was cancelled"),
    }
}

/// Asserts that `consumer` receives nothing for `wait`.
pub async fn assert_no_delivery(consumer: &mut Consumer, wait: Duration) {
    if let Ok(item) = tokio::time::timeout(wait, consumer.next()).await {
        match item {
            Some(Ok(d)) => panic!(
                "unexpected delivery: {:?}",
                String::from_utf8_lossy(&d.data)
            ),
            Some(Err(e)) => panic!("unexpected consumer error: {e}"),
            None => panic!("consumer unexpectedly cancelled"),
        }
    }
}

/// Proves the broker still serves new connections (used after a connection got killed).
pub async fn assert_broker_alive(broker: &TestBroker) {
    let conn = connect(broker).await;
    let ch = within("channel", conn.create_channel()).await.unwrap();
    let q = within(
        "queue.declare",
        ch.queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("a fresh connection must still work");
    assert!(!q.name().as_str().is_empty());
    let _ = within("connection.close", conn.close(200, "bye".into())).await;
}

/// Asserts that `ch` was closed by the broker while `conn` stays open and usable.
pub async fn assert_only_channel_closed(conn: &Connection, ch: &Channel) {
    within("the channel to be closed", async {
        while ch.status().connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        conn.status().connected(),
        "a channel error must not close the connection"
    );
    let ch2 = within("channel.open", conn.create_channel())
        .await
        .expect("the connection must still open channels");
    within(
        "queue.declare",
        ch2.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("a new channel on the same connection must work");
}

/// Waits until lapin considers `conn` closed or errored (e.g. after a connection.close from
/// the broker).
pub async fn wait_connection_dead(conn: &Connection) {
    within("the connection to be closed", async {
        while conn.status().connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Opens a channel.
pub async fn channel(conn: &Connection) -> Channel {
    within("channel.open", conn.create_channel())
        .await
        .expect("channel.open")
}

/// Opens a channel in publisher-confirm mode.
pub async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = channel(conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    ch
}

/// Declares a non-durable exclusive queue named `name` (deleted with its connection).
pub async fn declare_queue(ch: &Channel, name: &str) -> String {
    let q = within(
        "queue.declare",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.declare");
    q.name().as_str().to_owned()
}

/// Declares (or re-declares) a durable queue and returns the messages it holds.
pub async fn declare_durable_queue(ch: &Channel, name: &str) -> u32 {
    within(
        "queue.declare",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.declare")
    .message_count()
}

/// Declares a non-durable, auto-delete exchange.
pub async fn declare_exchange(ch: &Channel, name: &str, kind: ExchangeKind) {
    declare_exchange_with(ch, name, kind, FieldTable::default()).await
}

pub async fn declare_exchange_with(ch: &Channel, name: &str, kind: ExchangeKind, args: FieldTable) {
    within(
        "exchange.declare",
        ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            args,
        ),
    )
    .await
    .expect("exchange.declare");
}

pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    bind_with(ch, queue, exchange, key, FieldTable::default()).await
}

pub async fn bind_with(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    within(
        "queue.bind",
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            args,
        ),
    )
    .await
    .expect("queue.bind");
}

/// Publishes without waiting for anything but the write.
pub async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    publish_with(ch, exchange, key, body, BasicProperties::default()).await
}

pub async fn publish_with(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    within(
        "basic.publish",
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        ),
    )
    .await
    .expect("basic.publish");
}

/// Publishes on a channel in confirm mode and waits for the broker's ack: once it returns,
/// every queue the message was routed to holds it.
pub async fn publish_confirmed(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    publish_confirmed_with(ch, exchange, key, body, BasicProperties::default()).await
}

pub async fn publish_confirmed_with(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        ),
    )
    .await
    .expect("basic.publish");
    let confirmation = within("publisher confirm", confirm)
        .await
        .expect("publisher confirm");
    assert!(
        confirmation.is_ack(),
        "expected the broker to ack the publish, got {confirmation:?}"
    );
}

/// Takes every message currently in `queue` with basic.get (no-ack) and returns the bodies.
pub async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = within(
            "basic.get",
            ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
        )
        .await
        .expect("basic.get");
        match got {
            Some(m) => out.push(String::from_utf8_lossy(&m.delivery.data).into_owned()),
            None => return out,
        }
    }
}

/// Message count reported by a passive queue.declare.
pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    within(
        "passive queue.declare",
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("passive queue.declare")
    .message_count()
}

/// Polls the ready-message count until it is `n`. Needed after acts the broker applies
/// asynchronously (a requeue after reject/nack or after a channel closes): even RabbitMQ may
/// answer a later queue.declare before it has applied them.
pub async fn wait_message_count(ch: &Channel, queue: &str, n: u32) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let count = message_count(ch, queue).await;
        if count == n {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("queue {queue} has {count} ready messages, expected {n}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a consumer with a server-generated tag.
pub async fn consume(ch: &Channel, queue: &str, no_ack: bool) -> Consumer {
    within(
        "basic.consume",
        ch.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("basic.consume")
}

/// Body of a delivery as a String.
pub fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Raw AMQP over a TCP socket.
// ---------------------------------------------------------------------------------------------

/// The 8-byte AMQP 0-9-1 protocol header.
pub const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";
pub const FRAME_END: u8 = 0xCE;

/// Serialises a frame with amq-protocol.
pub fn encode(frame: &AMQPFrame) -> Vec<u8> {
    gen_frame(frame)(WriteContext::from(Vec::new()))
        .expect("frame serialisation")
        .write
}

/// A method frame built by hand (for methods amq-protocol cannot express, or bogus ones).
pub fn raw_method_frame(channel: u16, class_id: u16, method_id: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&class_id.to_be_bytes());
    payload.extend_from_slice(&method_id.to_be_bytes());
    payload.extend_from_slice(args);
    raw_frame(1, channel, &payload)
}

/// Any frame built by hand: type, channel, size, payload, frame-end.
pub fn raw_frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![frame_type];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(FRAME_END);
    f
}

/// What the server said when it closed a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseInfo {
    pub reply_code: u16,
    pub reply_text: String,
    pub class_id: u16,
    pub method_id: u16,
}

/// What reading from a raw connection produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Incoming {
    Frame(AMQPFrame),
    /// The server closed the TCP connection (or reset it).
    Eof,
}

/// A hand-driven AMQP client.
pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// server-properties from connection.start (empty until the handshake read it).
    pub server_properties: FieldTable,
    pub mechanisms: String,
    pub locales: String,
    /// The server's connection.tune.
    pub tune: Option<connection::Tune>,
}

impl RawConn {
    /// Just a TCP connection; nothing sent yet.
    pub async fn tcp(addr: SocketAddr) -> RawConn {
        let stream = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        stream.set_nodelay(true).ok();
        RawConn {
            stream,
            buf: Vec::new(),
            server_properties: FieldTable::default(),
            mechanisms: String::new(),
            locales: String::new(),
            tune: None,
        }
    }

    /// Full handshake up to connection.open-ok on vhost "/", accepting the server's tuning.
    pub async fn open(addr: SocketAddr) -> RawConn {
        Self::open_with_heartbeat(addr, None).await
    }

    /// Full handshake; `heartbeat` overrides the value sent in tune-ok.
    pub async fn open_with_heartbeat(addr: SocketAddr, heartbeat: Option<u16>) -> RawConn {
        Self::open_with(addr, heartbeat, default_client_properties()).await
    }

    /// Full handshake with the given client-properties (e.g. to announce capabilities).
    pub async fn open_with(
        addr: SocketAddr,
        heartbeat: Option<u16>,
        client_properties: FieldTable,
    ) -> RawConn {
        let mut c = Self::tcp(addr).await;
        c.send_bytes(PROTOCOL_HEADER).await;
        c.read_start().await;
        c.send_start_ok_with("guest", "guest", client_properties)
            .await;
        let tune = match c.recv_method().await {
            AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
            other => panic!("expected connection.tune, got {other:?}"),
        };
        c.tune = Some(tune.clone());
        c.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: heartbeat.unwrap_or(tune.heartbeat),
            })),
        )
        .await;
        c.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        )
        .await;
        match c.recv_method().await {
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
        c
    }

    /// Reads connection.start and records what it says.
    pub async fn read_start(&mut self) -> connection::Start {
        match self.recv_method().await {
            AMQPClass::Connection(connection::AMQPMethod::Start(s)) => {
                self.server_properties = s.server_properties.clone();
                self.mechanisms = String::from_utf8_lossy(s.mechanisms.as_bytes()).into_owned();
                self.locales = String::from_utf8_lossy(s.locales.as_bytes()).into_owned();
                s
            }
            other => panic!("expected connection.start, got {other:?}"),
        }
    }

    /// Sends connection.start-ok with the PLAIN mechanism.
    pub async fn send_start_ok(&mut self, user: &str, pass: &str) {
        self.send_start_ok_with(user, pass, default_client_properties())
            .await
    }

    pub async fn send_start_ok_with(
        &mut self,
        user: &str,
        pass: &str,
        client_properties: FieldTable,
    ) {
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties,
                mechanism: "PLAIN".into(),
                response: LongString::from(format!("\0{user}\0{pass}")),
                locale: "en_US".into(),
            })),
        )
        .await;
    }

    /// Opens channel `id` and waits for channel.open-ok.
    pub async fn open_channel(&mut self, id: u16) {
        self.send_method(
            id,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await;
        match self.recv_method().await {
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) => {}
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        within("socket write", self.stream.write_all(bytes))
            .await
            .expect("socket write");
    }

    /// Like `send_bytes` but tolerates the server having already closed the socket.
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(TIMEOUT, self.stream.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    pub async fn send_frame(&mut self, frame: &AMQPFrame) {
        let bytes = encode(frame);
        self.send_bytes(&bytes).await;
    }

    pub async fn send_method(&mut self, channel: u16, method: AMQPClass) {
        self.send_frame(&AMQPFrame::Method(channel, method)).await;
    }

    /// Reads the next frame (heartbeats included), or Eof. Panics after [`TIMEOUT`].
    pub async fn recv(&mut self) -> Incoming {
        self.recv_timeout(TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no frame from the server within {TIMEOUT:?}"))
    }

    /// Reads the next frame or Eof; None if nothing arrived within `wait`.
    pub async fn recv_timeout(&mut self, wait: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if !self.buf.is_empty() {
                match parse_frame(&self.buf[..]) {
                    Ok((rest, frame)) => {
                        let used = self.buf.len() - rest.len();
                        self.buf.drain(..used);
                        return Some(Incoming::Frame(frame));
                    }
                    Err(e) if e.is_incomplete() => {}
                    Err(e) => panic!("unparsable data from server: {e:?} ({:02x?})", self.buf),
                }
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(Incoming::Eof),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Raw bytes until EOF (for replies that are not frames, e.g. a protocol header).
    pub async fn read_until_eof(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        within("the server to close the socket", async {
            let mut chunk = [0u8; 8192];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        out
    }

    /// The next method frame (skipping heartbeats); panics on EOF or content frames.
    pub async fn recv_method(&mut self) -> AMQPClass {
        loop {
            match self.recv().await {
                Incoming::Frame(AMQPFrame::Method(_, m)) => return m,
                Incoming::Frame(AMQPFrame::Heartbeat) => continue,
                Incoming::Frame(other) => panic!("expected a method frame, got {other:?}"),
                Incoming::Eof => panic!("server closed the socket while a method was expected"),
            }
        }
    }

    /// Waits for the server's connection.close (skipping anything else), answers close-ok and
    /// checks that the server then closes the socket.
    pub async fn expect_connection_close(&mut self) -> CloseInfo {
        let info = loop {
            match self.recv().await {
                Incoming::Frame(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                )) => {
                    break CloseInfo {
                        reply_code: c.reply_code,
                        reply_text: c.reply_text.as_str().to_owned(),
                        class_id: c.class_id,
                        method_id: c.method_id,
                    }
                }
                Incoming::Frame(_) => continue,
                Incoming::Eof => {
                    panic!("server closed the socket without sending connection.close")
                }
            }
        };
        let close_ok = encode(&AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        ));
        self.try_send_bytes(&close_ok).await;
        self.expect_eof().await;
        info
    }

    /// For a handshake the server must refuse: waits (up to 10 s, RabbitMQ delays silent closes
    /// by 3 s) until the server closes the socket, answering a connection.close if one comes.
    /// Panics if the server goes on with the handshake instead. Returns the close, if any.
    pub async fn expect_handshake_refused(&mut self) -> Option<CloseInfo> {
        let mut close = None;
        loop {
            match self.recv_timeout(Duration::from_secs(10)).await {
                None => panic!("the server neither refused nor closed the connection within 10s"),
                Some(Incoming::Eof) => return close,
                Some(Incoming::Frame(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                ))) => {
                    close = Some(CloseInfo {
                        reply_code: c.reply_code,
                        reply_text: c.reply_text.as_str().to_owned(),
                        class_id: c.class_id,
                        method_id: c.method_id,
                    });
                    let close_ok = encode(&AMQPFrame::Method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                            connection::CloseOk {},
                        )),
                    ));
                    self.try_send_bytes(&close_ok).await;
                }
                Some(Incoming::Frame(AMQPFrame::Heartbeat)) => {}
                Some(Incoming::Frame(other)) => {
                    panic!("expected the handshake to be refused, got {other:?}")
                }
            }
        }
    }

    /// Waits for a channel.close on `channel` (skipping other frames), answers close-ok.
    pub async fn expect_channel_close(&mut self, ch: u16) -> CloseInfo {
        let info = loop {
            match self.recv().await {
                Incoming::Frame(AMQPFrame::Method(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::Close(c)),
                )) if id == ch => {
                    break CloseInfo {
                        reply_code: c.reply_code,
                        reply_text: c.reply_text.as_str().to_owned(),
                        class_id: c.class_id,
                        method_id: c.method_id,
                    }
                }
                Incoming::Frame(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                )) => panic!(
                    "expected channel.close on channel {ch}, got connection.close {} {}",
                    c.reply_code,
                    c.reply_text.as_str()
                ),
                Incoming::Frame(_) => continue,
                Incoming::Eof => panic!("server closed the socket; expected a channel.close"),
            }
        };
        self.send_method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
        )
        .await;
        info
    }

    /// Reads (and discards) frames until the server closes the socket.
    pub async fn expect_eof(&mut self) {
        within("the server to close the socket", async {
            loop {
                if let Incoming::Eof = self.recv().await {
                    return;
                }
            }
        })
        .await
    }
}

/// client-properties of the raw client: a product name and no capabilities.
pub fn default_client_properties() -> FieldTable {
    let mut client_properties = FieldTable::default();
    client_properties.insert(
        "product".into(),
        AMQPValue::LongString(LongString::from("warren-tests-raw")),
    );
    client_properties
}

/// client-properties announcing the given boolean capabilities.
pub fn client_properties_with_capabilities(capabilities: &[&str]) -> FieldTable {
    let mut caps = FieldTable::default();
    for c in capabilities {
        caps.insert((*c).into(), AMQPValue::Boolean(true));
    }
    let mut props = default_client_properties();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props
}

/// The protocol version the raw client speaks.
pub fn amqp_0_9_1() -> ProtocolVersion {
    ProtocolVersion::amqp_0_9_1()
}
