//! What travels between peers: a [`Message`] with AMQP-like metadata, how it got there
//! ([`Path`]), and how the sender wants it carried ([`Reliability`]).

use std::collections::BTreeMap;

use bytes::Bytes;

/// One application message: a routing key, string headers and a body of any size.
///
/// Keys follow AMQP's short-string limit (255 bytes) so that a message can always be relayed
/// through the broker unchanged. Header names starting with `x-warren-` are reserved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Free-form routing key, as in AMQP; at most 255 bytes.
    pub routing_key: String,
    /// Application headers; names at most 255 bytes, values any length.
    pub headers: BTreeMap<String, String>,
    /// The payload; shared, never copied per hop inside this crate.
    pub body: Bytes,
}

impl Message {
    /// A message with a routing key and a body, and no headers.
    pub fn new(routing_key: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Message {
            routing_key: routing_key.into(),
            headers: BTreeMap::new(),
            body: body.into(),
        }
    }

    /// Adds (or replaces) one header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Checks the limits that both paths impose, so a message is refused before it is
    /// accepted rather than after.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.routing_key.len() > 255 {
            return Err(format!(
                "routing key is {} bytes; the limit is 255",
                self.routing_key.len()
            ));
        }
        if self.headers.len() > u16::MAX as usize {
            return Err(format!(
                "{} headers; the limit is 65535",
                self.headers.len()
            ));
        }
        for name in self.headers.keys() {
            if name.len() > 255 || name.is_empty() {
                return Err(format!("header name {name:?} must be 1 to 255 bytes"));
            }
            if name.starts_with(RESERVED_HEADER_PREFIX) {
                return Err(format!(
                    "header name {name:?} uses the reserved prefix {RESERVED_HEADER_PREFIX}"
                ));
            }
        }
        Ok(())
    }
}

/// Header names with this prefix carry Warren's own metadata on the relay path.
pub(crate) const RESERVED_HEADER_PREFIX: &str = "x-warren-";

/// Which way a message travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// Peer to peer, over the WebRTC data channel.
    Direct,
    /// Through the broker, published to the receiving peer's relay queue.
    Relayed,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Path::Direct => "direct",
            Path::Relayed => "relayed",
        })
    }
}

/// How a link carries messages; chosen by the side that connects, for both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reliability {
    /// Ordered and reliable, end to end, across a fallback to the relay: the default.
    #[default]
    Reliable,
    /// Unordered, no retransmits on the direct path: for live data where a late message is
    /// worthless. Messages may be lost or reordered; there is no end-to-end acknowledgement.
    Live,
}

/// A message as the receiving peer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The sending peer's name.
    pub from: String,
    /// The broker user the sender authenticated as, from the `user_id` the broker checked on
    /// its signals; `None` if they carried none.
    pub user: Option<String>,
    /// Which way this message came.
    pub path: Path,
    /// Position in the sender's stream on this link, from 0.
    pub seq: u64,
    /// The message itself.
    pub message: Message,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_reserved_and_oversized_names() {
        assert!(Message::new("rk", "b").validate().is_ok());
        assert!(Message::new("r".repeat(256), "b").validate().is_err());
        assert!(Message::new("rk", "b")
            .with_header("x-warren-seq", "1")
            .validate()
            .is_err());
        assert!(Message::new("rk", "b")
            .with_header("k".repeat(256), "v")
            .validate()
            .is_err());
        assert!(Message::new("rk", "b")
            .with_header("k", "v".repeat(100_000))
            .validate()
            .is_ok());
    }
}
