//! What every client command shares: the broker URL, opening a connection and a channel, and
//! turning any failure into the one line the user sees (`error: <text> (<code> <NAME>)`) and an
//! exit code. Commands use `anyhow` and `?`; the AMQP details are recovered here, once.

use std::fmt;
use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use futures_util::{Stream, StreamExt};
use lapin::protocol::{AMQPError, AMQPErrorKind};
use lapin::types::ShortString;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind, Event};

/// The URL used when neither --url nor WARREN_URL is given: the conventions of other AMQP tools.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How long to wait for the TCP connection and the AMQP handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for the broker to answer a close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit code for a command that ran but whose messages the broker refused (nacked or returned).
pub const EXIT_REFUSED: u8 = 3;

/// The connection flags every client command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// Broker to talk to: amqp://user:pass@host:port/vhost (vhost '/' is written %2f).
    #[arg(
        long,
        env = "WARREN_URL",
        hide_env_values = true,
        default_value = DEFAULT_URL,
        value_name = "URL"
    )]
    pub url: String,
}

/// Runs one client command on a fresh runtime. WARREN_LOG=debug (or trace) shows what the AMQP
/// client library does, on stderr.
pub fn run(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("WARREN_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(command);
    // A connection the broker already dropped may leave the client library's tasks behind;
    // they must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// An open connection with one channel on it.
pub struct Session {
    /// Kept so the connection can be closed politely at the end.
    pub connection: Connection,
    /// The channel every command works on.
    pub channel: Channel,
    /// The connection's events; a channel closed by the broker reports its reason here.
    events: Pin<Box<dyn Stream<Item = Event> + Send>>,
}

impl Session {
    /// Connects to the broker named by `args` and opens a channel. `command` names the
    /// connection in the broker's listings ("warren publish").
    pub async fn open(args: &ConnArgs, command: &str) -> anyhow::Result<Session> {
        let uri: AMQPUri = args.url.parse().map_err(|e| {
            Failure::new(format!(
                "invalid URL '{}': {e}; expected amqp://user:pass@host:port/vhost",
                redact(&args.url)
            ))
        })?;
        // amqps://: the system's CAs, plus the PEM file WARREN_CACERT names.
        let tls =
            match std::env::var("WARREN_CACERT") {
                Ok(path) if uri.scheme == AMQPScheme::AMQPS => lapin::tcp::OwnedTLSConfig {
                    identity: None,
                    cert_chain: Some(std::fs::read_to_string(&path).map_err(|e| {
                        Failure::new(format!("cannot read WARREN_CACERT {path}: {e}"))
                    })?),
                },
                _ => lapin::tcp::OwnedTLSConfig::default(),
            };
        let address = format!("{}:{}", uri.authority.host, uri.authority.port);
        let empty_vhost = uri.vhost.is_empty();
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("warren {command}").into());
        let builder = lapin::DefaultConnectionBuilder::new()?
            .with_uri(uri)
            .with_properties(properties)
            .with_tls_config(tls);
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, builder.connect()).await {
            Err(_) => {
                return Err(Failure::new(format!(
                    "cannot connect to {address} (no answer within {}s)",
                    CONNECT_TIMEOUT.as_secs()
                ))
                .into())
            }
            Ok(Err(e)) => return Err(connect_failure(&address, empty_vhost, &e).into()),
            Ok(Ok(connection)) => connection,
        };
        let events = Box::pin(connection.events_listener());
        let channel = connection.create_channel().await?;
        Ok(Session {
            connection,
            channel,
            events,
        })
    }

    /// The broker's own reason for `err`. When the broker closes a channel, calls that were
    /// under way learn only that the channel is closing; the reply code and text come through
    /// the connection's events a moment later.
    pub async fn reason(&mut self, err: lapin::Error) -> anyhow::Error {
        if err.is_amqp_error() {
            return err.into();
        }
        let deadline = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return err.into(),
                event = self.events.next() => match event {
                    Some(Event::Error(e)) if e.is_amqp_error() => return e.into(),
                    Some(_) => {}
                    None => return err.into(),
                },
            }
        }
    }

    /// Closes the channel, then the connection. A channel the broker already closed with an
    /// error reports that error, so a failure the broker signalled late is not lost.
    pub async fn close(self) -> anyhow::Result<()> {
        let closed =
            tokio::time::timeout(CLOSE_TIMEOUT, self.channel.close(200, "bye".into())).await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.connection.close(200, "bye".into())).await;
        match closed {
            Ok(Err(e)) if e.is_amqp_error() => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// The reply code of the broker's refusal in `err`, if that is what it is.
pub fn reply_code(err: &anyhow::Error) -> Option<u16> {
    err.chain()
        .find_map(|cause| match cause.downcast_ref::<lapin::Error>()?.kind() {
            ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
            _ => None,
        })
}

/// A failure already worded for the user, with the exit code it ends the process with.
#[derive(Debug)]
pub struct Failure {
    /// The line printed after `error: `.
    pub message: String,
    /// The process exit code (1 unless the command says otherwise).
    pub exit_code: u8,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            exit_code: 1,
        }
    }

    pub fn with_exit_code(mut self, exit_code: u8) -> Failure {
        self.exit_code = exit_code;
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Words any error for the user: a [`Failure`] as it is, an AMQP error from the broker as
/// `<text> (<code> <NAME>)`, anything else as its chain of causes on one line.
pub fn describe(err: &anyhow::Error) -> Failure {
    for cause in err.chain() {
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return Failure {
                message: failure.message.clone(),
                exit_code: failure.exit_code,
            };
        }
        if let Some(e) = cause.downcast_ref::<lapin::Error>() {
            return Failure::new(lapin_message(e));
        }
    }
    Failure::new(chain_text(err))
}

/// The causes of `err` joined by ": ", each once: many errors already end their own text with
/// their cause's ("cannot create data directory d: File exists (os error 17)").
fn chain_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.ends_with(part.trim_end()) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(part.trim_end());
    }
    text
}

fn lapin_message(e: &lapin::Error) -> String {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => amqp_message(amqp),
        ErrorKind::IOError(io) => format!("lost the connection to the broker ({io})"),
        ErrorKind::MissingHeartbeatError => {
            "lost the connection to the broker (no heartbeat from it)".into()
        }
        ErrorKind::InvalidChannelState(..) | ErrorKind::InvalidConnectionState(_) => {
            format!("the broker closed the channel or connection ({e})")
        }
        _ => e.to_string(),
    }
}

/// `NOT_FOUND - no queue 'q' in vhost '/'` with code 404 becomes
/// `no queue 'q' in vhost '/' (404 NOT_FOUND)`.
pub fn amqp_message(e: &AMQPError) -> String {
    reply_message(e.get_id(), e.get_message().as_str())
}

/// Words a reply code and the broker's reply text as `<text> (<code> <NAME>)`.
pub fn reply_message(code: u16, text: &str) -> String {
    let (name, detail) = split_reply_text(text);
    let name = name.map(str::to_owned).unwrap_or_else(|| reply_name(code));
    if detail.is_empty() || detail == name {
        format!("{} ({code} {name})", describe_code(code))
    } else {
        format!("{detail} ({code} {name})")
    }
}

/// Brokers prefix their reply text with the code's name: "NOT_FOUND - no queue ...".
fn split_reply_text(text: &str) -> (Option<&str>, &str) {
    let looks_like_name =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
    match text.split_once(" - ") {
        Some((name, rest)) if looks_like_name(name) => (Some(name), rest.trim()),
        _ if looks_like_name(text) => (Some(text), ""),
        _ => (None, text.trim()),
    }
}

/// The spec's name for a reply code, in the broker's spelling (NOT_FOUND).
pub fn reply_name(code: u16) -> String {
    match AMQPErrorKind::from_id(code) {
        Some(AMQPErrorKind::Soft(e)) => e.to_string().replace('-', "_"),
        Some(AMQPErrorKind::Hard(e)) => e.to_string().replace('-', "_"),
        None => "UNKNOWN".into(),
    }
}

/// A few words for a reply that came with no text of its own.
fn describe_code(code: u16) -> &'static str {
    match code {
        312 => "unroutable",
        313 => "no consumers",
        403 => "access refused",
        404 => "not found",
        405 => "resource locked",
        406 => "precondition failed",
        530 => "not allowed",
        _ => "the broker refused",
    }
}

fn connect_failure(address: &str, empty_vhost: bool, e: &lapin::Error) -> Failure {
    match e.kind() {
        ErrorKind::IOError(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            Failure::new(format!(
                "cannot connect to {address} (connection refused); is the broker running? \
                 Start one with: warren serve"
            ))
        }
        ErrorKind::IOError(io) => Failure::new(format!("cannot connect to {address} ({io})")),
        // "amqp://host:5672/" names the vhost "", not "/": the broker's "vhost  not found"
        // does not make that plain.
        ErrorKind::ProtocolError(amqp) if empty_vhost && amqp.get_id() == 530 => {
            Failure::new(format!(
                "connecting to {address}: vhost '' not found (530 NOT_ALLOWED); the URL ends in \
                 '/', which names the empty vhost: write the default vhost '/' as %2f, as in \
                 amqp://guest:guest@{address}/%2f"
            ))
        }
        ErrorKind::ProtocolError(amqp) => {
            Failure::new(format!("connecting to {address}: {}", amqp_message(amqp)))
        }
        _ => Failure::new(format!("cannot connect to {address} ({e})")),
    }
}

/// The URL with its password hidden, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A protocol short string (queue, exchange and key names, most properties): at most 255 bytes.
pub fn short(value: &str, what: &str) -> anyhow::Result<ShortString> {
    ShortString::try_new(value).map_err(|_| {
        Failure::new(format!(
            "{what} is {} bytes long; AMQP allows at most 255",
            value.len()
        ))
        .into()
    })
}

/// After a first Ctrl-C has started a clean stop, a second one ends the process at once, in
/// case the broker never answers the goodbyes.
pub fn exit_on_second_interrupt() {
    tokio::spawn(async {
        interrupted().await;
        std::process::exit(130);
    });
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn interrupted() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_with_a_name_prefix() {
        assert_eq!(
            reply_message(404, "NOT_FOUND - no queue 'orders' in vhost '/'"),
            "no queue 'orders' in vhost '/' (404 NOT_FOUND)"
        );
    }

    #[test]
    fn reply_text_without_a_prefix_takes_the_spec_name() {
        assert_eq!(
            reply_message(406, "inequivalent arg 'durable'"),
            "inequivalent arg 'durable' (406 PRECONDITION_FAILED)"
        );
    }

    #[test]
    fn reply_text_that_is_only_a_name() {
        assert_eq!(reply_message(312, "NO_ROUTE"), "unroutable (312 NO_ROUTE)");
    }

    #[test]
    fn a_cause_already_in_the_text_is_not_repeated() {
        let io = std::io::Error::from_raw_os_error(17);
        let inner = anyhow::Error::new(std::io::Error::new(io.kind(), io.to_string()));
        let err = inner.context(format!("cannot create data directory ./f: {io}"));
        assert_eq!(
            chain_text(&err.context("opening the store")),
            format!("opening the store: cannot create data directory ./f: {io}")
        );
        let err = anyhow::anyhow!("disk on fire").context("saving");
        assert_eq!(chain_text(&err), "saving: disk on fire");
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("amqp://bob:secret@host:5672/%2f"),
            "amqp://bob:***@host:5672/%2f"
        );
        assert_eq!(redact("amqp://host/"), "amqp://host/");
    }
}
