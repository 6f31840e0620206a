//! `warren publish EXCHANGE ROUTING_KEY [BODY]`: one message, a file, the lines of stdin, or a
//! load of N messages at a steady rate; with publisher confirms, every nack and return is
//! counted and makes the command fail.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use lapin::options::{BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::client::{self, short, ConnArgs, Failure, Session, EXIT_REFUSED};
use crate::table::{self, Entry};

/// Most confirms awaited at once; past it, publishing waits for the broker to catch up.
const CONFIRM_WINDOW: usize = 4096;

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  warren publish '' orders 'hello'          # the default exchange routes to the queue 'orders'
  warren publish events order.created --file order.json --content-type application/json -H source=shop
  seq 1 100 | warren publish '' orders --lines --confirm
  warren publish amq.topic eu.news 'hi' --mandatory      # fails (exit 3) if no queue takes it
  warren publish '' orders ping --count 100000 --rate 5000 --confirm
  warren publish payments '' 'pay #42' --message-id pay-42 --dedup --confirm   # safe to retry

Headers are strings; force another type with KEY:TYPE=VALUE (types: str, long, int, short, byte,
bool, double), e.g. -H retries:long=3.
Exit codes: 0 all sent (and confirmed), 1 error, 3 the broker nacked or returned messages.")]
pub struct PublishArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Exchange to publish to; '' is the default exchange, which routes to the queue named by
    /// the routing key.
    exchange: String,
    /// Routing key.
    routing_key: String,
    /// Message body. Without it (and without --file) the body is read from stdin.
    body: Option<String>,
    /// Read the body from this file.
    #[arg(long, value_name = "PATH", conflicts_with = "body")]
    file: Option<PathBuf>,
    /// Publish one message per line of stdin (or of --file); the newline is not sent.
    #[arg(long, conflicts_with = "body")]
    lines: bool,
    /// MIME type of the body (content_type property).
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// A header, repeatable: -H key=value.
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = table::parse_header)]
    headers: Vec<Entry>,
    /// Ask queues to keep the message on disk (delivery_mode 2).
    #[arg(long)]
    persistent: bool,
    /// Discard the message after this many milliseconds in a queue (expiration property).
    #[arg(long, value_name = "MS")]
    expiration: Option<u64>,
    /// message_id property.
    #[arg(long, value_name = "ID")]
    message_id: Option<String>,
    /// Also put the --message-id in the x-deduplication-header header, so an exchange or queue
    /// declared with x-message-deduplication drops a repeat of it.
    #[arg(long, requires = "message_id")]
    dedup: bool,
    /// correlation_id property.
    #[arg(long, value_name = "ID")]
    correlation_id: Option<String>,
    /// reply_to property: the queue a reply should go to.
    #[arg(long, value_name = "QUEUE")]
    reply_to: Option<String>,
    /// Message priority, 0 to 255 (queues declared with x-max-priority honour it).
    #[arg(long, value_name = "N")]
    priority: Option<u8>,
    /// Wait for the broker to confirm every message; any nack or return fails the command.
    #[arg(long)]
    confirm: bool,
    /// Have the broker return messages that no queue takes. Turns on --confirm, so every
    /// return is known before the command ends.
    #[arg(long)]
    mandatory: bool,
    /// Publish the message (or each line of --lines) N times.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Publish at most R messages per second.
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
}

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    if let Some(r) = args.rate {
        if !(r > 0.0 && r.is_finite()) {
            return Err(
                Failure::new(format!("--rate must be a positive number, got {r}"))
                    .with_exit_code(2)
                    .into(),
            );
        }
    }
    let exchange = short(&args.exchange, "the exchange name")?;
    let routing_key = short(&args.routing_key, "the routing key")?;
    let properties = properties(&args)?;
    let confirm = args.confirm || args.mandatory;
    let options = BasicPublishOptions {
        mandatory: args.mandatory,
        immediate: false,
    };
    let mut source = Source::open(&args).await?;

    let mut session = Session::open(&args.conn, "publish").await?;
    let channel = session.channel.clone();
    if confirm {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }

    let pacer = args.rate.map(Pacer::new);
    let mut tally = Tally::default();
    let started = Instant::now();
    let mut progress = Progress::new(source.total(), confirm);
    let mut pending = FuturesUnordered::new();
    let interrupted = client::interrupted();
    tokio::pin!(interrupted);
    let mut stopped = false;
    // What the broker did to end the run early (a closed channel, 320 at its shutdown): the
    // summary of what got through is still printed.
    let mut cut_off: Option<lapin::Error> = None;
    loop {
        let body = tokio::select! {
            biased;
            _ = &mut interrupted => { stopped = true; break }
            body = source.next() => body?,
        };
        let Some(body) = body else { break };
        if let Some(p) = &pacer {
            tokio::select! {
                biased;
                _ = &mut interrupted => { stopped = true; break }
                _ = p.wait(tally.sent) => {}
            }
        }
        let confirmation = match channel
            .basic_publish(
                exchange.clone(),
                routing_key.clone(),
                options,
                &body,
                properties.clone(),
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                cut_off = Some(e);
                break;
            }
        };
        tally.sent += 1;
        if confirm {
            pending.push(confirmation);
            let full = pending.len() >= CONFIRM_WINDOW;
            if let Err(e) = tally.collect(&mut pending, full).await {
                cut_off = Some(e);
                break;
            }
        }
        progress.update(&tally);
    }
    if stopped {
        client::exit_on_second_interrupt();
    }
    if cut_off.is_none() {
        while !pending.is_empty() {
            if let Err(e) = tally.collect(&mut pending, true).await {
                cut_off = Some(e);
                break;
            }
        }
    }
    if cut_off.is_none() && !confirm {
        // Without confirms a refused publish (say, to a missing exchange) only shows as the
        // broker closing the channel: one harmless round trip brings that news back.
        if let Err(e) = channel.basic_qos(0, BasicQosOptions::default()).await {
            cut_off = Some(e);
        }
    }
    if let Some(e) = cut_off {
        let err = session.reason(e).await;
        drop(progress);
        if tally.sent > 1 {
            eprintln!("{}", tally.summary(confirm, started.elapsed()));
        }
        return Err(err);
    }
    drop(channel);
    session.close().await?;
    drop(progress);

    if tally.sent > 1 || stopped {
        eprintln!("{}", tally.summary(confirm, started.elapsed()));
    }
    if stopped {
        return Err(
            Failure::new(format!("interrupted after {} messages", tally.sent))
                .with_exit_code(130)
                .into(),
        );
    }
    if tally.failed() > 0 {
        return Err(Failure::new(tally.failure())
            .with_exit_code(EXIT_REFUSED)
            .into());
    }
    Ok(())
}

fn properties(args: &PublishArgs) -> anyhow::Result<BasicProperties> {
    let mut p = BasicProperties::default();
    if let Some(v) = &args.content_type {
        p = p.with_content_type(short(v, "--content-type")?);
    }
    let mut headers = table::to_table(&args.headers);
    if let (true, Some(id)) = (args.dedup, &args.message_id) {
        headers.insert(
            "x-deduplication-header".into(),
            lapin::types::AMQPValue::LongString(id.as_str().into()),
        );
    }
    if !headers.inner().is_empty() {
        p = p.with_headers(headers);
    }
    if args.persistent {
        p = p.with_delivery_mode(2);
    }
    if let Some(ms) = args.expiration {
        p = p.with_expiration(ShortString::from(ms.to_string()));
    }
    if let Some(v) = &args.message_id {
        p = p.with_message_id(short(v, "--message-id")?);
    }
    if let Some(v) = &args.correlation_id {
        p = p.with_correlation_id(short(v, "--correlation-id")?);
    }
    if let Some(v) = &args.reply_to {
        p = p.with_reply_to(short(v, "--reply-to")?);
    }
    if let Some(v) = args.priority {
        p = p.with_priority(v);
    }
    Ok(p)
}

/// Where the bodies come from.
enum Source {
    /// Bodies known up front (the argument, a file, all of stdin, or lines to repeat), sent in
    /// turn until `total` have gone.
    Repeat {
        /// The distinct bodies, sent in order, round and round.
        bodies: Vec<Vec<u8>>,
        /// How many messages to send in all.
        total: u64,
        /// How many have been handed out.
        next: u64,
    },
    /// Lines read as they arrive, so `tail -f log | warren publish ... --lines` streams.
    Lines(Box<dyn AsyncBufRead + Unpin + Send>),
}

impl Source {
    async fn open(args: &PublishArgs) -> anyhow::Result<Source> {
        let mut reader: Box<dyn AsyncBufRead + Unpin + Send> = match (&args.body, &args.file) {
            (Some(body), _) => {
                return Ok(Source::Repeat {
                    bodies: vec![body.clone().into_bytes()],
                    total: args.count,
                    next: 0,
                })
            }
            (None, Some(path)) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Box::new(BufReader::new(file))
            }
            (None, None) => {
                if std::io::stdin().is_terminal() {
                    eprintln!("reading the message body from stdin; end it with Ctrl-D");
                }
                Box::new(BufReader::new(tokio::io::stdin()))
            }
        };
        if args.lines && args.count == 1 {
            return Ok(Source::Lines(reader));
        }
        let bodies = if args.lines {
            let mut bodies = Vec::new();
            while let Some(line) = read_line(&mut reader).await? {
                bodies.push(line);
            }
            bodies
        } else {
            let mut body = Vec::new();
            reader
                .read_to_end(&mut body)
                .await
                .context("reading the body")?;
            vec![body]
        };
        let total = if bodies.is_empty() {
            0
        } else {
            args.count.saturating_mul(bodies.len() as u64)
        };
        Ok(Source::Repeat {
            bodies,
            total,
            next: 0,
        })
    }

    /// How many messages will be sent, when known.
    fn total(&self) -> Option<u64> {
        match self {
            Source::Repeat { total, .. } => Some(*total),
            Source::Lines(_) => None,
        }
    }

    /// The next body, or `None` when done. Cancel safe for `Repeat`; for `Lines`, a line
    /// half-read when cancelled is lost, which only happens on Ctrl-C.
    async fn next(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        match self {
            Source::Repeat {
                bodies,
                total,
                next,
            } => {
                if *next >= *total {
                    return Ok(None);
                }
                let body = bodies[(*next % bodies.len() as u64) as usize].clone();
                *next += 1;
                Ok(Some(body))
            }
            Source::Lines(reader) => read_line(reader).await,
        }
    }
}

/// One line without its `\n` (or `\r\n`); `None` at the end of input.
async fn read_line(
    reader: &mut (dyn AsyncBufRead + Unpin + Send),
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = reader
        .read_until(b'\n', &mut line)
        .await
        .context("reading input")?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(Some(line))
}

/// Spaces messages evenly at a fixed rate, measured from the first one.
struct Pacer {
    /// When the first message went.
    start: Instant,
    /// Messages per second.
    rate: f64,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        Pacer {
            start: Instant::now(),
            rate,
        }
    }

    /// Waits until message number `n` (from 0) is due.
    async fn wait(&self, n: u64) {
        let due = self.start + Duration::from_secs_f64(n as f64 / self.rate);
        tokio::time::sleep_until(due.into()).await;
    }
}

/// What became of the messages sent.
#[derive(Default)]
struct Tally {
    /// Messages handed to the broker.
    sent: u64,
    /// Confirmed with basic.ack (returned ones included, as the broker acks those too).
    confirmed: u64,
    /// Refused with basic.nack.
    nacked: u64,
    /// Sent back with basic.return (mandatory and unroutable).
    returned: u64,
    /// Reply code and text of the first return, to show why.
    first_return: Option<(u16, String)>,
}

impl Tally {
    fn record(&mut self, c: Confirmation) {
        let returned = match c {
            Confirmation::Ack(m) => {
                self.confirmed += 1;
                m
            }
            Confirmation::Nack(m) => {
                self.nacked += 1;
                m
            }
            Confirmation::NotRequested => None,
        };
        if let Some(m) = returned {
            self.returned += 1;
            self.first_return
                .get_or_insert_with(|| (m.reply_code, m.reply_text.to_string()));
        }
    }

    /// Records the confirms that have arrived; with `wait`, waits for at least one first.
    async fn collect(
        &mut self,
        pending: &mut FuturesUnordered<lapin::PublisherConfirm>,
        wait: bool,
    ) -> Result<(), lapin::Error> {
        if wait {
            if let Some(done) = pending.next().await {
                self.record(done?);
            }
        }
        while let Some(Some(done)) = pending.next().now_or_never() {
            self.record(done?);
        }
        Ok(())
    }

    fn failed(&self) -> u64 {
        self.nacked + self.returned
    }

    fn summary(&self, confirm: bool, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        };
        if confirm {
            format!(
                "sent {}, confirmed {}, nacked {}, returned {} in {secs:.2}s ({rate:.0} msg/s)",
                self.sent, self.confirmed, self.nacked, self.returned
            )
        } else {
            format!("sent {} in {secs:.2}s ({rate:.0} msg/s)", self.sent)
        }
    }

    fn failure(&self) -> String {
        let why = || {
            let (code, text) = self.first_return.clone().unwrap_or((312, String::new()));
            client::reply_message(code, &text)
        };
        match (self.nacked, self.returned) {
            (n, 0) => format!("{n} of {} messages nacked by the broker", self.sent),
            (0, r) => format!("{r} of {} messages returned: {}", self.sent, why()),
            (n, r) => format!(
                "{} of {} messages failed: {n} nacked, {r} returned: {}",
                n + r,
                self.sent,
                why()
            ),
        }
    }
}

/// A progress line on stderr, only when it is a terminal.
struct Progress {
    /// Whether to draw at all.
    enabled: bool,
    /// The number of messages, when known, for the bar.
    total: Option<u64>,
    /// Whether confirm counts mean anything.
    confirm: bool,
    /// When publishing began, for the rate.
    started: Instant,
    /// When the line was last drawn.
    drawn: Instant,
}

impl Progress {
    fn new(total: Option<u64>, confirm: bool) -> Progress {
        let now = Instant::now();
        Progress {
            enabled: std::io::stderr().is_terminal() && total.is_none_or(|t| t > 1),
            total,
            confirm,
            started: now,
            drawn: now,
        }
    }

    fn update(&mut self, t: &Tally) {
        if !self.enabled || self.drawn.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.drawn = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let mut line = match self.total {
            Some(total) => {
                const WIDTH: u64 = 30;
                let done = (t.sent * WIDTH).checked_div(total).unwrap_or(WIDTH);
                format!(
                    "[{}{}] {}/{total}",
                    "#".repeat(done as usize),
                    "-".repeat((WIDTH - done) as usize),
                    t.sent
                )
            }
            None => format!("sent {}", t.sent),
        };
        if self.confirm {
            line += &format!(
                ", confirmed {}, nacked {}, returned {}",
                t.confirmed, t.nacked, t.returned
            );
        }
        line += &format!(", {:.0} msg/s", t.sent as f64 / secs);
        eprint!("\r\x1b[2K{line}");
    }
}

impl Drop for Progress {
    /// Clears the line, so a summary or an error starts on a clean one.
    fn drop(&mut self) {
        if self.enabled {
            eprint!("\r\x1b[2K");
        }
    }
}
