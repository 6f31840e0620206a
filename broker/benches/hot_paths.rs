//! Micro-benchmarks of the broker's hot paths: the frame codec, the topic matcher, and a
//! queue's publish / deliver / ack path (in memory, packed when deep, and durable on sled).
//! `cargo bench -p warren-broker`; CI builds them (`cargo bench --no-run`) without timing.

use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass, BasicProperties};
use amq_protocol::types::FieldTable;
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

use warren_broker::exchange::{Destination, Router, TopicRouter};
use warren_broker::message::Message;
use warren_broker::protocol::{
    decode_frame, encode_properties, write_content, write_content_shared, write_deliver,
    write_method, Output,
};
use warren_broker::queue::QueueHandle;
use warren_broker::store::disk::Disk;
use warren_broker::store::{DurableQueueStore, MemoryQueueStore, QueueStore, StoredMessage};

/// `n` publishes of a 16-byte body, as a client sends them.
fn publishes(n: usize) -> Vec<u8> {
    let props = encode_properties(&BasicProperties::default());
    let mut one = Vec::new();
    write_method(
        &mut one,
        1,
        &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "perf-queue".into(),
            mandatory: false,
            immediate: false,
        })),
    );
    write_content(&mut one, 1, &props, &[b'x'; 16], 131_072);
    one.repeat(n)
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let input = publishes(1000);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("decode 1000 publishes (method, header, body)", |b| {
        b.iter_batched(
            || BytesMut::from(&input[..]),
            |mut buf| {
                let mut n = 0;
                while let Some(f) = decode_frame(&mut buf, 131_072).unwrap() {
                    black_box(&f);
                    n += 1;
                }
                assert_eq!(n, 3000);
            },
            BatchSize::SmallInput,
        )
    });
    let m = message(16, false);
    g.bench_function("encode 1000 deliveries", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for tag in 1..=1000u64 {
                write_deliver(
                    &mut out,
                    1,
                    "amq.ctag-bench",
                    tag,
                    false,
                    b"",
                    b"perf-queue",
                );
                write_content(&mut out, 1, m.raw_properties(), m.body(), 131_072);
            }
            black_box(out.len())
        })
    });
    let big = message(64 * 1024, false);
    g.throughput(Throughput::Bytes(100 * 64 * 1024));
    g.bench_function("encode 100 deliveries of 64 KiB (spliced)", |b| {
        b.iter(|| {
            let mut out = Output::default();
            for tag in 1..=100u64 {
                write_deliver(&mut out, 1, "amq.ctag-bench", tag, false, b"", b"q");
                write_content_shared(
                    &mut out,
                    1,
                    big.raw_properties(),
                    big.body(),
                    big.shared_body(),
                    131_072,
                );
            }
            black_box(out.pending())
        })
    });
    g.finish();
}

fn topic(c: &mut Criterion) {
    let mut g = c.benchmark_group("topic");
    let mut router = TopicRouter::default();
    let queues: Vec<Destination> = (0..10)
        .map(|i| Destination::Queue(QueueHandle::detached(&format!("q{i}"))))
        .collect();
    for i in 0..1000 {
        router.bind(
            &queues[i % 10],
            &format!("perf.{i}.*"),
            &FieldTable::default(),
        );
    }
    router.bind(
        &Destination::Queue(QueueHandle::detached("all")),
        "#.msg",
        &FieldTable::default(),
    );
    let keys: Vec<String> = (0..64).map(|i| format!("perf.{i}.msg")).collect();
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("route through 1,001 wildcard bindings", |b| {
        let mut out = Vec::with_capacity(16);
        b.iter(|| {
            for k in &keys {
                out.clear();
                router.route(k, None, &mut out);
                black_box(out.len());
            }
        })
    });
    g.finish();
}

fn message(size: usize, persistent: bool) -> Arc<Message> {
    let props = if persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    Arc::new(Message::new(
        "".into(),
        "perf-queue".into(),
        &props,
        encode_properties(&props),
        Bytes::from(vec![b'x'; size]),
    ))
}

/// Publishes `n` messages, delivers and settles them all; `depth` at a time are queued.
fn cycle(store: &mut dyn QueueStore, m: &Arc<Message>, n: u64, depth: u64, seq: &mut u64) {
    let mut i = 0;
    while i < n {
        for _ in 0..depth {
            *seq += 1;
            store.push(StoredMessage::new(*seq, m.clone(), None));
        }
        let _ = store.commit(&[], false);
        while let Some(d) = store.pop() {
            store.delivered(&d);
            store.settle(&d);
        }
        let _ = store.commit(&[], false);
        i += depth;
    }
}

fn queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(10_000));
    let m = message(16, false);
    g.bench_function("publish, deliver, ack 10,000 in memory (100 queued)", |b| {
        let (mut s, mut seq) = (MemoryQueueStore::default(), 0);
        b.iter(|| cycle(&mut s, &m, 10_000, 100, &mut seq))
    });
    g.bench_function(
        "publish, deliver, ack 10,000 in memory (10,000 queued: packed)",
        |b| {
            let (mut s, mut seq) = (MemoryQueueStore::default(), 0);
            b.iter(|| cycle(&mut s, &m, 10_000, 10_000, &mut seq))
        },
    );
    let dir = std::env::temp_dir().join(format!("warren-bench-{}", std::process::id()));
    let (disk, _) = Disk::open(&dir, 32 << 20).expect("a store in the temp dir");
    let pm = message(16, true);
    g.sample_size(20);
    g.bench_function(
        "publish, deliver, ack 10,000 persistent on sled (1,000 a round)",
        |b| {
            let (mut s, mut seq) = (DurableQueueStore::new(disk.clone(), 1), 0);
            b.iter(|| cycle(&mut s, &pm, 10_000, 1_000, &mut seq))
        },
    );
    g.finish();
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, codec, topic, queue);
criterion_main!(benches);
