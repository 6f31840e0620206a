//! The lean AMQP client behind `warren perf`: a raw socket, frames encoded once with
//! amq-protocol (through `warren_broker::protocol`) and written in large batches, deliveries
//! scanned in place. lapin spends ~7-12 µs of CPU per message, which would make the load
//! generator the bottleneck.

use std::str::FromStr;

use amq_protocol::protocol::{
    basic, channel, confirm, connection, queue, AMQPClass, BasicProperties,
};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use amq_protocol::uri::AMQPUri;
use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use warren_broker::protocol::{
    decode_frame, encode_properties, write_content, write_method, Frame, PROTOCOL_HEADER,
};

/// One connection with channel 1 open.
pub struct Wire {
    pub rd: OwnedReadHalf,
    pub wr: OwnedWriteHalf,
    pub buf: BytesMut,
    pub frame_max: u32,
}

/// What a scan of the read buffer found.
#[derive(Default, Debug, Clone, Copy)]
pub struct Scan {
    /// basic.deliver frames seen.
    pub deliveries: u64,
    /// The last delivery tag seen.
    pub last_tag: u64,
    /// Highest basic.ack delivery tag (publisher confirms, multiple).
    pub acked_upto: u64,
    /// basic.nack seen (publisher side).
    pub nacks: u64,
}

impl Wire {
    /// Connects, logs in (PLAIN), and opens channel 1.
    pub async fn connect(url: &str) -> anyhow::Result<Wire> {
        let uri = AMQPUri::from_str(url).map_err(|e| anyhow!("invalid AMQP URL {url}: {e}"))?;
        let addr = format!("{}:{}", uri.authority.host, uri.authority.port);
        let stream = TcpStream::connect(&addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut w = Wire {
            rd,
            wr,
            buf: BytesMut::with_capacity(1 << 20),
            frame_max: 131_072,
        };
        w.wr.write_all(PROTOCOL_HEADER).await?;
        match w.method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(_))) => {}
            other => bail!("expected connection.start, got {other:?}"),
        }
        let mut caps = FieldTable::default();
        caps.insert("publisher_confirms".into(), AMQPValue::Boolean(true));
        caps.insert("consumer_cancel_notify".into(), AMQPValue::Boolean(true));
        let mut props = FieldTable::default();
        props.insert(
            "product".into(),
            AMQPValue::LongString("warren perf".into()),
        );
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        let response = format!(
            "\0{}\0{}",
            uri.authority.userinfo.username, uri.authority.userinfo.password
        );
        w.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: props,
                mechanism: "PLAIN".into(),
                response: LongString::from(response),
                locale: "en_US".into(),
            })),
        )
        .await?;
        let tune = match w.method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
            other => bail!("login refused or unexpected reply: {other:?}"),
        };
        w.frame_max = tune.frame_max.clamp(4096, 1 << 20);
        w.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: w.frame_max,
                heartbeat: 0,
            })),
        )
        .await?;
        w.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: uri.vhost.as_str().into(),
            })),
        )
        .await?;
        match w.method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
            other => bail!("expected connection.open-ok, got {other:?}"),
        }
        w.rpc(AMQPClass::Channel(channel::AMQPMethod::Open(
            channel::Open {},
        )))
        .await?;
        Ok(w)
    }

    async fn send_method(&mut self, ch: u16, m: AMQPClass) -> anyhow::Result<()> {
        let mut out = Vec::new();
        write_method(&mut out, ch, &m);
        self.wr.write_all(&out).await?;
        Ok(())
    }

    /// Reads until the next method frame (skipping content and heartbeats).
    async fn method(&mut self) -> anyhow::Result<(u16, AMQPClass)> {
        loop {
            match self.frame().await? {
                Frame::Method(ch, m) => {
                    if let AMQPClass::Connection(connection::AMQPMethod::Close(c)) = &*m {
                        bail!(
                            "connection closed by the broker: {} {}",
                            c.reply_code,
                            c.reply_text
                        );
                    }
                    if let AMQPClass::Channel(channel::AMQPMethod::Close(c)) = &*m {
                        bail!(
                            "channel closed by the broker: {} {}",
                            c.reply_code,
                            c.reply_text
                        );
                    }
                    return Ok((ch, *m));
                }
                _ => continue,
            }
        }
    }

    /// Reads one frame.
    pub async fn frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(f) = decode_frame(&mut self.buf, 1 << 24)? {
                return Ok(f);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                bail!("the broker closed the connection");
            }
        }
    }

    /// Sends a method on channel 1 and waits for its reply.
    pub async fn rpc(&mut self, m: AMQPClass) -> anyhow::Result<AMQPClass> {
        self.send_method(1, m).await?;
        loop {
            let (_, reply) = self.method().await?;
            match reply {
                AMQPClass::Basic(basic::AMQPMethod::Deliver(_))
                | AMQPClass::Basic(basic::AMQPMethod::Ack(_)) => continue,
                other => return Ok(other),
            }
        }
    }

    /// Declares a queue (non-durable unless `durable`), returning its message count.
    pub async fn declare_queue(
        &mut self,
        name: &str,
        durable: bool,
        arguments: FieldTable,
    ) -> anyhow::Result<u32> {
        match self
            .rpc(AMQPClass::Queue(queue::AMQPMethod::Declare(
                queue::Declare {
                    queue: name.into(),
                    passive: false,
                    durable,
                    exclusive: false,
                    auto_delete: false,
                    nowait: false,
                    arguments,
                },
            )))
            .await?
        {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => Ok(ok.message_count),
            other => bail!("unexpected reply to queue.declare: {other:?}"),
        }
    }

    /// Sends a method without waiting (nowait variants, acks).
    pub async fn cast(&mut self, m: AMQPClass) -> anyhow::Result<()> {
        self.send_method(1, m).await
    }

    /// Puts the channel in confirm mode.
    pub async fn confirm_select(&mut self) -> anyhow::Result<()> {
        self.rpc(AMQPClass::Confirm(confirm::AMQPMethod::Select(
            confirm::Select { nowait: false },
        )))
        .await?;
        Ok(())
    }

    /// Starts a consumer on channel 1 with a prefetch.
    pub async fn consume(
        &mut self,
        queue: &str,
        prefetch: u16,
        no_ack: bool,
    ) -> anyhow::Result<()> {
        self.rpc(AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: prefetch,
            global: false,
        })))
        .await?;
        self.rpc(AMQPClass::Basic(basic::AMQPMethod::Consume(
            basic::Consume {
                queue: queue.into(),
                consumer_tag: "".into(),
                no_local: false,
                no_ack,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            },
        )))
        .await?;
        Ok(())
    }

    /// Reads what the socket has (at least one byte) and scans complete frames in place:
    /// deliveries and confirms are counted without decoding. `on_body` sees each body frame's
    /// payload (latency mode reads its timestamp).
    pub async fn read_scan(
        &mut self,
        scan: &mut Scan,
        mut on_body: impl FnMut(&[u8]),
    ) -> anyhow::Result<()> {
        if self.rd.read_buf(&mut self.buf).await? == 0 {
            bail!("the broker closed the connection");
        }
        loop {
            if self.buf.len() < 7 {
                break;
            }
            let size =
                u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]]) as usize;
            if self.buf.len() < size + 8 {
                self.buf.reserve(size + 8);
                break;
            }
            let kind = self.buf[0];
            let p = &self.buf[7..7 + size];
            match kind {
                1 if size >= 4 && p[0..4] == [0, 60, 0, 60] => {
                    // basic.deliver: consumer-tag (shortstr), then the delivery tag.
                    let ctag = p[4] as usize;
                    let at = 5 + ctag;
                    if let Some(t) = p.get(at..at + 8) {
                        scan.last_tag = u64::from_be_bytes(t.try_into().unwrap_or_default());
                    }
                    scan.deliveries += 1;
                }
                1 if size >= 12 && p[0..4] == [0, 60, 0, 80] => {
                    scan.acked_upto = scan
                        .acked_upto
                        .max(u64::from_be_bytes(p[4..12].try_into().unwrap_or_default()));
                }
                1 if size >= 12 && p[0..4] == [0, 60, 0, 120] => {
                    scan.nacks += 1;
                    scan.acked_upto = scan
                        .acked_upto
                        .max(u64::from_be_bytes(p[4..12].try_into().unwrap_or_default()));
                }
                1 if size >= 4 && (p[0..4] == [0, 10, 0, 50] || p[0..4] == [0, 20, 0, 40]) => {
                    let mut whole = self.buf.split_to(size + 8);
                    let detail = match decode_frame(&mut whole, 1 << 24) {
                        Ok(Some(Frame::Method(_, m))) => format!("{m:?}"),
                        _ => "close".into(),
                    };
                    bail!("the broker closed: {detail}");
                }
                3 => on_body(p),
                _ => {}
            }
            self.buf.advance(size + 8);
        }
        Ok(())
    }
}

/// Pre-encodes one basic.publish (method, header, body) for repeated writes.
pub fn encode_publish(
    exchange: &str,
    routing_key: &str,
    persistent: bool,
    body: &[u8],
    frame_max: u32,
) -> Vec<u8> {
    let mut props = BasicProperties::default();
    if persistent {
        props = props.with_delivery_mode(2);
    }
    let mut out = Vec::new();
    write_method(
        &mut out,
        1,
        &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        })),
    );
    write_content(&mut out, 1, &encode_properties(&props), body, frame_max);
    out
}

/// basic.ack with multiple=true.
pub fn ack_multiple(tag: u64) -> AMQPClass {
    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
        delivery_tag: tag,
        multiple: true,
    }))
}
