//! `warren`: run the broker, and (as more commands land) publish, subscribe, declare, inspect.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use warren_broker::Config;

#[derive(Parser)]
#[command(
    name = "warren",
    version,
    about = "Warren, an AMQP 0-9-1 message broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    ///
    /// Example: warren serve --bind 127.0.0.1:5672 --data-dir ./warren-data
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:5672, env WARREN_BIND].
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Directory for durable data [default: ./warren-data, env WARREN_DATA_DIR].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A TOML file with settings; environment variables and flags override it.
    #[arg(long, env = "WARREN_CONFIG")]
    config: Option<PathBuf>,
    /// Most connections held at once.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Heartbeat interval proposed to clients, in seconds (0 disables).
    #[arg(long)]
    heartbeat: Option<u16>,
    /// Largest message body accepted, in bytes.
    #[arg(long)]
    max_message_size: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
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
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        warren_broker::run(listener, config, shutdown_signal()).await;
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
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
