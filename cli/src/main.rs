//! `warren`: run the broker, and talk to any AMQP 0-9-1 broker (Warren or RabbitMQ) from a shell:
//! publish, subscribe, get, declare, bind, unbind, delete, purge.
//!
//! `serve` lives in [`serve`]; each client command is one file under [`cmd`]; what they share
//! (the URL, the connection, turning failures into one line and an exit code) is in [`client`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod cmd;
mod output;
mod perf;
mod serve;
mod table;

#[derive(Parser)]
#[command(
    name = "warren",
    version,
    about = "Warren, an AMQP 0-9-1 message broker, and a client for it (and for RabbitMQ)",
    after_help = "\
Connection: every client command takes --url amqp://user:pass@host:port/vhost, or reads WARREN_URL;
the default is amqp://guest:guest@127.0.0.1:5672/%2f (vhost '/').

Example session:
  warren serve &
  warren declare queue orders
  warren publish '' orders 'hello'
  warren get orders

Exit codes: 0 success, 1 error, 2 bad usage, 3 the broker nacked or returned published messages."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    ///
    /// Settings come from a TOML file (--config), then WARREN_* environment variables, then flags.
    Serve(serve::ServeArgs),
    /// Publish messages to an exchange.
    Publish(cmd::publish::PublishArgs),
    /// Consume messages from a queue, or from an exchange through a temporary queue, and print them.
    #[command(visible_alias = "consume")]
    Subscribe(cmd::subscribe::SubscribeArgs),
    /// Fetch messages from a queue one at a time (basic.get) and print them.
    Get(cmd::get::GetArgs),
    /// Declare a queue or an exchange.
    Declare(cmd::declare::DeclareArgs),
    /// Bind a queue (or an exchange) to an exchange.
    Bind(cmd::bind::BindArgs),
    /// Remove a binding made with `warren bind`.
    Unbind(cmd::bind::BindArgs),
    /// Delete a queue or an exchange.
    Delete(cmd::delete::DeleteArgs),
    /// Remove every ready message from a queue.
    Purge(cmd::purge::PurgeArgs),
    /// Peer-to-peer delivery over WebRTC data channels, signalled (and, when the direct path
    /// cannot be had, relayed) through the broker.
    #[command(subcommand)]
    Peer(warren_peer::cli::PeerCommand),
    /// Measure a broker: throughput, latency, connections, backlog (works against any AMQP 0-9-1 broker).
    Perf(perf::PerfArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Publish(args) => client::run(cmd::publish::run(args)),
        Command::Subscribe(args) => client::run(cmd::subscribe::run(args)),
        Command::Get(args) => client::run(cmd::get::run(args)),
        Command::Declare(args) => client::run(cmd::declare::run(args)),
        Command::Bind(args) => client::run(cmd::bind::run(args, cmd::bind::Action::Bind)),
        Command::Unbind(args) => client::run(cmd::bind::run(args, cmd::bind::Action::Unbind)),
        Command::Delete(args) => client::run(cmd::delete::run(args)),
        Command::Purge(args) => client::run(cmd::purge::run(args)),
        Command::Perf(args) => client::run(perf::run(args)),
        Command::Peer(cmd) => client::run(warren_peer::cli::run(cmd)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let failure = client::describe(&err);
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.exit_code)
        }
    }
}
