//! Proves acknowledgement semantics: ack removes a message, reject/nack with requeue puts it
//! back at its original position flagged redelivered, without requeue drops it, `multiple`
//! covers every outstanding tag up to the given one (0 = all), and basic.recover redelivers
//! unacked messages.
mod common;

use common::*;
use lapin::options::*;
use lapin::Channel;

async fn get(ch: &Channel, q: &str) -> lapin::message::BasicGetMessage {
    within(
        "basic.get",
        ch.basic_get(q.into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .expect("basic.get")
    .expect("a message")
}

async fn fill(conn: &lapin::Connection, q: &str, n: usize) {
    let p = confirm_channel(conn).await;
    for i in 0..n {
        publish_confirmed(&p, "", q, format!("m{i}").as_bytes()).await;
    }
}

#[tokio::test]
async fn ack_removes_the_message_for_good() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let owner = channel(&conn).await;
    let q = declare_queue(&owner, &unique("ack")).await;
    fill(&conn, &q, 2).await;
    let ch = channel(&conn).await;
    let m = get(&ch, &q).await;
    assert_eq!(m.delivery.data, b"m0");
    assert!(!m.delivery.redelivered);
    within("ack", m.delivery.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    within("channel.close", ch.close(200, "bye".into()))
        .await
        .unwrap();
    // Only the never-delivered message is left: the acked one did not come back.
    assert_eq!(drain(&owner, &q).await, vec!["m1"]);
}

#[tokio::test]
async fn reject_with_requeue_puts_the_message_back_at_the_head_redelivered() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("reject")).await;
    fill(&conn, &q, 3).await;
    let m0 = get(&ch, &q).await;
    assert_eq!(m0.delivery.data, b"m0");
    within(
        "reject",
        m0.delivery.reject(BasicRejectOptions { requeue: true }),
    )
    .await
    .unwrap();
    wait_message_count(&ch, &q, 3).await;
    let again = get(&ch, &q).await;
    assert_eq!(
        again.delivery.data, b"m0",
        "a requeued message keeps its place in the queue"
    );
    assert!(again.delivery.redelivered);
    assert_eq!(again.message_count, 2);
    within("ack", again.delivery.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    let m1 = get(&ch, &q).await;
    assert_eq!(m1.delivery.data, b"m1");
    assert!(!m1.delivery.redelivered);
}

#[tokio::test]
async fn reject_and_nack_without_requeue_drop_the_message() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("drop")).await;
    fill(&conn, &q, 3).await;
    let m0 = get(&ch, &q).await;
    within(
        "reject",
        m0.delivery.reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .unwrap();
    let m1 = get(&ch, &q).await;
    within(
        "nack",
        m1.delivery.nack(BasicNackOptions {
            requeue: false,
            multiple: false,
        }),
    )
    .await
    .unwrap();
    within("channel.close", ch.close(200, "bye".into()))
        .await
        .unwrap();
    let ch = channel(&conn).await;
    assert_eq!(drain(&ch, &q).await, vec!["m2"]);
}

#[tokio::test]
async fn nack_multiple_requeues_everything_up_to_the_tag() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("nackm")).await;
    fill(&conn, &q, 4).await;
    let mut c = consume(&ch, &q, false).await;
    let d: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(next_delivery(&mut c).await);
        }
        v
    };
    assert_eq!(
        d.iter().map(|x| x.delivery_tag).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    // nack 1..=3 with requeue; 4 stays unacked.
    within(
        "nack multiple",
        ch.basic_nack(
            3,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        ),
    )
    .await
    .unwrap();
    // The three requeued messages come back to the same consumer, in order, redelivered.
    let mut again = Vec::new();
    for _ in 0..3 {
        let r = next_delivery(&mut c).await;
        assert!(r.redelivered, "{}", body(&r));
        again.push(body(&r));
    }
    assert_eq!(again, vec!["m0", "m1", "m2"]);
    // Delivery tags keep increasing on the channel.
}

#[tokio::test]
async fn ack_multiple_and_ack_zero_multiple() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let owner = channel(&conn).await;
    let q = declare_queue(&owner, &unique("ackm")).await;
    fill(&conn, &q, 5).await;

    let ch = channel(&conn).await;
    let mut tags = Vec::new();
    for _ in 0..3 {
        tags.push(get(&ch, &q).await.delivery.delivery_tag);
    }
    assert_eq!(
        tags,
        vec![1, 2, 3],
        "delivery tags start at 1 and increase by one per channel"
    );
    within(
        "ack multiple",
        ch.basic_ack(2, BasicAckOptions { multiple: true }),
    )
    .await
    .unwrap();
    within("channel.close", ch.close(200, "bye".into()))
        .await
        .unwrap();
    // m0 and m1 were acked; m2 was unacked and came back (first, redelivered).
    wait_message_count(&owner, &q, 3).await;
    let ch = channel(&conn).await;
    let m = get(&ch, &q).await;
    assert_eq!(m.delivery.data, b"m2");
    assert!(m.delivery.redelivered);
    assert_eq!(
        m.delivery.delivery_tag, 1,
        "a new channel starts its own tag sequence"
    );
    get(&ch, &q).await; // m3, tag 2
                        // delivery_tag 0 with multiple = every outstanding delivery on the channel.
    within(
        "ack 0 multiple",
        ch.basic_ack(0, BasicAckOptions { multiple: true }),
    )
    .await
    .unwrap();
    within("channel.close", ch.close(200, "bye".into()))
        .await
        .unwrap();
    assert_eq!(drain(&owner, &q).await, vec!["m4"]);
}

#[tokio::test]
async fn basic_recover_redelivers_unacked_messages() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("recover")).await;
    fill(&conn, &q, 2).await;
    let mut c = consume(&ch, &q, false).await;
    let first = next_delivery(&mut c).await;
    let second = next_delivery(&mut c).await;
    assert!(!first.redelivered && !second.redelivered);
    within("ack", first.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    within(
        "basic.recover",
        ch.basic_recover(BasicRecoverOptions { requeue: true }),
    )
    .await
    .unwrap();
    let again = next_delivery(&mut c).await;
    assert_eq!(body(&again), "m1");
    assert!(again.redelivered);
    within("ack", again.ack(BasicAckOptions::default()))
        .await
        .unwrap();
}
