//! Proves that no client can crash the broker with field tables nested in field tables: at
//! 100,000 levels (and at depths that fit in one frame) in connection.start-ok's
//! client-properties before login, in an AMQPLAIN response, in queue.declare, exchange.declare,
//! queue.bind and basic.consume arguments, and in a message's headers, the broker closes only
//! the offending connection (502 SYNTAX_ERROR, or 501 FRAME_ERROR when the frame is larger
//! than frame_max) and keeps serving everyone else. Tables and frames are built as bytes:
//! a nested value would make the test itself recurse.
mod common;

use common::*;

/// A field table nested `levels` deep ({"a": {"a": ... {}}}), with its length prefix.
fn nested_table(levels: usize) -> Vec<u8> {
    // Built inside out in one buffer: each level adds a 4-byte length, a key and a type.
    let mut inner: Vec<u8> = 0u32.to_be_bytes().to_vec();
    for _ in 1..levels {
        let mut outer = Vec::with_capacity(inner.len() + 10);
        outer.extend_from_slice(&((inner.len() + 3) as u32).to_be_bytes());
        outer.extend_from_slice(&[1, b'a', b'F']);
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    inner
}

/// A table nested `levels` deep through arrays ({"a": [[[ ... ]]]}).
fn nested_array_table(levels: usize) -> Vec<u8> {
    let mut array: Vec<u8> = 0u32.to_be_bytes().to_vec();
    for _ in 2..levels {
        let mut outer = Vec::with_capacity(array.len() + 5);
        outer.extend_from_slice(&((array.len() + 1) as u32).to_be_bytes());
        outer.push(b'A');
        outer.extend_from_slice(&array);
        array = outer;
    }
    let mut t = ((array.len() + 3) as u32).to_be_bytes().to_vec();
    t.extend_from_slice(&[1, b'a', b'A']);
    t.extend_from_slice(&array);
    t
}

fn short_str(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn long_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn start_ok(client_properties: &[u8], mechanism: &str, response: &[u8]) -> Vec<u8> {
    let mut args = client_properties.to_vec();
    short_str(&mut args, mechanism);
    long_str(&mut args, response);
    short_str(&mut args, "en_US");
    raw_method_frame(0, 10, 11, &args)
}

fn assert_refused(close: &CloseInfo, what: &str) {
    assert!(
        close.reply_code == 502 || close.reply_code == 501,
        "{what}: expected 502 SYNTAX_ERROR or 501 FRAME_ERROR, got {close:?}"
    );
}

/// Sends a start-ok and expects the handshake to be refused with a close.
async fn refused_before_login(broker: &TestBroker, frame: &[u8], what: &str) {
    let mut raw = RawConn::tcp(broker.addr).await;
    raw.send_bytes(PROTOCOL_HEADER).await;
    raw.read_start().await;
    raw.try_send_bytes(frame).await;
    let close = raw
        .expect_handshake_refused()
        .await
        .unwrap_or_else(|| panic!("{what}: closed without connection.close"));
    assert_refused(&close, what);
    assert_broker_alive(broker).await;
}

#[tokio::test]
async fn deep_client_properties_before_login_are_refused() {
    let broker = start().await;
    for levels in [1_500, 15_000, 100_000] {
        let frame = start_ok(&nested_table(levels), "PLAIN", b"\0guest\0wrong");
        refused_before_login(
            &broker,
            &frame,
            &format!("client-properties, {levels} levels"),
        )
        .await;
        let frame = start_ok(&nested_array_table(levels), "PLAIN", b"\0guest\0wrong");
        refused_before_login(&broker, &frame, &format!("arrays, {levels} levels")).await;
    }
}

#[tokio::test]
async fn deep_amqplain_response_is_refused() {
    let broker = start().await;
    let shallow = nested_table(1);
    for levels in [1_500, 100_000] {
        // The response is a table without its length prefix: LOGIN, PASSWORD, then the bomb.
        let mut response = Vec::new();
        short_str(&mut response, "LOGIN");
        response.push(b'S');
        long_str(&mut response, b"guest");
        short_str(&mut response, "PASSWORD");
        response.push(b'S');
        long_str(&mut response, b"guest");
        short_str(&mut response, "x");
        response.push(b'F');
        response.extend_from_slice(&nested_table(levels));
        let frame = start_ok(&shallow, "AMQPLAIN", &response);
        let mut raw = RawConn::tcp(broker.addr).await;
        raw.send_bytes(PROTOCOL_HEADER).await;
        raw.read_start().await;
        raw.try_send_bytes(&frame).await;
        // Refused as a login (403) or as a frame (501 when over frame_max): never a crash.
        raw.expect_handshake_refused().await;
        assert_broker_alive(&broker).await;
    }
}

/// Opens a connection and channel 1, sends `frame`, and expects the connection closed with a
/// syntax or frame error.
async fn refused_after_login(broker: &TestBroker, frame: &[u8], what: &str) {
    let mut raw = RawConn::open(broker.addr).await;
    raw.open_channel(1).await;
    raw.try_send_bytes(frame).await;
    let close = raw.expect_connection_close().await;
    assert_refused(&close, what);
    assert_broker_alive(broker).await;
}

#[tokio::test]
async fn deep_method_arguments_are_refused() {
    let broker = start().await;
    for levels in [2_000, 15_000, 100_000] {
        let table = nested_table(levels);
        // queue.declare: ticket, queue, flags, arguments.
        let mut args = vec![0, 0];
        short_str(&mut args, "deep");
        args.push(0);
        args.extend_from_slice(&table);
        refused_after_login(
            &broker,
            &raw_method_frame(1, 50, 10, &args),
            &format!("queue.declare, {levels} levels"),
        )
        .await;
        // exchange.declare: ticket, exchange, type, flags, arguments.
        let mut args = vec![0, 0];
        short_str(&mut args, "deep-x");
        short_str(&mut args, "headers");
        args.push(0);
        args.extend_from_slice(&table);
        refused_after_login(
            &broker,
            &raw_method_frame(1, 40, 10, &args),
            &format!("exchange.declare, {levels} levels"),
        )
        .await;
        // queue.bind: ticket, queue, exchange, routing key, flags, arguments.
        let mut args = vec![0, 0];
        short_str(&mut args, "q");
        short_str(&mut args, "amq.headers");
        short_str(&mut args, "");
        args.push(0);
        args.extend_from_slice(&table);
        refused_after_login(
            &broker,
            &raw_method_frame(1, 50, 20, &args),
            &format!("queue.bind, {levels} levels"),
        )
        .await;
        // basic.consume: ticket, queue, consumer tag, flags, arguments.
        let mut args = vec![0, 0];
        short_str(&mut args, "q");
        short_str(&mut args, "");
        args.push(0);
        args.extend_from_slice(&nested_array_table(levels));
        refused_after_login(
            &broker,
            &raw_method_frame(1, 60, 20, &args),
            &format!("basic.consume, {levels} levels"),
        )
        .await;
    }
}

#[tokio::test]
async fn deep_message_headers_are_refused() {
    let broker = start().await;
    for levels in [10_000, 100_000] {
        let mut raw = RawConn::open(broker.addr).await;
        raw.open_channel(1).await;
        // basic.publish to the default exchange, then a content header whose properties
        // hold only headers (flag bit 13).
        let mut publish = vec![0, 0];
        short_str(&mut publish, "");
        short_str(&mut publish, "nowhere");
        publish.push(0);
        raw.send_bytes(&raw_method_frame(1, 60, 40, &publish)).await;
        let mut header = Vec::new();
        header.extend_from_slice(&60u16.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&1u64.to_be_bytes());
        header.extend_from_slice(&(1u16 << 13).to_be_bytes());
        header.extend_from_slice(&nested_table(levels));
        raw.try_send_bytes(&raw_frame(2, 1, &header)).await;
        let close = raw.expect_connection_close().await;
        assert_refused(&close, &format!("headers, {levels} levels"));
        assert_broker_alive(&broker).await;
    }
}

#[tokio::test]
async fn shallow_nesting_still_works() {
    // x-death style headers (table, array, table, array) are four levels: well within bounds.
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("nested-ok")).await;
    let mut raw = RawConn::open(broker.addr).await;
    raw.open_channel(1).await;
    let mut publish = vec![0, 0];
    short_str(&mut publish, "");
    short_str(&mut publish, &q);
    publish.push(0);
    raw.send_bytes(&raw_method_frame(1, 60, 40, &publish)).await;
    let mut header = Vec::new();
    header.extend_from_slice(&60u16.to_be_bytes());
    header.extend_from_slice(&0u16.to_be_bytes());
    header.extend_from_slice(&2u64.to_be_bytes());
    header.extend_from_slice(&(1u16 << 13).to_be_bytes());
    header.extend_from_slice(&nested_array_table(8));
    raw.send_bytes(&raw_frame(2, 1, &header)).await;
    raw.send_bytes(&raw_frame(3, 1, b"ok")).await;
    wait_message_count(&ch, &q, 1).await;
    assert_eq!(drain(&ch, &q).await, vec!["ok".to_owned()]);
}
