//! `warren`: run the broker, and talk to any AMQP 0-9-1 broker (Warren or RabbitMQ) from a shell:
//! publish, subscribe, get, declare, bind, unbind, delete, purge.
//!
//! `serve` lives in [`serve`]; each client command is one file under [`cmd`]; what they share
//! (the URL, the connection, turning failures into one line and an exit code) is in [`client`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc reads its options from the environment when the process loads, before `main`.
/// Measured on a release build (bench/queue_memory.sh, 100,000 queues declared then deleted,
/// and `warren perf throughput -s 1024 --ack manual`, old and new builds alternated): with the
/// variable unset, none of the queues' 244 MB was given back; with `MIMALLOC_PURGE_DELAY=10`,
/// 97% was, but 1 KiB throughput fell by about 28% (pages purged and faulted back in at
/// message rates); with 1000, 86% is given back and throughput is unchanged within the noise.
/// So `warren serve` runs itself again with 1000 unless the variable is set. Returns only if
/// that fails.
fn serve_with_allocator_options() {
    use std::os::unix::process::CommandExt;
    const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";
    if std::env::var_os(PURGE_DELAY).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // Replaces this process (same PID, same file descriptors); on failure, go on as we are.
    let _ = command.args(args).env(PURGE_DELAY, "1000").exec();
}

mod admin;
mod client;
mod cmd;
mod output;
mod perf;
mod reclaim;
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
    #[command(after_help = "\
Examples:
  warren unbind orders events 'order.*'    # undo: warren bind orders events 'order.*'
  warren unbind audit events '#' --dest-type exchange
  warren unbind pdfs docs --arg x-match=all --arg format:str=pdf   # headers: the same arguments

The arguments must be those of the binding, as for `warren bind` (--arg typed the same way).")]
    Unbind(cmd::bind::BindArgs),
    /// Delete a queue or an exchange.
    Delete(cmd::delete::DeleteArgs),
    /// Remove every ready message from a queue.
    Purge(cmd::purge::PurgeArgs),
    /// Peer-to-peer delivery over WebRTC data channels, signalled (and, when the direct path
    /// cannot be had, relayed) through the broker.
    #[command(
        subcommand,
        after_help = "\
Examples:
  warren peer listen --name B                 # in one shell: print what B receives
  warren peer send --to B hello               # in another: prints direct or relayed
  seq 1 10 | warren peer send --to B --live   # one message per line, unordered, no retransmits
  warren peer listen --name B --relay-only    # everything through the broker"
    )]
    Peer(warren_peer::cli::PeerCommand),
    /// Measure a broker: throughput, latency, connections, backlog (works against any AMQP 0-9-1 broker).
    // The scenarios' own examples are set here, beside their siblings' in `warren --help` style.
    #[command(
        mut_subcommand("throughput", |c: clap::Command| c.after_help(PERF_THROUGHPUT_EXAMPLES)),
        mut_subcommand("latency", |c: clap::Command| c.after_help(PERF_LATENCY_EXAMPLES)),
        mut_subcommand("sink", |c: clap::Command| c.after_help(PERF_SINK_EXAMPLES))
    )]
    Perf(perf::PerfArgs),
    /// List queues, exchanges, bindings, connections, channels, consumers, vhosts or users
    /// through the management HTTP API (Warren's or RabbitMQ's).
    List(admin::ListArgs),
    /// Show the broker's overview through the management HTTP API.
    Show(admin::ShowArgs),
    /// Close a client connection through the management HTTP API.
    Close(admin::CloseArgs),
    /// Export or import definitions (RabbitMQ's JSON format) through the management HTTP API.
    #[command(subcommand)]
    Definitions(admin::DefinitionsCommand),
    /// Is the broker up: version, listeners, alarms, counts (management HTTP API).
    Status(admin::StatusArgs),
    /// Add, delete or list virtual hosts (management HTTP API).
    #[command(subcommand)]
    Vhost(admin::tenancy::VhostCommand),
    /// Add, delete or list users, change passwords and tags (management HTTP API).
    #[command(subcommand)]
    User(admin::tenancy::UserCommand),
    /// Set, clear or list permissions and topic permissions (management HTTP API).
    #[command(subcommand)]
    Permissions(admin::tenancy::PermissionsCommand),
    /// Set, clear or list vhost and user limits (management HTTP API).
    #[command(subcommand)]
    Limits(admin::tenancy::LimitsCommand),
    /// Set, clear or list policies and operator policies (management HTTP API).
    #[command(subcommand)]
    Policy(admin::policy::PolicyCommand),
}

const PERF_THROUGHPUT_EXAMPLES: &str = "\
Examples:
  warren perf throughput -x 1 -y 1 -s 16 --duration 10
  warren perf throughput --persistent --confirm 1000 --ack manual
  warren perf throughput --exchange-type fanout --queues 10 -y 10
  warren perf throughput --exchange-type x-consistent-hash --queues 10 -y 10
  warren perf throughput --rate 5000 --json     # paced, one JSON summary line";

const PERF_LATENCY_EXAMPLES: &str = "\
Examples:
  warren perf latency --rate 10000 --duration 10
  warren perf latency --rate 1000 --persistent --confirm   # confirm latency too
  warren perf latency --url amqp://guest:guest@127.0.0.1:5673/%2f --json";

const PERF_SINK_EXAMPLES: &str = "\
Examples:
  warren perf sink --bind 127.0.0.1:5699       # accepts and discards everything
  warren perf throughput --url amqp://guest:guest@127.0.0.1:5699/%2f   # this client against it
  warren perf sink --echo                      # publishes sent straight back: the latency floor";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            serve_with_allocator_options();
            serve::serve(args)
        }
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
        Command::List(args) => client::run(admin::list(args)),
        Command::Show(args) => client::run(admin::show(args)),
        Command::Close(args) => client::run(admin::close(args)),
        Command::Definitions(cmd) => client::run(admin::definitions(cmd)),
        Command::Status(args) => client::run(admin::status(args)),
        Command::Vhost(cmd) => client::run(admin::tenancy::vhost(cmd)),
        Command::User(cmd) => client::run(admin::tenancy::user(cmd)),
        Command::Permissions(cmd) => client::run(admin::tenancy::permissions(cmd)),
        Command::Limits(cmd) => client::run(admin::tenancy::limits(cmd)),
        Command::Policy(cmd) => client::run(admin::policy::policy(cmd)),
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
