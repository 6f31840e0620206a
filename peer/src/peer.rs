//! The [`Peer`]: a named endpoint on the broker that opens [`Link`]s to other peers and
//! receives from all of them on one stream.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use lapin::Consumer;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::RTCSessionDescription;

use crate::config::{valid_name, PeerConfig};
use crate::direct::{self, build_pc, channel_init, frame_limit, remote_max_message_size};
use crate::error::{PeerError, Result};
use crate::link::{run_reorderer, InboundItem, PathState, Session, Writer, WriterCmd};
use crate::message::{Incoming, Message, Path, Reliability};
use crate::signal::{decode_delivery, Envelope, Signal, Signaller};

/// How many closed session ids are remembered, so late relayed messages of a closed link are
/// dropped instead of opening a new one.
const REMEMBER_CLOSED: usize = 4096;

/// What every task of a peer shares.
pub(crate) struct Shared {
    /// The peer's settings.
    pub config: PeerConfig,
    /// The broker connection.
    pub signaller: Signaller,
    /// Open links by session id.
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// The link to use for each remote peer (its latest session).
    links: Mutex<HashMap<String, String>>,
    /// Recently closed session ids, oldest first, and the same as a set.
    closed: Mutex<(VecDeque<String>, HashSet<String>)>,
    /// Every link's reorderer delivers here; `Peer::recv` reads it.
    pub incoming_tx: mpsc::Sender<Incoming>,
    /// Cancelled when the peer closes or is dropped; every task stops on it.
    pub shutdown: CancellationToken,
}

impl Shared {
    /// Registers a new link and starts its writer and reorderer.
    fn create_session(
        self: &Arc<Self>,
        id: String,
        remote: &str,
        reliability: Reliability,
    ) -> Arc<Session> {
        let (s, cmd_rx, inbound_rx) = Session::new(
            id.clone(),
            remote.to_string(),
            reliability,
            frame_limit(&self.config),
        );
        tokio::spawn(Writer::new(s.clone(), self.clone()).run(cmd_rx));
        tokio::spawn(run_reorderer(s.clone(), self.clone(), inbound_rx));
        self.sessions.lock().unwrap().insert(id.clone(), s.clone());
        self.links.lock().unwrap().insert(remote.to_string(), id);
        s
    }

    /// Forgets a link and closes it.
    pub(crate) fn remove_session(&self, id: &str) {
        let s = self.sessions.lock().unwrap().remove(id);
        if let Some(s) = s {
            let mut links = self.links.lock().unwrap();
            if links.get(&s.remote).map(String::as_str) == Some(id) {
                links.remove(&s.remote);
            }
            drop(links);
            s.advance(PathState::Closed);
        }
        let mut closed = self.closed.lock().unwrap();
        if closed.1.insert(id.to_string()) {
            closed.0.push_back(id.to_string());
            if closed.0.len() > REMEMBER_CLOSED {
                if let Some(old) = closed.0.pop_front() {
                    closed.1.remove(&old);
                }
            }
        }
    }

    /// The link with this id, if it belongs to `from` signed in as `user`.
    fn session(&self, id: &str, from: &str, user: &Option<String>) -> Option<Arc<Session>> {
        let s = self.sessions.lock().unwrap().get(id).cloned()?;
        (s.remote == from && s.accepts_user(user)).then_some(s)
    }

    /// The link a signal from `from` belongs to, created if this is the first word of it;
    /// `None` for a link that closed or an id that belongs to someone else.
    fn session_for_signal(
        self: &Arc<Self>,
        from: &str,
        user: &Option<String>,
        id: &str,
        reliability: Reliability,
    ) -> Option<Arc<Session>> {
        let existing = self.sessions.lock().unwrap().get(id).cloned();
        if let Some(s) = existing {
            return (s.remote == from && s.accepts_user(user)).then_some(s);
        }
        if self.closed.lock().unwrap().1.contains(id) || !valid_name(from) {
            return None;
        }
        let s = self.create_session(id.to_string(), from, reliability);
        s.accepts_user(user);
        Some(s)
    }

    /// The open link to `remote`, if any.
    fn link_for(&self, remote: &str) -> Option<Arc<Session>> {
        let id = self.links.lock().unwrap().get(remote).cloned()?;
        let s = self.sessions.lock().unwrap().get(&id).cloned()?;
        (s.state() != PathState::Closed).then_some(s)
    }
}

/// A named endpoint on the broker.
///
/// ```no_run
/// # async fn demo() -> warren_peer::Result<()> {
/// use warren_peer::{Message, Peer, PeerConfig};
/// let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// let mut b = Peer::start(PeerConfig::new(url, "B")).await?;
/// let a = Peer::start(PeerConfig::new(url, "A")).await?;
/// let link = a.connect("B").await?;
/// let path = link.send(Message::new("greeting", "hello")).await?;
/// let got = b.recv().await.unwrap();
/// assert_eq!((got.from.as_str(), got.path), ("A", path));
/// link.close().await?;
/// # Ok(()) }
/// ```
pub struct Peer {
    /// State shared with the peer's tasks.
    shared: Arc<Shared>,
    /// Messages from every link, in order per link.
    incoming: mpsc::Receiver<Incoming>,
}

impl Peer {
    /// Connects to the broker, claims `config.name` and starts listening for links.
    pub async fn start(config: PeerConfig) -> Result<Peer> {
        if !valid_name(&config.name) {
            return Err(PeerError::InvalidName(config.name));
        }
        let prefetch = config.relay_in_flight.clamp(16, u16::MAX as usize) as u16;
        let (signaller, inbox) = Signaller::open(&config, prefetch).await?;
        let (incoming_tx, incoming) = mpsc::channel(config.incoming_buffer.max(1));
        let shared = Arc::new(Shared {
            config,
            signaller,
            sessions: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            closed: Mutex::new((VecDeque::new(), HashSet::new())),
            incoming_tx,
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(signal_loop(shared.clone(), inbox.signals));
        tokio::spawn(relay_loop(shared.clone(), inbox.relay));
        Ok(Peer { shared, incoming })
    }

    /// This peer's name.
    pub fn name(&self) -> &str {
        self.shared.signaller.name()
    }

    /// Opens a reliable, ordered link to `remote` (see [`connect_with`](Self::connect_with)).
    pub async fn connect(&self, remote: &str) -> Result<Link> {
        self.connect_with(remote, Reliability::Reliable).await
    }

    /// Opens a link to the peer named `remote`, or returns the open one (whichever side
    /// opened it; its reliability then stays as it was).
    ///
    /// Sends a WebRTC offer through the broker and waits up to `connect_timeout` for the data
    /// channel to open; if it does not, or the remote refuses, the link relays through the
    /// broker. Fails with [`PeerError::NoSuchPeer`] if no peer of that name is connected.
    pub async fn connect_with(&self, remote: &str, reliability: Reliability) -> Result<Link> {
        if !valid_name(remote) || remote == self.name() {
            return Err(PeerError::InvalidName(remote.to_string()));
        }
        let shared = &self.shared;
        if let Some(s) = shared.link_for(remote) {
            let mut rx = s.path.subscribe();
            let wait = shared.config.connect_timeout + Duration::from_secs(1);
            if tokio::time::timeout(wait, rx.wait_for(|p| *p != PathState::Connecting))
                .await
                .is_err()
            {
                s.direct_lost("no direct path in time");
            }
            return Ok(Link { s });
        }
        let s = shared.create_session(new_session_id(), remote, reliability);
        if let Err(e) = self.offer(&s).await {
            shared.remove_session(&s.id);
            return Err(e);
        }
        Ok(Link { s })
    }

    /// The open link to `remote`, if there is one, without connecting.
    pub fn link(&self, remote: &str) -> Option<Link> {
        self.shared.link_for(remote).map(|s| Link { s })
    }

    async fn offer(&self, s: &Arc<Session>) -> Result<()> {
        let shared = &self.shared;
        let config = &shared.config;
        let (sdp, events) = if config.offer_direct {
            match start_direct(shared, s).await {
                Ok((sdp, events)) => (Some(sdp), Some(events)),
                Err(e) => {
                    // A direct path that cannot even be set up here is one that cannot be
                    // made: relay, as for a timeout.
                    tracing::warn!(remote = %s.remote, "direct path unavailable ({e}); relaying through the broker");
                    s.advance(PathState::Relay);
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        let direct = sdp.is_some();
        let offer = Signal::Offer {
            sdp,
            reliability: s.reliability,
        };
        shared
            .signaller
            .publish_confirmed(&s.remote, &s.id, offer)
            .await?;
        let Some(events) = events.filter(|_| direct) else {
            s.advance(PathState::Relay);
            return Ok(());
        };
        // Trickle local candidates only now, so that they follow the offer in the remote's
        // signal queue.
        tokio::spawn(direct::run_control(
            s.clone(),
            shared.clone(),
            events,
            s.attempt(),
        ));
        let mut rx = s.path.subscribe();
        let opened = tokio::time::timeout(
            config.connect_timeout,
            rx.wait_for(|p| *p != PathState::Connecting),
        )
        .await;
        if opened.is_err() && s.advance(PathState::Relay) {
            tracing::info!(remote = %s.remote, timeout = ?config.connect_timeout, "no direct path in time; relaying through the broker");
            let _ = shared
                .signaller
                .publish(&s.remote, &s.id, Signal::Abandon)
                .await;
        }
        if let Some(min) = config.retry_min {
            tokio::spawn(retry_direct(shared.clone(), s.clone(), min));
        }
        Ok(())
    }

    /// The next message from any link, in order per link; `None` once the peer is closed.
    ///
    /// Cancel safe: a message is either returned or stays queued.
    pub async fn recv(&mut self) -> Option<Incoming> {
        tokio::select! {
            m = self.incoming.recv() => m,
            _ = self.shared.shutdown.cancelled() => None,
        }
    }

    /// Closes every link (each flushes and says bye), then the broker connection.
    pub async fn close(self) -> Result<()> {
        let sessions: Vec<Arc<Session>> = self
            .shared
            .sessions
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        let closes = sessions.into_iter().map(|s| async move {
            let link = Link { s };
            let _ = tokio::time::timeout(Duration::from_secs(5), link.close()).await;
        });
        futures_util::future::join_all(closes).await;
        self.shared.shutdown.cancel();
        self.shared.signaller.close().await;
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// What a link has carried so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Messages handed to the data channel.
    pub direct: u64,
    /// Messages published to the broker, republished ones included.
    pub relayed: u64,
    /// Times the link went back from the relay to the direct path.
    pub returns_to_direct: u64,
}

/// A link to one remote peer; cheap to clone, usable from many tasks.
#[derive(Clone)]
pub struct Link {
    /// The link's shared state.
    s: Arc<Session>,
}

impl Link {
    /// The remote peer's name.
    pub fn remote(&self) -> &str {
        &self.s.remote
    }

    /// How this link carries messages.
    pub fn reliability(&self) -> Reliability {
        self.s.reliability
    }

    /// The path new messages take now; `None` while connecting or once closed.
    pub fn path(&self) -> Option<Path> {
        match self.s.state() {
            PathState::Direct => Some(Path::Direct),
            PathState::Relay => Some(Path::Relayed),
            PathState::Connecting | PathState::Closed => None,
        }
    }

    /// Whether the link is closed (by either side).
    pub fn is_closed(&self) -> bool {
        self.s.state() == PathState::Closed
    }

    /// Counts of messages per path.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            direct: self.s.sent_direct.load(Ordering::Relaxed),
            relayed: self.s.sent_relayed.load(Ordering::Relaxed),
            returns_to_direct: self.s.returns.load(Ordering::Relaxed),
        }
    }

    /// Sends one message and says which path took it.
    ///
    /// Waits while the send buffer is full (back-pressure): on the direct path until the
    /// remote acknowledges, on the relay path until the broker confirms. Once this returns
    /// `Ok`, the message reaches the remote even if the direct path drops later (it is then
    /// republished through the broker), unless the remote itself goes away.
    ///
    /// Cancel safety: cancelling while waiting for buffer space sends nothing; cancelling
    /// after the message was queued may still send it.
    pub async fn send(&self, message: Message) -> Result<Path> {
        message.validate().map_err(PeerError::InvalidMessage)?;
        let (reply, rx) = oneshot::channel();
        let reply = Some(reply);
        self.s
            .cmd_tx
            .send(WriterCmd::Send { message, reply })
            .await
            .map_err(|_| PeerError::Closed)?;
        rx.await.map_err(|_| PeerError::Closed)?
    }

    /// Queues one message without waiting for it to be handed to a path: for streams, where
    /// waiting message by message would keep the link from packing small messages together.
    /// Back-pressure applies as for [`send`](Self::send). A failure after queueing surfaces in
    /// the next [`flush`](Self::flush) or [`close`](Self::close), which also confirm delivery.
    ///
    /// Cancel safety: cancelling while waiting for queue space queues nothing.
    pub async fn post(&self, message: Message) -> Result<()> {
        message.validate().map_err(PeerError::InvalidMessage)?;
        self.s
            .cmd_tx
            .send(WriterCmd::Send {
                message,
                reply: None,
            })
            .await
            .map_err(|_| PeerError::Closed)
    }

    /// Waits until every message sent so far is acknowledged by the remote peer (direct) or
    /// confirmed by the broker (relay).
    pub async fn flush(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.s
            .cmd_tx
            .send(WriterCmd::Flush(reply))
            .await
            .map_err(|_| PeerError::Closed)?;
        rx.await.map_err(|_| PeerError::Closed)?
    }

    /// Flushes, tells the remote the stream ended (after its last message, on the same
    /// path), and closes the WebRTC connection. Ends the link in both directions.
    pub async fn close(&self) -> Result<()> {
        if self.is_closed() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        if self.s.cmd_tx.send(WriterCmd::Close(reply)).await.is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }

    /// Closes the WebRTC connection abruptly, as a network failure would, without telling the
    /// link. For tests of the fallback.
    #[doc(hidden)]
    pub async fn sever_direct(&self) {
        if let Some(pc) = self.s.pc() {
            let _ = pc.close().await;
        }
    }
}

/// A fresh, unguessable-enough session id (the link's security rests on the DTLS fingerprints
/// carried in the SDP, not on this id).
fn new_session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    let a = h.finish();
    let mut h2 = RandomState::new().build_hasher();
    h2.write_u64(a);
    format!("{:016x}{:016x}", a, h2.finish())
}

/// Starts a direct attempt: builds the connection and its data channel; returns the offer's
/// SDP and the connection's events (local candidates wait there until the offer is out).
async fn start_direct(
    shared: &Arc<Shared>,
    s: &Arc<Session>,
) -> Result<(
    String,
    tokio::sync::mpsc::UnboundedReceiver<direct::PcEvent>,
)> {
    let (pc, events) = build_pc(&shared.config).await?;
    s.next_attempt();
    s.set_pc(pc.clone());
    let dc = pc
        .create_data_channel("warren", Some(channel_init(s.reliability)))
        .await?;
    direct::attach(s, shared, dc);
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer.clone()).await?;
    Ok((offer.sdp, events))
}

/// For a link this peer opened: whenever it relays, tries the direct path again, after
/// `min`, then twice as long after each failed try (up to `retry_max`), until the link
/// closes or the remote refuses direct connections.
async fn retry_direct(shared: Arc<Shared>, s: Arc<Session>, min: Duration) {
    let config = &shared.config;
    let mut backoff = min;
    let mut path_rx = s.path.subscribe();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = path_rx.wait_for(|p| *p >= PathState::Relay) => if r.is_err() { return },
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        match s.state() {
            PathState::Closed => return,
            PathState::Relay if !s.direct_refused() => {}
            PathState::Relay => return,
            _ => continue,
        }
        let (sdp, events) = match start_direct(&shared, &s).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(remote = %s.remote, "direct path unavailable ({e})");
                backoff = (backoff * 2).min(config.retry_max);
                continue;
            }
        };
        let attempt = s.attempt();
        let offer = Signal::Offer {
            sdp: Some(sdp),
            reliability: s.reliability,
        };
        if shared
            .signaller
            .publish_confirmed(&s.remote, &s.id, offer)
            .await
            .is_err()
        {
            s.abandon_attempt(attempt);
            return;
        }
        tokio::spawn(direct::run_control(
            s.clone(),
            shared.clone(),
            events,
            attempt,
        ));
        let opened = tokio::time::timeout(
            config.connect_timeout,
            path_rx.wait_for(|p| *p == PathState::Direct || *p == PathState::Closed),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if opened && s.state() == PathState::Direct {
            backoff = min;
            continue;
        }
        s.abandon_attempt(attempt);
        let _ = shared
            .signaller
            .publish(&s.remote, &s.id, Signal::Abandon)
            .await;
        backoff = (backoff * 2).min(config.retry_max);
    }
}

/// Reads the signal queue: offers, answers, candidates, refusals.
async fn signal_loop(shared: Arc<Shared>, mut consumer: Consumer) {
    loop {
        let delivery = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            d = consumer.next() => d,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                tracing::warn!("signal queue: {e}");
                break;
            }
            None => break,
        };
        let (env, acker) = decode_delivery(delivery);
        let _ = acker.ack(BasicAckOptions::default()).await;
        match env {
            Ok(env) => on_signal(&shared, env).await,
            Err(e) => tracing::warn!("ignoring a signal: {e}"),
        }
    }
    if shared.shutdown.is_cancelled() {
        shared.signaller.close().await;
    }
}

async fn on_signal(shared: &Arc<Shared>, env: Envelope) {
    let Envelope {
        from,
        user,
        session,
        signal,
    } = env;
    match signal {
        Signal::Offer { sdp, reliability } => {
            let Some(s) = shared.session_for_signal(&from, &user, &session, reliability) else {
                return;
            };
            let Some(sdp) = sdp else {
                s.advance(PathState::Relay);
                return;
            };
            if !shared.config.accept_direct {
                let reject = Signal::Reject {
                    reason: "direct connections are not accepted".into(),
                };
                let _ = shared.signaller.publish(&from, &session, reject).await;
                s.advance(PathState::Relay);
                return;
            }
            // A first offer, or a new attempt on a link that fell back to the relay (a
            // repeated first offer, or one for a link already direct or closed, is ignored).
            match s.state() {
                PathState::Connecting if s.pc().is_none() => {}
                PathState::Relay => {}
                _ => return,
            }
            s.next_attempt();
            if let Err(e) = answer(shared, &s, sdp).await {
                tracing::warn!(remote = %from, "cannot answer: {e}");
                let reject = Signal::Reject {
                    reason: e.to_string(),
                };
                let _ = shared.signaller.publish(&from, &session, reject).await;
                s.advance(PathState::Relay);
            }
        }
        Signal::Answer { sdp } => {
            let Some(s) = shared.session(&session, &from, &user) else {
                return;
            };
            let Some(pc) = s.pc() else { return };
            let limit = remote_max_message_size(&sdp);
            let applied = match RTCSessionDescription::answer(sdp) {
                Ok(desc) => pc.set_remote_description(desc).await,
                Err(e) => Err(e),
            };
            if let Err(e) = applied {
                tracing::warn!(remote = %from, "bad answer: {e}");
                s.direct_lost("bad answer");
                return;
            }
            s.max_frame.fetch_min(limit, Ordering::Relaxed);
            for c in s.remote_description_set() {
                let _ = pc.add_ice_candidate(c).await;
            }
        }
        Signal::Candidate(c) => {
            let Some(s) = shared.session(&session, &from, &user) else {
                return;
            };
            if let (Some(c), Some(pc)) = (s.hold_candidate(c), s.pc()) {
                if let Err(e) = pc.add_ice_candidate(c).await {
                    tracing::debug!("candidate refused: {e}");
                }
            }
        }
        Signal::Reject { reason } => {
            if let Some(s) = shared.session(&session, &from, &user) {
                tracing::info!(remote = %from, "direct path refused ({reason}); relaying");
                s.refuse_direct();
                s.advance(PathState::Relay);
            }
        }
        Signal::Abandon => {
            if let Some(s) = shared.session(&session, &from, &user) {
                s.direct_lost("the remote gave up");
                s.abandon_attempt(s.attempt());
            }
        }
        Signal::Data { .. } | Signal::Bye { .. } => {}
    }
}

/// Answers an offer: builds the connection, answers through the broker, and leaves the
/// direct path to come up (or time out) on its own.
async fn answer(shared: &Arc<Shared>, s: &Arc<Session>, sdp: String) -> Result<()> {
    let (pc, events) = build_pc(&shared.config).await?;
    s.set_pc(pc.clone());
    let limit = remote_max_message_size(&sdp);
    pc.set_remote_description(RTCSessionDescription::offer(sdp)?)
        .await?;
    s.max_frame.fetch_min(limit, Ordering::Relaxed);
    for c in s.remote_description_set() {
        let _ = pc.add_ice_candidate(c).await;
    }
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer.clone()).await?;
    shared
        .signaller
        .publish_confirmed(&s.remote, &s.id, Signal::Answer { sdp: answer.sdp })
        .await?;
    let attempt = s.attempt();
    tokio::spawn(direct::run_control(
        s.clone(),
        shared.clone(),
        events,
        attempt,
    ));
    let (s, wait) = (s.clone(), shared.config.connect_timeout * 2);
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        match s.state() {
            PathState::Connecting => s.direct_lost_in(attempt, "no direct path in time"),
            PathState::Relay => s.abandon_attempt(attempt),
            _ => {}
        }
    });
    Ok(())
}

/// Relay deliveries acknowledged to the broker at once (one `basic.ack` with `multiple`).
const RELAY_ACK_BATCH: u32 = 64;

/// Reads the relay queue: messages and byes that went through the broker. Deliveries are
/// acknowledged in batches: every [`RELAY_ACK_BATCH`], or as soon as the queue goes quiet
/// (20 ms), once each was handed to its link.
async fn relay_loop(shared: Arc<Shared>, mut consumer: Consumer) {
    // Never more than half the prefetch, or the broker would stop sending before a batch.
    let prefetch = shared.config.relay_in_flight.clamp(16, u16::MAX as usize) as u32;
    let batch = RELAY_ACK_BATCH.min(prefetch / 2);
    let mut pending: Option<(lapin::Acker, u32)> = None;
    loop {
        let delivery = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            d = consumer.next() => d,
            _ = tokio::time::sleep(Duration::from_millis(20)), if pending.is_some() => {
                if let Some((acker, _)) = pending.take() {
                    let _ = acker.ack(BasicAckOptions { multiple: true }).await;
                }
                continue;
            }
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                tracing::warn!("relay queue: {e}");
                break;
            }
            None => break,
        };
        let (env, acker) = decode_delivery(delivery);
        let item = match env {
            Ok(Envelope {
                from,
                user,
                session,
                signal:
                    Signal::Data {
                        seq,
                        reliability,
                        message,
                    },
            }) => Some((
                from,
                user,
                session,
                InboundItem::Data {
                    seq,
                    message,
                    path: Path::Relayed,
                },
                reliability,
            )),
            Ok(Envelope {
                from,
                user,
                session,
                signal: Signal::Bye { last },
            }) => Some((
                from,
                user,
                session,
                InboundItem::Bye { last },
                Reliability::Reliable,
            )),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("ignoring a relayed message: {e}");
                None
            }
        };
        if let Some((from, user, session, item, reliability)) = item {
            if let Some(s) = shared.session_for_signal(&from, &user, &session, reliability) {
                tokio::select! {
                    _ = shared.shutdown.cancelled() => break,
                    _ = s.inbound_tx.send(item) => {}
                }
            }
        }
        let n = pending.as_ref().map_or(0, |(_, n)| *n) + 1;
        if n >= batch {
            let _ = acker.ack(BasicAckOptions { multiple: true }).await;
            pending = None;
        } else {
            pending = Some((acker, n));
        }
    }
    if let Some((acker, _)) = pending.take() {
        let _ = acker.ack(BasicAckOptions { multiple: true }).await;
    }
}
