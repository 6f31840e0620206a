//! Raw-socket attacks on the real `warren serve` process, each watched from outside: the
//! broker's resident memory (from /proc) stays within a bound, only the attacker's connection
//! closes (with the reply code RabbitMQ would use), and a well-behaved client keeps working
//! during and after the attack.
//!
//! - a slowloris handshake from thousands of sockets (half a protocol header, or a header and
//!   then silence): every one is closed at the handshake timeout, and meanwhile a real client
//!   connects and works;
//! - 65,535 channel.open frames in one burst: 530 NOT_ALLOWED at channel_max, nothing more
//!   is allocated;
//! - frame headers announcing 4 GiB frames on a hundred connections: 501 FRAME_ERROR at once,
//!   nothing buffered;
//! - truncated frames, the socket then closed or left silent (the heartbeat timeout reaps it);
//! - a body larger than its content header declared (505 UNEXPECTED_FRAME) and a content
//!   header declaring a 2^60-byte body (406 on the channel, refused before any byte of it);
//! - a publisher that floods with confirms on and never reads a byte of what the broker sends.
//!
//! Deeply nested field tables have their own suite (`nested_tables.rs`), malformed framing
//! `bad_input.rs`, and arbitrary bytes after a handshake the `connection` fuzz target.
mod binary;
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{confirm, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use binary::{temp_dir, Server};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;

struct Target {
    server: Server,
    addr: SocketAddr,
    pid: u32,
}

impl Target {
    /// `warren serve` with a 2 s handshake timeout (RabbitMQ's default is 10 s).
    async fn start(tag: &str) -> Target {
        let dir = temp_dir(tag);
        let config = dir.with_extension("toml");
        std::fs::write(&config, "handshake_timeout_ms = 2000\n").unwrap();
        let server = Server::start_with(&dir, &["--config", config.to_str().unwrap()]).await;
        let addr = server
            .url
            .split('@')
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|a| a.parse().ok())
            .expect("an address in the URL");
        let pid = server.child.id().expect("a running child");
        Target { server, addr, pid }
    }

    /// Resident memory, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("the broker is still running");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("a VmRSS line");
        kib * 1024
    }

    /// After an attack: the broker grew by less than 64 MiB since `before` (its RSS then),
    /// and a real client still works.
    async fn held_up(&self, before: u64, attack: &str) {
        let after = self.rss();
        eprintln!(
            "[observed] {attack}: RSS {} -> {} MiB",
            before / MIB,
            after / MIB
        );
        assert!(
            after < before + 64 * MIB,
            "{attack}: {} MiB more",
            (after - before) / MIB
        );
        self.still_serves().await;
    }

    /// A real client declares, publishes and gets its message back.
    async fn still_serves(&self) {
        assert_broker_alive(&TestBroker {
            url: self.server.url.clone(),
            addr: self.addr,
            broker: None,
        })
        .await;
    }
}

/// How many sockets this process may open for an attack: up to `want`, within the open-file
/// limit (the broker's limit is the same).
fn sockets_allowed(want: usize) -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    want.min(soft.saturating_sub(200) / 2)
}

/// Reads until the peer closes the socket; what it sent.
async fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out
}

#[tokio::test]
async fn slowloris_handshakes_are_closed_at_the_timeout_and_cost_little() {
    let target = Target::start("attack-slowloris").await;
    let n = sockets_allowed(4000);
    assert!(n >= 500, "too few file descriptors for the attack ({n})");
    let before = target.rss();
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(target.addr).await.expect("connect");
        // Half send four bytes of the header, half the whole header and then nothing (the
        // broker has sent connection.start and waits for start-ok).
        let bytes: &[u8] = if i % 2 == 0 { b"AMQP" } else { PROTOCOL_HEADER };
        s.write_all(bytes).await.unwrap();
        sockets.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = target.rss();
    eprintln!(
        "[observed] {n} stalled handshakes: RSS {} -> {} MiB",
        before / MIB,
        during / MIB
    );
    // A real client gets in while they are all open.
    target.still_serves().await;
    assert!(
        during < before + 64 * MIB,
        "{n} stalled handshakes took {} MiB",
        (during - before) / MIB
    );
    // Every one is closed by the broker (the timeout is 2 s; the bound is for a slow machine).
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        for s in &mut sockets {
            read_to_eof(s).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "stalled handshakes were not closed");
    target.still_serves().await;
}

#[tokio::test]
async fn a_burst_of_65535_channel_opens_stops_at_channel_max() {
    let target = Target::start("attack-channels").await;
    let before = target.rss();
    let mut raw = RawConn::open(target.addr).await;
    let mut burst = Vec::with_capacity(65_535 * 12);
    for ch in 1..=65_535u16 {
        burst.extend(raw_method_frame(ch, 20, 10, &[0]));
    }
    // The broker closes the connection part way through: the write may fail.
    let _ = raw.stream.write_all(&burst).await;
    let close = raw.expect_connection_close().await;
    eprintln!(
        "[observed] 65535 channel.open: {} {}",
        close.reply_code, close.reply_text
    );
    assert_eq!(close.reply_code, 530, "{close:?}");
    assert_eq!(
        close.reply_text,
        "NOT_ALLOWED - number of channels opened (2047) has reached the negotiated channel_max (2047)"
    );
    target.held_up(before, "65535 channel.open").await;
}

#[tokio::test]
async fn frames_announcing_4_gib_are_refused_before_they_are_buffered() {
    let target = Target::start("attack-oversize").await;
    let before = target.rss();
    let mut conns = Vec::new();
    for _ in 0..100 {
        let mut raw = RawConn::open(target.addr).await;
        // A body frame header announcing 0xFFFFFFF0 bytes, then 64 KiB of them.
        let mut f = vec![3u8, 0, 1];
        f.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        f.extend(std::iter::repeat_n(0u8, 64 * 1024));
        let _ = raw.stream.write_all(&f).await;
        conns.push(raw);
    }
    for raw in &mut conns {
        let close = raw.expect_connection_close().await;
        assert_eq!(close.reply_code, 501, "{close:?}");
    }
    target.held_up(before, "100 x 4 GiB frame headers").await;
}

#[tokio::test]
async fn truncated_frames_are_dropped_or_reaped_by_the_heartbeat() {
    let target = Target::start("attack-truncated").await;
    let declare = encode(&AMQPFrame::Method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "truncated".into(),
            ..Default::default()
        })),
    ));
    let before = target.rss();
    // Half a frame, then the socket is closed: 500 times.
    for _ in 0..500 {
        let mut raw = RawConn::open(target.addr).await;
        raw.open_channel(1).await;
        raw.send_bytes(&declare[..declare.len() / 2]).await;
        drop(raw);
    }
    target.still_serves().await;
    // Half a frame, then silence, on a connection that negotiated 1 s heartbeats: the broker
    // gives up on it after two missed heartbeats (as RabbitMQ).
    let mut raw = RawConn::open_with_heartbeat(target.addr, Some(1)).await;
    raw.open_channel(1).await;
    raw.send_bytes(&declare[..declare.len() / 2]).await;
    let reaped = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match raw.recv_timeout(Duration::from_secs(30)).await {
                Some(Incoming::Eof) | None => break,
                Some(Incoming::Frame(_)) => {} // heartbeats
            }
        }
    })
    .await;
    assert!(
        reaped.is_ok(),
        "a silent half frame kept its connection open"
    );
    target.held_up(before, "truncated frames").await;
}

fn publish_frame(channel: u16, routing_key: &str) -> Vec<u8> {
    let mut args = vec![0, 0, 0]; // ticket, empty exchange name
    args.push(routing_key.len() as u8);
    args.extend_from_slice(routing_key.as_bytes());
    args.push(0);
    raw_method_frame(channel, 60, 40, &args)
}

/// A content header for `body_size` bytes with no properties.
fn header_frame(channel: u16, body_size: u64) -> Vec<u8> {
    let mut p = vec![0, 60, 0, 0];
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    raw_frame(2, channel, &p)
}

#[tokio::test]
async fn bodies_larger_than_declared_or_absurdly_declared_are_refused() {
    let target = Target::start("attack-bodies").await;
    // A body longer than its header said: a connection error, as RabbitMQ.
    let mut raw = RawConn::open(target.addr).await;
    raw.open_channel(1).await;
    let mut bytes = publish_frame(1, "nowhere");
    bytes.extend(header_frame(1, 10));
    bytes.extend(raw_frame(3, 1, &[7u8; 100]));
    raw.send_bytes(&bytes).await;
    let close = raw.expect_connection_close().await;
    eprintln!(
        "[observed] body longer than declared: {} {}",
        close.reply_code, close.reply_text
    );
    assert_eq!(close.reply_code, 505, "{close:?}");

    // A header declaring 2^60 bytes: the channel is closed before a byte of body is taken.
    let before = target.rss();
    let mut raw = RawConn::open(target.addr).await;
    raw.open_channel(1).await;
    let mut bytes = publish_frame(1, "nowhere");
    bytes.extend(header_frame(1, 1 << 60));
    raw.send_bytes(&bytes).await;
    let close = raw.expect_channel_close(1).await;
    eprintln!(
        "[observed] 2^60-byte body declared: {} {}",
        close.reply_code, close.reply_text
    );
    assert_eq!(close.reply_code, 406, "{close:?}");
    // The connection itself is still usable.
    raw.open_channel(2).await;
    target.held_up(before, "bodies").await;
}

#[tokio::test]
async fn a_publisher_that_never_reads_its_confirms_cannot_grow_the_broker() {
    let target = Target::start("attack-unread-confirms").await;
    let mut raw = RawConn::open(target.addr).await;
    raw.open_channel(1).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1000));
    raw.send_method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "unread-confirms".into(),
            arguments: args,
            ..Default::default()
        })),
    )
    .await;
    raw.recv_method().await; // declare-ok
    raw.send_method(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    )
    .await;
    raw.recv_method().await; // select-ok
    let before = target.rss();
    // 1,000 publishes per write; the test stops writing once the broker stops reading (its
    // confirms are never read here) or after 2 million.
    let mut batch = Vec::new();
    for _ in 0..1000 {
        batch.extend(publish_frame(1, "unread-confirms"));
        batch.extend(header_frame(1, 16));
        batch.extend(raw_frame(3, 1, &[b'x'; 16]));
    }
    let mut sent = 0u64;
    let mut highest = before;
    for _ in 0..2000 {
        match tokio::time::timeout(Duration::from_secs(3), raw.stream.write_all(&batch)).await {
            Ok(Ok(())) => sent += 1000,
            Ok(Err(e)) => panic!("the broker closed a publisher that only published: {e}"),
            Err(_) => break, // the broker stopped reading: back-pressure
        }
        highest = highest.max(target.rss());
    }
    eprintln!(
        "[observed] {sent} publishes with unread confirms: RSS {} -> {} MiB at most",
        before / MIB,
        highest / MIB
    );
    assert!(
        highest < before + 256 * MIB,
        "unread confirms grew the broker by {} MiB",
        (highest - before) / MIB
    );
    drop(raw);
    target.still_serves().await;
}
