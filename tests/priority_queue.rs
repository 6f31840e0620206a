//! Proves priority queues (`x-max-priority`, 1 to 255): higher-priority messages are delivered
//! first, first-in first-out within a priority; a priority above the maximum counts as the
//! maximum; a requeued message goes back to its place; without `x-max-priority` the property
//! is ignored.
mod common;
mod queue_support;

use common::*;
use lapin::options::*;
use lapin::{BasicProperties, Channel};
use queue_support::*;

async fn publish_prio(ch: &Channel, q: &str, body: &str, priority: Option<u8>) {
    let props = match priority {
        Some(p) => BasicProperties::default().with_priority(p),
        None => BasicProperties::default(),
    };
    publish_confirmed_with(ch, "", q, body.as_bytes(), props).await;
}

async fn priority_queue(ch: &Channel, max: i32) -> String {
    declare_with(ch, &unique("prio"), &[("x-max-priority", int(max))]).await
}

#[tokio::test]
async fn higher_priority_messages_are_delivered_first_fifo_within_a_priority() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = priority_queue(&ch, 10).await;
    for (body, p) in [
        ("p1", Some(1)),
        ("p5-a", Some(5)),
        ("none", None),
        ("p10", Some(10)),
        ("p5-b", Some(5)),
        ("p0", Some(0)),
    ] {
        publish_prio(&ch, &q, body, p).await;
    }
    assert_eq!(
        drain(&ch, &q).await,
        ["p10", "p5-a", "p5-b", "p1", "none", "p0"],
        "no priority is priority 0"
    );
}

#[tokio::test]
async fn a_consumer_receives_the_backlog_in_priority_order() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = priority_queue(&ch, 5).await;
    for (body, p) in [("low", 1), ("high", 5), ("mid", 3)] {
        publish_prio(&ch, &q, body, Some(p)).await;
    }
    let mut c = consume(&ch, &q, true).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(body(&next_delivery(&mut c).await));
    }
    assert_eq!(got, ["high", "mid", "low"]);
}

#[tokio::test]
async fn a_priority_above_the_maximum_counts_as_the_maximum() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = priority_queue(&ch, 3).await;
    publish_prio(&ch, &q, "p2", Some(2)).await;
    publish_prio(&ch, &q, "p3", Some(3)).await;
    publish_prio(&ch, &q, "p200", Some(200)).await;
    assert_eq!(drain(&ch, &q).await, ["p3", "p200", "p2"]);
}

#[tokio::test]
async fn a_requeued_message_goes_back_to_its_place() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = priority_queue(&ch, 5).await;
    publish_prio(&ch, &q, "a", Some(5)).await;
    publish_prio(&ch, &q, "b", Some(5)).await;
    publish_prio(&ch, &q, "c", Some(1)).await;
    let a = get(&ch, &q).await.expect("a");
    assert_eq!(body(&a), "a");
    publish_prio(&ch, &q, "d", Some(5)).await;
    within("reject", a.reject(BasicRejectOptions { requeue: true }))
        .await
        .unwrap();
    wait_message_count(&ch, &q, 4).await;
    assert_eq!(drain(&ch, &q).await, ["a", "b", "d", "c"]);
}

#[tokio::test]
async fn without_x_max_priority_the_priority_property_is_ignored() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("noprio")).await;
    publish_prio(&ch, &q, "first", Some(0)).await;
    publish_prio(&ch, &q, "second", Some(9)).await;
    assert_eq!(drain(&ch, &q).await, ["first", "second"]);
}

#[tokio::test]
async fn the_maximum_priority_255_is_accepted() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = priority_queue(&ch, 255).await;
    publish_prio(&ch, &q, "p0", Some(0)).await;
    publish_prio(&ch, &q, "p255", Some(255)).await;
    publish_prio(&ch, &q, "p254", Some(254)).await;
    assert_eq!(drain(&ch, &q).await, ["p255", "p254", "p0"]);
}
