//! Settings of one peer: where the broker is, what the peer is called, and how the direct path
//! is tried. The defaults work on one machine with no STUN or TURN server.

use std::net::SocketAddr;
use std::time::Duration;

/// A STUN or TURN server for ICE on real networks (not needed on a LAN or on loopback).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp` URLs.
    pub urls: Vec<String>,
    /// TURN user name; empty for STUN.
    pub username: String,
    /// TURN credential; empty for STUN.
    pub credential: String,
}

/// Which local candidates ICE may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IcePolicy {
    /// Host, server-reflexive and relay candidates: the normal choice.
    #[default]
    All,
    /// Only TURN relay candidates (hides local addresses; needs a TURN server, and without
    /// one the direct path never comes up and every message is relayed by the broker).
    RelayOnly,
}

/// Settings of one [`Peer`](crate::Peer).
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The broker's AMQP URL, credentials included: the broker authenticates the peer.
    pub url: String,
    /// This peer's name, unique on the broker while it is connected.
    pub name: String,
    /// STUN/TURN servers; empty on a LAN or loopback.
    pub ice_servers: Vec<IceServer>,
    /// Which candidates ICE may use.
    pub ice_policy: IcePolicy,
    /// Local UDP addresses for the direct path. A concrete address binds exactly that
    /// interface; `0.0.0.0:0` means every non-loopback interface. Default `127.0.0.1:0`:
    /// one machine, nothing reachable from outside.
    pub udp_bind: Vec<SocketAddr>,
    /// Gather and resolve `.local` mDNS candidates (binds UDP 5353); off by default.
    pub mdns: bool,
    /// Accept direct connections offered by other peers. With `false` every offer is
    /// refused and the sender relays through the broker at once.
    pub accept_direct: bool,
    /// Try the direct path when connecting. With `false` links go through the broker.
    pub offer_direct: bool,
    /// How long `connect` waits for the data channel to open before relaying instead.
    pub connect_timeout: Duration,
    /// A link this peer opened that fell back to the relay tries the direct path again after
    /// this long, then after twice as long each time a try fails, up to `retry_max`; it
    /// returns to the direct path when a try opens. `None`: stay on the relay.
    pub retry_min: Option<Duration>,
    /// The longest wait between two tries.
    pub retry_max: Duration,
    /// Largest data-channel message, in bytes (SDP `max-message-size`); larger messages are
    /// chunked. 64 KiB by default, the WebRTC default.
    pub max_frame: usize,
    /// Bytes a link may have sent directly that the remote has not yet acknowledged end to
    /// end; they are kept to be republished through the broker if the direct path drops, and
    /// `send` waits beyond this (back-pressure).
    pub window: usize,
    /// Bytes the data channel's SCTP layer may hold unacknowledged; writing blocks beyond it.
    /// Without a bound a fast sender overflows the loopback UDP receive buffer (208 KiB by
    /// default on Linux), the kernel drops datagrams, and SCTP stalls until a retransmission
    /// timeout. 64 KiB keeps one full-size frame in flight with no drops on loopback; raise it
    /// (and `net.core.rmem_*`) for long, fast paths.
    pub send_buffer: usize,
    /// SCTP receive window advertised to the remote (its `a_rwnd`), in bytes; at least two
    /// frames. 1 MiB, the WebRTC default.
    pub receive_window: u32,
    /// Messages that may be in flight to the broker, unconfirmed, per link on the relay path.
    pub relay_in_flight: usize,
    /// Largest message accepted from a remote peer, in bytes.
    pub max_message: usize,
    /// Received messages buffered for [`Peer::recv`](crate::Peer::recv) before the transport
    /// stops reading.
    pub incoming_buffer: usize,
}

impl PeerConfig {
    /// Defaults for a peer called `name` on the broker at `url`.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        PeerConfig {
            url: url.into(),
            name: name.into(),
            ice_servers: Vec::new(),
            ice_policy: IcePolicy::All,
            udp_bind: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            mdns: false,
            accept_direct: true,
            offer_direct: true,
            connect_timeout: Duration::from_secs(5),
            retry_min: Some(Duration::from_secs(1)),
            retry_max: Duration::from_secs(30),
            max_frame: 64 * 1024,
            window: 1024 * 1024,
            send_buffer: 64 * 1024,
            receive_window: 1024 * 1024,
            relay_in_flight: 1024,
            max_message: 256 * 1024 * 1024,
            incoming_buffer: 1024,
        }
    }
}

/// Checks a peer name: it becomes part of queue names and routing keys.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert!(super::valid_name("B"));
        assert!(super::valid_name("sensor-1.north_2"));
        assert!(!super::valid_name(""));
        assert!(!super::valid_name("a/b"));
        assert!(!super::valid_name("a b"));
        assert!(!super::valid_name(&"x".repeat(101)));
    }
}
