//! The direct path: one WebRTC peer connection per link, its data channel, and the two tasks
//! that listen to them. Nothing here decides about fallback; it reports to the [`Session`].
//!
//! webrtc 0.21 runs each connection on a background driver and calls the event handler on
//! that driver, so the handler only forwards events to a channel; the data channel is read by
//! polling it (`DataChannel::poll`), which is also what gives receive back-pressure: while the
//! reader waits for the application, the driver stops draining SCTP and the window closes.

use std::sync::Arc;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize;
use tokio::sync::mpsc;
use webrtc::data_channel::{
    DataChannel, DataChannelEvent, RTCDataChannelInit, RTCDataChannelState,
};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, SettingEngineBuilder,
};

use crate::config::{IcePolicy, PeerConfig};
use crate::error::Result;
use crate::frame::{Frame, Reassembler, MIN_FRAME};
use crate::link::{InboundItem, PathState, Session};
use crate::message::{Path, Reliability};
use crate::peer::Shared;
use crate::signal::Signal;

/// The largest frame webrtc 0.21 accepts as SDP `max-message-size`.
pub const MAX_FRAME: usize = SctpMaxMessageSize::MAX_MESSAGE_SIZE as usize;

/// The frame limit a config asks for, within what the stack supports.
pub fn frame_limit(config: &PeerConfig) -> usize {
    config.max_frame.clamp(MIN_FRAME, MAX_FRAME)
}

/// What the connection's driver reports, forwarded to the link's control task.
pub(crate) enum PcEvent {
    /// A local ICE candidate to trickle to the remote.
    Candidate(RTCIceCandidateInit),
    /// The connection's overall state changed.
    State(RTCPeerConnectionState),
    /// The remote opened a data channel (answerer side).
    DataChannel(Arc<dyn DataChannel>),
}

/// Forwards driver callbacks without blocking the driver.
struct Handler {
    /// To the link's control task.
    tx: mpsc::UnboundedSender<PcEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.tx.send(PcEvent::Candidate(init));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(PcEvent::State(state));
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        let _ = self.tx.send(PcEvent::DataChannel(data_channel));
    }
}

/// Builds a peer connection as the config says: UDP on the configured addresses, mDNS off
/// unless asked for, the frame limit advertised in SDP, the SCTP send buffer bounded.
pub(crate) async fn build_pc(
    config: &PeerConfig,
) -> Result<(Arc<dyn PeerConnection>, mpsc::UnboundedReceiver<PcEvent>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mdns = if config.mdns {
        MulticastDnsMode::QueryOnly
    } else {
        MulticastDnsMode::Disabled
    };
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(mdns)
        .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(frame_limit(config) as u32))
        .with_sctp_max_receive_buffer_size(
            config.receive_window.max(2 * frame_limit(config) as u32),
        )
        .build();
    let ice_servers = config
        .ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect();
    let policy = match config.ice_policy {
        IcePolicy::All => RTCIceTransportPolicy::All,
        IcePolicy::RelayOnly => RTCIceTransportPolicy::Relay,
    };
    let rtc_config = RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers)
        .with_ice_transport_policy(policy)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(rtc_config)
        .with_setting_engine(settings)
        .with_handler(Arc::new(Handler { tx }))
        .with_udp_addrs(config.udp_bind.clone())
        .with_data_channel_send_buffer_limit(config.send_buffer)
        .build()
        .await?;
    Ok((Arc::new(pc), rx))
}

/// Data-channel options for a link's reliability.
pub(crate) fn channel_init(reliability: Reliability) -> RTCDataChannelInit {
    match reliability {
        Reliability::Reliable => RTCDataChannelInit::default(),
        Reliability::Live => RTCDataChannelInit {
            ordered: false,
            max_retransmits: Some(0),
            ..Default::default()
        },
    }
}

/// The remote's SDP `max-message-size` (RFC 8841): 64 KiB when absent, 0 meaning no limit.
pub(crate) fn remote_max_message_size(sdp: &str) -> usize {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=max-message-size:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map(|v| if v == 0 { MAX_FRAME } else { v })
        .unwrap_or(64 * 1024)
        .clamp(MIN_FRAME, MAX_FRAME)
}

/// Starts reading a data channel for a link.
pub(crate) fn attach(s: &Arc<Session>, shared: &Arc<Shared>, dc: Arc<dyn DataChannel>) {
    let attempt = s.attempt();
    s.set_dc(dc.clone());
    tokio::spawn(run_reader(s.clone(), shared.clone(), dc, attempt));
}

/// Reads the data channel until it closes: chunks to messages for the reorderer, acks to the
/// writer. A closed channel means the direct path is gone.
async fn run_reader(s: Arc<Session>, shared: Arc<Shared>, dc: Arc<dyn DataChannel>, attempt: u64) {
    if matches!(dc.ready_state().await, Ok(RTCDataChannelState::Open)) {
        s.direct_open_in(attempt);
    }
    let partials = match s.reliability {
        Reliability::Reliable => 2,
        Reliability::Live => 64,
    };
    let mut reassembler = Reassembler::new(partials, shared.config.max_message);
    let mut path_rx = s.path.subscribe();
    let shutdown = shared.shutdown.clone();
    loop {
        // Until the link closes, this channel closes, or a newer attempt replaces it (the
        // connection of a failed attempt is closed, which ends the channel too).
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = path_rx.wait_for(|p| *p == PathState::Closed) => return,
            e = dc.poll() => e,
        };
        if attempt != s.attempt() {
            return;
        }
        match event {
            None | Some(DataChannelEvent::OnClose) => break,
            Some(DataChannelEvent::OnOpen) => s.direct_open_in(attempt),
            Some(DataChannelEvent::OnMessage(m)) => {
                let frames = match Frame::decode_all(m.data.freeze()) {
                    Ok(frames) => frames,
                    Err(e) => {
                        tracing::warn!(remote = %s.remote, "bad frame on the data channel: {e}");
                        break;
                    }
                };
                for frame in frames {
                    match on_frame(&s, &mut reassembler, frame).await {
                        Flow::Continue => {}
                        Flow::Lost => {
                            s.direct_lost_in(attempt, "protocol error on the data channel");
                            return;
                        }
                        Flow::Stop => return,
                    }
                }
            }
            Some(_) => {}
        }
    }
    s.direct_lost_in(attempt, "data channel closed");
}

/// What the reader does after a frame.
enum Flow {
    /// Read on.
    Continue,
    /// The direct path is unusable.
    Lost,
    /// The link is gone.
    Stop,
}

/// One frame from the data channel: chunks become messages for the reorderer, acks go to
/// the writer.
async fn on_frame(s: &Session, reassembler: &mut Reassembler, frame: Frame) -> Flow {
    match frame {
        Frame::Chunk {
            seq,
            index,
            count,
            payload,
        } => match reassembler.push(seq, index, count, payload) {
            Ok(Some(message)) => {
                let item = InboundItem::Data {
                    seq,
                    message,
                    path: Path::Direct,
                };
                if s.inbound_tx.send(item).await.is_err() {
                    return Flow::Stop;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(remote = %s.remote, "bad message on the data channel: {e}");
                if s.reliability == Reliability::Reliable {
                    return Flow::Lost;
                }
            }
        },
        Frame::Ack { next } => {
            s.remote_ack.send_if_modified(|v| {
                let newer = next > *v;
                if newer {
                    *v = next;
                }
                newer
            });
        }
        Frame::Bye { last } => {
            if s.inbound_tx.send(InboundItem::Bye { last }).await.is_err() {
                return Flow::Stop;
            }
        }
    }
    Flow::Continue
}

/// Handles the connection's events for a link until it leaves the direct path: trickles local
/// candidates to the remote, notices failure, and picks up the remote's data channel.
pub(crate) async fn run_control(
    s: Arc<Session>,
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<PcEvent>,
    attempt: u64,
) {
    let mut path_rx = s.path.subscribe();
    let shutdown = shared.shutdown.clone();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = path_rx.wait_for(|p| *p == PathState::Closed) => return,
            e = events.recv() => e,
        };
        if attempt != s.attempt() {
            return;
        }
        match event {
            None => return,
            Some(PcEvent::Candidate(c)) => {
                let signal = Signal::Candidate(c);
                if let Err(e) = shared.signaller.publish(&s.remote, &s.id, signal).await {
                    tracing::debug!("candidate not sent: {e}");
                }
            }
            Some(PcEvent::State(state)) => match state {
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    s.direct_lost_in(attempt, "connection failed")
                }
                RTCPeerConnectionState::Disconnected if s.state() == PathState::Direct => {
                    s.direct_lost_in(attempt, "connection lost")
                }
                _ => {}
            },
            Some(PcEvent::DataChannel(dc)) => attach(&s, &shared, dc),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_message_size_from_sdp() {
        assert_eq!(remote_max_message_size("v=0\r\n"), 64 * 1024);
        assert_eq!(
            remote_max_message_size("v=0\r\na=max-message-size:1024\r\n"),
            1024
        );
        assert_eq!(
            remote_max_message_size("a=max-message-size:0\r\n"),
            MAX_FRAME
        );
    }
}
