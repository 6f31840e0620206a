//! Warren's broker library: an AMQP 0-9-1 server.
//!
//! - [`protocol`]: frames in and out of byte buffers (amq-protocol underneath); no I/O.
//! - `server`: the listener, one task per connection, channels, one handler file per AMQP class.
//! - [`registry`]: what exists in a running broker, for it and its observers: virtual hosts,
//!   live connections and channels with their counters, broker-wide totals.
//! - [`vhost`]: one virtual host's exchanges, queues and bindings; routing.
//! - [`exchange`]: one file per exchange type behind one `Router` trait.
//! - [`queue`]: each queue owned by one task; consumers, prefetch, acks.
//! - [`store`]: where a queue's messages live (memory now; the interface a disk store fills).
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

pub mod auth;
pub mod config;
pub mod error;
pub mod exchange;
pub mod message;
pub mod protocol;
pub mod queue;
pub mod registry;
mod server;
pub mod store;
mod util;
pub mod vhost;

pub use config::Config;
pub use error::{AmqpError, ReplyCode};
pub use server::{run, Broker, Prepared, StartError};
