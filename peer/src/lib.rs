//! Peer-to-peer delivery for Warren over WebRTC data channels, with the broker doing the
//! signalling and standing in when the direct path cannot be had.
//!
//! - [`message`]: what is sent ([`Message`]), how it came ([`Path`]), how it is carried
//!   ([`Reliability`]).
//! - [`frame`]: the data-channel codec: envelope, chunks, acks; pure, no I/O.
//! - [`signal`]: offers, answers, candidates and relayed messages as AMQP messages on the
//!   `warren.signal` exchange; the peer's broker connection.
//! - `direct`: one WebRTC connection per link (webrtc 0.21), its data channel and events.
//! - `link`: the writer (sequence numbers, unacknowledged window, fallback) and the reorderer
//!   (one ordered stream from both paths) of each link.
//! - `peer`: [`Peer`] and [`Link`], the API.
//! - [`ws`]: WebSocket signalling and relay for browser peers, and the JavaScript peer.
//! - [`cli`] (feature `cli`): `warren peer listen` and `warren peer send`.
//!
//! ```no_run
//! # async fn demo() -> warren_peer::Result<()> {
//! use warren_peer::{Message, Peer, PeerConfig};
//! let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
//! let mut b = Peer::start(PeerConfig::new(url, "B")).await?;
//! let a = Peer::start(PeerConfig::new(url, "A")).await?;
//! let link = a.connect("B").await?; // direct if the data channel opens in time
//! link.send(Message::new("metrics.cpu", "42").with_header("host", "a1")).await?;
//! let m = b.recv().await.unwrap();
//! println!("{} via {}: {:?}", m.from, m.path, m.message.body);
//! # Ok(()) }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
mod direct;
pub mod error;
pub mod frame;
mod link;
pub mod message;
mod peer;
pub mod signal;
pub mod ws;

pub use config::{IcePolicy, IceServer, PeerConfig};
pub use error::{PeerError, Result};
pub use message::{Incoming, Message, Path, Reliability};
pub use peer::{Link, LinkStats, Peer};
