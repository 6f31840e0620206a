//! Warren's broker library: an AMQP 0-9-1 server.
//!
//! - [`protocol`]: frames in and out of byte buffers (amq-protocol underneath); no I/O.
//! - `server`: the listener and one task per connection. `transport` (what a connection runs
//!   over: TCP, or any byte stream), `handshake` (one function per step), `connection`
//!   (transport, dispatch, connection-level methods, the read/write loop), `channel` (the
//!   state a channel owns and the routing of its frames), `assembly` (the publish state
//!   machine), then one file per AMQP class: `basic`, `queue`, `exchange`, `confirm`, `tx`.
//! - [`registry`]: what exists in a running broker, for it and its observers: virtual hosts,
//!   live connections and channels with their counters, broker-wide totals.
//! - [`vhost`]: one virtual host's exchanges, queues and bindings; routing. Durable changes
//!   are written under its lock and waited for (group commit) outside it.
//! - [`exchange`]: one file per exchange type behind one `Router` trait; bindings hold queue
//!   handles.
//! - [`queue`]: each queue owned by one task (`actor`); `kind` (the one place queues are
//!   made), `counters` (what a queue publishes for observers), `QueueHost` (all a queue may
//!   ask of its vhost), arguments, dead-lettering.
//! - [`store`]: where a queue's messages live, behind `QueueStore`, in layers that import
//!   only downwards: `kv` (the key-value engine behind two small traits; the only importer
//!   of sled), `segments` (append-only files of message chunks), `disk` (the open store:
//!   definitions keyed by vhost, delivered marks, the group-commit flusher), the journal
//!   (`record`: byte formats; `queue_log`: one queue's chunks, acks and recovery), then the
//!   queue stores: `memory`, `durable` (with `ready`, the packed in-memory index) and
//!   `priority`, composed with an optional journal. Failures are `kv::StoreError`s;
//!   `CommitBarrier` is what a write passes before it counts as stored.
//! - [`management`]: the management HTTP API (RabbitMQ's routes and JSON, on 15672) and
//!   Prometheus metrics (RabbitMQ's names, on 15692); it reads the registry and counters and
//!   acts through the vhost's public operations, never inside a queue.
//! - [`auth`], [`config`], [`error`]: logins, settings, reply codes.
//!
//! Embed a broker:
//! ```no_run
//! # async fn demo() -> Result<(), warren_broker::StartError> {
//! let broker = warren_broker::Broker::start(warren_broker::Config::ephemeral()).await?;
//! println!("connect to {}", broker.url());
//! broker.shutdown().await;
//! # Ok(()) }
//! ```

pub mod access;
pub mod alarms;
pub mod auth;
pub mod config;
pub mod dedup;
pub mod delayed;
pub mod error;
pub mod exchange;
pub mod management;
pub mod message;
pub mod policy;
pub mod protocol;
pub mod queue;
pub mod registry;
mod server;
pub mod store;
pub mod stream;
pub mod tls;
pub(crate) mod util;
pub mod vhost;

pub use config::Config;
pub use error::{AmqpError, ReplyCode};
pub use server::{run, Broker, HttpRoutes, Prepared, StartError};
