use futures_util::StreamExt;
use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};

#[tokio::test]
async fn smoke() {
    let b = warren::Broker::start(warren::Config::ephemeral())
        .await
        .unwrap();
    let conn = Connection::connect(&b.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "hello".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    println!("{q:?}");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let c = ch
        .basic_publish(
            "".into(),
            "hello".into(),
            BasicPublishOptions::default(),
            b"hi",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    println!("{c:?}");
    let mut consumer = ch
        .basic_consume(
            "hello".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = consumer.next().await.unwrap().unwrap();
    assert_eq!(d.data, b"hi");
    d.ack(BasicAckOptions::default()).await.unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    b.shutdown().await;
}
