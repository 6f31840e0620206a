//! One client connection: the handshake, then a single task that reads frames, writes frames
//! and receives deliveries from queues. Reads and writes are batched: every frame already read
//! is handled before the output buffer is written with one syscall, and reading pauses while
//! the output buffer is over its high-water mark (a client that does not read cannot grow the
//! broker's memory).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{connection as conn, AMQPClass};
use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::codec::Decoder;
use tracing::{debug, info};

use super::channel::Channel;
use super::handshake::{code_of, handshake, write_close};
use super::transport::{Transport, TransportRead};
use super::BrokerContext;
use crate::access::grant::{Grant, Perm, Resource};
use crate::access::rate::PublishLimits;
use crate::error::{AmqpError, AmqpResult, ReplyCode};
use crate::message::Message;
use crate::protocol::{write_heartbeat, write_method, CodecError, Frame, FrameCodec, Output};
use crate::queue::{ConfirmToken, ConnEvent, ConnSender, Publishing, QueueCmd, QueueHandle};
use crate::registry::{ConnectionGuard, ConnectionInfo};
use crate::vhost::Vhost;

/// Output bytes buffered before the connection stops reading from its client.
const OUT_HIGH_WATER: usize = 1 << 20;
/// Read buffer size once a connection is busy (a read filled the buffer it had).
const READ_CHUNK: usize = 128 * 1024;
/// Read buffer size of a quiet connection; it is freed again once every frame in it is
/// handled, so an idle connection holds no read buffer at all.
const READ_SMALL: usize = 4 * 1024;
/// A connection reading flat out lets other tasks run after this many bytes (see
/// [`yield_to_woken`]).
const YIELD_AFTER_BYTES: usize = 4 << 20;
/// A frame at least this large is read to its end and no further, and what follows it is
/// read in a small read first: its body then fills a buffer of its own (sliced off, never
/// copied), and at most a small partial frame is copied when the next buffer is allocated.
/// Below this size, reading large chunks saves more (syscalls) than the copies cost.
const LARGE_FRAME: usize = 32 * 1024;
/// Output buffer capacity kept once everything is written.
const OUT_KEEP: usize = 64 * 1024;
/// Slices per vectored write.
const WRITE_SLICES: usize = 16;
/// How long a closing connection waits for the client's close-ok.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// After a framing error no close-ok can be parsed: the close frame gets this long to reach
/// the client before the socket is closed.
const CORRUPT_WAIT: Duration = Duration::from_millis(500);

/// The state of one connection after the handshake.
pub(crate) struct Connection {
    /// Unique id (exclusive queues, consumer ownership).
    pub id: u64,
    /// Broker-wide state.
    pub ctx: Arc<BrokerContext>,
    /// The virtual host it opened.
    pub vhost: Arc<Vhost>,
    /// Its entry in the broker's registry (listed while this lives).
    pub registry: ConnectionGuard,
    /// The authenticated user (checked against the user_id property).
    pub user: String,
    /// What the user may do in the vhost, as of [`Access::generation`] `grant_gen`.
    grant: Grant,
    grant_gen: u64,
    /// The publish rate limits of its vhost and user (refreshed with the grant).
    pub rate: Vec<Arc<PublishLimits>>,
    /// Messages and body bytes published since they were last charged to `rate`.
    pub rate_owed: (u64, u64),
    /// For `{client_id}` in topic permissions.
    client_id: Option<String>,
    /// May claim any peer name (see [`check_peer_name`](Self::check_peer_name)).
    impersonator: bool,
    /// Negotiated frame_max.
    pub frame_max: u32,
    /// Negotiated channel_max.
    pub channel_max: u16,
    /// Frames waiting to be written.
    pub out: Output,
    /// Open channels.
    pub channels: HashMap<u16, Box<Channel>>,
    /// Handed to queues so they can push deliveries and confirms to this connection; made on
    /// first use (see [`events`](Self::events)), so a connection that never consumes nor
    /// confirms has no mailbox.
    events: Option<ConnSender>,
    /// The receiving side of a mailbox just made, for the run loop to pick up.
    new_events: Option<mpsc::UnboundedReceiver<ConnEvent>>,
    /// The client understands basic.cancel from the server.
    pub cancel_notify: bool,
    /// The client understands connection.blocked / unblocked.
    blocked_notify: bool,
    /// It has published: a resource alarm stops reading it (RabbitMQ's "blocked"; one that
    /// only consumes goes on).
    pub publishing: bool,
    /// It is blocked by an alarm now (and was told, if it understands connection.blocked).
    blocked: bool,
    /// Queues to wake once the current batch is handled (capacity was freed).
    pub to_wake: Vec<QueueHandle>,
    /// Reused by every publish to collect the queues it routes to (no allocation per message).
    pub route_buf: Vec<QueueHandle>,
    /// Per routed queue: whether its confirm waits for it (reused like `route_buf`).
    pub confirm_buf: Vec<bool>,
    /// Publishes routed in this read batch, per queue, sent as one command per queue.
    pub pending: Vec<(QueueHandle, Vec<Publishing>)>,
    /// Set once the connection is finished: after close-ok either way.
    done: bool,
    /// The client sent connection.close: close-ok goes out once the connection's resources
    /// are released, and then the client closes the socket (see `run`).
    close_requested: bool,
    /// Set when the broker sent connection.close and waits for close-ok.
    closing_since: Option<Instant>,
}

/// Runs a connection to its end, whatever the client does.
pub(crate) async fn serve<T: Transport>(ctx: Arc<BrokerContext>, id: u64, stream: T) {
    let (peer, local) = stream.addrs();
    let identity = stream.identity();
    let (mut rd, mut wr) = stream.split();
    // Small to start: an idle connection should cost a few KiB. Busy connections grow their
    // buffers (see READ_CHUNK) and keep them.
    let mut inbuf = BytesMut::with_capacity(READ_SMALL);
    let handshake = timeout(
        ctx.config.handshake_timeout(),
        handshake(&ctx, &mut rd, &mut wr, &mut inbuf, peer, identity),
    )
    .await;
    let tuned = match handshake {
        Ok(Ok(Some(t))) => t,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            info!("handshake timed out");
            return;
        }
    };
    let registry = ctx.registry.open_connection(ConnectionInfo::new(
        id,
        peer,
        local,
        tuned.user.clone(),
        tuned.vhost.name.clone(),
        tuned.client,
        tuned.frame_max,
        tuned.channel_max,
        tuned.heartbeat,
    ));
    let mut c = Connection {
        id,
        ctx: ctx.clone(),
        vhost: tuned.vhost,
        registry,
        frame_max: tuned.frame_max,
        channel_max: tuned.channel_max,
        user: tuned.user,
        grant: tuned.grant,
        // Refreshed on first use: permissions may have changed since the handshake.
        grant_gen: 0,
        rate: Vec::new(),
        rate_owed: (0, 0),
        client_id: tuned.client_id,
        impersonator: tuned.impersonator,
        out: Output::default(),
        channels: HashMap::new(),
        events: None,
        new_events: None,
        cancel_notify: tuned.cancel_notify,
        blocked_notify: tuned.blocked_notify,
        publishing: false,
        blocked: false,
        to_wake: Vec::new(),
        route_buf: Vec::new(),
        confirm_buf: Vec::new(),
        pending: Vec::new(),
        done: false,
        close_requested: false,
        closing_since: None,
    };
    info!("connection open");
    if inbuf.is_empty() {
        // Idle from here on, most likely: hold no buffer until the client sends something.
        inbuf = BytesMut::new();
    }
    c.run(rd, wr, inbuf, tuned.heartbeat).await;
    c.cleanup().await;
    info!("connection closed");
}

impl Connection {
    /// Starts or ends a block by a resource alarm, telling the client if it understands
    /// connection.blocked.
    fn set_blocked(&mut self, blocked: bool) {
        self.blocked = blocked;
        let reason = self.ctx.alarms.state().reason();
        if blocked {
            info!(reason = %reason, "connection blocked by a resource alarm");
        } else {
            info!("connection unblocked");
        }
        if !self.blocked_notify {
            return;
        }
        let m = if blocked {
            conn::AMQPMethod::Blocked(conn::Blocked {
                reason: reason.as_str().into(),
            })
        } else {
            conn::AMQPMethod::Unblocked(conn::Unblocked {})
        };
        write_method(&mut self.out, 0, &AMQPClass::Connection(m));
    }

    /// Charges what was published since the last charge to the publish rate limits; until
    /// when to stop reading, if one is in debt.
    fn charge_rate(&mut self) -> Option<Instant> {
        let (messages, bytes) = std::mem::take(&mut self.rate_owed);
        let wait = self
            .rate
            .iter()
            .map(|l| l.take(messages, bytes))
            .max()
            .unwrap_or_default();
        (!wait.is_zero()).then(|| Instant::now() + wait)
    }

    /// What the user may do in the vhost, refreshed when permissions changed.
    pub(crate) fn grant(&mut self) -> &Grant {
        let generation = self.ctx.access.generation();
        if generation != self.grant_gen {
            let vhost = &self.vhost.name;
            self.grant = self
                .ctx
                .access
                .grant(&self.user, vhost, self.client_id.as_deref())
                .unwrap_or_else(|| Grant::none(&self.user, vhost));
            self.rate = self.ctx.access.publish_limits(&self.vhost, &self.user);
            self.grant_gen = generation;
        }
        &self.grant
    }

    /// A peer name (the `warren-peer` module's `warren.peer.<name>.*` queues and `reply_to`
    /// on `warren.signal`) must belong to the login: the user's own name, or one that starts
    /// with it and a dot; administrators and impersonators may use any (403 otherwise). So
    /// one user cannot claim or speak for another's peer.
    pub(crate) fn check_peer_name(&self, name: &str) -> AmqpResult<()> {
        let own = name == self.user
            || name
                .strip_prefix(self.user.as_str())
                .is_some_and(|rest| rest.starts_with('.'));
        if own || self.impersonator {
            return Ok(());
        }
        Err(AmqpError::access_refused(format_args!(
            "peer name '{name}' does not belong to user '{}': a peer may use its login name, or names that start with '{}.'",
            self.user, self.user
        )))
    }

    /// Checks a permission (403 ACCESS_REFUSED, with RabbitMQ's text).
    pub(crate) fn check(&mut self, perm: Perm, kind: Resource, name: &str) -> AmqpResult<()> {
        self.grant().check(perm, kind, name)
    }

    /// Checks a routing key against the topic permissions of `exchange`, if it is a topic
    /// exchange (`Write` for a publish, `Read` for a binding from it).
    pub(crate) fn check_topic(&mut self, perm: Perm, exchange: &str, key: &str) -> AmqpResult<()> {
        if self.grant().topics.is_empty() || !self.vhost.is_topic_exchange(exchange) {
            return Ok(());
        }
        self.grant().check_topic(perm, exchange, key)
    }

    /// The connection's mailbox for queues, made on first use.
    pub(crate) fn events(&mut self) -> ConnSender {
        if let Some(tx) = &self.events {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.events = Some(tx.clone());
        self.new_events = Some(rx);
        tx
    }

    /// The connection's one loop: read and handle frames, take deliveries and confirms from
    /// queues, write, keep heartbeats, until the connection ends. Every branch is a method
    /// below; this only waits.
    async fn run<R: TransportRead, W: AsyncWrite + Unpin>(
        &mut self,
        mut rd: R,
        mut wr: W,
        inbuf: BytesMut,
        heartbeat: u16,
    ) {
        let mut input = Input::new(inbuf, self.frame_max);
        let mut events_rx: Option<mpsc::UnboundedReceiver<ConnEvent>> = None;
        let mut events = Vec::new();
        let mut last_write = Instant::now();
        let beat = if heartbeat == 0 {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(u64::from(heartbeat) * 500)
        };
        let mut ticker = tokio::time::interval(beat.min(CLOSE_WAIT));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.ctx.shutdown.clone();
        let mut shutdown_seen = false;
        let forced = self.registry.info().forced.clone();
        let mut forced_seen = false;
        let mut alarm_rx = self.ctx.alarms.subscribe();
        // Until when a publish rate limit stops reading.
        let mut throttle: Option<Instant> = None;
        loop {
            if events_rx.is_none() {
                events_rx = self.new_events.take();
            }
            let can_take = self.out.pending() < OUT_HIGH_WATER;
            // A resource alarm stops reading a publisher (one atomic load otherwise).
            let blocked = self.publishing && self.ctx.alarms.any();
            if blocked != self.blocked {
                self.set_blocked(blocked);
            }
            tokio::select! {
                r = async {
                    if input.unread {
                        return Ok(false);
                    }
                    rd.readable().await.map(|()| true)
                }, if can_take && !blocked && throttle.is_none() => {
                    let Ok(fresh) = r else { return };
                    input.unread = false;
                    if fresh {
                        match input.read(&mut rd) {
                            Read::Data(n) => {
                                self.registry.info().counters.recv_oct.fetch_add(n as u64, Relaxed);
                            }
                            Read::Stale => continue,
                            Read::End => return,
                        }
                    }
                    if !self.handle_input(&mut input).await {
                        return;
                    }
                    if self.rate_owed != (0, 0) {
                        throttle = self.charge_rate();
                    }
                }
                _ = tokio::time::sleep_until(throttle.unwrap_or_else(Instant::now)), if throttle.is_some() => {
                    // A publish rate limit's debt is paid: read again.
                    throttle = None;
                }
                n = async {
                    match events_rx.as_mut() {
                        Some(rx) => rx.recv_many(&mut events, 256).await,
                        None => std::future::pending().await,
                    }
                }, if can_take && self.closing_since.is_none() => {
                    if n == 0 {
                        return;
                    }
                    for ev in events.drain(..) {
                        self.handle_event(ev);
                    }
                    self.after_batch();
                }
                r = async {
                    let mut slices = [std::io::IoSlice::new(&[]); WRITE_SLICES];
                    let n = self.out.io_slices(&mut slices);
                    wr.write_vectored(&slices[..n]).await
                }, if !self.out.is_drained() => {
                    match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            self.out.advance(n, OUT_KEEP);
                            self.registry.info().counters.send_oct.fetch_add(n as u64, Relaxed);
                        }
                    }
                    last_write = Instant::now();
                }
                _ = tokio::time::sleep_until(
                        self.closing_since.map_or_else(Instant::now, |t| t + if input.corrupt { CORRUPT_WAIT } else { CLOSE_WAIT })
                    ), if self.closing_since.is_some() => {
                    // The client did not answer our connection.close in time.
                    return;
                }
                r = alarm_rx.changed(), if self.publishing => {
                    if r.is_err() {
                        return;
                    }
                }
                _ = ticker.tick() => {
                    let now = Instant::now();
                    if blocked || throttle.is_some() {
                        // Not reading: the client's heartbeats wait in the socket, as
                        // RabbitMQ suspends its heartbeat monitor while blocked.
                        input.last_read = now;
                    }
                    if heartbeat != 0 {
                        if now - input.last_read > beat * 4 {
                            info!("missed heartbeats from client, closing");
                            return;
                        }
                        if now - last_write >= beat && self.out.is_drained() {
                            write_heartbeat(&mut self.out);
                        }
                    }
                    if events.capacity() > 0 && now - input.last_read > beat.min(CLOSE_WAIT) {
                        // Quiet for a while: give back the batch buffers.
                        events = Vec::new();
                        self.route_buf = Vec::new();
                        self.confirm_buf = Vec::new();
                        self.pending = Vec::new();
                    }
                }
                _ = forced.cancelled(), if !forced_seen => {
                    forced_seen = true;
                    let reason = self.registry.info().forced_reason();
                    self.close_connection(AmqpError::new(ReplyCode::ConnectionForced, reason));
                }
                _ = shutdown.cancelled(), if !shutdown_seen => {
                    shutdown_seen = true;
                    self.close_connection(AmqpError::new(
                        ReplyCode::ConnectionForced,
                        "broker forced connection closure with reason 'shutdown'",
                    ));
                }
            }
            if self.close_requested && !self.done {
                // As RabbitMQ: consumers, unacked messages and exclusive queues are released
                // before close-ok, so whoever sees close-ok sees them gone.
                self.cleanup().await;
                write_method(
                    &mut self.out,
                    0,
                    &AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                );
                self.done = true;
            }
            if self.done && self.out.is_drained() {
                if self.close_requested {
                    // After close-ok the client closes the socket, as with RabbitMQ, which
                    // waits for that rather than closing first: a client's own close
                    // handling may race with the broker's end of stream otherwise (aiormq
                    // does). Bounded, whatever the client does.
                    let _ = tokio::time::timeout(CLOSE_WAIT, input.until_end(&mut rd)).await;
                }
                let _ = wr.shutdown().await;
                return;
            }
        }
    }

    /// Handles whole frames until one is a method that must wait (returned), or no whole
    /// frame is left. Synchronous: the per-frame work stays out of any future's state.
    fn handle_frames(&mut self, input: &mut Input) -> Frames {
        loop {
            match input.codec.decode(&mut input.buf) {
                Ok(Some(frame)) => {
                    if let Some((channel, method)) = self.handle_frame(frame) {
                        return Frames::Waiting(channel, method);
                    }
                }
                Ok(None) => return Frames::Done,
                Err(CodecError::Frame(e)) => {
                    if self.closing_since.is_some() {
                        return Frames::End;
                    }
                    debug!(error = %e, "bad frame");
                    input.corrupt = true;
                    let (class_id, method_id) = e.method();
                    self.close_connection(
                        AmqpError::new(code_of(e.reply_code()), &e).during(class_id, method_id),
                    );
                    // The stream can no longer be trusted: drop what follows.
                    input.buf.clear();
                    return Frames::Done;
                }
                Err(CodecError::Io(_)) => return Frames::End,
            }
            if self.done || self.close_requested {
                return Frames::Done;
            }
        }
    }

    /// Handles every whole frame read so far, sends the batch's publishes to their queues,
    /// and lets other tasks run after a long stretch of reading. False: the connection ends.
    async fn handle_input(&mut self, input: &mut Input) -> bool {
        if input.corrupt {
            // After a framing error nothing more can be parsed: discard what arrives until
            // the client closes or CORRUPT_WAIT passes.
            input.buf.clear();
            return true;
        }
        loop {
            match self.handle_frames(input) {
                Frames::Waiting(channel, method) => {
                    // Methods that wait run boxed, so the connection's own future stays small.
                    Box::pin(self.handle_waiting_method(channel, method)).await;
                    if self.done || self.close_requested {
                        break;
                    }
                }
                Frames::Done => break,
                Frames::End => return false,
            }
        }
        if input.buf.is_empty() && !input.busy {
            input.buf = BytesMut::new();
        }
        self.flush_publishes().await;
        self.after_batch();
        if input.busy && input.read_since_yield >= YIELD_AFTER_BYTES {
            // The socket has more: let the queues this connection fed, and the connections
            // they deliver to, run before reading on. Without this a flat-out publisher read
            // for its whole cooperative budget (128 reads, about 200,000 small messages)
            // before its queue ran once, and consumers got nothing meanwhile.
            input.read_since_yield = 0;
            yield_to_woken().await;
        }
        true
    }

    /// Queues a routed publish for `queue`; sent with the others of this read batch (at most
    /// one read buffer of publishes).
    pub(crate) fn enqueue(
        &mut self,
        queue: QueueHandle,
        message: Arc<Message>,
        confirm: Option<ConfirmToken>,
    ) {
        let list = match self.pending.iter().position(|(q, _)| *q == queue) {
            Some(i) => &mut self.pending[i].1,
            None => {
                self.pending.push((queue, Vec::with_capacity(16)));
                &mut self.pending.last_mut().expect("just pushed").1
            }
        };
        list.push((message, confirm));
    }

    /// Sends the publishes routed so far to their queues (before anything else that the
    /// queues must see after them).
    pub(crate) async fn flush_publishes(&mut self) {
        for (q, list) in std::mem::take(&mut self.pending) {
            let cmd = if list.len() == 1 {
                let (message, confirm) = list.into_iter().next().expect("one element");
                QueueCmd::Publish {
                    message,
                    confirm,
                    handoff: None,
                }
            } else {
                QueueCmd::PublishMany(list)
            };
            // A queue deleted meanwhile confirms what reached its mailbox; a publish it
            // never received is dropped here and its confirm token nacks.
            let _ = q.send(cmd).await;
        }
    }

    /// Work deferred to the end of a batch: coalesced confirms and queue wake-ups.
    fn after_batch(&mut self) {
        for ch in self.channels.values_mut() {
            ch.flush_confirms(&mut self.out);
            ch.publish_counts();
        }
        for q in self.to_wake.drain(..) {
            q.wake();
        }
    }

    /// Sends connection.close; from now on only close-ok (or close) is accepted.
    pub fn close_connection(&mut self, err: AmqpError) {
        if self.closing_since.is_some() || self.done {
            return;
        }
        info!(code = err.code.code(), text = %err.text, "closing connection");
        write_close(&mut self.out, &err);
        self.closing_since = Some(Instant::now());
    }

    /// Handles a frame that needs no waiting; a method that may wait is handed back with its
    /// channel, for [`handle_waiting_method`](Self::handle_waiting_method).
    fn handle_frame(&mut self, frame: Frame) -> Option<(u16, Box<AMQPClass>)> {
        if self.done || self.close_requested {
            // Nothing the client sends after its connection.close counts.
            return None;
        }
        if self.closing_since.is_some() {
            if let Frame::Method(0, m) = &frame {
                match **m {
                    AMQPClass::Connection(conn::AMQPMethod::CloseOk(_)) => self.done = true,
                    AMQPClass::Connection(conn::AMQPMethod::Close(_)) => {
                        write_method(
                            &mut self.out,
                            0,
                            &AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                        );
                        self.done = true;
                    }
                    _ => {}
                }
            }
            return None;
        }
        let channel = frame.channel();
        let result = match frame {
            Frame::Heartbeat(0) => Ok(None),
            Frame::Heartbeat(c) => Err(AmqpError::unexpected_frame(format_args!(
                "heartbeat frame on channel {c}, expected channel 0"
            ))),
            Frame::Method(0, m) => self.handle_connection_method(*m).map(|()| None),
            Frame::Publish(0, _) => Err(AmqpError::channel_error(
                "unexpected method in connection state running",
            )
            .during(60, 40)),
            Frame::Ack { channel: 0, .. } => Err(AmqpError::channel_error(
                "unexpected method in connection state running",
            )
            .during(60, 80)),
            Frame::Header { channel: 0, .. } | Frame::Body(0, _) => Err(
                AmqpError::unexpected_frame("expected method frame, got non method frame instead"),
            ),
            frame => self.handle_channel_frame(frame),
        };
        match result {
            Ok(method) => method.map(|m| (channel, m)),
            Err(e) => {
                self.fail(channel, e);
                None
            }
        }
    }

    /// A method that may wait for queues, after the publishes read before it are sent.
    async fn handle_waiting_method(&mut self, channel: u16, method: Box<AMQPClass>) {
        // Whatever this method does, the queues must see the publishes before it.
        self.flush_publishes().await;
        if !self.channels.contains_key(&channel) {
            return;
        }
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        if let Err(e) = self.handle_method(channel, *method).await {
            self.fail(channel, e.during(class_id, method_id));
        }
    }

    /// Closes the channel (or, for a hard error or on channel 0, the connection) with `e`.
    fn fail(&mut self, channel: u16, e: AmqpError) {
        if e.code.is_hard() || channel == 0 {
            self.close_connection(e);
        } else {
            self.close_channel(channel, e);
        }
    }

    fn handle_connection_method(&mut self, method: AMQPClass) -> AmqpResult<()> {
        match method {
            AMQPClass::Connection(conn::AMQPMethod::Close(_)) => {
                // Answered by `run` once everything is released.
                self.close_requested = true;
                Ok(())
            }
            AMQPClass::Connection(conn::AMQPMethod::UpdateSecret(u)) => {
                // As RabbitMQ's internal users: a password does not expire, so there is no
                // state to refresh and any new secret is accepted (RabbitMQ consults only
                // backends whose state can expire, such as OAuth 2).
                tracing::info!(reason = %u.reason, "connection updated its secret");
                write_method(
                    &mut self.out,
                    0,
                    &AMQPClass::Connection(conn::AMQPMethod::UpdateSecretOk(
                        conn::UpdateSecretOk {},
                    )),
                );
                Ok(())
            }
            AMQPClass::Connection(m) => Err(AmqpError::command_invalid(format_args!(
                "unexpected connection method {m:?}"
            ))),
            other => Err(
                AmqpError::channel_error("unexpected method in connection state running")
                    .during(other.get_amqp_class_id(), other.get_amqp_method_id()),
            ),
        }
    }

    /// Releases everything the connection held: consumers are cancelled, unacked messages go
    /// back to their queues, exclusive queues are deleted.
    async fn cleanup(&mut self) {
        self.flush_publishes().await;
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            if let Some(ch) = self.remove_channel(id) {
                ch.release(self.id);
            }
        }
        self.vhost.drop_exclusive_queues(self.id).await;
    }
}

/// The reading side of a connection: its buffer, its frame decoder, and how it sizes reads.
struct Input {
    buf: BytesMut,
    codec: FrameCodec,
    /// The last read filled the buffer it had: read in large chunks.
    busy: bool,
    /// The last read ended a large frame: read what follows in a small read.
    after_large: bool,
    /// Frames that arrived with the handshake's last ones are handled before any read.
    unread: bool,
    /// A framing error was seen: nothing more is parsed.
    corrupt: bool,
    /// Bytes read since the task last let others run.
    read_since_yield: usize,
    last_read: Instant,
}

/// Where [`Connection::handle_frames`] stopped.
enum Frames {
    /// At a method that must wait (for a queue's answer, or room in its mailbox).
    Waiting(u16, Box<AMQPClass>),
    /// No whole frame left (or the connection is done with its input).
    Done,
    /// The stream cannot go on.
    End,
}

/// What one read did.
enum Read {
    /// Read this many bytes.
    Data(usize),
    /// The readiness was stale: nothing to read after all.
    Stale,
    /// The stream ended or failed.
    End,
}

impl Input {
    /// Reads and discards until the stream ends (the client closed it) or fails.
    async fn until_end<R: TransportRead>(&mut self, rd: &mut R) {
        loop {
            if rd.readable().await.is_err() {
                return;
            }
            match self.read(rd) {
                Read::End => return,
                Read::Data(_) | Read::Stale => self.buf.clear(),
            }
        }
    }

    fn new(buf: BytesMut, frame_max: u32) -> Self {
        Input {
            unread: !buf.is_empty(),
            buf,
            codec: FrameCodec { frame_max },
            busy: false,
            after_large: false,
            corrupt: false,
            read_since_yield: 0,
            last_read: Instant::now(),
        }
    }

    /// Reads what arrived, into a buffer sized for it: all of the rest of a large frame (whose
    /// body then fills a buffer of its own, sliced off, never copied), a small read after
    /// one, large chunks while busy, small ones otherwise.
    fn read<R: TransportRead>(&mut self, rd: &mut R) -> Read {
        let (limit, min_spare) = match self.codec.missing(&self.buf) {
            Some(rest) if self.buf.len() + rest >= LARGE_FRAME => {
                self.after_large = true;
                (rest, rest)
            }
            _ if std::mem::take(&mut self.after_large) => (READ_SMALL, 1024),
            _ if self.busy => (READ_CHUNK, 1024),
            _ => (READ_SMALL, 1024),
        };
        if self.buf.capacity() - self.buf.len() < min_spare {
            self.buf.reserve(limit);
        }
        let want = limit.min(self.buf.capacity() - self.buf.len());
        match rd.try_read(&mut self.buf, want) {
            Ok(0) => Read::End,
            Ok(n) => {
                self.busy = n == want;
                self.read_since_yield += n;
                self.last_read = Instant::now();
                Read::Data(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // A stale readiness: keep no buffer for nothing.
                if self.buf.is_empty() {
                    self.buf = BytesMut::new();
                }
                Read::Stale
            }
            Err(_) => Read::End,
        }
    }
}

/// Lets the tasks this one woke run (the queues it fed, the connections they deliver to),
/// then carries on. Unlike `tokio::task::yield_now`, whose wake-up is deferred until the worker
/// has nothing else to do (it then polls the I/O driver first), this reschedules at once: the
/// reader stays in the pipeline, and the tasks ahead of it in the run queue get their turn.
/// (Measured with `warren perf throughput -s 16`: yield_now every 1 MB cost a third of the
/// throughput; this costs nothing measurable.)
async fn yield_to_woken() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            std::task::Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}
