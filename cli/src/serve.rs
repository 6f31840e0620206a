//! `warren serve`: run the broker in the foreground until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use warren_broker::Config;

#[derive(clap::Args)]
#[command(after_help = "Example:\n  warren serve --bind 127.0.0.1:5672 --data-dir ./warren-data")]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:5672, env WARREN_BIND].
    #[arg(long)]
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
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARREN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let bind = config.bind;
        let broker = warren_broker::Prepared::open(config)?;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        // One plain line on stdout, so scripts and tests that bind port 0 learn the address.
        if let Ok(addr) = listener.local_addr() {
            println!("warren: listening on {addr}");
        }
        broker.serve(listener, crate::client::interrupted()).await;
        Ok(())
    })
}
