//! One link between this peer and a remote one, and the two tasks that own its state.
//!
//! - The **writer** owns the outbound stream: sequence numbers, the window of messages sent
//!   directly but not yet acknowledged end to end, and the broker confirms of relayed ones.
//!   When the direct path goes away it republishes every unacknowledged message to the
//!   remote's relay queue, in order, before anything new: this is why no accepted message is
//!   lost.
//! - The **reorderer** owns the inbound stream: messages from both paths are merged by
//!   sequence number, duplicates (a message both sent directly and republished) dropped, and
//!   delivered in order to [`Peer::recv`](crate::Peer::recv); it acknowledges what it
//!   delivered.
//!
//! The path moves forward (connecting, direct, relay, closed), with one way back: a link that
//! fell back to the relay keeps trying the direct path in the background (its offerer sends
//! a new offer, with backoff) and returns to it when a new data channel opens. Each try is
//! an *attempt*, numbered; events of an older attempt's connection are ignored. Nothing is
//! lost, repeated or reordered across either switch: every message has a sequence number,
//! the reorderer merges both paths in order and drops duplicates, and what was sent directly
//! but not acknowledged goes again through the broker when the direct path goes.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit};

use crate::error::{PeerError, Result};
use crate::frame::{self, Frame};
use crate::message::{Incoming, Message, Path, Reliability};
use crate::peer::Shared;
use crate::signal::{check_confirm, Signal};

/// Where a link's messages go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PathState {
    /// Offer sent, data channel not open yet; sends wait.
    Connecting,
    /// Over the data channel.
    Direct,
    /// Through the broker.
    Relay,
    /// Closed by either side.
    Closed,
}

/// An inbound message or end-of-stream, from either path, for the reorderer.
pub(crate) enum InboundItem {
    /// A message and how it came.
    Data {
        /// Position in the remote's stream.
        seq: u64,
        /// The message.
        message: Message,
        /// Which path.
        path: Path,
    },
    /// The remote sent `0..last` and closed.
    Bye {
        /// Messages sent in all.
        last: u64,
    },
}

/// Requests to the writer.
pub(crate) enum WriterCmd {
    /// Send one message; the reply, if asked for, says which path took it.
    Send {
        /// The message.
        message: Message,
        /// Answered once the message is handed to a path; `None` for `Link::post`.
        reply: Option<oneshot::Sender<Result<Path>>>,
    },
    /// Answered once every earlier message is acknowledged (direct) or confirmed (relay).
    Flush(oneshot::Sender<Result<()>>),
    /// Flush, say bye on the current path, tear down.
    Close(oneshot::Sender<Result<()>>),
}

/// The state of one link that several tasks share; the streams themselves are owned by the
/// writer and reorderer tasks.
pub(crate) struct Session {
    /// Random id, the `correlation_id` of every signal of this link.
    pub id: String,
    /// The remote peer's name.
    pub remote: String,
    /// The broker user the remote authenticated as (its signals' `user_id`), once known;
    /// later signals of this link from another user are ignored.
    pub remote_user: Mutex<Option<String>>,
    /// Chosen by the side that connected.
    pub reliability: Reliability,
    /// Current path; only moves forward.
    pub path: watch::Sender<PathState>,
    /// The WebRTC connection while the direct path exists or is being tried.
    pc: Mutex<Option<Arc<dyn PeerConnection>>>,
    /// The data channel once created (offerer) or announced (answerer).
    dc: Mutex<Option<Arc<dyn DataChannel>>>,
    /// Candidates that came before the remote description; `None` once it is set.
    early_candidates: Mutex<Option<Vec<RTCIceCandidateInit>>>,
    /// Largest data-channel message: the smaller of ours and the remote's SDP.
    pub max_frame: AtomicUsize,
    /// Commands to the writer.
    pub cmd_tx: mpsc::Sender<WriterCmd>,
    /// Messages from both paths to the reorderer.
    pub inbound_tx: mpsc::Sender<InboundItem>,
    /// The remote's cumulative ack of our direct messages.
    pub remote_ack: watch::Sender<u64>,
    /// Our cumulative ack of the remote's messages, sent by the writer.
    pub local_ack: watch::Sender<u64>,
    /// Messages handed to the data channel.
    pub sent_direct: AtomicU64,
    /// Messages published to the broker (republished ones included).
    pub sent_relayed: AtomicU64,
    /// The current direct attempt (0: none yet); see [`Session::next_attempt`].
    attempt: AtomicU64,
    /// The remote refused direct connections: the link stays on the relay.
    no_direct: std::sync::atomic::AtomicBool,
    /// Times the link went back from the relay to the direct path.
    pub returns: AtomicU64,
}

impl Session {
    /// Creates the shared state and the receivers its two tasks own.
    pub(crate) fn new(
        id: String,
        remote: String,
        reliability: Reliability,
        max_frame: usize,
    ) -> (
        Arc<Session>,
        mpsc::Receiver<WriterCmd>,
        mpsc::Receiver<InboundItem>,
    ) {
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (inbound_tx, inbound_rx) = mpsc::channel(256);
        let s = Arc::new(Session {
            id,
            remote,
            remote_user: Mutex::new(None),
            reliability,
            path: watch::Sender::new(PathState::Connecting),
            pc: Mutex::new(None),
            dc: Mutex::new(None),
            early_candidates: Mutex::new(Some(Vec::new())),
            max_frame: AtomicUsize::new(max_frame),
            cmd_tx,
            inbound_tx,
            remote_ack: watch::Sender::new(0),
            local_ack: watch::Sender::new(0),
            sent_direct: AtomicU64::new(0),
            sent_relayed: AtomicU64::new(0),
            attempt: AtomicU64::new(0),
            no_direct: std::sync::atomic::AtomicBool::new(false),
            returns: AtomicU64::new(0),
        });
        (s, cmd_rx, inbound_rx)
    }

    /// Whether a signal from `user` may belong to this link: the first one decides.
    pub fn accepts_user(&self, user: &Option<String>) -> bool {
        let mut known = self.remote_user.lock().unwrap();
        match (&*known, user) {
            (None, Some(u)) => {
                *known = Some(u.clone());
                true
            }
            (None, None) => true,
            (Some(k), u) => u.as_ref() == Some(k),
        }
    }

    /// The current path.
    pub fn state(&self) -> PathState {
        *self.path.borrow()
    }

    /// Moves the path forward to `to`; false if it was already there or beyond. Leaving the
    /// direct path closes the WebRTC connection.
    pub fn advance(&self, to: PathState) -> bool {
        let moved = self.path.send_if_modified(|p| {
            if to > *p {
                *p = to;
                true
            } else {
                false
            }
        });
        if moved && to >= PathState::Relay {
            self.drop_direct();
        }
        moved
    }

    /// The direct path failed or closed: relay from now on (until a later attempt opens).
    pub fn direct_lost(&self, why: &str) {
        if self.advance(PathState::Relay) {
            tracing::info!(remote = %self.remote, session = %self.id, "direct path lost ({why}); relaying through the broker");
        }
    }

    /// [`direct_lost`](Self::direct_lost), from attempt `attempt`'s connection: ignored if a
    /// newer attempt took its place.
    pub fn direct_lost_in(&self, attempt: u64, why: &str) {
        if attempt == self.attempt() {
            self.direct_lost(why);
        }
    }

    /// The current direct attempt.
    pub fn attempt(&self) -> u64 {
        self.attempt.load(Ordering::Acquire)
    }

    /// Starts a new direct attempt: the events of older ones are ignored from now on.
    pub fn next_attempt(&self) -> u64 {
        self.attempt.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The remote refused direct connections (do not try again).
    pub fn refuse_direct(&self) {
        self.no_direct.store(true, Ordering::Release);
    }

    /// Whether the remote refused direct connections.
    pub fn direct_refused(&self) -> bool {
        self.no_direct.load(Ordering::Acquire)
    }

    /// Attempt `attempt`'s data channel is open: go direct, first or again (from the relay),
    /// unless the link closed or a newer attempt replaced it.
    pub fn direct_open_in(&self, attempt: u64) {
        if attempt != self.attempt() {
            return;
        }
        let back = self.path.send_if_modified(|p| match *p {
            PathState::Connecting => {
                *p = PathState::Direct;
                true
            }
            PathState::Relay => {
                *p = PathState::Direct;
                true
            }
            _ => false,
        });
        if back {
            if self.returns_from_relay() {
                tracing::info!(remote = %self.remote, session = %self.id, attempt, "direct path back");
            } else {
                tracing::debug!(remote = %self.remote, session = %self.id, "direct path open");
            }
        }
    }

    fn returns_from_relay(&self) -> bool {
        // Attempt 1 is the link's first; later ones come back from the relay.
        if self.attempt() > 1 {
            self.returns.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Attempt `attempt` did not open: close its connection (the link stays on the relay).
    pub fn abandon_attempt(&self, attempt: u64) {
        if attempt == self.attempt() && self.state() == PathState::Relay {
            self.drop_direct();
        }
    }

    /// Keeps the connection of the current attempt (closing the one it replaces); closes it
    /// at once if the link is closed (the lock orders this against `drop_direct`).
    pub fn set_pc(&self, pc: Arc<dyn PeerConnection>) {
        let mut slot = self.pc.lock().unwrap();
        let old = if self.state() == PathState::Closed {
            Some(pc)
        } else {
            slot.replace(pc)
        };
        drop(slot);
        if let Some(old) = old {
            tokio::spawn(async move {
                let _ = old.close().await;
            });
        }
    }

    pub fn pc(&self) -> Option<Arc<dyn PeerConnection>> {
        self.pc.lock().unwrap().clone()
    }

    pub fn set_dc(&self, dc: Arc<dyn DataChannel>) {
        *self.dc.lock().unwrap() = Some(dc);
    }

    pub fn dc(&self) -> Option<Arc<dyn DataChannel>> {
        self.dc.lock().unwrap().clone()
    }

    /// Holds a candidate until the remote description is set; returns it back if it can be
    /// applied now.
    pub fn hold_candidate(&self, c: RTCIceCandidateInit) -> Option<RTCIceCandidateInit> {
        match self.early_candidates.lock().unwrap().as_mut() {
            Some(held) => {
                held.push(c);
                None
            }
            None => Some(c),
        }
    }

    /// Marks the remote description set; returns the candidates held until now.
    pub fn remote_description_set(&self) -> Vec<RTCIceCandidateInit> {
        self.early_candidates
            .lock()
            .unwrap()
            .take()
            .unwrap_or_default()
    }

    /// Closes the WebRTC connection in the background (closing waits for its driver).
    fn drop_direct(&self) {
        let pc = self.pc.lock().unwrap().take();
        self.dc.lock().unwrap().take();
        // A next attempt's candidates wait for its remote description.
        *self.early_candidates.lock().unwrap() = Some(Vec::new());
        if let Some(pc) = pc {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = pc.close().await;
                });
            }
        }
    }
}

/// Why the writer can no longer deliver.
#[derive(Clone)]
enum Sticky {
    /// The remote peer's queue is gone.
    Gone,
    /// The broker connection failed.
    Broker(String),
}

type ConfirmFuture = Pin<Box<dyn Future<Output = lapin::Result<lapin::Confirmation>> + Send>>;

/// The writer task's state.
pub(crate) struct Writer {
    /// The link.
    s: Arc<Session>,
    /// The peer's connection to the broker and settings.
    shared: Arc<Shared>,
    /// Next sequence number to assign.
    next_seq: u64,
    /// Messages sent directly and not yet acknowledged, oldest first (reliable links only).
    unacked: VecDeque<(u64, Message)>,
    /// Approximate bytes in `unacked`, checked against the window.
    unacked_bytes: usize,
    /// Relayed messages whose broker confirm has not come back, oldest first.
    confirms: FuturesOrdered<ConfirmFuture>,
    /// Flushes waiting for `unacked` and `confirms` to drain.
    flushers: Vec<oneshot::Sender<Result<()>>>,
    /// Set once a close was asked for; answered after the bye.
    closing: Option<oneshot::Sender<Result<()>>>,
    /// The data channel while sending directly.
    dc: Option<Arc<dyn DataChannel>>,
    /// Set when delivery became impossible; every later request fails with it.
    sticky: Option<Sticky>,
}

fn approx_size(m: &Message) -> usize {
    64 + m.routing_key.len()
        + m.body.len()
        + m.headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>()
}

impl Writer {
    pub(crate) fn new(s: Arc<Session>, shared: Arc<Shared>) -> Self {
        Writer {
            s,
            shared,
            next_seq: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            confirms: FuturesOrdered::new(),
            flushers: Vec::new(),
            closing: None,
            dc: None,
            sticky: None,
        }
    }

    fn error(&self) -> PeerError {
        match &self.sticky {
            Some(Sticky::Gone) => PeerError::PeerGone(self.s.remote.clone()),
            Some(Sticky::Broker(e)) => PeerError::Protocol(format!("broker: {e}")),
            None => PeerError::Closed,
        }
    }

    fn settled(&self) -> bool {
        self.sticky.is_some() || (self.unacked.is_empty() && self.confirms.is_empty())
    }

    /// Runs until the link closes.
    pub(crate) async fn run(mut self, mut cmd_rx: mpsc::Receiver<WriterCmd>) {
        let mut path_rx = self.s.path.subscribe();
        let mut remote_ack_rx = self.s.remote_ack.subscribe();
        let mut local_ack_rx = self.s.local_ack.subscribe();
        let shutdown = self.shared.shutdown.clone();
        let window = self.shared.config.window;
        let relay_in_flight = self.shared.config.relay_in_flight;
        loop {
            let path = *path_rx.borrow_and_update();
            match path {
                PathState::Direct if self.dc.is_none() => match self.s.dc() {
                    Some(dc) => self.dc = Some(dc),
                    None => self.s.direct_lost("no data channel"),
                },
                PathState::Relay | PathState::Closed if self.dc.is_some() => {
                    self.fall_back().await;
                }
                _ => {}
            }
            if path == PathState::Closed {
                break;
            }
            if self.settled() {
                let failed = self.sticky.is_some();
                for f in std::mem::take(&mut self.flushers) {
                    let _ = f.send(if failed { Err(self.error()) } else { Ok(()) });
                }
                if let Some(reply) = self.closing.take() {
                    let r = self.say_bye(&mut path_rx).await;
                    self.shared.remove_session(&self.s.id);
                    let _ = reply.send(r);
                    break;
                }
            }
            let direct = self.dc.is_some();
            let capacity = self.closing.is_none()
                && match path {
                    PathState::Direct => {
                        self.s.reliability == Reliability::Live || self.unacked_bytes < window
                    }
                    PathState::Relay => self.confirms.len() < relay_in_flight,
                    PathState::Connecting | PathState::Closed => false,
                };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = path_rx.changed() => if r.is_err() { break },
                _ = remote_ack_rx.changed() => {
                    let next = *remote_ack_rx.borrow_and_update();
                    self.release(next);
                }
                _ = local_ack_rx.changed(), if direct => {
                    let next = *local_ack_rx.borrow_and_update();
                    let ack = Frame::Ack { next }.encode_control();
                    if !self.send_direct(vec![ack], &mut path_rx).await {
                        self.s.direct_lost("ack not sent");
                    }
                }
                Some(c) = self.confirms.next(), if !self.confirms.is_empty() => {
                    if let Err(e) = check_confirm(&self.s.remote, c) {
                        self.set_sticky(e);
                    }
                }
                cmd = cmd_rx.recv(), if capacity => match cmd {
                    None => break,
                    Some(WriterCmd::Send { message, reply }) => {
                        // Take whatever else is already queued, up to one full data-channel
                        // message, so that small messages share SCTP messages and datagrams.
                        let mut batch = vec![(message, reply)];
                        let mut next_cmd = None;
                        if self.dc.is_some() {
                            let budget = self.s.max_frame.load(Ordering::Relaxed);
                            let mut size = approx_size(&batch[0].0);
                            while size < budget && self.unacked_bytes + size < window {
                                match cmd_rx.try_recv() {
                                    Ok(WriterCmd::Send { message, reply }) => {
                                        size += approx_size(&message);
                                        batch.push((message, reply));
                                    }
                                    Ok(other) => {
                                        next_cmd = Some(other);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                        }
                        self.send_batch(batch, &mut path_rx).await;
                        match next_cmd {
                            Some(WriterCmd::Flush(reply)) => self.flushers.push(reply),
                            Some(WriterCmd::Close(reply)) => self.closing = Some(reply),
                            Some(WriterCmd::Send { .. }) | None => {}
                        }
                    }
                    Some(WriterCmd::Flush(reply)) => self.flushers.push(reply),
                    Some(WriterCmd::Close(reply)) => self.closing = Some(reply),
                },
            }
        }
        // Whatever is still queued fails with the reason the writer stopped.
        cmd_rx.close();
        let err = self.error();
        for f in self.flushers.drain(..) {
            let _ = f.send(Err(clone_err(&err)));
        }
        if let Some(c) = self.closing.take() {
            let _ = c.send(Ok(()));
        }
    }

    fn set_sticky(&mut self, e: PeerError) {
        tracing::warn!(remote = %self.s.remote, "link can no longer deliver: {e}");
        self.sticky = Some(match e {
            PeerError::NoSuchPeer(_) | PeerError::PeerGone(_) => Sticky::Gone,
            other => Sticky::Broker(other.to_string()),
        });
    }

    /// Drops messages the remote acknowledged.
    fn release(&mut self, next: u64) {
        while let Some((seq, m)) = self.unacked.front() {
            if *seq >= next {
                break;
            }
            self.unacked_bytes -= approx_size(m);
            self.unacked.pop_front();
        }
    }

    /// Sends messages in order and answers each with the path it took.
    async fn send_batch(
        &mut self,
        batch: Vec<(Message, Option<oneshot::Sender<Result<Path>>>)>,
        path_rx: &mut watch::Receiver<PathState>,
    ) {
        if self.sticky.is_some() {
            for (_, reply) in batch {
                answer(reply, Err(self.error()));
            }
            return;
        }
        let first = self.next_seq;
        self.next_seq += batch.len() as u64;
        if self.dc.is_some() {
            let max_frame = self.s.max_frame.load(Ordering::Relaxed);
            let reliable = self.s.reliability == Reliability::Reliable;
            let mut packer = frame::Batcher::new(max_frame);
            for (i, (message, _)) in batch.iter().enumerate() {
                let seq = first + i as u64;
                for f in frame::encode_message(seq, message, max_frame) {
                    packer.push(f);
                }
                if reliable {
                    self.unacked_bytes += approx_size(message);
                    self.unacked.push_back((seq, message.clone()));
                }
            }
            if self.send_direct(packer.finish(), path_rx).await {
                self.s
                    .sent_direct
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for (_, reply) in batch {
                    answer(reply, Ok(Path::Direct));
                }
                return;
            }
            self.s.direct_lost("send failed");
            // Republishes `unacked`, this batch included when the link is reliable.
            self.fall_back().await;
            if reliable {
                for (_, reply) in batch {
                    let r = match &self.sticky {
                        None => Ok(Path::Relayed),
                        Some(_) => Err(self.error()),
                    };
                    answer(reply, r);
                }
                return;
            }
        }
        for (i, (message, reply)) in batch.into_iter().enumerate() {
            let r = self.relay(first + i as u64, message).await;
            answer(reply, r.map(|()| Path::Relayed));
        }
    }

    /// Hands frames to the data channel; false if the direct path went away meanwhile.
    async fn send_direct(
        &mut self,
        frames: Vec<BytesMut>,
        path_rx: &mut watch::Receiver<PathState>,
    ) -> bool {
        let Some(dc) = self.dc.clone() else {
            return false;
        };
        for f in frames {
            tokio::select! {
                r = dc.send(f) => if r.is_err() { return false },
                _ = path_rx.wait_for(|p| *p != PathState::Direct) => return false,
            }
        }
        true
    }

    /// Publishes one message to the remote's relay queue; its confirm is awaited later.
    async fn relay(&mut self, seq: u64, message: Message) -> Result<()> {
        if self.sticky.is_some() {
            return Err(self.error());
        }
        let signal = Signal::Data {
            seq,
            reliability: self.s.reliability,
            message,
        };
        match self
            .shared
            .signaller
            .publish(&self.s.remote, &self.s.id, signal)
            .await
        {
            Ok(confirm) => {
                self.confirms.push_back(Box::pin(confirm));
                self.s.sent_relayed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let err = clone_err(&e);
                self.set_sticky(e);
                Err(err)
            }
        }
    }

    /// Leaves the direct path: every message not acknowledged goes to the relay, in order.
    async fn fall_back(&mut self) {
        self.dc = None;
        self.s.direct_lost("falling back");
        let pending = std::mem::take(&mut self.unacked);
        self.unacked_bytes = 0;
        if !pending.is_empty() {
            tracing::info!(remote = %self.s.remote, count = pending.len(), "republishing unacknowledged messages through the broker");
        }
        for (seq, m) in pending {
            if self.relay(seq, m).await.is_err() {
                break;
            }
        }
    }

    /// Tells the remote the stream ended, on the path that carried it.
    async fn say_bye(&mut self, path_rx: &mut watch::Receiver<PathState>) -> Result<()> {
        if self.sticky.is_some() {
            return Err(self.error());
        }
        let last = self.next_seq;
        if let Some(dc) = self.dc.clone() {
            if self
                .send_direct(vec![Frame::Bye { last }.encode_control()], path_rx)
                .await
            {
                // Let SCTP deliver the bye before the connection is torn down.
                let drained = async {
                    while dc.outstanding_bytes().await.unwrap_or(0) > 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(2), drained).await;
                return Ok(());
            }
            self.fall_back().await;
            while let Some(c) = self.confirms.next().await {
                check_confirm(&self.s.remote, c)?;
            }
        }
        self.shared
            .signaller
            .publish_confirmed(&self.s.remote, &self.s.id, Signal::Bye { last })
            .await
    }
}

/// Answers a `send`; a `post` has nobody waiting (its errors surface in `flush`).
fn answer(reply: Option<oneshot::Sender<Result<Path>>>, r: Result<Path>) {
    if let Some(reply) = reply {
        let _ = reply.send(r);
    }
}

/// `PeerError` holds foreign errors that are not `Clone`; keep the message.
fn clone_err(e: &PeerError) -> PeerError {
    match e {
        PeerError::NoSuchPeer(n) => PeerError::NoSuchPeer(n.clone()),
        PeerError::PeerGone(n) => PeerError::PeerGone(n.clone()),
        PeerError::Closed => PeerError::Closed,
        other => PeerError::Protocol(other.to_string()),
    }
}

/// Acknowledge after this many delivered messages even when more are waiting.
const ACK_EVERY: u64 = 32;

/// Runs the reorderer of one link until the remote says bye or the link closes.
pub(crate) async fn run_reorderer(
    s: Arc<Session>,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<InboundItem>,
) {
    let mut next = 0u64;
    let mut held: BTreeMap<u64, (Message, Path)> = BTreeMap::new();
    let mut bye: Option<u64> = None;
    let mut unacked = 0u64;
    let mut path_rx = s.path.subscribe();
    let shutdown = shared.shutdown.clone();
    loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = path_rx.wait_for(|p| *p == PathState::Closed) => break,
            item = rx.recv() => item,
        };
        let mut deliver = Vec::new();
        match item {
            None => break,
            Some(InboundItem::Data { seq, message, path }) => match s.reliability {
                Reliability::Reliable => {
                    if seq >= next && !held.contains_key(&seq) {
                        held.insert(seq, (message, path));
                        while let Some(entry) = held.first_entry() {
                            if *entry.key() != next {
                                break;
                            }
                            let (m, p) = entry.remove();
                            deliver.push((next, m, p));
                            next += 1;
                        }
                    }
                }
                Reliability::Live => {
                    next = next.max(seq + 1);
                    deliver.push((seq, message, path));
                }
            },
            Some(InboundItem::Bye { last }) => bye = Some(last),
        }
        for (seq, message, path) in deliver {
            let incoming = Incoming {
                from: s.remote.clone(),
                user: s.remote_user.lock().unwrap().clone(),
                path,
                seq,
                message,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = shared.incoming_tx.send(incoming) => if r.is_err() { return },
            }
            unacked += 1;
        }
        if unacked > 0
            && s.reliability == Reliability::Reliable
            && (rx.is_empty() || unacked >= ACK_EVERY)
        {
            s.local_ack.send_replace(next);
            unacked = 0;
        }
        if let Some(last) = bye {
            if s.reliability == Reliability::Live || next >= last {
                tracing::debug!(remote = %s.remote, session = %s.id, "remote closed the link");
                shared.remove_session(&s.id);
                break;
            }
        }
    }
}
