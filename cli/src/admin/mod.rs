//! The commands that talk to a management HTTP API, Warren's or RabbitMQ's: `warren list`,
//! `show overview`, `close connection`, `definitions export|import` and `status`.
//! [`http`] is the client; [`render`] prints lists as a table, TSV or JSON.

pub mod http;
pub mod policy;
pub mod render;
pub mod tenancy;

use std::io::Write;

use anyhow::Context;
use hyper::Method;
use serde_json::Value;

use crate::client::Failure;
use http::{segment, Api, HttpArgs};
use render::{Format, Table};

/// What `warren list` lists.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Queues,
    Exchanges,
    Bindings,
    Connections,
    Channels,
    Consumers,
    Vhosts,
    Users,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Queues => "queues",
            Kind::Exchanges => "exchanges",
            Kind::Bindings => "bindings",
            Kind::Connections => "connections",
            Kind::Channels => "channels",
            Kind::Consumers => "consumers",
            Kind::Vhosts => "vhosts",
            Kind::Users => "users",
        }
    }

    /// The columns shown unless --columns says otherwise.
    fn columns(self) -> &'static [&'static str] {
        match self {
            Kind::Queues => &[
                "vhost",
                "name",
                "type",
                "durable",
                "messages",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
                "policy",
            ],
            Kind::Exchanges => &[
                "vhost",
                "name",
                "type",
                "durable",
                "auto_delete",
                "internal",
                "policy",
            ],
            Kind::Bindings => &[
                "vhost",
                "source",
                "destination",
                "destination_type",
                "routing_key",
                "arguments",
            ],
            Kind::Connections => &[
                "name",
                "user",
                "vhost",
                "user_provided_name",
                "channels",
                "state",
            ],
            Kind::Channels => &[
                "name",
                "user",
                "vhost",
                "consumer_count",
                "messages_unacknowledged",
                "prefetch_count",
                "confirm",
            ],
            Kind::Consumers => &[
                "queue.vhost",
                "queue.name",
                "consumer_tag",
                "channel_details.name",
                "ack_required",
                "prefetch_count",
                "exclusive",
            ],
            Kind::Vhosts => &[
                "name",
                "messages",
                "messages_ready",
                "messages_unacknowledged",
            ],
            Kind::Users => &["name", "tags"],
        }
    }

    /// Whether the API lists it per vhost (`/api/KIND/{vhost}`).
    fn per_vhost(self) -> bool {
        matches!(
            self,
            Kind::Queues | Kind::Exchanges | Kind::Bindings | Kind::Consumers | Kind::Channels
        )
    }
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  warren list queues
  warren list queues --vhost / --columns name,messages,consumers
  warren list connections --format json
  warren list bindings --format tsv | cut -f2,3

Works against RabbitMQ's management plugin too: --http-url http://guest:guest@host:15672")]
pub struct ListArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// What to list.
    kind: Kind,
    /// Only this virtual host's.
    #[arg(long)]
    vhost: Option<String>,
    /// Output: a table on a terminal, TSV otherwise, unless given.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Columns to show, comma-separated; nested fields with dots (queue.name).
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.http)?;
    let path = match (&args.vhost, args.kind.per_vhost()) {
        (Some(v), true) => format!("/api/{}/{}", args.kind.path(), segment(v)),
        (Some(_), false) if args.kind == Kind::Vhosts => "/api/vhosts".to_owned(),
        (Some(_), false) => {
            return Err(
                Failure::new(format!("{} are not listed per vhost", args.kind.path())).into(),
            )
        }
        (None, _) => format!("/api/{}", args.kind.path()),
    };
    let mut items = match api.get(&path).await? {
        Value::Array(a) => a,
        // A paged answer (RabbitMQ's with page=...): the items.
        Value::Object(mut o) => match o.remove("items") {
            Some(Value::Array(a)) => a,
            _ => return Err(anyhow::anyhow!("GET {path} did not answer with a list")),
        },
        _ => return Err(anyhow::anyhow!("GET {path} did not answer with a list")),
    };
    if args.kind == Kind::Vhosts {
        if let Some(v) = &args.vhost {
            items.retain(|i| i["name"] == v.as_str());
        }
    }
    let columns: Vec<String> = if args.columns.is_empty() {
        args.kind
            .columns()
            .iter()
            .map(|c| (*c).to_owned())
            .collect()
    } else {
        args.columns.clone()
    };
    let table = Table::new(columns, &items);
    let format = args.format.unwrap_or_else(Format::for_stdout);
    let mut out = std::io::stdout().lock();
    printed(match format {
        // JSON keeps whole objects unless columns were asked for.
        Format::Json if args.columns.is_empty() => serde_json::to_writer_pretty(&mut out, &items)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        f => table.write(f, &mut out),
    })
}

/// The end of printing: a reader that went away (`| head`) is not an error.
fn printed(r: std::io::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if crate::output::is_broken_pipe(&e) => Ok(()),
        other => Ok(other?),
    }
}

/// What `warren show` shows.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Shown {
    Overview,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Example:
  warren show overview
  warren show overview --format json")]
pub struct ShowArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// What to show.
    what: Shown,
    /// Output: a table on a terminal, TSV otherwise, unless given.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// The overview's figures as (name, value) rows.
fn overview_rows(o: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut put = |k: &str, v: &Value| rows.push((k.to_owned(), render::cell(v)));
    for k in [
        "product_name",
        "product_version",
        "rabbitmq_version",
        "node",
        "cluster_name",
    ] {
        put(k, &o[k]);
    }
    for k in [
        "connections",
        "channels",
        "exchanges",
        "queues",
        "consumers",
    ] {
        put(&format!("object_totals.{k}"), &o["object_totals"][k]);
    }
    for k in ["messages", "messages_ready", "messages_unacknowledged"] {
        put(&format!("queue_totals.{k}"), &o["queue_totals"][k]);
    }
    for k in [
        "publish",
        "confirm",
        "deliver_get",
        "ack",
        "redeliver",
        "return_unroutable",
        "drop_unroutable",
    ] {
        put(&format!("message_stats.{k}"), &o["message_stats"][k]);
        put(
            &format!("message_stats.{k}_details.rate"),
            &o["message_stats"][format!("{k}_details")]["rate"],
        );
    }
    rows
}

pub async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.http)?;
    let Shown::Overview = args.what;
    let o = api.get("/api/overview").await?;
    let format = args.format.unwrap_or_else(Format::for_stdout);
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        return printed(
            serde_json::to_writer_pretty(&mut out, &o)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out)),
        );
    }
    let rows: Vec<Value> = overview_rows(&o)
        .into_iter()
        .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
        .collect();
    printed(Table::new(vec!["key".into(), "value".into()], &rows).write(format, &mut out))
}

/// What `warren close` closes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Closed {
    Connection,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Example:
  warren list connections --columns name,user_provided_name
  warren close connection '127.0.0.1:50712 -> 127.0.0.1:5672' --reason 'maintenance'

The client is told 320 CONNECTION_FORCED with the reason.")]
pub struct CloseArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// What to close.
    what: Closed,
    /// Its name, as `warren list connections` shows it.
    name: String,
    /// The reason the client is given.
    #[arg(long)]
    reason: Option<String>,
}

pub async fn close(args: CloseArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.http)?;
    let Closed::Connection = args.what;
    let headers: Vec<(&str, String)> = args
        .reason
        .iter()
        .map(|r| ("x-reason", r.clone()))
        .collect();
    api.call(
        Method::DELETE,
        &format!("/api/connections/{}", segment(&args.name)),
        None,
        &headers,
    )
    .await?;
    println!("closed connection '{}'", args.name);
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub enum DefinitionsCommand {
    /// Write every definition (users, vhosts, permissions, exchanges, queues, bindings) as
    /// JSON in RabbitMQ's format, to FILE or stdout.
    Export {
        #[command(flatten)]
        http: HttpArgs,
        /// Only this virtual host's objects.
        #[arg(long)]
        vhost: Option<String>,
        /// Where to write (stdout if absent or '-').
        file: Option<String>,
    },
    /// Declare what a definitions file holds (one exported from Warren or RabbitMQ).
    Import {
        #[command(flatten)]
        http: HttpArgs,
        /// Into this virtual host (a per-vhost file).
        #[arg(long)]
        vhost: Option<String>,
        /// The file ('-' for stdin).
        file: String,
    },
}

fn vhost_suffix(vhost: &Option<String>) -> String {
    vhost
        .as_ref()
        .map(|v| format!("/{}", segment(v)))
        .unwrap_or_default()
}

pub async fn definitions(cmd: DefinitionsCommand) -> anyhow::Result<()> {
    match cmd {
        DefinitionsCommand::Export { http, vhost, file } => {
            let api = Api::new(&http)?;
            let defs = api
                .get(&format!("/api/definitions{}", vhost_suffix(&vhost)))
                .await?;
            let mut text = serde_json::to_string_pretty(&defs)?;
            text.push('\n');
            match file.as_deref() {
                None | Some("-") => printed(std::io::stdout().lock().write_all(text.as_bytes()))?,
                Some(f) => {
                    std::fs::write(f, text).with_context(|| format!("writing {f}"))?;
                    eprintln!("exported definitions to {f}");
                }
            }
        }
        DefinitionsCommand::Import { http, vhost, file } => {
            let api = Api::new(&http)?;
            let body = if file == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                b
            } else {
                std::fs::read(&file).with_context(|| format!("reading {file}"))?
            };
            serde_json::from_slice::<Value>(&body)
                .map_err(|e| Failure::new(format!("{file} is not JSON: {e}")))?;
            api.call(
                Method::POST,
                &format!("/api/definitions{}", vhost_suffix(&vhost)),
                Some(body),
                &[],
            )
            .await?;
            println!("imported definitions from {file}");
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Example:
  warren status && echo up

Exits 0 when the broker answers and has no alarm, 1 otherwise.")]
pub struct StatusArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// The overview and alarms as one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.http)?;
    let o = api.get("/api/overview").await?;
    let alarms = api
        .request(Method::GET, "/api/health/checks/alarms", None, &[])
        .await?;
    let alarm_body: Value = serde_json::from_slice(&alarms.body).unwrap_or(Value::Null);
    let alarmed = !alarms.status.is_success();
    if args.json {
        let v = serde_json::json!({"overview": o, "alarms": alarm_body});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let s = |v: &Value| render::cell(v);
        let compatible = if o["product_name"] == "RabbitMQ" {
            String::new()
        } else {
            format!(" (RabbitMQ-compatible {})", s(&o["rabbitmq_version"]))
        };
        println!(
            "{} is up: {} {}{compatible}",
            s(&o["node"]),
            s(&o["product_name"]),
            s(&o["product_version"]),
        );
        if let Some(ls) = o["listeners"].as_array() {
            for l in ls {
                println!(
                    "listener: {} on {}:{}",
                    s(&l["protocol"]),
                    s(&l["ip_address"]),
                    s(&l["port"])
                );
            }
        }
        let t = &o["object_totals"];
        let q = &o["queue_totals"];
        println!(
            "connections {}, channels {}, queues {}, consumers {}, messages {} ({} ready, {} unacked)",
            s(&t["connections"]),
            s(&t["channels"]),
            s(&t["queues"]),
            s(&t["consumers"]),
            s(&q["messages"]),
            s(&q["messages_ready"]),
            s(&q["messages_unacknowledged"])
        );
        if alarmed {
            println!("alarms: {}", alarm_body);
        } else {
            println!("alarms: none");
        }
    }
    if alarmed {
        return Err(Failure::new("the broker has an alarm in effect").into());
    }
    Ok(())
}
