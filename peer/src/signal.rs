//! Signalling and relay through the broker.
//!
//! Every peer holds one authenticated AMQP connection and two exclusive queues bound to the
//! direct exchange `warren.signal`:
//!
//! | queue                        | routing key     | carries                                  |
//! |------------------------------|-----------------|------------------------------------------|
//! | `warren.peer.<name>.signal`  | `signal/<name>` | offer, answer, candidate, reject, abandon |
//! | `warren.peer.<name>.relay`   | `relay/<name>`  | relayed messages and the relay-path bye   |
//!
//! A signal is one AMQP message: `type` names the signal, `reply_to` is the sender's peer name,
//! `correlation_id` is the link's session id, the body holds SDP or the relayed body, and
//! `x-warren-*` headers carry the rest. The queues are exclusive, so holding a name is holding
//! the queue: a second peer of the same name is refused by the broker. Control signals never
//! wait behind relayed data, because they have a queue of their own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind, PublisherConfirm,
};
use webrtc::peer_connection::RTCIceCandidateInit;

use crate::config::PeerConfig;
use crate::error::{PeerError, Result};
use crate::message::{Message, Reliability, RESERVED_HEADER_PREFIX};

/// The exchange all peers signal and relay through.
pub const EXCHANGE: &str = "warren.signal";

/// Routing key of `name`'s signal queue.
pub fn signal_key(name: &str) -> String {
    format!("signal/{name}")
}

/// Routing key of `name`'s relay queue.
pub fn relay_key(name: &str) -> String {
    format!("relay/{name}")
}

/// Name of `name`'s signal queue.
pub fn signal_queue(name: &str) -> String {
    format!("warren.peer.{name}.signal")
}

/// Name of `name`'s relay queue.
pub fn relay_queue(name: &str) -> String {
    format!("warren.peer.{name}.relay")
}

const H_SEQ: &str = "x-warren-seq";
const H_ROUTING_KEY: &str = "x-warren-routing-key";
const H_LIVE: &str = "x-warren-live";
const H_LAST: &str = "x-warren-last";
const H_DIRECT: &str = "x-warren-direct";
const H_CANDIDATE: &str = "x-warren-candidate";
const H_SDP_MID: &str = "x-warren-sdp-mid";
const H_SDP_MLINE: &str = "x-warren-sdp-mline-index";
const H_UFRAG: &str = "x-warren-ufrag";

/// One thing one peer tells another through the broker.
#[derive(Clone, Debug, PartialEq)]
pub enum Signal {
    /// Open a link. `sdp` is the WebRTC offer, or `None` for a relay-only link.
    Offer {
        /// The offer's SDP, if a direct path is wanted.
        sdp: Option<String>,
        /// How the link carries messages.
        reliability: Reliability,
    },
    /// The answer to an offer.
    Answer {
        /// The answer's SDP.
        sdp: String,
    },
    /// A trickled ICE candidate.
    Candidate(RTCIceCandidateInit),
    /// The receiver will not take a direct connection; relay instead.
    Reject {
        /// Why, for the logs.
        reason: String,
    },
    /// The offerer gave up on the direct path (timeout or failure); both sides relay.
    Abandon,
    /// A relayed message.
    Data {
        /// Its position in the sender's stream.
        seq: u64,
        /// How the link carries messages (lets a receiver that lost the offer set up).
        reliability: Reliability,
        /// The message.
        message: Message,
    },
    /// The sender closed the link after sending messages `0..last`.
    Bye {
        /// How many messages the sender sent in all.
        last: u64,
    },
}

impl Signal {
    /// Whether this signal goes to the relay queue (ordered with relayed data).
    pub fn is_relay(&self) -> bool {
        matches!(self, Signal::Data { .. } | Signal::Bye { .. })
    }

    fn kind(&self) -> &'static str {
        match self {
            Signal::Offer { .. } => "offer",
            Signal::Answer { .. } => "answer",
            Signal::Candidate(_) => "candidate",
            Signal::Reject { .. } => "reject",
            Signal::Abandon => "abandon",
            Signal::Data { .. } => "data",
            Signal::Bye { .. } => "bye",
        }
    }
}

/// A signal with its addressing.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// The sending peer's name.
    pub from: String,
    /// The AMQP `user_id`: the user the sender authenticated as. A broker that checks
    /// `user_id` (Warren and RabbitMQ do) refuses any other value, so this is the broker's word.
    pub user: Option<String>,
    /// The link's session id.
    pub session: String,
    /// What is said.
    pub signal: Signal,
}

fn put(h: &mut FieldTable, k: &str, v: AMQPValue) {
    h.insert(ShortString::from(k), v);
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

impl Envelope {
    /// Lays the envelope out as AMQP properties and a body.
    pub fn encode(&self) -> (BasicProperties, Bytes) {
        let mut h = FieldTable::default();
        let body = match &self.signal {
            Signal::Offer { sdp, reliability } => {
                put(&mut h, H_DIRECT, AMQPValue::Boolean(sdp.is_some()));
                put(
                    &mut h,
                    H_LIVE,
                    AMQPValue::Boolean(*reliability == Reliability::Live),
                );
                Bytes::from(sdp.clone().unwrap_or_default())
            }
            Signal::Answer { sdp } => Bytes::from(sdp.clone()),
            Signal::Candidate(c) => {
                put(&mut h, H_CANDIDATE, long_string(&c.candidate));
                if let Some(mid) = &c.sdp_mid {
                    put(&mut h, H_SDP_MID, long_string(mid));
                }
                if let Some(i) = c.sdp_mline_index {
                    put(&mut h, H_SDP_MLINE, AMQPValue::LongInt(i as i32));
                }
                if let Some(u) = &c.username_fragment {
                    put(&mut h, H_UFRAG, long_string(u));
                }
                Bytes::new()
            }
            Signal::Reject { reason } => Bytes::from(reason.clone()),
            Signal::Abandon => Bytes::new(),
            Signal::Data {
                seq,
                reliability,
                message,
            } => {
                for (k, v) in &message.headers {
                    put(&mut h, k, long_string(v));
                }
                put(&mut h, H_SEQ, AMQPValue::LongLongInt(*seq as i64));
                put(&mut h, H_ROUTING_KEY, long_string(&message.routing_key));
                if *reliability == Reliability::Live {
                    put(&mut h, H_LIVE, AMQPValue::Boolean(true));
                }
                message.body.clone()
            }
            Signal::Bye { last } => {
                put(&mut h, H_LAST, AMQPValue::LongLongInt(*last as i64));
                Bytes::new()
            }
        };
        let mut props = BasicProperties::default();
        if let Some(user) = &self.user {
            props = props.with_user_id(ShortString::from(user.as_str()));
        }
        let props = props
            .with_type(ShortString::from(self.signal.kind()))
            .with_reply_to(ShortString::from(self.from.as_str()))
            .with_correlation_id(ShortString::from(self.session.as_str()))
            .with_app_id(ShortString::from("warren-peer"))
            .with_headers(h);
        (props, body)
    }

    /// Reads an envelope back from a delivery.
    pub fn decode(props: &BasicProperties, body: Vec<u8>) -> Result<Envelope> {
        let bad = |what: &str| PeerError::Protocol(format!("signal without {what}"));
        let kind = props.kind().as_ref().ok_or_else(|| bad("type"))?.as_str();
        let from = props
            .reply_to()
            .as_ref()
            .ok_or_else(|| bad("reply_to"))?
            .to_string();
        let session = props
            .correlation_id()
            .as_ref()
            .ok_or_else(|| bad("correlation_id"))?
            .to_string();
        let empty = FieldTable::default();
        let h = props.headers().as_ref().unwrap_or(&empty);
        let text = |body: Vec<u8>| {
            String::from_utf8(body).map_err(|_| PeerError::Protocol("SDP is not UTF-8".into()))
        };
        let signal = match kind {
            "offer" => Signal::Offer {
                sdp: if get_bool(h, H_DIRECT).unwrap_or(true) {
                    Some(text(body)?)
                } else {
                    None
                },
                reliability: reliability(h),
            },
            "answer" => Signal::Answer { sdp: text(body)? },
            "candidate" => Signal::Candidate(RTCIceCandidateInit {
                candidate: get_string(h, H_CANDIDATE).ok_or_else(|| bad(H_CANDIDATE))?,
                sdp_mid: get_string(h, H_SDP_MID),
                sdp_mline_index: get_int(h, H_SDP_MLINE).and_then(|i| u16::try_from(i).ok()),
                username_fragment: get_string(h, H_UFRAG),
                ..Default::default()
            }),
            "reject" => Signal::Reject {
                reason: String::from_utf8_lossy(&body).into_owned(),
            },
            "abandon" => Signal::Abandon,
            "data" => {
                let seq = get_int(h, H_SEQ).ok_or_else(|| bad(H_SEQ))?;
                let routing_key = get_string(h, H_ROUTING_KEY).unwrap_or_default();
                let mut headers = BTreeMap::new();
                for (k, v) in h {
                    if k.as_str().starts_with(RESERVED_HEADER_PREFIX) {
                        continue;
                    }
                    if let Some(v) = value_string(v) {
                        headers.insert(k.to_string(), v);
                    }
                }
                Signal::Data {
                    seq: seq as u64,
                    reliability: reliability(h),
                    message: Message {
                        routing_key,
                        headers,
                        body: Bytes::from(body),
                    },
                }
            }
            "bye" => Signal::Bye {
                last: get_int(h, H_LAST).ok_or_else(|| bad(H_LAST))? as u64,
            },
            other => return Err(PeerError::Protocol(format!("unknown signal {other:?}"))),
        };
        Ok(Envelope {
            from,
            user: props.user_id().as_ref().map(|u| u.to_string()),
            session,
            signal,
        })
    }
}

fn reliability(h: &FieldTable) -> Reliability {
    if get_bool(h, H_LIVE).unwrap_or(false) {
        Reliability::Live
    } else {
        Reliability::Reliable
    }
}

fn value_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn get_string(h: &FieldTable, k: &str) -> Option<String> {
    h.inner().get(k).and_then(value_string)
}

fn get_bool(h: &FieldTable, k: &str) -> Option<bool> {
    match h.inner().get(k)? {
        AMQPValue::Boolean(b) => Some(*b),
        _ => None,
    }
}

fn get_int(h: &FieldTable, k: &str) -> Option<i64> {
    match h.inner().get(k)? {
        AMQPValue::LongLongInt(i) => Some(*i),
        AMQPValue::LongInt(i) => Some(*i as i64),
        AMQPValue::LongUInt(i) => Some(*i as i64),
        AMQPValue::ShortInt(i) => Some(*i as i64),
        AMQPValue::ShortUInt(i) => Some(*i as i64),
        AMQPValue::ShortShortInt(i) => Some(*i as i64),
        AMQPValue::ShortShortUInt(i) => Some(*i as i64),
        AMQPValue::Timestamp(i) => Some(*i as i64),
        _ => None,
    }
}

/// The broker side of one peer: its connection, its queues and a confirmed publish channel.
pub struct Signaller {
    /// The authenticated broker connection; closing it releases the peer's name.
    conn: Connection,
    /// Channel in confirm mode for every publish, so a returned (unroutable) signal is seen.
    publish: Channel,
    /// This peer's name, stamped into `reply_to`.
    name: String,
    /// The user this connection authenticated as, stamped into `user_id` (empty: not set).
    user: String,
    /// Set by the first `close`: two concurrent AMQP closes on one connection can hang.
    closed: AtomicBool,
}

/// Queue-to-peer deliveries, one consumer per queue.
pub struct Inbox {
    /// Offers, answers, candidates, rejects.
    pub signals: Consumer,
    /// Relayed messages and byes.
    pub relay: Consumer,
}

fn is_resource_locked(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(err) if err.get_id() == 405)
}

impl Signaller {
    /// Connects, claims the peer's name (its two exclusive queues) and starts consuming.
    pub async fn open(config: &PeerConfig, relay_prefetch: u16) -> Result<(Signaller, Inbox)> {
        let name = config.name.clone();
        let user = config
            .url
            .parse::<lapin::uri::AMQPUri>()
            .map(|u| u.authority.userinfo.username)
            .unwrap_or_default();
        let conn = Connection::connect(&config.url, ConnectionProperties::default()).await?;
        let setup = conn.create_channel().await?;
        setup
            .exchange_declare(
                EXCHANGE.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
        for (queue, key) in [
            (signal_queue(&name), signal_key(&name)),
            (relay_queue(&name), relay_key(&name)),
        ] {
            let opts = QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            };
            if let Err(e) = setup
                .queue_declare(queue.as_str().into(), opts, FieldTable::default())
                .await
            {
                let _ = conn.close(200, "name taken".into()).await;
                return Err(if is_resource_locked(&e) {
                    PeerError::NameTaken(name)
                } else {
                    e.into()
                });
            }
            setup
                .queue_bind(
                    queue.as_str().into(),
                    EXCHANGE.into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let _ = setup.close(200, "set up".into()).await;

        let consume = |queue: String, prefetch: u16| {
            let conn = &conn;
            async move {
                let ch = conn.create_channel().await?;
                ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
                let c = ch
                    .basic_consume(
                        queue.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                Ok::<_, PeerError>(c)
            }
        };
        let signals = consume(signal_queue(&name), 64).await?;
        let relay = consume(relay_queue(&name), relay_prefetch).await?;

        let publish = conn.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok((
            Signaller {
                conn,
                publish,
                name,
                user,
                closed: AtomicBool::new(false),
            },
            Inbox { signals, relay },
        ))
    }

    /// This peer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes a signal to peer `to` (mandatory, so an absent peer is noticed) and returns
    /// the pending confirm. Awaiting this future only hands the message to the connection.
    pub async fn publish(
        &self,
        to: &str,
        session: &str,
        signal: Signal,
    ) -> Result<PublisherConfirm> {
        let key = if signal.is_relay() {
            relay_key(to)
        } else {
            signal_key(to)
        };
        let env = Envelope {
            from: self.name.clone(),
            user: (!self.user.is_empty()).then(|| self.user.clone()),
            session: session.to_string(),
            signal,
        };
        let (props, body) = env.encode();
        let confirm = self
            .publish
            .basic_publish(
                EXCHANGE.into(),
                key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                props,
            )
            .await?;
        Ok(confirm)
    }

    /// Publishes and waits for the broker's confirm.
    pub async fn publish_confirmed(&self, to: &str, session: &str, signal: Signal) -> Result<()> {
        let confirm = self.publish(to, session, signal).await?;
        check_confirm(to, confirm.await)
    }

    /// Closes the broker connection, once; the broker deletes the peer's queues.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let close = self.conn.close(200, "peer closed".into());
        let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
    }

    /// Whether the broker connection is still up.
    pub fn connected(&self) -> bool {
        self.conn.status().connected()
    }
}

/// Maps a publish confirm to a result: a returned message means the peer is not there.
pub fn check_confirm(to: &str, c: lapin::Result<Confirmation>) -> Result<()> {
    match c? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
            Err(PeerError::NoSuchPeer(to.to_string()))
        }
        Confirmation::Nack(None) => Err(PeerError::Protocol(format!(
            "the broker refused a message to {to:?}"
        ))),
    }
}

/// Reads a delivery's envelope.
pub fn decode_delivery(d: Delivery) -> (Result<Envelope>, lapin::Acker) {
    let Delivery {
        properties,
        data,
        acker,
        ..
    } = d;
    (Envelope::decode(&properties, data), acker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(signal: Signal) -> Signal {
        let env = Envelope {
            from: "A".into(),
            user: Some("alice".into()),
            session: "s1".into(),
            signal,
        };
        let (props, body) = env.encode();
        let back = Envelope::decode(&props, body.to_vec()).unwrap();
        assert_eq!((back.from.as_str(), back.session.as_str()), ("A", "s1"));
        assert_eq!(back.user.as_deref(), Some("alice"));
        back.signal
    }

    #[test]
    fn every_signal_round_trips_through_amqp_properties() {
        let cases = vec![
            Signal::Offer {
                sdp: Some("v=0\r\n".into()),
                reliability: Reliability::Live,
            },
            Signal::Offer {
                sdp: None,
                reliability: Reliability::Reliable,
            },
            Signal::Answer { sdp: "v=0".into() },
            Signal::Candidate(RTCIceCandidateInit {
                candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: None,
                ..Default::default()
            }),
            Signal::Reject {
                reason: "no direct".into(),
            },
            Signal::Abandon,
            Signal::Data {
                seq: 42,
                reliability: Reliability::Reliable,
                message: Message::new("rk", &b"body"[..]).with_header("h", "v"),
            },
            Signal::Bye { last: 7 },
        ];
        for c in cases {
            assert_eq!(round_trip(c.clone()), c);
        }
    }

    #[test]
    fn relayed_data_uses_plain_amqp_metadata() {
        let env = Envelope {
            from: "A".into(),
            user: None,
            session: "s1".into(),
            signal: Signal::Data {
                seq: 1,
                reliability: Reliability::Reliable,
                message: Message::new("orders.eu", &b"x"[..]).with_header("tenant", "t1"),
            },
        };
        let (props, body) = env.encode();
        assert_eq!(&body[..], b"x");
        assert_eq!(props.kind().as_ref().unwrap().as_str(), "data");
        let h = props.headers().as_ref().unwrap();
        assert_eq!(get_string(h, "tenant").as_deref(), Some("t1"));
        assert_eq!(get_string(h, H_ROUTING_KEY).as_deref(), Some("orders.eu"));
    }

    #[test]
    fn missing_addressing_is_a_protocol_error() {
        let props = BasicProperties::default().with_type("data".into());
        assert!(matches!(
            Envelope::decode(&props, vec![]),
            Err(PeerError::Protocol(_))
        ));
    }
}
