//! `warren peer listen` and `warren peer send`: peer delivery from the command line.
//!
//! The `warren` binary wires this in with two lines: a `Peer(warren_peer::cli::PeerCommand)`
//! subcommand and `warren_peer::cli::run(cmd)` on its client runtime.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use tokio::io::AsyncBufReadExt;

use crate::config::{IceServer, PeerConfig};
use crate::message::{Incoming, Message, Path, Reliability};
use crate::peer::Peer;

/// The URL used when neither --url nor WARREN_URL is given (as for every client command).
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `warren peer ...`
#[derive(clap::Subcommand, Debug)]
pub enum PeerCommand {
    /// Listen as a named peer and print each message received, and whether it came direct or
    /// relayed through the broker.
    ///
    /// Example: warren peer listen --name B
    Listen(ListenArgs),
    /// Send to a named peer, directly over WebRTC when possible, else through the broker;
    /// prints the path each message took.
    ///
    /// Example: warren peer send --to B hello   (or one message per line of stdin)
    Send(SendArgs),
}

/// Flags both peer commands take.
#[derive(clap::Args, Debug, Clone)]
pub struct PeerArgs {
    /// Broker to signal and relay through: amqp://user:pass@host:port/vhost.
    #[arg(
        long,
        env = "WARREN_URL",
        hide_env_values = true,
        default_value = DEFAULT_URL,
        value_name = "URL"
    )]
    pub url: String,
    /// Local UDP address for the direct path (repeatable); 0.0.0.0:0 means every non-loopback
    /// interface, for peers on other machines.
    #[arg(long = "udp", value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub udp: Vec<SocketAddr>,
    /// STUN or TURN server URL for ICE (repeatable); none is needed on a LAN or one machine.
    #[arg(long = "ice-server", value_name = "URL")]
    pub ice_servers: Vec<String>,
    /// TURN user name for the --ice-server entries.
    #[arg(long, default_value = "")]
    pub ice_username: String,
    /// TURN credential for the --ice-server entries.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub ice_credential: String,
    /// Never use a direct connection; everything goes through the broker.
    #[arg(long)]
    pub relay_only: bool,
    /// Seconds to wait for the direct path before relaying.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub connect_timeout: f64,
}

impl PeerArgs {
    fn config(&self, name: String) -> anyhow::Result<PeerConfig> {
        let mut c = PeerConfig::new(self.url.clone(), name);
        c.udp_bind = self.udp.clone();
        if !self.ice_servers.is_empty() {
            c.ice_servers = vec![IceServer {
                urls: self.ice_servers.clone(),
                username: self.ice_username.clone(),
                credential: self.ice_credential.clone(),
            }];
        }
        c.offer_direct = !self.relay_only;
        c.accept_direct = !self.relay_only;
        if !(self.connect_timeout.is_finite() && self.connect_timeout >= 0.0) {
            bail!("--connect-timeout must be a number of seconds");
        }
        c.connect_timeout = Duration::from_secs_f64(self.connect_timeout);
        Ok(c)
    }
}

/// `warren peer listen`
#[derive(clap::Args, Debug, Clone)]
pub struct ListenArgs {
    /// This peer's name; senders address it with --to.
    #[arg(long)]
    pub name: String,
    /// Exit after this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub peer: PeerArgs,
}

/// `warren peer send`
#[derive(clap::Args, Debug, Clone)]
pub struct SendArgs {
    /// The receiving peer's name.
    #[arg(long)]
    pub to: String,
    /// The message body; without it, each line of stdin is one message.
    pub body: Option<String>,
    /// This peer's name [default: send-<pid>].
    #[arg(long)]
    pub name: Option<String>,
    /// Routing key carried with each message.
    #[arg(long, short = 'k', default_value = "")]
    pub routing_key: String,
    /// A header as name=value (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Live mode: unordered, no retransmits (late data is dropped, not waited for).
    #[arg(long)]
    pub live: bool,
    #[command(flatten)]
    pub peer: PeerArgs,
}

/// Runs a peer command; `listen` stops on Ctrl-C.
pub async fn run(cmd: PeerCommand) -> anyhow::Result<()> {
    match cmd {
        PeerCommand::Listen(args) => {
            let ctrl_c = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            run_listen(args, ctrl_c, &mut std::io::stdout()).await
        }
        PeerCommand::Send(args) => run_send(args, &mut std::io::stdout()).await,
    }
}

/// One line describing a received message.
pub fn describe(m: &Incoming) -> String {
    let mut line = format!("[{}] from {} #{}", m.path, m.from, m.seq);
    if !m.message.routing_key.is_empty() {
        line.push_str(&format!(" rk={}", m.message.routing_key));
    }
    for (k, v) in &m.message.headers {
        line.push_str(&format!(" {k}={v}"));
    }
    let body = &m.message.body;
    match std::str::from_utf8(body) {
        Ok(text) if body.len() <= 4096 && !text.chars().any(|c| c.is_control() && c != '\t') => {
            line.push_str(": ");
            line.push_str(text);
        }
        _ => line.push_str(&format!(": <{} bytes>", body.len())),
    }
    line
}

/// Listens as `args.name` until `shutdown` completes (or `--count` messages), writing one
/// line per message to `out`.
pub async fn run_listen(
    args: ListenArgs,
    shutdown: impl std::future::Future<Output = ()>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let config = args.peer.config(args.name.clone())?;
    let mut peer = Peer::start(config)
        .await
        .with_context(|| format!("starting peer {:?}", args.name))?;
    eprintln!("listening as {:?}; Ctrl-C to stop", peer.name());
    tokio::pin!(shutdown);
    let mut n = 0u64;
    while args.count.is_none_or(|c| n < c) {
        let m = tokio::select! {
            _ = &mut shutdown => break,
            m = peer.recv() => match m { Some(m) => m, None => break },
        };
        writeln!(out, "{}", describe(&m))?;
        out.flush()?;
        n += 1;
    }
    peer.close().await?;
    Ok(())
}

/// Sends `args.body`, or each stdin line, to `args.to`, writing the path of each to `out`.
pub async fn run_send(args: SendArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let mut headers = BTreeMap::new();
    for h in &args.headers {
        let Some((k, v)) = h.split_once('=') else {
            bail!("--header {h:?}: expected NAME=VALUE");
        };
        headers.insert(k.to_string(), v.to_string());
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("send-{}", std::process::id()));
    let peer = Peer::start(args.peer.config(name)?)
        .await
        .context("connecting to the broker")?;
    let reliability = if args.live {
        Reliability::Live
    } else {
        Reliability::Reliable
    };
    let link = peer
        .connect_with(&args.to, reliability)
        .await
        .with_context(|| format!("connecting to peer {:?}", args.to))?;
    let message = |body: Bytes| Message {
        routing_key: args.routing_key.clone(),
        headers: headers.clone(),
        body,
    };
    let (mut direct, mut relayed) = (0u64, 0u64);
    let mut report = |path: Path, len: usize, out: &mut dyn std::io::Write| {
        match path {
            Path::Direct => direct += 1,
            Path::Relayed => relayed += 1,
        }
        writeln!(out, "sent {len} bytes to {} {path}", args.to)
    };
    if let Some(body) = &args.body {
        let path = link.send(message(Bytes::from(body.clone()))).await?;
        report(path, body.len(), out)?;
    } else {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await.context("reading stdin")? {
            let len = line.len();
            let path = link.send(message(Bytes::from(line))).await?;
            report(path, len, out)?;
        }
    }
    link.close().await.context("closing the link")?;
    writeln!(
        out,
        "{} message(s) to {}: {direct} direct, {relayed} relayed",
        direct + relayed,
        args.to
    )?;
    peer.close().await?;
    Ok(())
}
