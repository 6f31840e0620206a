//! Message rates, as RabbitMQ's management API reports them (`*_details: {"rate": ...}`):
//! every 5 s the counters are sampled, and a rate is the change between the last two samples
//! per second. Sampling reads counters the hot path keeps anyway, so the API costs
//! publishing and delivery nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Management;
use crate::queue::counters::QueueCounters;
use crate::registry::ChannelCounts;

/// RabbitMQ's `collect_statistics_interval`.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// What one sample read.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub at: Option<Instant>,
    /// The sampling round, from 1. Each queue keeps its own last two readings, tagged with the
    /// round ([`Readings`](crate::queue::counters::Readings)).
    pub round: u64,
    /// Broker-wide message counters (every channel, open or closed).
    pub messages: ChannelCounts,
    /// Ready and unacked messages in all queues.
    pub ready: u64,
    pub unacked: u64,
    /// Per connection id: bytes received, bytes sent.
    pub connections: HashMap<u64, [u64; 2]>,
}

/// The last two samples.
#[derive(Default)]
pub struct Rates {
    samples: Mutex<(Sample, Sample)>,
}

impl Rates {
    /// Per second, between the last two samples, of what `f` reads from a sample.
    pub fn rate(&self, f: impl Fn(&Sample) -> Option<u64>) -> f64 {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let (prev, last) = (&s.0, &s.1);
        let (Some(t0), Some(t1)) = (prev.at, last.at) else {
            return 0.0;
        };
        let dt = t1.duration_since(t0).as_secs_f64();
        match (f(prev), f(last)) {
            (Some(a), Some(b)) if dt > 0.0 && b >= a => (b - a) as f64 / dt,
            _ => 0.0,
        }
    }

    /// The per-second rate of reading `i` of a queue's counters (published, delivered, acked,
    /// redelivered, ready, unacked), between the last two rounds, with `f` combining them.
    pub fn queue_rate(&self, q: &QueueCounters, f: impl Fn([u64; 6]) -> u64) -> f64 {
        self.rate(|s| q.readings.get(s.round).map(&f))
    }

    fn push(&self, sample: Sample) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = std::mem::replace(&mut s.1, sample);
        // Connections closed since the round before are of no use to a rate any more.
        let (prev, last) = &mut *s;
        prev.connections
            .retain(|id, _| last.connections.contains_key(id));
    }

    /// The number the next round gets.
    fn next_round(&self) -> u64 {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.1.round + 1
    }
}

/// Reads every counter once.
pub fn sample(m: &Management) -> Sample {
    let mut s = Sample {
        at: Some(Instant::now()),
        round: m.rates.next_round(),
        messages: m.registry.message_totals(),
        ..Sample::default()
    };
    for vhost in m.registry.vhosts() {
        for q in vhost.queues() {
            let c = q.counters().read();
            s.ready += c.ready;
            s.unacked += c.unacked;
            q.counters().readings.record(
                s.round,
                [
                    c.published,
                    c.delivered,
                    c.acked,
                    c.redelivered,
                    c.ready,
                    c.unacked,
                ],
            );
        }
    }
    for c in m.registry.connections() {
        s.connections.insert(
            c.id,
            [
                c.counters
                    .recv_oct
                    .load(std::sync::atomic::Ordering::Relaxed),
                c.counters
                    .send_oct
                    .load(std::sync::atomic::Ordering::Relaxed),
            ],
        );
    }
    s
}

/// Samples every [`SAMPLE_EVERY`] until `shutdown`.
pub async fn run(m: Arc<Management>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        m.rates.push(sample(&m));
    }
}
