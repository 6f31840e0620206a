//! A whole connection fed arbitrary bytes after a valid handshake: an in-process broker serves
//! the connection over an in-memory pipe (`Broker::serve_stream`), exactly as it would a TCP
//! client that logged in, opened channel 1 and then sent the fuzzer's bytes. The broker must
//! not panic (libFuzzer's hook turns a panic in any task into a crash), must close the
//! connection once its input ends, and must keep serving the next connection.
//!
//! Each input runs in a vhost of its own that is deleted afterwards, so that what one input
//! declares cannot pile up over a run (or make a crash depend on earlier inputs).
#![no_main]

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use warren_broker::{Broker, Config};

const VHOST: &str = "fuzz";

struct Harness {
    runtime: Runtime,
    broker: Broker,
    handshake: Vec<u8>,
}

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

fn short(out: &mut Vec<u8>, s: &[u8]) {
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// Protocol header, start-ok (PLAIN guest), tune-ok (no heartbeats), connection.open of the
/// fuzz vhost and channel.open 1: sent before the broker answers, which it allows.
fn handshake() -> Vec<u8> {
    let mut out = b"AMQP\x00\x00\x09\x01".to_vec();
    let mut start_ok = vec![0, 10, 0, 11, 0, 0, 0, 0];
    short(&mut start_ok, b"PLAIN");
    let response = b"\0guest\0guest";
    start_ok.extend_from_slice(&(response.len() as u32).to_be_bytes());
    start_ok.extend_from_slice(response);
    short(&mut start_ok, b"en_US");
    out.extend(frame(1, 0, &start_ok));
    let mut tune_ok = vec![0, 10, 0, 31, 0x07, 0xFF];
    tune_ok.extend_from_slice(&131_072u32.to_be_bytes());
    tune_ok.extend_from_slice(&[0, 0]);
    out.extend(frame(1, 0, &tune_ok));
    let mut open = vec![0, 10, 0, 40];
    short(&mut open, VHOST.as_bytes());
    open.extend_from_slice(&[0, 0]);
    out.extend(frame(1, 0, &open));
    out.extend(frame(1, 1, &[0, 20, 0, 10, 0]));
    out
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut config = Config::ephemeral();
    config.amqps_bind = None;
    // The fuzzer's own memory (sanitizer shadow included) must not raise alarms that block
    // the connection: the alarms have their own tests.
    config.memory_high_watermark = 0.0;
    config.memory_high_watermark_bytes = None;
    config.disk_free_limit_bytes = 0;
    let broker = runtime
        .block_on(Broker::start(config))
        .expect("the broker starts");
    Harness {
        runtime,
        broker,
        handshake: handshake(),
    }
});

fuzz_target!(|data: &[u8]| {
    let h = &*HARNESS;
    h.runtime.block_on(async {
        h.broker
            .access()
            .put_vhost(VHOST, None, None, None, Some("guest"))
            .expect("the fuzz vhost is created");
        let (client, server) = tokio::io::duplex(1 << 16);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 5672));
        h.broker.serve_stream(server, loopback, loopback);
        let (mut reader, mut writer) = tokio::io::split(client);
        // Everything the broker writes is read at once, so it never waits on this side.
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink).await;
        });
        let session = async {
            // A write fails once the broker has closed the connection: expected for most
            // inputs. A write that never finishes is a broker that stopped reading.
            let _ = writer.write_all(&h.handshake).await;
            let _ = writer.write_all(data).await;
            let _ = writer.shutdown().await;
            // The end of the input ends the connection: the broker must let go of it.
            drain.await.expect("the reader task");
        };
        tokio::time::timeout(Duration::from_secs(20), session)
            .await
            .expect("the broker read the whole input and closed the connection");
        h.broker
            .access()
            .delete_vhost(VHOST)
            .await
            .expect("the fuzz vhost is deleted");
    });
});
