//! Bodies of every size arrive intact and in order: empty, inline (up to 4 KiB), shared slices
//! of the read buffer, frames the broker reads to their exact end (32 KiB and more), bodies
//! at and across frame_max, split over several body frames, pipelined back to back, through
//! a queue deep enough to pack its messages, and straight to a consumer.

mod common;

use common::*;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::BasicProperties;

/// Sizes around every boundary the broker handles differently (the inline limit, the
/// large-frame read, frame_max 131072 with its 8 bytes of framing, several frames).
const SIZES: &[usize] = &[
    0, 1, 100, 4096, 4097, 20_000, 32_759, 32_760, 32_768, 65_536, 131_063, 131_064, 131_072,
    300_000, 1_000_000,
];

/// Message `i`: its size from `SIZES`, every byte derived from `i` and its position.
fn body(i: usize) -> Vec<u8> {
    let n = SIZES[i % SIZES.len()];
    (0..n).map(|k| (i * 31 + k * 7 + k / 251) as u8).collect()
}

/// Publishes messages `0..count` back to back on a confirm channel, then waits for every
/// confirm.
async fn publish_all(ch: &lapin::Channel, queue: &str, count: usize) {
    let mut confirms = Vec::with_capacity(count);
    for i in 0..count {
        let c = within(
            "basic.publish",
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body(i),
                BasicProperties::default().with_message_id(i.to_string().into()),
            ),
        )
        .await
        .expect("basic.publish");
        confirms.push(c);
    }
    for c in confirms {
        let confirmation = within("publisher confirm", c).await.expect("confirm");
        assert!(confirmation.is_ack(), "publish nacked: {confirmation:?}");
    }
}

/// Consumes `count` messages and checks each against what was published, in order.
async fn expect_all(consumer: &mut lapin::Consumer, count: usize) {
    for i in 0..count {
        let d = within("a delivery", consumer.next())
            .await
            .expect("consumer stream ended")
            .expect("delivery");
        let id = d
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        assert_eq!(id, i.to_string(), "deliveries out of order");
        let want = body(i);
        assert_eq!(d.data.len(), want.len(), "message {i}: wrong body length");
        assert!(d.data == want, "message {i}: body bytes differ");
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
}

#[tokio::test]
async fn bodies_of_every_size_survive_a_deep_queue_intact_and_in_order() {
    let b = start().await;
    let conn = connect(&b).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("large-deep")).await;
    // Deep enough (about 30 MB) that the queue packs what is behind its first 4 MiB.
    let count = 15 * SIZES.len();
    publish_all(&ch, &q, count).await;
    assert_eq!(message_count(&ch, &q).await, count as u32);
    let mut consumer = consume(&ch, &q, false).await;
    expect_all(&mut consumer, count).await;
}

#[tokio::test]
async fn bodies_of_every_size_reach_a_live_consumer_intact_and_in_order() {
    let b = start().await;
    let conn = connect(&b).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("large-live")).await;
    let cch = channel(&conn).await;
    let mut consumer = consume(&cch, &q, false).await;
    let count = 15 * SIZES.len();
    let check = tokio::spawn(async move { expect_all(&mut consumer, count).await });
    publish_all(&ch, &q, count).await;
    check.await.expect("every message checked");
}
