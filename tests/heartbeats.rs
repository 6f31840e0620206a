//! Proves heartbeats: with a 1 s heartbeat an idle lapin connection stays alive, the server
//! sends heartbeat frames on an idle connection, a client that keeps sending heartbeats is kept,
//! a client that goes silent is disconnected within a bounded time, and heartbeat=0 disables
//! the check.
mod common;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{channel, AMQPClass};
use common::*;
use std::time::Duration;
use tokio::time::{sleep, Instant};

#[tokio::test]
async fn idle_lapin_connection_with_1s_heartbeat_stays_alive() {
    let broker = start().await;
    let conn = connect_url(&format!("{}?heartbeat=1", broker.url)).await;
    assert_eq!(conn.configuration().heartbeat(), 1);
    let ch = channel(&conn).await;
    sleep(Duration::from_millis(3500)).await;
    assert!(conn.status().connected(), "connection dropped while idle");
    assert!(ch.status().connected());
    let q = declare_queue(&ch, "").await;
    assert!(q.starts_with("amq.gen-"));
}

#[tokio::test]
async fn server_sends_heartbeats_on_an_idle_connection() {
    let broker = start().await;
    let mut raw = RawConn::open_with_heartbeat(broker.addr, Some(1)).await;
    let hb = encode(&AMQPFrame::Heartbeat);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut received = 0;
    while Instant::now() < deadline && received < 2 {
        // Keep our side alive too.
        raw.send_bytes(&hb).await;
        match raw.recv_timeout(Duration::from_millis(500)).await {
            Some(Incoming::Frame(AMQPFrame::Heartbeat)) => received += 1,
            Some(Incoming::Frame(other)) => panic!("unexpected frame {other:?}"),
            Some(Incoming::Eof) => panic!("server closed a connection that sends heartbeats"),
            None => {}
        }
    }
    assert!(
        received >= 2,
        "expected heartbeat frames from the server, got {received}"
    );
}

#[tokio::test]
async fn client_sending_heartbeats_is_kept() {
    let broker = start().await;
    let mut raw = RawConn::open_with_heartbeat(broker.addr, Some(1)).await;
    let hb = encode(&AMQPFrame::Heartbeat);
    let until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < until {
        raw.send_bytes(&hb).await;
        // Swallow whatever the server sends (its heartbeats); EOF would be a failure.
        if let Some(Incoming::Eof) = raw.recv_timeout(Duration::from_millis(400)).await {
            panic!("server closed a connection that sends heartbeats");
        }
    }
    raw.send_method(
        5,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    loop {
        match raw.recv().await {
            Incoming::Frame(AMQPFrame::Heartbeat) => continue,
            Incoming::Frame(AMQPFrame::Method(
                5,
                AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)),
            )) => break,
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn silent_client_is_disconnected() {
    let broker = start().await;
    let mut raw = RawConn::open_with_heartbeat(broker.addr, Some(1)).await;
    let started = Instant::now();
    // Send nothing at all; read (and ignore) the server's heartbeats until it gives up on us.
    let mut close = None;
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match raw.recv_timeout(Duration::from_secs(10)).await {
                Some(Incoming::Eof) => return,
                Some(Incoming::Frame(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(amq_protocol::protocol::connection::AMQPMethod::Close(c)),
                ))) => close = Some((c.reply_code, c.reply_text.as_str().to_owned())),
                Some(Incoming::Frame(_)) => {}
                None => return,
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "a silent client must be disconnected within 10s (heartbeat=1)"
    );
    eprintln!(
        "[observed] silent client with heartbeat=1 dropped after {:?}; connection.close sent: {close:?}",
        started.elapsed()
    );
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn heartbeat_zero_disables_the_check() {
    let broker = start().await;
    let mut raw = RawConn::open_with_heartbeat(broker.addr, Some(0)).await;
    // Silent for longer than a 1 s heartbeat would tolerate; no heartbeats must arrive.
    match raw.recv_timeout(Duration::from_millis(3000)).await {
        None => {}
        Some(other) => panic!("expected silence with heartbeat=0, got {other:?}"),
    }
    raw.open_channel(1).await;
}
