//! Errors of the peer transport. The AMQP reply code travels inside [`lapin::Error`] when the
//! broker refused something.

/// What can go wrong between two peers.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The broker connection or one of its channels failed.
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    /// The WebRTC stack failed.
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// No peer of that name is listening (the signal was returned unroutable).
    #[error("no peer named {0:?} is connected to the broker")]
    NoSuchPeer(String),
    /// Another connection already holds this peer name.
    #[error("the peer name {0:?} is taken")]
    NameTaken(String),
    /// A peer name outside `[A-Za-z0-9_.-]{1,100}`.
    #[error("invalid peer name {0:?}: use 1 to 100 of A-Z a-z 0-9 _ . -")]
    InvalidName(String),
    /// A message that breaks a limit (routing key, header names).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The remote peer left before every accepted message could be delivered.
    #[error("peer {0:?} is gone")]
    PeerGone(String),
    /// The link or the peer was closed.
    #[error("closed")]
    Closed,
    /// A signal or frame that does not follow the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Results of this crate.
pub type Result<T, E = PeerError> = std::result::Result<T, E>;
