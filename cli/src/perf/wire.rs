//! The lean AMQP client behind `warren perf`: a raw socket, frames encoded once with
//! amq-protocol (through `warren_broker::protocol`) and written in large batches, deliveries
//! scanned in place. lapin spends ~7-12 µs of CPU per message, which would make the load
//! generator the bottleneck.

use std::collections::VecDeque;
use std::str::FromStr;
use std::time::Instant;

use amq_protocol::protocol::{
    basic, channel, confirm, connection, queue, AMQPClass, BasicProperties,
};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use amq_protocol::uri::AMQPUri;
use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use warren_broker::protocol::{
    decode_frame, encode_properties, write_content, write_method, Frame, PROTOCOL_HEADER,
};

/// The reading half of a connection: TCP, or TLS for `amqps://`.
pub enum Reader {
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The writing half.
pub enum Writer {
    Tcp(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl Reader {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Reader::Tcp(r) => r.read_buf(buf).await,
            Reader::Tls(r) => r.read_buf(buf).await,
        }
    }

    /// Whatever has arrived, without waiting (`WouldBlock` if nothing has).
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Reader::Tcp(r) => r.try_read_buf(buf),
            Reader::Tls(r) => {
                // One poll with a waker that does nothing: the next `read_buf` registers the
                // real one.
                use std::pin::Pin;
                use std::task::{Context, Poll};
                use tokio::io::AsyncRead;
                let start = buf.len();
                buf.resize(start + 64 * 1024, 0);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut rb = tokio::io::ReadBuf::new(&mut buf[start..]);
                let r = match Pin::new(r).poll_read(&mut cx, &mut rb) {
                    Poll::Ready(Ok(())) => Ok(rb.filled().len()),
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
                };
                buf.truncate(start + *r.as_ref().unwrap_or(&0));
                r
            }
        }
    }
}

impl Writer {
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Writer::Tcp(w) => w.write_all(bytes).await,
            Writer::Tls(w) => w.write_all(bytes).await,
        }
    }
}

/// TLS settings for `amqps://`: the system's CAs, plus the PEM file `WARREN_CACERT` names.
fn tls_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Ok(path) = std::env::var("WARREN_CACERT") {
        let pem = std::fs::read(&path).with_context(|| format!("reading WARREN_CACERT {path}"))?;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(cert.with_context(|| format!("{path}: not a PEM certificate"))?)
                .with_context(|| format!("{path}: unusable CA certificate"))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// One connection with channel 1 open.
pub struct Wire {
    pub rd: Reader,
    pub wr: Writer,
    pub buf: BytesMut,
    pub frame_max: u32,
}

/// What a scan of the read buffer found.
#[derive(Default, Debug)]
pub struct Scan {
    /// basic.deliver frames seen.
    pub deliveries: u64,
    /// The last delivery tag seen.
    pub last_tag: u64,
    /// Publisher confirms (basic.ack and basic.nack), publish by publish.
    pub confirms: Confirms,
}

/// The publisher-confirm state of one channel: which publishes the broker acked, which it
/// nacked, and which are still outstanding. A basic.ack or basic.nack settles one delivery tag,
/// or with `multiple` every outstanding tag up to it; a nack is not a confirm.
#[derive(Default, Debug)]
pub struct Confirms {
    /// Publishes sent on the channel (their delivery tags are 1 to `published`).
    pub published: u64,
    /// Publishes the broker confirmed (basic.ack).
    pub acked: u64,
    /// Publishes the broker refused (basic.nack).
    pub nacked: u64,
    /// One entry per publish from the oldest unsettled one on: its send time (nanoseconds
    /// since `clock`), or `None` once settled out of order.
    pending: VecDeque<Option<u64>>,
    /// Set to record the latency of each ack into `latencies`.
    clock: Option<Instant>,
    /// (send time, publish-to-ack nanoseconds) of every acked publish, when `clock` is set.
    pub latencies: Vec<(u64, u64)>,
}

impl Confirms {
    /// Confirms that also time every ack against `clock` (send times are nanoseconds since it).
    pub fn timed(clock: Instant) -> Confirms {
        Confirms {
            clock: Some(clock),
            ..Confirms::default()
        }
    }

    /// Records `n` publishes sent at `sent_at` (nanoseconds since the clock; 0 when untimed).
    pub fn publish(&mut self, n: u64, sent_at: u64) {
        self.published += n;
        self.pending
            .extend(std::iter::repeat_n(Some(sent_at), n as usize));
    }

    /// Publishes neither acked nor nacked yet.
    pub fn outstanding(&self) -> u64 {
        self.published - self.acked - self.nacked
    }

    /// Applies one basic.ack (`ack`) or basic.nack from the broker.
    fn settle(&mut self, tag: u64, multiple: bool, ack: bool) {
        let first = self.published + 1 - self.pending.len() as u64;
        // Tag 0 with multiple settles everything outstanding; unknown tags are ignored.
        if !multiple && (tag == 0 || tag > self.published) {
            return;
        }
        let upto = if multiple && tag == 0 {
            self.published
        } else {
            tag.min(self.published)
        };
        if upto < first {
            return;
        }
        let from = if multiple { first } else { upto };
        let now = self.clock.map(|c| c.elapsed().as_nanos() as u64);
        for i in from..=upto {
            let Some(sent) = self.pending[(i - first) as usize].take() else {
                continue;
            };
            if ack {
                self.acked += 1;
                if let Some(now) = now {
                    self.latencies.push((sent, now.saturating_sub(sent)));
                }
            } else {
                self.nacked += 1;
            }
        }
        while self.pending.front().is_some_and(Option::is_none) {
            self.pending.pop_front();
        }
    }
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
        let (rd, wr) = if uri.scheme == amq_protocol::uri::AMQPScheme::AMQPS {
            let name = rustls::pki_types::ServerName::try_from(uri.authority.host.clone())
                .map_err(|e| anyhow!("{}: {e}", uri.authority.host))?;
            let tls = tls_connector()?
                .connect(name, stream)
                .await
                .with_context(|| format!("TLS handshake with {addr}"))?;
            let (rd, wr) = tokio::io::split(tls);
            (Reader::Tls(rd), Writer::Tls(wr))
        } else {
            let (rd, wr) = stream.into_split();
            (Reader::Tcp(rd), Writer::Tcp(wr))
        };
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

    /// Closes the connection (connection.close, then close-ok), so that the broker has settled
    /// the channel (requeued what a consumer did not ack) when it returns. Gives up after two
    /// seconds, and ignores errors: the connection is going away either way.
    pub async fn close(mut self) {
        let close = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        }));
        // Generous: a broker that throttled the publisher (RabbitMQ's flow control) reads the
        // publishes queued before the close first. Dropping the socket sooner, with frames of
        // ours unread, resets it, and the broker's kernel discards publishes it had not read:
        // counted as lost though the broker never saw them.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            self.send_method(0, close).await?;
            loop {
                if let (0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) =
                    self.method().await?
                {
                    return anyhow::Ok(());
                }
            }
        })
        .await;
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
                | AMQPClass::Basic(basic::AMQPMethod::Ack(_))
                | AMQPClass::Basic(basic::AMQPMethod::Nack(_)) => continue,
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

    /// The ready messages of a queue (a passive queue.declare).
    pub async fn message_count(&mut self, name: &str) -> anyhow::Result<u32> {
        match self
            .rpc(AMQPClass::Queue(queue::AMQPMethod::Declare(
                queue::Declare {
                    queue: name.into(),
                    passive: true,
                    durable: false,
                    exclusive: false,
                    auto_delete: false,
                    nowait: false,
                    arguments: FieldTable::default(),
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
        self.consume_with(queue, prefetch, no_ack, FieldTable::default())
            .await
    }

    /// [`consume`](Self::consume) with consumer arguments (a stream's `x-stream-offset`).
    pub async fn consume_with(
        &mut self,
        queue: &str,
        prefetch: u16,
        no_ack: bool,
        arguments: FieldTable,
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
                arguments,
            },
        )))
        .await?;
        Ok(())
    }

    /// Reads what the socket has (at least one byte) and scans complete frames in place:
    /// deliveries and confirms are counted without decoding. `on_body` sees each body frame's
    /// payload (latency mode reads its timestamp). Cancel safe: nothing is lost if a `select!`
    /// drops it before the read completes.
    pub async fn read_scan(
        &mut self,
        scan: &mut Scan,
        on_body: impl FnMut(&[u8]),
    ) -> anyhow::Result<()> {
        if self.rd.read_buf(&mut self.buf).await? == 0 {
            bail!("the broker closed the connection");
        }
        self.scan_buffered(scan, on_body)
    }

    /// Like [`Wire::read_scan`], but never waits: takes whatever the socket already holds.
    pub fn try_read_scan(
        &mut self,
        scan: &mut Scan,
        on_body: impl FnMut(&[u8]),
    ) -> anyhow::Result<()> {
        loop {
            match self.rd.try_read_buf(&mut self.buf) {
                Ok(0) => bail!("the broker closed the connection"),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        self.scan_buffered(scan, on_body)
    }

    /// Scans the complete frames in the buffer.
    fn scan_buffered(
        &mut self,
        scan: &mut Scan,
        mut on_body: impl FnMut(&[u8]),
    ) -> anyhow::Result<()> {
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
                // basic.ack and basic.nack: the delivery tag, then the bits (multiple first).
                1 if size >= 13
                    && p[0..2] == [0, 60]
                    && (p[2..4] == [0, 80] || p[2..4] == [0, 120]) =>
                {
                    let tag = u64::from_be_bytes(p[4..12].try_into().unwrap_or_default());
                    scan.confirms.settle(tag, p[12] & 1 == 1, p[3] == 80);
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

#[cfg(test)]
mod tests {
    use super::Confirms;

    #[test]
    fn acks_and_nacks_settle_single_tags_and_ranges() {
        let mut c = Confirms::default();
        c.publish(6, 0);
        c.settle(2, false, true);
        assert_eq!((c.acked, c.nacked, c.outstanding()), (1, 0, 5));
        // Multiple settles every outstanding tag up to 3, and not tag 2 a second time.
        c.settle(3, true, false);
        assert_eq!((c.acked, c.nacked, c.outstanding()), (1, 2, 3));
        c.settle(5, false, true);
        c.settle(6, true, true);
        assert_eq!((c.acked, c.nacked, c.outstanding()), (4, 2, 0));
        // A repeated or unknown tag changes nothing.
        c.settle(6, false, true);
        c.publish(1, 0);
        c.settle(9, false, false);
        assert_eq!((c.acked, c.nacked, c.outstanding()), (4, 2, 1));
        c.settle(7, false, true);
        assert_eq!((c.acked, c.nacked, c.outstanding()), (5, 2, 0));
        c.publish(2, 0);
        c.settle(0, true, true);
        assert_eq!((c.acked, c.nacked, c.outstanding()), (7, 2, 0));
    }

    #[test]
    fn timed_confirms_record_the_send_time_of_each_ack() {
        let mut c = Confirms::timed(std::time::Instant::now());
        c.publish(2, 0);
        c.settle(2, true, true);
        assert_eq!(c.latencies.len(), 2);
        assert!(c.latencies.iter().all(|(sent, _)| *sent == 0));
    }
}
