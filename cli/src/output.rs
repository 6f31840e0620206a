//! What `get` and `subscribe` share: printing a delivery (its body, or one JSON object per line)
//! and settling it afterwards (ack, nack, reject, requeue), so a message is only acknowledged
//! once it has been written out.

use std::io::{self, Write};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::BasicProperties;
use serde_json::{json, Map, Value};

use crate::client::Failure;
use crate::table::{base64, table_json};

/// How each message is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The body as it is, followed by a newline.
    Text,
    /// One JSON object per line: body, properties, headers, delivery_tag, redelivered,
    /// exchange, routing_key.
    Json,
}

/// Acknowledgement flags shared by `get` and `subscribe`.
#[derive(clap::Args, Debug, Clone)]
pub struct AckArgs {
    /// auto: the broker forgets each message as it sends it (no_ack; with subscribe --count,
    /// messages already on their way past the count are lost). manual: acknowledge each message
    /// after printing it, or settle it as --nack/--reject/--requeue say.
    #[arg(long, value_enum, default_value_t = AckMode::Manual)]
    pub ack: AckMode,
    /// Negatively acknowledge each message (basic.nack) instead of acking it; it is dropped or
    /// dead-lettered unless --requeue.
    #[arg(long, conflicts_with = "reject")]
    pub nack: bool,
    /// Reject each message (basic.reject) instead of acking it; it is dropped or dead-lettered
    /// unless --requeue.
    #[arg(long)]
    pub reject: bool,
    /// Put each message back on its queue (with --nack or --reject; alone it means --nack
    /// --requeue). The broker redelivers it with redelivered=true.
    #[arg(long)]
    pub requeue: bool,
}

/// Who acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AckMode {
    /// The broker treats a message as acknowledged once sent.
    Auto,
    /// The client settles each message after printing it.
    Manual,
}

impl AckArgs {
    /// Refuses combinations that mean nothing.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.ack == AckMode::Auto && (self.nack || self.reject || self.requeue) {
            return Err(Failure::new(
                "--nack, --reject and --requeue settle messages by hand; they need --ack manual",
            )
            .with_exit_code(2)
            .into());
        }
        Ok(())
    }

    /// True when the broker should not wait for acknowledgements.
    pub fn no_ack(&self) -> bool {
        self.ack == AckMode::Auto
    }

    /// Settles one printed delivery as the flags say.
    pub async fn settle(&self, delivery: &Delivery) -> lapin::Result<()> {
        if self.no_ack() {
            return Ok(());
        }
        if self.reject {
            delivery
                .reject(BasicRejectOptions {
                    requeue: self.requeue,
                })
                .await?;
        } else if self.nack || self.requeue {
            delivery
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: self.requeue,
                })
                .await?;
        } else {
            delivery.ack(BasicAckOptions::default()).await?;
        }
        Ok(())
    }
}

/// Writes deliveries to stdout, flushing after each so a pipe (`| jq`) sees it at once.
pub struct Printer {
    format: Format,
    out: io::Stdout,
}

impl Printer {
    pub fn new(format: Format) -> Printer {
        Printer {
            format,
            out: io::stdout(),
        }
    }

    /// Prints one delivery. `message_count` is what basic.get reports as left in the queue.
    pub fn print(&mut self, d: &Delivery, message_count: Option<u32>) -> io::Result<()> {
        let mut out = self.out.lock();
        match self.format {
            Format::Text => {
                out.write_all(&d.data)?;
                out.write_all(b"\n")?;
            }
            Format::Json => {
                let mut line = delivery_json(d);
                if let (Some(n), Value::Object(map)) = (message_count, &mut line) {
                    map.insert("message_count".into(), n.into());
                }
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            }
        }
        out.flush()
    }
}

/// True for the error a write gets when the reader went away (`warren subscribe q | head -1`).
pub fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// One delivery as a JSON object. A body that is not UTF-8 is base64 with
/// `"body_encoding": "base64"`.
pub fn delivery_json(d: &Delivery) -> Value {
    let mut obj = Map::new();
    match std::str::from_utf8(&d.data) {
        Ok(text) => {
            obj.insert("body".into(), text.into());
        }
        Err(_) => {
            obj.insert("body".into(), base64(&d.data).into());
            obj.insert("body_encoding".into(), "base64".into());
        }
    }
    obj.insert("properties".into(), properties_json(&d.properties));
    obj.insert(
        "headers".into(),
        d.properties
            .headers()
            .as_ref()
            .map(table_json)
            .unwrap_or_else(|| json!({})),
    );
    obj.insert("delivery_tag".into(), d.delivery_tag.into());
    obj.insert("redelivered".into(), d.redelivered.into());
    obj.insert("exchange".into(), d.exchange.as_str().into());
    obj.insert("routing_key".into(), d.routing_key.as_str().into());
    Value::Object(obj)
}

/// The properties that are set, by their AMQP names (headers are reported on their own).
fn properties_json(p: &BasicProperties) -> Value {
    let mut obj = Map::new();
    let mut text = |name: &str, v: &Option<lapin::types::ShortString>| {
        if let Some(v) = v {
            obj.insert(name.into(), v.as_str().into());
        }
    };
    text("content_type", p.content_type());
    text("content_encoding", p.content_encoding());
    text("correlation_id", p.correlation_id());
    text("reply_to", p.reply_to());
    text("expiration", p.expiration());
    text("message_id", p.message_id());
    text("type", p.kind());
    text("user_id", p.user_id());
    text("app_id", p.app_id());
    text("cluster_id", p.cluster_id());
    if let Some(v) = p.delivery_mode() {
        obj.insert("delivery_mode".into(), (*v).into());
    }
    if let Some(v) = p.priority() {
        obj.insert("priority".into(), (*v).into());
    }
    if let Some(v) = p.timestamp() {
        obj.insert("timestamp".into(), (*v).into());
    }
    Value::Object(obj)
}
