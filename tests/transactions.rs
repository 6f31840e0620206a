//! Proves tx semantics: after tx.select, publishes and acks take effect only at tx.commit,
//! tx.rollback discards pending publishes and acks, commit/rollback without select is 406, and
//! tx and confirm modes exclude each other (406).
mod common;

use common::*;
use lapin::options::*;

fn report(case: &str, code: u16, text: &str) {
    eprintln!("[observed] {case}: {code} {text:?}");
}

#[tokio::test]
async fn publishes_are_invisible_until_commit() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let observer = channel(&conn).await;
    let q = declare_queue(&observer, &unique("tx")).await;
    let tx = channel(&conn).await;
    within("tx.select", tx.tx_select()).await.unwrap();
    publish(&tx, "", &q, b"a").await;
    publish(&tx, "", &q, b"b").await;
    // A synchronous round trip on the tx channel proves the publishes reached the broker.
    within("basic.qos", tx.basic_qos(0, Default::default()))
        .await
        .unwrap();
    assert_eq!(
        message_count(&observer, &q).await,
        0,
        "uncommitted publishes are not enqueued"
    );
    within("tx.commit", tx.tx_commit()).await.unwrap();
    assert_eq!(drain(&observer, &q).await, vec!["a", "b"]);
    // The channel stays transactional: the next publish again waits for a commit.
    publish(&tx, "", &q, b"c").await;
    within("basic.qos", tx.basic_qos(0, Default::default()))
        .await
        .unwrap();
    assert_eq!(message_count(&observer, &q).await, 0);
    within("tx.commit", tx.tx_commit()).await.unwrap();
    assert_eq!(drain(&observer, &q).await, vec!["c"]);
}

#[tokio::test]
async fn rollback_discards_pending_publishes() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let observer = channel(&conn).await;
    let q = declare_queue(&observer, &unique("tx-rb")).await;
    let tx = channel(&conn).await;
    within("tx.select", tx.tx_select()).await.unwrap();
    publish(&tx, "", &q, b"discarded").await;
    within("tx.rollback", tx.tx_rollback()).await.unwrap();
    publish(&tx, "", &q, b"kept").await;
    within("tx.commit", tx.tx_commit()).await.unwrap();
    assert_eq!(drain(&observer, &q).await, vec!["kept"]);
}

#[tokio::test]
async fn acks_take_effect_on_commit_and_rollback_keeps_them_unacked() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let observer = confirm_channel(&conn).await;
    let q = declare_queue(&observer, &unique("tx-ack")).await;
    publish_confirmed(&observer, "", &q, b"m0").await;
    publish_confirmed(&observer, "", &q, b"m1").await;

    let tx = channel(&conn).await;
    within("tx.select", tx.tx_select()).await.unwrap();
    let m0 = within(
        "basic.get",
        tx.basic_get(q.as_str().into(), BasicGetOptions::default()),
    )
    .await
    .unwrap()
    .unwrap();
    let m1 = within(
        "basic.get",
        tx.basic_get(q.as_str().into(), BasicGetOptions::default()),
    )
    .await
    .unwrap()
    .unwrap();
    within(
        "ack m0",
        tx.basic_ack(m0.delivery.delivery_tag, Default::default()),
    )
    .await
    .unwrap();
    within("tx.commit", tx.tx_commit()).await.unwrap();
    within(
        "ack m1",
        tx.basic_ack(m1.delivery.delivery_tag, Default::default()),
    )
    .await
    .unwrap();
    within("tx.rollback", tx.tx_rollback()).await.unwrap();
    // m1's ack was rolled back: m1 is still unacked (not requeued by the rollback)...
    assert_eq!(message_count(&observer, &q).await, 0);
    // ...and comes back when the channel closes; m0's committed ack stands.
    within("channel.close", tx.close(200, "bye".into()))
        .await
        .unwrap();
    wait_message_count(&observer, &q, 1).await;
    assert_eq!(drain(&observer, &q).await, vec!["m1"]);
}

#[tokio::test]
async fn commit_or_rollback_without_select_is_precondition_failed() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let (code, text) = expect_refused("tx.commit", ch.tx_commit()).await;
    report("tx.commit without tx.select", code, &text);
    assert_eq!(
        (code, text.as_str()),
        (406, "PRECONDITION_FAILED - channel is not transactional")
    );
    assert_only_channel_closed(&conn, &ch).await;

    let ch = channel(&conn).await;
    let (code, text) = expect_refused("tx.rollback", ch.tx_rollback()).await;
    report("tx.rollback without tx.select", code, &text);
    assert_eq!(
        (code, text.as_str()),
        (406, "PRECONDITION_FAILED - channel is not transactional")
    );
    assert_only_channel_closed(&conn, &ch).await;
}

#[tokio::test]
async fn tx_and_confirm_modes_exclude_each_other() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    within("tx.select", ch.tx_select()).await.unwrap();
    let (code, text) = expect_refused(
        "confirm.select on a tx channel",
        ch.confirm_select(Default::default()),
    )
    .await;
    report("confirm.select after tx.select", code, &text);
    assert_eq!(
        (code, text.as_str()),
        (
            406,
            "PRECONDITION_FAILED - cannot switch from tx to confirm mode"
        )
    );
    assert_only_channel_closed(&conn, &ch).await;

    let ch = confirm_channel(&conn).await;
    let (code, text) = expect_refused("tx.select on a confirm channel", ch.tx_select()).await;
    report("tx.select after confirm.select", code, &text);
    assert_eq!(
        (code, text.as_str()),
        (
            406,
            "PRECONDITION_FAILED - cannot switch from confirm to tx mode"
        )
    );
    assert_only_channel_closed(&conn, &ch).await;
}

#[tokio::test]
async fn tx_select_is_idempotent_and_empty_commit_is_fine() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    within("tx.select", ch.tx_select()).await.unwrap();
    within("tx.select again", ch.tx_select()).await.unwrap();
    within("empty tx.commit", ch.tx_commit()).await.unwrap();
    within("empty tx.rollback", ch.tx_rollback()).await.unwrap();
}
