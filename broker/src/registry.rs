//! What exists in a running broker, for the broker itself and for whoever observes it (the
//! management API, metrics, `warren list`): its virtual hosts, its live connections with their
//! channels, and broker-wide totals.
//!
//! Observers read; they never reach into a connection or a queue. Each connection publishes a
//! [`ConnectionInfo`] here when it opens and takes it out when it ends; it updates the
//! counters in it (and in each [`ChannelInfo`]) once per read batch, not per message, so the
//! hot path pays a few relaxed atomic adds per batch. Queues publish theirs in
//! [`QueueCounters`](crate::queue::counters::QueueCounters), reached through the vhost.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use amq_protocol::types::FieldTable;
use tokio_util::sync::CancellationToken;

use crate::vhost::Vhost;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The registry of one broker.
#[derive(Default)]
pub struct Registry {
    vhosts: RwLock<BTreeMap<Arc<str>, Arc<Vhost>>>,
    connections: Mutex<BTreeMap<u64, Arc<ConnectionInfo>>>,
    /// What channels that closed had counted (live ones count in their own [`ChannelInfo`]).
    closed: ChannelCounters,
    /// Connections and channels opened and closed since the broker started.
    pub churn: Churn,
    /// Broker-wide counts the vhosts and queues keep (queues declared, dead letters).
    pub counters: Arc<BrokerCounters>,
}

/// Counts since start that outlive the queues they are about (RabbitMQ's global counters).
#[derive(Debug, Default)]
pub struct BrokerCounters {
    /// queue.declare that succeeded (not passive), new queue or not.
    pub queues_declared: AtomicU64,
    /// Queues created.
    pub queues_created: AtomicU64,
    /// Queues deleted (by a client, auto-delete, expiry or their connection closing).
    pub queues_deleted: AtomicU64,
    /// Messages dead-lettered, by [`Reason::index`](crate::queue::dead_letter::Reason::index)
    /// and then by whether the queue had a dead-letter exchange (1) or dropped them (0): RabbitMQ's
    /// `dead_letter_strategy` "at_most_once" and "disabled".
    pub dead_lettered: [[AtomicU64; 2]; 4],
    /// Messages dropped as duplicates by a deduplicating exchange or queue.
    pub messages_deduplicated: AtomicU64,
}

impl BrokerCounters {
    /// Counts one dead-lettered message.
    pub fn dead_lettered(&self, reason: crate::queue::dead_letter::Reason, to_exchange: bool) {
        self.dead_lettered[reason.index()][usize::from(to_exchange)]
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Connections and channels opened and closed since start (RabbitMQ's `churn_rates`).
#[derive(Debug, Default)]
pub struct Churn {
    pub connection_created: AtomicU64,
    pub connection_closed: AtomicU64,
    pub channel_created: AtomicU64,
    pub channel_closed: AtomicU64,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Registry::default())
    }

    /// Adds a virtual host (replacing one of the same name).
    pub fn add_vhost(&self, vhost: Arc<Vhost>) {
        vhost.count_into(self.counters.clone());
        self.vhosts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(vhost.name.clone(), vhost);
    }

    /// Removes a virtual host from the registry (new connections to it are refused).
    pub fn remove_vhost(&self, name: &str) -> Option<Arc<Vhost>> {
        self.vhosts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    /// The virtual host of that name.
    pub fn vhost(&self, name: &str) -> Option<Arc<Vhost>> {
        self.vhosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every virtual host, by name.
    pub fn vhosts(&self) -> Vec<Arc<Vhost>> {
        self.vhosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Registers an open connection; it stays listed until the returned guard is dropped.
    pub(crate) fn open_connection(self: &Arc<Self>, info: ConnectionInfo) -> ConnectionGuard {
        let info = Arc::new(info);
        lock(&self.connections).insert(info.id, info.clone());
        self.churn
            .connection_created
            .fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            registry: self.clone(),
            info,
        }
    }

    /// Every open connection, by id.
    pub fn connections(&self) -> Vec<Arc<ConnectionInfo>> {
        lock(&self.connections).values().cloned().collect()
    }

    /// One open connection.
    pub fn connection(&self, id: u64) -> Option<Arc<ConnectionInfo>> {
        lock(&self.connections).get(&id).cloned()
    }

    /// Broker-wide message counts since start: what every channel, open or closed, counted.
    pub fn message_totals(&self) -> ChannelCounts {
        let mut total = self.closed.read();
        for c in self.connections() {
            for ch in c.channels() {
                total.add(&ch.counters.read());
            }
        }
        total
    }
}

/// Keeps a connection listed in the registry while it lives.
pub(crate) struct ConnectionGuard {
    registry: Arc<Registry>,
    info: Arc<ConnectionInfo>,
}

impl ConnectionGuard {
    /// The connection's entry.
    pub fn info(&self) -> &Arc<ConnectionInfo> {
        &self.info
    }

    /// Registers a channel just opened.
    pub fn open_channel(&self, number: u16) -> Arc<ChannelInfo> {
        let ch = Arc::new(ChannelInfo {
            number,
            ..ChannelInfo::default()
        });
        lock(&self.info.channels).insert(number, ch.clone());
        self.registry
            .churn
            .channel_created
            .fetch_add(1, Ordering::Relaxed);
        ch
    }

    /// A channel closed: its counts move to the broker's totals.
    pub fn close_channel(&self, number: u16) {
        if let Some(ch) = lock(&self.info.channels).remove(&number) {
            self.registry.closed.add(&ch.counters.read());
            self.registry
                .churn
                .channel_closed
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let channels: Vec<u16> = lock(&self.info.channels).keys().copied().collect();
        for n in channels {
            self.close_channel(n);
        }
        lock(&self.registry.connections).remove(&self.info.id);
        self.registry
            .churn
            .connection_closed
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// An open connection, as observers see it.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// The broker's id for it.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
    /// The user it logged in as.
    pub user: String,
    /// Its virtual host.
    pub vhost: Arc<str>,
    /// When it was opened.
    pub connected_at: SystemTime,
    /// What the client said about itself (connection.start-ok client-properties): product,
    /// version, platform, connection_name.
    pub client: ClientInfo,
    /// Negotiated limits.
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat: u16,
    /// Bytes in and out.
    pub counters: ConnectionCounters,
    channels: Mutex<BTreeMap<u16, Arc<ChannelInfo>>>,
    /// Cancelled when an operator closes the connection ([`ConnectionInfo::force_close`]).
    pub(crate) forced: CancellationToken,
    forced_reason: Mutex<String>,
}

impl ConnectionInfo {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
        user: String,
        vhost: Arc<str>,
        client: ClientInfo,
        frame_max: u32,
        channel_max: u16,
        heartbeat: u16,
    ) -> Self {
        ConnectionInfo {
            id,
            peer,
            local,
            user,
            vhost,
            connected_at: SystemTime::now(),
            client,
            frame_max,
            channel_max,
            heartbeat,
            counters: ConnectionCounters::default(),
            channels: Mutex::new(BTreeMap::new()),
            forced: CancellationToken::new(),
            forced_reason: Mutex::new(String::new()),
        }
    }

    /// Asks the connection to close with 320 CONNECTION_FORCED and `reason` as its text (an
    /// operator's close, as `rabbitmqctl close_connection` and the management API do).
    pub fn force_close(&self, reason: &str) {
        *lock(&self.forced_reason) = reason.to_owned();
        self.forced.cancel();
    }

    /// The reason given to [`force_close`](Self::force_close).
    pub(crate) fn forced_reason(&self) -> String {
        lock(&self.forced_reason).clone()
    }

    /// Its open channels, by number.
    pub fn channels(&self) -> Vec<Arc<ChannelInfo>> {
        lock(&self.channels).values().cloned().collect()
    }
}

/// The client-properties a management UI shows.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub product: Option<String>,
    pub version: Option<String>,
    pub platform: Option<String>,
    /// The name the application gave the connection (`connection_name`).
    pub connection_name: Option<String>,
}

/// Traffic of one connection, in bytes (RabbitMQ's `recv_oct` and `send_oct`).
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    pub recv_oct: AtomicU64,
    pub send_oct: AtomicU64,
}

/// An open channel, as observers see it.
#[derive(Debug, Default)]
pub struct ChannelInfo {
    /// Its number on the connection.
    pub number: u16,
    /// Message counts since it opened.
    pub counters: ChannelCounters,
    /// basic.qos prefetch for new consumers (global=false) and for the channel (global=true).
    pub prefetch_count: AtomicU32,
    pub global_prefetch_count: AtomicU32,
    /// Consumers on it.
    pub consumers: AtomicU32,
    /// The same consumers, described (rewritten when they change, never per message).
    consumer_list: Mutex<Vec<Arc<ConsumerInfo>>>,
    /// Delivered and not yet settled.
    pub unacked: AtomicU32,
    /// Published in confirm mode and not yet confirmed to the client.
    pub unconfirmed: AtomicU32,
    /// Publishes and settlements held by an open transaction.
    pub uncommitted: AtomicU32,
    pub acks_uncommitted: AtomicU32,
    /// In confirm mode.
    pub confirm: AtomicBool,
    /// In a transaction (tx.select).
    pub transactional: AtomicBool,
}

impl ChannelInfo {
    /// Its consumers.
    pub fn consumer_list(&self) -> Vec<Arc<ConsumerInfo>> {
        lock(&self.consumer_list).clone()
    }

    /// Replaces the description of its consumers.
    pub(crate) fn set_consumers(&self, list: Vec<Arc<ConsumerInfo>>) {
        *lock(&self.consumer_list) = list;
    }
}

/// A consumer, as observers see it (RabbitMQ's `/api/consumers` entries).
#[derive(Debug)]
pub struct ConsumerInfo {
    pub tag: Arc<str>,
    /// The queue it consumes from.
    pub queue: Arc<str>,
    /// Whether deliveries must be acked (not `no_ack`).
    pub ack_required: bool,
    pub exclusive: bool,
    /// Its prefetch (basic.qos per consumer at the time it started; 0: none).
    pub prefetch_count: u32,
    /// The arguments of basic.consume.
    pub arguments: FieldTable,
    /// Whether its queue sends it messages (see [`crate::queue::Consumer::active`]).
    pub active: Arc<std::sync::atomic::AtomicBool>,
    /// Waits its turn by design (a single-active-consumer queue or a stream's consumer group)
    /// rather than being every consumer's equal.
    pub single_active: bool,
}

/// Message counts of a channel, with RabbitMQ's names (`message_stats`).
#[derive(Debug, Default)]
pub struct ChannelCounters {
    pub publish: AtomicU64,
    pub confirm: AtomicU64,
    pub return_unroutable: AtomicU64,
    pub drop_unroutable: AtomicU64,
    pub deliver: AtomicU64,
    pub deliver_no_ack: AtomicU64,
    pub get: AtomicU64,
    pub get_no_ack: AtomicU64,
    pub get_empty: AtomicU64,
    pub ack: AtomicU64,
    pub redeliver: AtomicU64,
    /// Publishes routed to at least one queue.
    pub routed: AtomicU64,
    /// Publishes on a channel in confirm mode.
    pub received_confirm: AtomicU64,
}

/// A reading of [`ChannelCounters`], or a sum of several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounts {
    pub publish: u64,
    pub confirm: u64,
    pub return_unroutable: u64,
    pub drop_unroutable: u64,
    pub deliver: u64,
    pub deliver_no_ack: u64,
    pub get: u64,
    pub get_no_ack: u64,
    pub get_empty: u64,
    pub ack: u64,
    pub redeliver: u64,
    pub routed: u64,
    pub received_confirm: u64,
}

impl ChannelCounts {
    /// RabbitMQ's `deliver_get`: every message handed out, by push or by basic.get.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }

    fn fields(&self) -> [u64; 13] {
        [
            self.publish,
            self.confirm,
            self.return_unroutable,
            self.drop_unroutable,
            self.deliver,
            self.deliver_no_ack,
            self.get,
            self.get_no_ack,
            self.get_empty,
            self.ack,
            self.redeliver,
            self.routed,
            self.received_confirm,
        ]
    }

    fn from_fields(f: [u64; 13]) -> Self {
        ChannelCounts {
            publish: f[0],
            confirm: f[1],
            return_unroutable: f[2],
            drop_unroutable: f[3],
            deliver: f[4],
            deliver_no_ack: f[5],
            get: f[6],
            get_no_ack: f[7],
            get_empty: f[8],
            ack: f[9],
            redeliver: f[10],
            routed: f[11],
            received_confirm: f[12],
        }
    }

    /// Adds another reading to this one.
    pub fn add(&mut self, other: &ChannelCounts) {
        let (a, b) = (self.fields(), other.fields());
        *self = ChannelCounts::from_fields(std::array::from_fn(|i| a[i] + b[i]));
    }

    /// Whether nothing was counted.
    pub fn is_zero(&self) -> bool {
        self.fields().iter().all(|&n| n == 0)
    }
}

impl ChannelCounters {
    fn atomics(&self) -> [&AtomicU64; 13] {
        [
            &self.publish,
            &self.confirm,
            &self.return_unroutable,
            &self.drop_unroutable,
            &self.deliver,
            &self.deliver_no_ack,
            &self.get,
            &self.get_no_ack,
            &self.get_empty,
            &self.ack,
            &self.redeliver,
            &self.routed,
            &self.received_confirm,
        ]
    }

    /// Reads the counters.
    pub fn read(&self) -> ChannelCounts {
        ChannelCounts::from_fields(self.atomics().map(|a| a.load(Ordering::Relaxed)))
    }

    /// Adds what a connection counted since it last did (then cleared by the caller).
    pub fn add(&self, delta: &ChannelCounts) {
        for (a, n) in self.atomics().into_iter().zip(delta.fields()) {
            if n > 0 {
                a.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}
