//! The fuzzers' seed corpus (`fuzz/seeds/`) is real client traffic: this test runs lapin
//! sessions through a recording proxy to an embedded broker and cuts what the client sent
//! into seeds for each target (whole byte streams, the bytes after the handshake, single
//! method and content-header payloads, field tables). It checks that every recorded frame
//! decodes, and that every committed seed is still what its target expects (so a seed that
//! rotted would be noticed here, not by a fuzzer quietly starting from nothing).
//!
//! `WARREN_FUZZ_SEEDS=write cargo test --test fuzz_seeds` rewrites `fuzz/seeds/`.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use amq_protocol::frame::WriteContext;
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use bytes::BytesMut;
use common::*;
use lapin::options::*;
use lapin::{BasicProperties, ExchangeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warren::protocol::nesting::check_table;
use warren::protocol::{decode_frame, Frame};

const FRAME_MAX: u32 = 131_072;

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

/// A proxy for one connection that keeps every byte the client sent.
async fn recording_proxy(
    broker: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(broker).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
            let _ = cw.shutdown().await;
        });
        let mut chunk = vec![0u8; 65536];
        loop {
            match cr.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    record.lock().unwrap().extend_from_slice(&chunk[..n]);
                    if sw.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sw.shutdown().await;
    });
    (addr, sent)
}

fn rich_headers() -> FieldTable {
    let mut death = FieldTable::default();
    death.insert("count".into(), AMQPValue::LongLongInt(2));
    death.insert("reason".into(), AMQPValue::LongString("rejected".into()));
    death.insert("queue".into(), AMQPValue::LongString("work".into()));
    death.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
    death.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString("k".into())])),
    );
    let mut h = FieldTable::default();
    h.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
    );
    h.insert("bool".into(), AMQPValue::Boolean(true));
    h.insert("i8".into(), AMQPValue::ShortShortInt(-3));
    h.insert("u8".into(), AMQPValue::ShortShortUInt(3));
    h.insert("i16".into(), AMQPValue::ShortInt(-300));
    h.insert("i32".into(), AMQPValue::LongInt(-70_000));
    h.insert("u32".into(), AMQPValue::LongUInt(70_000));
    h.insert("i64".into(), AMQPValue::LongLongInt(-1 << 40));
    h.insert("f32".into(), AMQPValue::Float(1.5));
    h.insert("f64".into(), AMQPValue::Double(2.25));
    h.insert("str".into(), AMQPValue::LongString("text".into()));
    h.insert(
        "bytes".into(),
        AMQPValue::ByteArray(vec![0u8, 1, 255].into()),
    );
    h.insert("void".into(), AMQPValue::Void);
    h.insert("x-match".into(), AMQPValue::LongString("all".into()));
    h
}

fn full_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_content_encoding(ShortString::from("gzip"))
        .with_headers(rich_headers())
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id(ShortString::from("corr-1"))
        .with_reply_to(ShortString::from("amq.rabbitmq.reply-to"))
        .with_expiration(ShortString::from("60000"))
        .with_message_id(ShortString::from("id-1"))
        .with_timestamp(1_700_000_000)
        .with_type(ShortString::from("kind"))
        .with_user_id(ShortString::from("guest"))
        .with_app_id(ShortString::from("fuzz-seeds"))
}

/// Publishing, routing, consuming and acknowledging, the way an application does.
async fn session_publish_consume(url: &str) {
    let conn = connect_url(url).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut xargs = FieldTable::default();
    xargs.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("seeds.ae".into()),
    );
    ch.exchange_declare(
        "seeds.topic".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        xargs,
    )
    .await
    .unwrap();
    let mut qargs = FieldTable::default();
    qargs.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
    qargs.insert("x-max-length".into(), AMQPValue::LongInt(1000));
    qargs.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("seeds.dlx".into()),
    );
    qargs.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(9));
    ch.queue_declare("seeds.q".into(), QueueDeclareOptions::default(), qargs)
        .await
        .unwrap();
    ch.queue_bind(
        "seeds.q".into(),
        "seeds.topic".into(),
        "orders.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for (key, body) in [
        ("orders.eu.new", vec![b'a'; 10]),
        ("orders.us", vec![b'b'; 20_000]),
        ("orders.x", Vec::new()),
    ] {
        ch.basic_publish(
            "seeds.topic".into(),
            key.into(),
            BasicPublishOptions::default(),
            &body,
            full_properties(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    ch.basic_publish(
        "seeds.topic".into(),
        "nowhere".into(),
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"unroutable",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(&ch, "seeds.q", false).await;
    let first = next_delivery(&mut consumer).await;
    first.ack(BasicAckOptions::default()).await.unwrap();
    let second = next_delivery(&mut consumer).await;
    second
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let third = next_delivery(&mut consumer).await;
    third
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    ch.basic_cancel(
        consumer.tag().as_str().into(),
        BasicCancelOptions::default(),
    )
    .await
    .unwrap();
    if let Some(m) = ch
        .basic_get("seeds.q".into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        m.ack(BasicAckOptions { multiple: true }).await.unwrap();
    }
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    ch.queue_purge("seeds.q".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    ch.queue_unbind(
        "seeds.q".into(),
        "seeds.topic".into(),
        "orders.#".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_delete("seeds.q".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ch.exchange_delete("seeds.topic".into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    ch.close(200, "bye".into()).await.unwrap();
    conn.close(200, "bye".into()).await.unwrap();
}

/// Transactions, a headers exchange, exchange-to-exchange bindings and a server-named queue.
async fn session_tx_headers(url: &str) {
    let conn = connect_url(url).await;
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        "seeds.headers".into(),
        ExchangeKind::Headers,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "seeds.fanout".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        "seeds.headers".into(),
        "seeds.fanout".into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
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
    ch.queue_bind(
        q.name().as_str().into(),
        "seeds.headers".into(),
        "".into(),
        QueueBindOptions::default(),
        rich_headers(),
    )
    .await
    .unwrap();
    ch.tx_select().await.unwrap();
    ch.basic_publish(
        "seeds.fanout".into(),
        "".into(),
        BasicPublishOptions::default(),
        b"in a transaction",
        BasicProperties::default().with_headers(rich_headers()),
    )
    .await
    .unwrap();
    ch.tx_commit().await.unwrap();
    ch.basic_publish(
        "".into(),
        q.name().as_str().into(),
        BasicPublishOptions::default(),
        b"rolled back",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    ch.tx_rollback().await.unwrap();
    let mut consumer = consume(&ch, q.name().as_str(), true).await;
    next_delivery(&mut consumer).await;
    ch.exchange_unbind(
        "seeds.headers".into(),
        "seeds.fanout".into(),
        "".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_delete("seeds.fanout".into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
}

/// Splits a client's byte stream (protocol header first) into frames: (type, channel, payload).
fn frames(stream: &[u8]) -> Vec<(u8, u16, Vec<u8>)> {
    assert!(
        stream.starts_with(b"AMQP"),
        "the stream starts with the protocol header"
    );
    let mut buf = BytesMut::from(&stream[8..]);
    let mut out = Vec::new();
    while buf.len() >= 7 {
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
        let raw = buf[..size + 8].to_vec();
        let decoded = decode_frame(&mut buf, FRAME_MAX)
            .unwrap_or_else(|e| panic!("a frame lapin sent does not decode: {e}"))
            .expect("a whole frame");
        drop(decoded);
        out.push((
            raw[0],
            u16::from_be_bytes([raw[1], raw[2]]),
            raw[7..7 + size].to_vec(),
        ));
    }
    assert!(buf.is_empty(), "the stream ends on a frame boundary");
    out
}

fn encode_table(t: &FieldTable) -> Vec<u8> {
    gen_field_table(t)(WriteContext::from(Vec::new()))
        .expect("encoding a table")
        .write
}

/// Seeds for every target, by target and file name.
fn seeds(streams: &[(&str, Vec<u8>)]) -> BTreeMap<(String, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut put = |target: &str, name: String, bytes: Vec<u8>| {
        out.insert((target.to_owned(), name), bytes);
    };
    for (name, stream) in streams {
        // frames: a cut byte (bytes per read), then the whole stream after the header.
        let mut whole = vec![13u8];
        whole.extend_from_slice(&stream[8..]);
        put("frames", format!("{name}-stream"), whole);
        let frames = frames(stream);
        // connection: what the client sent after opening channel 1 (the harness does the
        // handshake and opens channel 1 itself).
        let opened = frames
            .iter()
            .position(|(t, c, p)| *t == 1 && *c == 1 && p[..4] == [0, 20, 0, 10])
            .expect("lapin opened channel 1");
        let mut after = Vec::new();
        for (t, c, p) in &frames[opened + 1..] {
            after.push(*t);
            after.extend_from_slice(&c.to_be_bytes());
            after.extend_from_slice(&(p.len() as u32).to_be_bytes());
            after.extend_from_slice(p);
            after.push(0xCE);
        }
        put("connection", format!("{name}-after-open"), after);
        // methods: each method and content-header payload (bodies are not parsed).
        for (i, (t, _, p)) in frames.iter().enumerate() {
            if *t == 1 || *t == 2 {
                let ids = if *t == 1 {
                    format!(
                        "{}.{}",
                        u16::from_be_bytes([p[0], p[1]]),
                        u16::from_be_bytes([p[2], p[3]])
                    )
                } else {
                    "header".to_owned()
                };
                put("methods", format!("{name}-{i:03}-{ids}"), p.clone());
            }
        }
        // tables: the client-properties of connection.start-ok.
        let start_ok = &frames[0].2;
        let len = check_table(&start_ok[4..]).expect("client-properties is a table");
        put(
            "tables",
            format!("{name}-client-properties"),
            start_ok[4..4 + len].to_vec(),
        );
    }
    put(
        "tables",
        "headers-every-type".to_owned(),
        encode_table(&rich_headers()),
    );
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString(LongString::from("first")),
    );
    put(
        "tables",
        "consume-arguments".to_owned(),
        encode_table(&args),
    );
    out
}

/// What each target needs of its seeds, checked on a seed.
fn check_seed(target: &str, name: &str, bytes: &[u8]) {
    match target {
        "frames" | "connection" => {
            let stream = if target == "frames" {
                &bytes[1..]
            } else {
                bytes
            };
            let mut buf = BytesMut::from(stream);
            let mut n = 0;
            while !buf.is_empty() {
                match decode_frame(&mut buf, FRAME_MAX) {
                    Ok(Some(_)) => n += 1,
                    other => panic!("{target}/{name}: frame {n} does not decode: {other:?}"),
                }
            }
            assert!(n > 0, "{target}/{name} holds no frame");
        }
        "methods" => {
            let kind = if name.ends_with("header") { 2 } else { 1 };
            let mut f = vec![kind, 0, 1];
            f.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            f.extend_from_slice(bytes);
            f.push(0xCE);
            let decoded = decode_frame(&mut BytesMut::from(&f[..]), FRAME_MAX);
            match (kind, decoded) {
                (1, Ok(Some(Frame::Method(..) | Frame::Publish(..) | Frame::Ack { .. })))
                | (2, Ok(Some(Frame::Header { .. }))) => {}
                (_, other) => panic!("methods/{name} does not decode: {other:?}"),
            }
        }
        "tables" => {
            let len = check_table(bytes).unwrap_or_else(|e| panic!("tables/{name}: {e:?}"));
            assert_eq!(len, bytes.len(), "tables/{name} has trailing bytes");
            parse_field_table(bytes).unwrap_or_else(|e| panic!("tables/{name}: {e:?}"));
        }
        other => panic!("a seed directory for no target: {other}"),
    }
}

#[tokio::test]
async fn seed_corpus_is_real_traffic_and_every_seed_decodes() {
    let broker = start().await;
    let mut streams = Vec::new();
    for name in ["publish-consume", "tx-headers"] {
        let (proxy, sent) = recording_proxy(broker.addr).await;
        let url = format!("amqp://guest:guest@{proxy}/%2f");
        match name {
            "publish-consume" => session_publish_consume(&url).await,
            _ => session_tx_headers(&url).await,
        }
        // The proxy has passed on everything once the close handshake is over.
        let stream = sent.lock().unwrap().clone();
        streams.push((name, stream));
    }
    let seeds = seeds(&streams);
    for ((target, name), bytes) in &seeds {
        check_seed(target, name, bytes);
    }
    let dir = seeds_dir();
    if std::env::var("WARREN_FUZZ_SEEDS").as_deref() == Ok("write") {
        let _ = std::fs::remove_dir_all(&dir);
        for ((target, name), bytes) in &seeds {
            std::fs::create_dir_all(dir.join(target)).unwrap();
            std::fs::write(dir.join(target).join(name), bytes).unwrap();
        }
        eprintln!("wrote {} seeds to {}", seeds.len(), dir.display());
    }
    // The committed corpus: every target has seeds, and each one is what its target expects.
    let mut committed = 0;
    for target in ["frames", "methods", "tables", "connection"] {
        let entries: Vec<_> = std::fs::read_dir(dir.join(target))
            .unwrap_or_else(|e| panic!("fuzz/seeds/{target}: {e}"))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!entries.is_empty(), "fuzz/seeds/{target} is empty");
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            check_seed(target, &name, &std::fs::read(&path).unwrap());
            committed += 1;
        }
    }
    assert!(
        committed >= seeds.len() / 2,
        "only {committed} committed seeds"
    );
}
