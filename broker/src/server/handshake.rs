//! Opening a connection (AMQP 0-9-1 §2.2.4), one function per step: the protocol header,
//! connection.start / start-ok (login), tune / tune-ok, open / open-ok (the virtual host). A
//! step that refuses the client sends connection.close with RabbitMQ's code and text, waits
//! briefly for close-ok, and closes the socket.

use std::net::SocketAddr;
use std::sync::Arc;

use amq_protocol::protocol::{connection as conn, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::codec::Decoder;
use tracing::info;

use super::transport::TransportRead;
use super::BrokerContext;
use crate::access::grant::Grant;
use crate::access::UserRecord;
use crate::auth::{self, AuthError, MECHANISMS, MECHANISMS_WITH_EXTERNAL};
use crate::error::{AmqpError, ReplyCode};
use crate::protocol::{
    write_method, CodecError, Frame, FrameCodec, FRAME_MIN_SIZE, PROTOCOL_HEADER,
};
use crate::registry::ClientInfo;
use crate::vhost::Vhost;

/// How long a refused client gets to answer connection.close with close-ok.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// A refused login is answered after this long, which slows down password guessing over one
/// connection (RabbitMQ answers at once).
const FAILED_LOGIN_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// What the handshake settled.
pub(super) struct Tuned {
    pub user: String,
    /// The user may speak for others: tagged `administrator` or `impersonator` (peer names).
    pub impersonator: bool,
    pub vhost: Arc<Vhost>,
    /// What the user may do in the vhost.
    pub grant: Grant,
    /// The client's `client_id` property (or its connection name), for topic permissions.
    pub client_id: Option<String>,
    pub client: ClientInfo,
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat: u16,
    pub cancel_notify: bool,
    /// The client understands connection.blocked / unblocked.
    pub blocked_notify: bool,
}

/// What connection.start-ok settled: the user, the client's properties, its `client_id`,
/// and whether it understands basic.cancel and connection.blocked from the server.
type LoggedIn = (UserRecord, ClientInfo, Option<String>, bool, bool);

/// Why a handshake step stopped.
enum Stop {
    /// Refuse the client with connection.close.
    Refuse(AmqpError),
    /// Close the socket without a word (wrong protocol header, or a refused login of a client
    /// that did not ask for authentication_failure_close).
    Quiet,
    /// The socket failed or closed.
    Io(CodecError),
}

impl From<CodecError> for Stop {
    fn from(e: CodecError) -> Self {
        match e {
            // A frame that does not decode (a field table nested too deeply, say) is answered
            // with its reply code, as after the handshake.
            CodecError::Frame(e) => {
                let (class_id, method_id) = e.method();
                Stop::Refuse(
                    AmqpError::new(code_of(e.reply_code()), &e).during(class_id, method_id),
                )
            }
            io => Stop::Io(io),
        }
    }
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::Io(e.into())
    }
}

/// The reply code of a frame that does not decode.
pub(super) fn code_of(code: u16) -> ReplyCode {
    match code {
        502 => ReplyCode::SyntaxError,
        540 => ReplyCode::NotImplemented,
        _ => ReplyCode::FrameError,
    }
}

/// The handshake of one connection, over its two halves and its read buffer.
struct Handshake<'a, R, W> {
    ctx: &'a BrokerContext,
    rd: &'a mut R,
    wr: &'a mut W,
    inbuf: &'a mut BytesMut,
    codec: FrameCodec,
    peer: SocketAddr,
    /// The client certificate's common name (TLS), for SASL EXTERNAL.
    identity: Option<String>,
}

/// Runs the handshake. `Ok(None)`: the client was turned away and the socket is done.
pub(super) async fn handshake<R: TransportRead, W: AsyncWrite + Unpin>(
    ctx: &BrokerContext,
    rd: &mut R,
    wr: &mut W,
    inbuf: &mut BytesMut,
    peer: SocketAddr,
    identity: Option<String>,
) -> Result<Option<Tuned>, CodecError> {
    let mut h = Handshake {
        ctx,
        rd,
        wr,
        inbuf,
        identity,
        codec: FrameCodec {
            frame_max: ctx.config.frame_max,
        },
        peer,
    };
    match h.run().await {
        Ok(tuned) => Ok(Some(tuned)),
        Err(Stop::Refuse(err)) => {
            h.refuse(err).await;
            Ok(None)
        }
        Err(Stop::Quiet) => {
            let _ = h.wr.shutdown().await;
            Ok(None)
        }
        Err(Stop::Io(e)) => Err(e),
    }
}

impl<R: TransportRead, W: AsyncWrite + Unpin> Handshake<'_, R, W> {
    async fn run(&mut self) -> Result<Tuned, Stop> {
        self.protocol_header().await?;
        self.send(conn::AMQPMethod::Start(conn::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms: if self.identity.is_some() {
                MECHANISMS_WITH_EXTERNAL
            } else {
                MECHANISMS
            }
            .into(),
            locales: "en_US".into(),
        }))
        .await?;
        let (user, client, client_id, cancel_notify, blocked_notify) = self.start_ok().await?;
        let cfg = &self.ctx.config;
        self.send(conn::AMQPMethod::Tune(conn::Tune {
            channel_max: cfg.channel_max,
            frame_max: cfg.frame_max,
            heartbeat: cfg.heartbeat,
        }))
        .await?;
        let tune_ok = self.tune_ok().await?;
        let (vhost, grant) = self.open(&user, client_id.as_deref()).await?;
        self.send(conn::AMQPMethod::OpenOk(conn::OpenOk {})).await?;
        let cfg = &self.ctx.config;
        Ok(Tuned {
            impersonator: user.has_tag("administrator") || user.has_tag("impersonator"),
            user: user.name,
            vhost,
            grant,
            client_id,
            client,
            frame_max: tune_ok.frame_max,
            channel_max: if tune_ok.channel_max == 0 {
                cfg.channel_max
            } else {
                tune_ok.channel_max
            },
            heartbeat: tune_ok.heartbeat,
            cancel_notify,
            blocked_notify,
        })
    }

    /// The 8-byte protocol header. Anything else gets ours back, then the socket closes
    /// (§4.2.2).
    async fn protocol_header(&mut self) -> Result<(), Stop> {
        while self.inbuf.len() < 8 {
            if self.rd.read_buf(self.inbuf).await? == 0 {
                return Err(Stop::Quiet);
            }
        }
        if &self.inbuf[..8] != PROTOCOL_HEADER {
            let _ = self.wr.write_all(PROTOCOL_HEADER).await;
            return Err(Stop::Quiet);
        }
        let _ = self.inbuf.split_to(8);
        Ok(())
    }

    /// connection.start-ok: the login, and what the client says about itself.
    async fn start_ok(&mut self) -> Result<LoggedIn, Stop> {
        let start_ok = match self.method().await? {
            Some(AMQPClass::Connection(conn::AMQPMethod::StartOk(s))) => s,
            _ => {
                return Err(Stop::Refuse(
                    AmqpError::command_invalid("expected connection.start-ok").during(10, 11),
                ))
            }
        };
        let props = start_ok.client_properties.inner();
        let capability = |name: &str| match props.get("capabilities") {
            Some(AMQPValue::FieldTable(caps)) => {
                matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)))
            }
            _ => false,
        };
        let text = |name: &str| match props.get(name) {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
            _ => None,
        };
        let client_id = text("client_id").or_else(|| text("connection_name"));
        let client = ClientInfo {
            product: text("product"),
            version: text("version"),
            platform: text("platform"),
            connection_name: text("connection_name"),
        };
        let failure_close = capability("authentication_failure_close");
        let cancel_notify = capability("consumer_cancel_notify");
        let blocked_notify = capability("connection.blocked");
        let mechanism = start_ok.mechanism.as_str();
        let user = match auth::authenticate(
            &self.ctx.access,
            mechanism,
            start_ok.response.as_bytes(),
            self.peer.ip(),
            self.identity.as_deref(),
        ) {
            Ok(user) => user,
            Err(AuthError::UnknownMechanism(m)) => {
                return Err(Stop::Refuse(
                    AmqpError::command_invalid(format_args!(
                        "unknown authentication mechanism '{m}'"
                    ))
                    .during(10, 11),
                ))
            }
            Err(AuthError::Refused(m)) => {
                info!(mechanism = %m, "login refused");
                tokio::time::sleep(FAILED_LOGIN_DELAY).await;
                // Like RabbitMQ: only clients that announce authentication_failure_close get
                // a connection.close; others see the socket close.
                if !failure_close {
                    return Err(Stop::Quiet);
                }
                return Err(Stop::Refuse(
                    // Class and method 0, as RabbitMQ sends it.
                    AmqpError::access_refused(format_args!(
                        "Login was refused using authentication mechanism {m}. For details see the broker logfile."
                    )),
                ));
            }
        };
        tracing::Span::current().record("user", user.name.as_str());
        Ok((user, client, client_id, cancel_notify, blocked_notify))
    }

    /// connection.tune-ok: the client's limits, within ours.
    async fn tune_ok(&mut self) -> Result<conn::TuneOk, Stop> {
        let tune_ok = match self.method().await? {
            Some(AMQPClass::Connection(conn::AMQPMethod::TuneOk(t))) => t,
            _ => {
                return Err(Stop::Refuse(
                    AmqpError::command_invalid("expected connection.tune-ok").during(10, 31),
                ))
            }
        };
        let cfg = &self.ctx.config;
        let refuse = |text: String| Err(Stop::Refuse(AmqpError::not_allowed(text).during(10, 31)));
        if tune_ok.frame_max != 0 && tune_ok.frame_max < FRAME_MIN_SIZE {
            return refuse(format!(
                "frame_max={} < {} min size",
                tune_ok.frame_max, FRAME_MIN_SIZE
            ));
        }
        if tune_ok.frame_max == 0 || tune_ok.frame_max > cfg.frame_max {
            return refuse(format!(
                "frame_max={} > {} max size",
                tune_ok.frame_max, cfg.frame_max
            ));
        }
        if tune_ok.channel_max > cfg.channel_max {
            return refuse(format!(
                "channel_max={} > {} max",
                tune_ok.channel_max, cfg.channel_max
            ));
        }
        self.codec.frame_max = tune_ok.frame_max;
        Ok(tune_ok)
    }

    /// connection.open: the virtual host, which must exist, the user must have permissions
    /// in, and whose and the user's connection limits must allow one more (530 otherwise,
    /// with RabbitMQ's texts).
    async fn open(
        &mut self,
        user: &UserRecord,
        client_id: Option<&str>,
    ) -> Result<(Arc<Vhost>, Grant), Stop> {
        let open = match self.method().await? {
            Some(AMQPClass::Connection(conn::AMQPMethod::Open(o))) => o,
            _ => {
                return Err(Stop::Refuse(
                    AmqpError::command_invalid("expected connection.open").during(10, 40),
                ))
            }
        };
        let name = open.virtual_host.as_str();
        let refuse = |text: String| {
            tracing::warn!(vhost = name, "connection refused: {text}");
            Stop::Refuse(AmqpError::not_allowed(text).during(10, 40))
        };
        let Some(vhost) = self.ctx.registry.vhost(name) else {
            return Err(refuse(format!("vhost {name} not found")));
        };
        let Some(grant) = self.ctx.access.grant(&user.name, name, client_id) else {
            return Err(refuse(format!(
                "access to vhost '{name}' refused for user '{}'",
                user.name
            )));
        };
        self.ctx
            .access
            .check_connection_limits(user, &vhost)
            .map_err(refuse)?;
        tracing::Span::current().record("vhost", name);
        Ok((vhost, grant))
    }

    /// Sends a connection method.
    async fn send(&mut self, method: conn::AMQPMethod) -> Result<(), Stop> {
        let mut out = Vec::new();
        write_method(&mut out, 0, &AMQPClass::Connection(method));
        self.wr.write_all(&out).await?;
        Ok(())
    }

    /// The next frame, if it is a method on channel 0 (heartbeats skipped); `None` for any
    /// other frame, which is not what any step expects.
    async fn method(&mut self) -> Result<Option<AMQPClass>, Stop> {
        match self.frame().await? {
            Frame::Method(0, m) => Ok(Some(*m)),
            _ => Ok(None),
        }
    }

    async fn frame(&mut self) -> Result<Frame, CodecError> {
        loop {
            if let Some(frame) = self.codec.decode(self.inbuf)? {
                if matches!(frame, Frame::Heartbeat(0)) {
                    continue;
                }
                return Ok(frame);
            }
            if self.rd.read_buf(self.inbuf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// Sends connection.close and waits briefly for close-ok, then closes the socket.
    async fn refuse(&mut self, err: AmqpError) {
        let mut out = Vec::new();
        write_close(&mut out, &err);
        if self.wr.write_all(&out).await.is_ok() {
            let _ = timeout(CLOSE_WAIT, async {
                while let Ok(frame) = self.frame().await {
                    if let Frame::Method(0, m) = frame {
                        if matches!(*m, AMQPClass::Connection(conn::AMQPMethod::CloseOk(_))) {
                            break;
                        }
                    }
                }
            })
            .await;
        }
        let _ = self.wr.shutdown().await;
    }
}

/// Writes connection.close carrying `err`.
pub(super) fn write_close(out: &mut Vec<u8>, err: &AmqpError) {
    write_method(
        out,
        0,
        &AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
            reply_code: err.code.code(),
            reply_text: err.text.as_str().into(),
            class_id: err.class_id,
            method_id: err.method_id,
        })),
    );
}

fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "per_consumer_qos",
        "authentication_failure_close",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(v.into());
    props.insert("product".into(), s("Warren"));
    props.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    props.insert("platform".into(), s("Rust"));
    props.insert("information".into(), s("An AMQP 0-9-1 broker"));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props
}
