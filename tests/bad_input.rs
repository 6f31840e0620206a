//! Proves robustness against malformed input on the raw socket: a wrong protocol header gets
//! RabbitMQ's `AMQP 0-9-1` header back and a close; framing errors (bad frame-end octet, oversize
//! frame, unknown frame type) are 501 FRAME_ERROR; methods on unopened channels are 504
//! CHANNEL_ERROR; stray content frames are 505 UNEXPECTED_FRAME; channel_max caps the number of
//! open channels (530); unknown methods drop the connection; and after each a fresh connection
//! still works.
mod common;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, channel, connection, queue, AMQPClass};
use amq_protocol::types::FieldTable;
use common::*;
use lapin::BasicProperties;

fn report(case: &str, close: &CloseInfo) {
    eprintln!(
        "[observed] {case}: {} {:?} (class {}, method {})",
        close.reply_code, close.reply_text, close.class_id, close.method_id
    );
}

async fn wrong_header_gets_ours_back(bytes: &[u8]) {
    let broker = start().await;
    let mut raw = RawConn::tcp(broker.addr).await;
    raw.send_bytes(bytes).await;
    let reply = raw.read_until_eof().await;
    assert_eq!(reply, PROTOCOL_HEADER, "reply to {bytes:?}");
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn amqp_0_10_header_gets_0_9_1_header_and_close() {
    wrong_header_gets_ours_back(b"AMQP\x01\x01\x00\x0a").await;
}

#[tokio::test]
async fn amqp_1_0_header_gets_0_9_1_header_and_close() {
    wrong_header_gets_ours_back(b"AMQP\x00\x01\x00\x00").await;
}

#[tokio::test]
async fn http_request_gets_0_9_1_header_and_close() {
    wrong_header_gets_ours_back(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
}

#[tokio::test]
async fn binary_garbage_gets_0_9_1_header_and_close() {
    wrong_header_gets_ours_back(&[0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x13, 0x37, 0x42, 0x42])
        .await;
}

/// Opens a connection and channel 1, sends `bytes`, and returns the server's connection.close.
async fn close_after(bytes: &[u8], open_channel: bool) -> CloseInfo {
    let broker = start().await;
    let mut raw = RawConn::open(broker.addr).await;
    if open_channel {
        raw.open_channel(1).await;
    }
    raw.send_bytes(bytes).await;
    let close = raw.expect_connection_close().await;
    assert_broker_alive(&broker).await;
    close
}

fn publish_method(channel: u16, queue_name: &str) -> Vec<u8> {
    encode(&AMQPFrame::Method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: queue_name.into(),
            mandatory: false,
            immediate: false,
        })),
    ))
}

fn content_header(channel: u16, size: u64) -> Vec<u8> {
    encode(&AMQPFrame::Header(
        channel,
        AMQPContentHeader {
            class_id: 60,
            body_size: size,
            properties: BasicProperties::default(),
        },
    ))
}

#[tokio::test]
async fn wrong_frame_end_octet_is_frame_error() {
    let mut frame = encode(&AMQPFrame::Method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "".into(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    ));
    *frame.last_mut().unwrap() = 0x00;
    let close = close_after(&frame, true).await;
    report("frame-end octet 0x00", &close);
    assert_eq!(close.reply_code, 501, "{close:?}");
    assert!(close.reply_text.starts_with("FRAME_ERROR - "), "{close:?}");
}

#[tokio::test]
async fn frame_larger_than_frame_max_is_frame_error() {
    // RabbitMQ tolerates a payload of up to frame_max bytes (8 more than the spec allows, a
    // "fudge factor" for sloppy clients) and refuses anything bigger as soon as it reads the
    // frame header. Twice frame_max is refused by a strict and a lenient broker alike.
    let broker = start().await;
    let mut raw = RawConn::open(broker.addr).await;
    raw.open_channel(1).await;
    let frame_max = raw.tune.as_ref().unwrap().frame_max as usize;
    let mut bytes = publish_method(1, "nowhere");
    bytes.extend(content_header(1, (frame_max * 4) as u64));
    bytes.extend(raw_frame(3, 1, &vec![b'x'; frame_max * 2]));
    // The server may close before it has read everything.
    raw.try_send_bytes(&bytes).await;
    let close = raw.expect_connection_close().await;
    report("frame bigger than frame_max", &close);
    assert_eq!(close.reply_code, 501, "{close:?}");
    assert!(close.reply_text.starts_with("FRAME_ERROR - "), "{close:?}");
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn frame_header_announcing_an_oversize_frame_is_frame_error() {
    // Only the 7-byte header of a 10 MB body frame: refused without waiting for the payload.
    let mut header = vec![3u8, 0, 1];
    header.extend_from_slice(&10_000_000u32.to_be_bytes());
    let mut bytes = publish_method(1, "nowhere");
    bytes.extend(content_header(1, 10_000_000));
    bytes.extend(header);
    let close = close_after(&bytes, true).await;
    report("frame header announcing 10 MB", &close);
    assert_eq!(close.reply_code, 501, "{close:?}");
    assert!(close.reply_text.starts_with("FRAME_ERROR - "), "{close:?}");
}

#[tokio::test]
async fn unknown_frame_type_is_frame_error() {
    let close = close_after(&raw_frame(9, 1, b"hello"), true).await;
    report("unknown frame type 9", &close);
    assert_eq!(close.reply_code, 501, "{close:?}");
    assert!(close.reply_text.starts_with("FRAME_ERROR - "), "{close:?}");
}

#[tokio::test]
async fn method_on_an_unopened_channel_is_channel_error() {
    let frame = encode(&AMQPFrame::Method(
        7,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "".into(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    ));
    let close = close_after(&frame, false).await;
    report("queue.declare on unopened channel 7", &close);
    assert_eq!(close.reply_code, 504, "{close:?}");
    assert_eq!(close.reply_text, "CHANNEL_ERROR - expected 'channel.open'");
    assert_eq!((close.class_id, close.method_id), (50, 10));
}

#[tokio::test]
async fn opening_an_open_channel_again_is_channel_error() {
    let frame = encode(&AMQPFrame::Method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    ));
    let close = close_after(&frame, true).await;
    report("second channel.open on channel 1", &close);
    assert_eq!(close.reply_code, 504, "{close:?}");
    assert_eq!(
        close.reply_text,
        "CHANNEL_ERROR - second 'channel.open' seen"
    );
}

#[tokio::test]
async fn channel_max_limits_the_number_of_open_channels() {
    // RabbitMQ enforces channel_max as a limit on how many channels are open at once, not on
    // the channel number: with channel_max=2, channel 5 may be opened, a third channel may not.
    let broker = start().await;
    let mut raw = RawConn::tcp(broker.addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    raw.read_start().await;
    raw.send_start_ok("guest", "guest").await;
    let tune = match raw.recv_method().await {
        AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
        other => panic!("expected connection.tune, got {other:?}"),
    };
    raw.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 2,
            frame_max: tune.frame_max,
            heartbeat: 0,
        })),
    )
    .await;
    raw.send_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    )
    .await;
    assert!(matches!(
        raw.recv_method().await,
        AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
    ));
    raw.open_channel(1).await;
    raw.open_channel(5).await;
    raw.send_method(
        3,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    let close = raw.expect_connection_close().await;
    report("third channel.open with channel_max=2", &close);
    assert_eq!(close.reply_code, 530, "{close:?}");
    assert_eq!(
        close.reply_text,
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
    );
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn content_header_without_publish_is_unexpected_frame() {
    let close = close_after(&content_header(1, 5), true).await;
    report("content header without basic.publish", &close);
    assert_eq!(close.reply_code, 505, "{close:?}");
    assert!(
        close.reply_text.starts_with("UNEXPECTED_FRAME - "),
        "{close:?}"
    );
}

#[tokio::test]
async fn content_body_without_publish_is_unexpected_frame() {
    let close = close_after(&raw_frame(3, 1, b"hello"), true).await;
    report("content body without basic.publish", &close);
    assert_eq!(close.reply_code, 505, "{close:?}");
    assert!(
        close.reply_text.starts_with("UNEXPECTED_FRAME - "),
        "{close:?}"
    );
}

#[tokio::test]
async fn method_instead_of_content_header_is_unexpected_frame() {
    let mut bytes = publish_method(1, "nowhere");
    bytes.extend(publish_method(1, "nowhere"));
    let close = close_after(&bytes, true).await;
    report("method where a content header was expected", &close);
    assert_eq!(close.reply_code, 505, "{close:?}");
    assert!(
        close.reply_text.starts_with("UNEXPECTED_FRAME - "),
        "{close:?}"
    );
}

/// Sends `bytes` on an open connection and expects the server to drop it. RabbitMQ closes the
/// socket at once without a connection.close for methods it cannot decode; a connection.close
/// with 503 COMMAND_INVALID or 540 NOT_IMPLEMENTED is accepted as well.
async fn dropped_after(case: &str, bytes: &[u8]) {
    let broker = start().await;
    let mut raw = RawConn::open(broker.addr).await;
    raw.open_channel(1).await;
    raw.send_bytes(bytes).await;
    let close = raw.expect_handshake_refused().await;
    eprintln!("[observed] {case}: {close:?} then socket closed");
    if let Some(c) = close {
        assert!(c.reply_code == 503 || c.reply_code == 540, "{c:?}");
    }
    assert_broker_alive(&broker).await;
}

#[tokio::test]
async fn unknown_method_drops_the_connection() {
    // basic (60) method 999 does not exist.
    dropped_after("unknown method 60/999", &raw_method_frame(1, 60, 999, &[])).await;
}

#[tokio::test]
async fn unknown_class_drops_the_connection() {
    dropped_after("unknown class 4242", &raw_method_frame(1, 4242, 10, &[])).await;
}

#[tokio::test]
async fn unknown_connection_method_drops_the_connection() {
    dropped_after(
        "unknown method 10/99 on channel 0",
        &raw_method_frame(0, 10, 99, &[]),
    )
    .await;
}

#[tokio::test]
async fn truncated_method_arguments_are_refused() {
    // queue.declare (50/10) whose arguments stop in the middle of the queue name.
    let close = close_after(&raw_method_frame(1, 50, 10, &[0, 0, 10, b'a', b'b']), true).await;
    report("truncated queue.declare arguments", &close);
    assert_eq!(close.reply_code, 501, "{close:?}");
    assert!(close.reply_text.starts_with("FRAME_ERROR - "), "{close:?}");
}

#[tokio::test]
async fn heartbeat_on_a_non_zero_channel_is_refused() {
    let close = close_after(&raw_frame(8, 1, b""), true).await;
    report("heartbeat on channel 1", &close);
    assert_eq!(close.reply_code, 505, "{close:?}");
    assert!(
        close.reply_text.starts_with("UNEXPECTED_FRAME - "),
        "{close:?}"
    );
}

#[tokio::test]
async fn content_on_channel_zero_is_refused() {
    let close = close_after(&publish_method(0, "nowhere"), false).await;
    report("basic.publish on channel 0", &close);
    assert_eq!(close.reply_code, 504, "{close:?}");
    assert_eq!(
        close.reply_text,
        "CHANNEL_ERROR - unexpected method in connection state running"
    );
}
