//! `warren serve`: run the broker in the foreground until SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use warren_broker::Config;

use crate::client::Failure;

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  warren serve --bind 127.0.0.1:5672 --data-dir ./warren-data
  warren serve --bind [::]:5672          # every IPv4 and IPv6 address
  warren serve --bind localhost:5673     # a host name is resolved (IPv4 preferred)")]
pub struct ServeArgs {
    /// Address to listen on: IP:PORT or HOST:PORT [default: 127.0.0.1:5672, env WARREN_BIND].
    #[arg(long, value_name = "ADDR", value_parser = warren_broker::config::parse_bind)]
    pub bind: Option<SocketAddr>,
    /// Directory for durable data [default: ./warren-data, env WARREN_DATA_DIR].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A TOML file with settings; environment variables and flags override it.
    #[arg(long, env = "WARREN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Most connections held at once.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Heartbeat interval proposed to clients, in seconds (0 disables).
    #[arg(long)]
    pub heartbeat: Option<u16>,
    /// Largest message body accepted, in bytes.
    #[arg(long)]
    pub max_message_size: Option<u64>,
    /// Address of the management HTTP API, or `off` [default: 127.0.0.1:15672, env
    /// WARREN_HTTP_BIND].
    #[arg(long, value_name = "ADDR|off", value_parser = bind_or_off)]
    pub http_bind: Option<BindOrOff>,
    /// Address of the Prometheus metrics endpoint, or `off` [default: 127.0.0.1:15692, env
    /// WARREN_PROMETHEUS_BIND].
    #[arg(long, value_name = "ADDR|off", value_parser = bind_or_off)]
    pub prometheus_bind: Option<BindOrOff>,
    /// Address of the AMQP-over-TLS listener when the config file has a [tls] section, or
    /// `off` [default: 127.0.0.1:5671, env WARREN_AMQPS_BIND].
    #[arg(long, value_name = "ADDR|off", value_parser = bind_or_off)]
    pub amqps_bind: Option<BindOrOff>,
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct BindOrOff(Option<SocketAddr>);

fn bind_or_off(text: &str) -> Result<BindOrOff, String> {
    warren_broker::config::parse_optional_bind(text).map(BindOrOff)
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARREN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (stderr on a full disk) is dropped; reporting
        // that on stderr too would panic.
        .log_internal_errors(false)
        .init();
    // Fail-stop: a panic in any task or thread (a queue's owner, the fsync thread) stops the
    // whole broker at once instead of leaving it up with a piece missing. Nothing unconfirmed
    // is confirmed by the stop; a restart recovers as after a crash.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    let mut config = Config::load(args.config.as_deref()).context("loading settings")?;
    if let Some(v) = args.bind {
        config.bind = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.max_connections {
        config.max_connections = v;
    }
    if let Some(v) = args.heartbeat {
        config.heartbeat = v;
    }
    if let Some(v) = args.max_message_size {
        config.max_message_size = v;
    }
    if let Some(BindOrOff(v)) = args.http_bind {
        config.http_bind = v;
    }
    if let Some(BindOrOff(v)) = args.prometheus_bind {
        config.prometheus_bind = v;
    }
    if let Some(BindOrOff(v)) = args.amqps_bind {
        config.amqps_bind = v;
    }
    if config.persistence && config.data_dir.exists() && !config.data_dir.is_dir() {
        return Err(Failure::new(format!(
            "data directory {} is a file, not a directory; point --data-dir (or WARREN_DATA_DIR) \
             at a directory",
            config.data_dir.display()
        ))
        .into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::reclaim::on_park)
        .build()
        .context("starting the runtime")?;
    let workers = runtime.metrics().num_workers();
    runtime.block_on(async move {
        tokio::spawn(crate::reclaim::run(workers));
        let bind = config.bind;
        // Bind first: a broker that cannot listen leaves no data directory behind.
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| listen_failure(bind, &e, "--bind or WARREN_BIND"))?;
        let mut mgmt = warren_broker::management::Listeners::default();
        for (addr, slot, how) in [
            (
                config.http_bind,
                &mut mgmt.http,
                "--http-bind or WARREN_HTTP_BIND (off turns it off)",
            ),
            (
                config.prometheus_bind,
                &mut mgmt.prometheus,
                "--prometheus-bind or WARREN_PROMETHEUS_BIND (off turns it off)",
            ),
        ] {
            if let Some(addr) = addr {
                *slot = Some(
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|e| listen_failure(addr, &e, how))?,
                );
            }
        }
        let amqps = match (config.tls.is_some(), config.amqps_bind) {
            (true, Some(addr)) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| listen_failure(addr, &e, "--amqps-bind or WARREN_AMQPS_BIND"))?,
            ),
            _ => None,
        };
        let amqps_addr = amqps.as_ref().and_then(|l| l.local_addr().ok());
        let https = config.tls.as_ref().is_some_and(|t| t.management);
        let (http, prometheus) = (mgmt.http_addr(), mgmt.prometheus_addr());
        // Browser peers signal over WebSocket on the HTTP server (/peer/ws, /peer/demo).
        let mut broker = warren_broker::Prepared::open(config)?
            .with_management(mgmt)
            .with_http_routes(Box::new(warren_peer::ws::router));
        if let Some(l) = amqps {
            broker = broker.with_amqps(l);
        }
        if let Some(tls) = broker.tls() {
            // SIGHUP: read the certificate, key and CA files again.
            tokio::spawn(async move {
                let Ok(mut hup) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                else {
                    return;
                };
                while hup.recv().await.is_some() {
                    match tls.reload() {
                        Ok(()) => tracing::info!("TLS certificates reloaded"),
                        Err(e) => tracing::error!("{e}; the previous certificates stay in use"),
                    }
                }
            });
        }
        // One plain line on stdout, so scripts and tests that bind port 0 learn the address
        // (the management addresses follow on lines of their own).
        if let Ok(addr) = listener.local_addr() {
            // Never println!: a closed or full stdout must not stop the broker.
            use std::io::Write;
            let mut out = std::io::stdout();
            let mut text = format!("warren: listening on {addr}\n");
            if let Some(a) = amqps_addr {
                text.push_str(&format!("warren: listening for amqps on {a}\n"));
            }
            if let Some(a) = http {
                let scheme = if https { "https" } else { "http" };
                text.push_str(&format!("warren: management API on {scheme}://{a}/api/\n"));
            }
            if let Some(a) = prometheus {
                text.push_str(&format!(
                    "warren: Prometheus metrics on http://{a}/metrics\n"
                ));
            }
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        }
        broker.serve(listener, crate::client::interrupted()).await;
        Ok(())
    })
}

/// Why the listener could not bind, and what to do about it.
fn listen_failure(bind: SocketAddr, e: &std::io::Error, how: &str) -> Failure {
    use std::io::ErrorKind;
    let why = match e.kind() {
        ErrorKind::AddrInUse => {
            "the address is in use (another broker, or RabbitMQ, may be running there)"
        }
        ErrorKind::PermissionDenied => "permission denied (ports below 1024 need privileges)",
        ErrorKind::AddrNotAvailable => "no network interface of this machine has that address",
        _ => "",
    };
    let why = if why.is_empty() {
        e.to_string()
    } else {
        why.to_owned()
    };
    Failure::new(format!(
        "cannot listen on {bind}: {why}; choose another address with {how}, for example \
         127.0.0.1:{}",
        bind.port().checked_add(1).unwrap_or(5672)
    ))
}
