//! WebSocket signalling for peers that cannot speak AMQP: browsers. Served by the broker's
//! HTTP server at `/peer/ws`, with the JavaScript peer at `/peer/warren-peer.js` and a demo
//! at `/peer/demo`.
//!
//! A WebSocket session *is* a peer's broker side: the bridge opens an AMQP connection to the
//! broker as the session's user and claims the peer's name exactly as a native peer does
//! ([`Signaller::open`]: the two exclusive queues on `warren.signal`), so the broker's own
//! checks apply unchanged: the login, and a user claiming only its own names (403 otherwise).
//! Signals and relayed messages then go both ways as JSON; native peers see an ordinary peer.
//!
//! # Protocol
//!
//! JSON text messages. The client speaks first:
//!
//! ```text
//! -> {"op":"hello","name":"alice.tab1","vhost":"/","user":"alice","password":"..."}
//! <- {"op":"welcome","name":"alice.tab1","user":"alice"}
//!    or {"op":"error","code":403,"reason":"..."} and the socket closes
//! -> {"op":"signal","to":"B","session":"s1","signal":{...},"id":7}      (id: optional)
//! <- {"op":"confirm","id":7,"ok":true}        the broker took it (ok:false, reason: no peer)
//! <- {"op":"signal","from":"B","user":"bob","session":"s1","signal":{...}}
//! ```
//!
//! `user` and `password` may instead come as HTTP Basic credentials on the upgrade request.
//! A signal is one of (the native peers' signals, field for field):
//!
//! ```text
//! {"type":"offer","sdp":"..."|null,"live":false}     null sdp: a relay-only link
//! {"type":"answer","sdp":"..."}
//! {"type":"candidate","candidate":"...","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"..."}
//! {"type":"reject","reason":"..."}      {"type":"abandon"}
//! {"type":"data","seq":0,"live":false,"routingKey":"k","headers":{"h":"v"},"body":"<base64>"}
//! {"type":"bye","last":10}
//! ```
//!
//! Relayed deliveries are acknowledged to the broker in batches (every 64, or when the relay
//! queue goes quiet), once written to the socket; the prefetch bounds what is in flight.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use webrtc::peer_connection::RTCIceCandidateInit;

use crate::config::PeerConfig;
use crate::message::{Message, Reliability};
use crate::signal::{decode_delivery, Envelope, Signal, Signaller};

/// The JavaScript peer, served as it is (no build step).
pub const JS: &str = include_str!("../web/warren-peer.js");
/// The demo page.
pub const DEMO: &str = include_str!("../web/demo.html");

/// Relayed messages the bridge takes from the broker before the browser has them.
const RELAY_PREFETCH: u16 = 256;
/// Relay deliveries acknowledged at once.
const ACK_BATCH: u32 = 64;
/// The time a client has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest WebSocket message accepted from a client (a relayed message in base64, and JSON).
const MAX_WS_MESSAGE: usize = 24 << 20;

/// A signal as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WireSignal {
    Offer {
        #[serde(default)]
        sdp: Option<String>,
        #[serde(default)]
        live: bool,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: String,
        #[serde(rename = "sdpMid", default)]
        sdp_mid: Option<String>,
        #[serde(rename = "sdpMLineIndex", default)]
        sdp_mline_index: Option<u16>,
        #[serde(rename = "usernameFragment", default)]
        username_fragment: Option<String>,
    },
    Reject {
        #[serde(default)]
        reason: String,
    },
    Abandon,
    Data {
        seq: u64,
        #[serde(default)]
        live: bool,
        #[serde(rename = "routingKey", default)]
        routing_key: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// The body, base64.
        body: String,
    },
    Bye {
        last: u64,
    },
}

fn reliability(live: bool) -> Reliability {
    if live {
        Reliability::Live
    } else {
        Reliability::Reliable
    }
}

impl WireSignal {
    /// The native signal (a bad base64 body is an error).
    pub fn into_signal(self) -> Result<Signal, String> {
        Ok(match self {
            WireSignal::Offer { sdp, live } => Signal::Offer {
                sdp,
                reliability: reliability(live),
            },
            WireSignal::Answer { sdp } => Signal::Answer { sdp },
            WireSignal::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
                username_fragment,
            } => Signal::Candidate(RTCIceCandidateInit {
                candidate,
                sdp_mid,
                sdp_mline_index,
                username_fragment,
                ..Default::default()
            }),
            WireSignal::Reject { reason } => Signal::Reject { reason },
            WireSignal::Abandon => Signal::Abandon,
            WireSignal::Data {
                seq,
                live,
                routing_key,
                headers,
                body,
            } => {
                let body = base64::engine::general_purpose::STANDARD
                    .decode(body.as_bytes())
                    .map_err(|e| format!("body is not base64: {e}"))?;
                let message = Message {
                    routing_key,
                    headers,
                    body: body.into(),
                };
                message.validate()?;
                Signal::Data {
                    seq,
                    reliability: reliability(live),
                    message,
                }
            }
            WireSignal::Bye { last } => Signal::Bye { last },
        })
    }

    /// The JSON form of a native signal.
    pub fn from_signal(s: Signal) -> WireSignal {
        match s {
            Signal::Offer { sdp, reliability } => WireSignal::Offer {
                sdp,
                live: reliability == Reliability::Live,
            },
            Signal::Answer { sdp } => WireSignal::Answer { sdp },
            Signal::Candidate(c) => WireSignal::Candidate {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_mline_index: c.sdp_mline_index,
                username_fragment: c.username_fragment,
            },
            Signal::Reject { reason } => WireSignal::Reject { reason },
            Signal::Abandon => WireSignal::Abandon,
            Signal::Data {
                seq,
                reliability,
                message,
            } => WireSignal::Data {
                seq,
                live: reliability == Reliability::Live,
                routing_key: message.routing_key,
                headers: message.headers,
                body: base64::engine::general_purpose::STANDARD.encode(&message.body),
            },
            Signal::Bye { last } => WireSignal::Bye { last },
        }
    }
}

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ClientMsg {
    Hello {
        name: String,
        #[serde(default)]
        vhost: Option<String>,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        password: Option<String>,
    },
    Signal {
        to: String,
        session: String,
        signal: WireSignal,
        #[serde(default)]
        id: Option<u64>,
    },
}

/// Where the bridge connects: the broker's AMQP listener.
#[derive(Clone)]
struct Bridge {
    amqp: SocketAddr,
}

/// The routes: `/peer/ws`, `/peer/warren-peer.js`, `/peer/demo`. `amqp` is the broker's
/// AMQP listener (an unspecified address means loopback).
pub fn router(amqp: SocketAddr) -> Router {
    let mut amqp = amqp;
    if amqp.ip().is_unspecified() {
        amqp.set_ip(if amqp.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Router::new()
        .route("/peer/ws", get(upgrade))
        .route(
            "/peer/warren-peer.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    JS,
                )
            }),
        )
        .route("/peer/demo", get(|| async { Html(DEMO) }))
        .with_state(Bridge { amqp })
}

/// HTTP Basic credentials of the upgrade request, if any.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

async fn upgrade(State(b): State<Bridge>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let credentials = basic(&headers);
    ws.max_message_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| async move {
            session(socket, b.amqp, credentials).await;
        })
        .into_response()
}

/// Percent-encodes a URI component (user, password, vhost) for an AMQP URL.
fn component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

async fn send_json(socket: &mut WebSocket, v: serde_json::Value) -> bool {
    socket
        .send(WsMessage::Text(v.to_string().into()))
        .await
        .is_ok()
}

async fn refuse(mut socket: WebSocket, code: u16, reason: String) {
    tracing::info!(code, %reason, "peer WebSocket refused");
    let _ = send_json(
        &mut socket,
        json!({"op": "error", "code": code, "reason": reason}),
    )
    .await;
    let _ = socket.send(WsMessage::Close(None)).await;
}

/// The AMQP reply code in a lapin error, for the client (403 for a name that is not the
/// user's, 530 for a vhost it may not use...).
fn code_of(e: &crate::error::PeerError) -> u16 {
    match e {
        crate::error::PeerError::NameTaken(_) => 405,
        crate::error::PeerError::Amqp(err) => match err.kind() {
            lapin::ErrorKind::ProtocolError(p) => p.get_id(),
            _ => {
                let s = err.to_string();
                if s.contains("ACCESS_REFUSED") || s.contains("auth") {
                    403
                } else {
                    503
                }
            }
        },
        _ => 400,
    }
}

async fn session(mut socket: WebSocket, amqp: SocketAddr, credentials: Option<(String, String)>) {
    // Hello first.
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(WsMessage::Text(t)))) => serde_json::from_str::<ClientMsg>(&t),
        _ => return refuse(socket, 400, "expected a hello message".into()).await,
    };
    let (name, vhost, user, password) = match hello {
        Ok(ClientMsg::Hello {
            name,
            vhost,
            user,
            password,
        }) => {
            let (u, p) = match (user, password, credentials) {
                (Some(u), Some(p), _) => (u, p),
                (_, _, Some((u, p))) => (u, p),
                _ => {
                    return refuse(
                        socket,
                        403,
                        "no credentials: user and password, or Basic".into(),
                    )
                    .await
                }
            };
            (name, vhost.unwrap_or_else(|| "/".into()), u, p)
        }
        _ => return refuse(socket, 400, "expected a hello message".into()).await,
    };
    if !crate::config::valid_name(&name) {
        return refuse(socket, 400, format!("'{name}' is not a valid peer name")).await;
    }
    let url = format!(
        "amqp://{}:{}@{}/{}",
        component(&user),
        component(&password),
        amqp,
        component(&vhost)
    );
    let config = PeerConfig::new(url, name.clone());
    let (signaller, inbox) = match Signaller::open(&config, RELAY_PREFETCH).await {
        Ok(x) => x,
        Err(e) => return refuse(socket, code_of(&e), e.to_string()).await,
    };
    tracing::info!(peer = %name, %user, "browser peer connected over WebSocket");
    if !send_json(
        &mut socket,
        json!({"op": "welcome", "name": name, "user": user}),
    )
    .await
    {
        signaller.close().await;
        return;
    }
    let mut signals = inbox.signals;
    let mut relay = inbox.relay;
    let (confirm_tx, mut confirm_rx) = mpsc::unbounded_channel::<serde_json::Value>();
    // The last relay delivery forwarded and not yet acked, and how many are behind it.
    let mut pending_ack: Option<(lapin::Acker, u32)> = None;
    loop {
        let quiet = tokio::time::sleep(Duration::from_millis(20));
        tokio::select! {
            m = socket.recv() => {
                let text = match m {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Binary(_))) => {
                        let _ = send_json(&mut socket, json!({"op": "error", "code": 400, "reason": "binary messages are not part of the protocol"})).await;
                        continue;
                    }
                    _ => break,
                };
                match serde_json::from_str::<ClientMsg>(&text) {
                    Ok(ClientMsg::Signal { to, session, signal, id }) => {
                        let signal = match signal.into_signal() {
                            Ok(s) => s,
                            Err(reason) => {
                                let _ = send_json(&mut socket, json!({"op": "confirm", "id": id, "ok": false, "reason": reason})).await;
                                continue;
                            }
                        };
                        match signaller.publish(&to, &session, signal).await {
                            Ok(confirm) => {
                                if let Some(id) = id {
                                    let tx = confirm_tx.clone();
                                    tokio::spawn(async move {
                                        let r = crate::signal::check_confirm(&to, confirm.await);
                                        let v = match r {
                                            Ok(()) => json!({"op": "confirm", "id": id, "ok": true}),
                                            Err(e) => json!({"op": "confirm", "id": id, "ok": false, "reason": e.to_string()}),
                                        };
                                        let _ = tx.send(v);
                                    });
                                }
                            }
                            Err(e) => {
                                let _ = send_json(&mut socket, json!({"op": "error", "code": code_of(&e), "reason": e.to_string()})).await;
                                break;
                            }
                        }
                    }
                    Ok(ClientMsg::Hello { .. }) => {
                        let _ = send_json(&mut socket, json!({"op": "error", "code": 400, "reason": "hello twice"})).await;
                    }
                    Err(e) => {
                        let _ = send_json(&mut socket, json!({"op": "error", "code": 400, "reason": format!("bad message: {e}")})).await;
                    }
                }
            }
            d = signals.next() => {
                let Some(Ok(d)) = d else { break };
                let (env, acker) = decode_delivery(d);
                let _ = acker.ack(BasicAckOptions::default()).await;
                if let Ok(env) = env {
                    if !send_json(&mut socket, envelope_json(env)).await {
                        break;
                    }
                }
            }
            d = relay.next() => {
                let Some(Ok(d)) = d else { break };
                let (env, acker) = decode_delivery(d);
                if let Ok(env) = env {
                    if !send_json(&mut socket, envelope_json(env)).await {
                        break;
                    }
                }
                let n = pending_ack.as_ref().map_or(0, |(_, n)| *n) + 1;
                if n >= ACK_BATCH {
                    let _ = acker.ack(BasicAckOptions { multiple: true }).await;
                    pending_ack = None;
                } else {
                    pending_ack = Some((acker, n));
                }
            }
            Some(v) = confirm_rx.recv() => {
                if !send_json(&mut socket, v).await {
                    break;
                }
            }
            _ = quiet, if pending_ack.is_some() => {
                if let Some((acker, _)) = pending_ack.take() {
                    let _ = acker.ack(BasicAckOptions { multiple: true }).await;
                }
            }
        }
    }
    if let Some((acker, _)) = pending_ack.take() {
        let _ = acker.ack(BasicAckOptions { multiple: true }).await;
    }
    signaller.close().await;
    tracing::info!(peer = %name, "browser peer disconnected");
}

fn envelope_json(env: Envelope) -> serde_json::Value {
    json!({
        "op": "signal",
        "from": env.from,
        "user": env.user,
        "session": env.session,
        "signal": WireSignal::from_signal(env.signal),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_round_trips_through_json() {
        let signals = [
            WireSignal::Offer {
                sdp: Some("v=0".into()),
                live: true,
            },
            WireSignal::Offer {
                sdp: None,
                live: false,
            },
            WireSignal::Answer { sdp: "v=0".into() },
            WireSignal::Candidate {
                candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: None,
            },
            WireSignal::Reject {
                reason: "no".into(),
            },
            WireSignal::Abandon,
            WireSignal::Data {
                seq: 7,
                live: false,
                routing_key: "k".into(),
                headers: [("h".to_owned(), "v".to_owned())].into(),
                body: "aGk=".into(),
            },
            WireSignal::Bye { last: 3 },
        ];
        for s in signals {
            let text = serde_json::to_string(&s).unwrap();
            let back: WireSignal = serde_json::from_str(&text).unwrap();
            assert_eq!(back, s);
            let native = back.into_signal().unwrap();
            assert_eq!(WireSignal::from_signal(native), s, "{text}");
        }
        let bad = WireSignal::Data {
            seq: 0,
            live: false,
            routing_key: String::new(),
            headers: BTreeMap::new(),
            body: "%%%".into(),
        };
        assert!(bad.into_signal().is_err());
    }

    #[test]
    fn url_components_are_escaped() {
        assert_eq!(component("/"), "%2F");
        assert_eq!(component("a:b@c"), "a%3Ab%40c");
    }
}
