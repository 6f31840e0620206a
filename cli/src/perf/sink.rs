//! `warren perf sink`: a fake broker that speaks just enough AMQP for `warren perf` and does
//! nothing else: publishes are discarded (and confirmed), consumers get pre-encoded deliveries
//! as fast as the socket takes them. Running a scenario against it measures the load
//! generator's own ceiling. With `--echo`, each published body is sent straight back to the
//! consumer instead, with no queue in between: what `warren perf latency` measures against it
//! is the floor of the machine and the load generator (two sockets and one forwarding hop).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use amq_protocol::protocol::{
    basic, channel, confirm, connection, queue, AMQPClass, BasicProperties,
};
use amq_protocol::types::FieldTable;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use warren_broker::protocol::{
    decode_frame, encode_properties, write_content, write_method, Frame,
};

#[derive(clap::Args, Clone)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5699")]
    pub bind: SocketAddr,
    /// Body size of the deliveries pushed to consumers.
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// Send each published body (one body frame) back to the last consumer, as a delivery,
    /// instead of discarding it: a broker that does nothing, to measure the latency floor.
    #[arg(long)]
    pub echo: bool,
}

/// Where echoed bodies go: the consuming connection's mailbox (bounded: a consumer that falls
/// behind slows the publisher down).
type EchoSlot = Arc<Mutex<Option<mpsc::Sender<Vec<u8>>>>>;

pub async fn run(a: SinkArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(a.bind).await?;
    println!("warren perf sink: listening on {}", listener.local_addr()?);
    let echo: Option<EchoSlot> = a.echo.then(EchoSlot::default);
    loop {
        let (s, _) = listener.accept().await?;
        let size = a.size;
        let echo = echo.clone();
        tokio::spawn(async move {
            let _ = serve(s, size, echo).await;
        });
    }
}

fn reply(out: &mut Vec<u8>, ch: u16, m: AMQPClass) {
    write_method(out, ch, &m);
}

/// The basic.deliver method frame of delivery `tag` on channel 1 (its content follows).
fn write_deliver_method(out: &mut Vec<u8>, tag: u64) {
    reply(
        out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "sink".into(),
            delivery_tag: tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        })),
    );
}

async fn serve(s: TcpStream, size: usize, echo: Option<EchoSlot>) -> anyhow::Result<()> {
    s.set_nodelay(true)?;
    let (mut rd, mut wr) = s.into_split();
    let mut buf = BytesMut::with_capacity(1 << 20);
    while buf.len() < 8 {
        if rd.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
    buf.advance(8);
    let mut out = Vec::new();
    reply(
        &mut out,
        0,
        AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::default(),
            mechanisms: "PLAIN".into(),
            locales: "en_US".into(),
        })),
    );
    wr.write_all(&out).await?;
    let mut confirm_mode = false;
    let mut publishes: u64 = 0;
    let mut consuming: Option<Vec<u8>> = None;
    let mut tag: u64 = 0;
    // Echo mode: bodies published on this connection, and the mailbox of this connection's
    // consumer.
    let mut echoed: Vec<Vec<u8>> = Vec::new();
    let mut echo_rx: Option<mpsc::Receiver<Vec<u8>>> = None;
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let props = encode_properties(&BasicProperties::default());
    loop {
        out.clear();
        // Parse everything buffered; publishes are counted by their method frame alone.
        loop {
            if buf.len() >= 7 {
                let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
                if buf.len() >= size + 8 && buf[0] == 3 && echo.is_some() {
                    echoed.push(buf[7..7 + size].to_vec());
                    buf.advance(size + 8);
                    continue;
                }
                if buf.len() >= size + 8 && buf[0] != 1 {
                    buf.advance(size + 8);
                    continue;
                }
                if buf.len() >= size + 8 && size >= 4 && buf[7..11] == [0, 60, 0, 40] {
                    publishes += 1;
                    buf.advance(size + 8);
                    continue;
                }
                if buf.len() >= size + 8 && size >= 4 && buf[7..11] == [0, 60, 0, 80] {
                    buf.advance(size + 8);
                    continue;
                }
            }
            match decode_frame(&mut buf, 1 << 24)? {
                None => break,
                Some(Frame::Method(ch, m)) => match *m {
                    AMQPClass::Connection(connection::AMQPMethod::StartOk(_)) => reply(
                        &mut out,
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
                            channel_max: 2047,
                            frame_max: 131_072,
                            heartbeat: 0,
                        })),
                    ),
                    AMQPClass::Connection(connection::AMQPMethod::Open(_)) => reply(
                        &mut out,
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::OpenOk(
                            connection::OpenOk {},
                        )),
                    ),
                    AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                        reply(
                            &mut out,
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        );
                        wr.write_all(&out).await?;
                        return Ok(());
                    }
                    AMQPClass::Channel(channel::AMQPMethod::Open(_)) => reply(
                        &mut out,
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                    ),
                    AMQPClass::Queue(queue::AMQPMethod::Declare(d)) => reply(
                        &mut out,
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                            queue: d.queue,
                            message_count: 0,
                            consumer_count: 0,
                        })),
                    ),
                    AMQPClass::Queue(queue::AMQPMethod::Delete(_)) => {}
                    AMQPClass::Confirm(confirm::AMQPMethod::Select(_)) => {
                        confirm_mode = true;
                        reply(
                            &mut out,
                            ch,
                            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                        )
                    }
                    AMQPClass::Basic(basic::AMQPMethod::Qos(_)) => reply(
                        &mut out,
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                    ),
                    AMQPClass::Basic(basic::AMQPMethod::Consume(_)) => {
                        reply(
                            &mut out,
                            ch,
                            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                                consumer_tag: "sink".into(),
                            })),
                        );
                        if let Some(slot) = &echo {
                            let (tx, rx) = mpsc::channel(4096);
                            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
                            echo_rx = Some(rx);
                        } else {
                            let mut d = Vec::new();
                            write_content(&mut d, ch, &props, &vec![b'x'; size], 131_072);
                            consuming = Some(d);
                        }
                    }
                    _ => {}
                },
                Some(_) => {}
            }
        }
        if confirm_mode && publishes > 0 {
            reply(
                &mut out,
                1,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: publishes,
                    multiple: true,
                })),
            );
        }
        if let Some(content) = &consuming {
            // Push a batch of deliveries every round.
            for _ in 0..256 {
                tag += 1;
                write_deliver_method(&mut out, tag);
                out.extend_from_slice(content);
            }
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
        }
        if let Some(slot) = echo.as_ref().filter(|_| !echoed.is_empty()) {
            let tx = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match tx {
                Some(tx) => {
                    for body in echoed.drain(..) {
                        let _ = tx.send(body).await;
                    }
                }
                // No consumer yet: dropped, as a broker drops unroutable messages.
                None => echoed.clear(),
            }
        }
        if let Some(rx) = echo_rx.as_mut() {
            bodies.clear();
            tokio::select! {
                n = rd.read_buf(&mut buf) => {
                    if n? == 0 {
                        return Ok(());
                    }
                }
                n = rx.recv_many(&mut bodies, 256) => {
                    if n == 0 {
                        return Ok(());
                    }
                    out.clear();
                    for body in &bodies {
                        tag += 1;
                        write_deliver_method(&mut out, tag);
                        write_content(&mut out, 1, &props, body, 131_072);
                    }
                    wr.write_all(&out).await?;
                }
            }
        } else if consuming.is_some() {
            // Do not block on reads while pushing; take what is there.
            match rd.try_read_buf(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        } else if rd.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}
