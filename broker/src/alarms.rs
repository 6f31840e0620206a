//! Resource alarms, as RabbitMQ's: a memory high watermark on the process's resident memory
//! (relative to the machine's memory, 0.6 by default, or absolute) and a free-disk limit on
//! the data directory's file system (50 MB by default). While either is in effect, every
//! connection that publishes stops being read (and is told `connection.blocked` if it asked
//! for that capability) until both clear; connections that only consume go on, so queues
//! drain. The monitor samples memory every 100 ms (a publisher at full speed adds a few
//! hundred MB a second) and disk space every second.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Which alarms are in effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlarmState {
    pub memory: bool,
    pub disk: bool,
}

impl AlarmState {
    /// Whether any alarm is in effect.
    pub fn any(self) -> bool {
        self.memory || self.disk
    }

    /// The `connection.blocked` reason, RabbitMQ's words.
    pub fn reason(self) -> String {
        match (self.memory, self.disk) {
            (true, true) => "low on memory & low on disk".into(),
            (true, false) => "low on memory".into(),
            (false, true) => "low on disk".into(),
            (false, false) => String::new(),
        }
    }
}

/// The broker's alarms and their limits.
pub struct Alarms {
    /// Set while any alarm is in effect (the connections' one-load check).
    active: AtomicBool,
    state: watch::Sender<AlarmState>,
    /// Resident memory above this raises the memory alarm (0: no limit).
    memory_limit: AtomicU64,
    /// Free space below this raises the disk alarm.
    disk_free_limit: AtomicU64,
    /// The file system watched (none: an in-memory broker has no disk alarm).
    data_dir: Option<PathBuf>,
}

/// Resident memory of this process, in bytes (Linux).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The machine's memory, in bytes (Linux: MemTotal, or a cgroup's limit if lower).
pub fn total_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let total = kb * 1024;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// Free space for an unprivileged writer on the file system of `dir`, in bytes.
pub fn disk_free_bytes(dir: &std::path::Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

impl Alarms {
    /// Alarms with these limits: `memory_limit` bytes of resident memory (0: none),
    /// `disk_free_limit` bytes free on `data_dir`'s file system.
    pub fn new(memory_limit: u64, disk_free_limit: u64, data_dir: Option<PathBuf>) -> Arc<Alarms> {
        Arc::new(Alarms {
            active: AtomicBool::new(false),
            state: watch::channel(AlarmState::default()).0,
            memory_limit: AtomicU64::new(memory_limit),
            disk_free_limit: AtomicU64::new(disk_free_limit),
            data_dir,
        })
    }

    /// Whether any alarm is in effect (one atomic load).
    pub fn any(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Which alarms are in effect.
    pub fn state(&self) -> AlarmState {
        *self.state.borrow()
    }

    /// Changes of the state, for a connection to wait on.
    pub fn subscribe(&self) -> watch::Receiver<AlarmState> {
        self.state.subscribe()
    }

    /// The memory watermark in bytes (0: none).
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit.load(Ordering::Relaxed)
    }

    /// The free-disk limit in bytes.
    pub fn disk_free_limit(&self) -> u64 {
        self.disk_free_limit.load(Ordering::Relaxed)
    }

    /// Sets the memory watermark (RabbitMQ's `rabbitmqctl set_vm_memory_high_watermark`),
    /// checked at once.
    pub fn set_memory_limit(&self, bytes: u64) {
        self.memory_limit.store(bytes, Ordering::Relaxed);
        self.check_memory();
    }

    /// Sets the free-disk limit (`rabbitmqctl set_disk_free_limit`), checked at once.
    pub fn set_disk_free_limit(&self, bytes: u64) {
        self.disk_free_limit.store(bytes, Ordering::Relaxed);
        self.check_disk();
    }

    fn update(&self, f: impl FnOnce(&mut AlarmState)) {
        self.state.send_if_modified(|s| {
            let before = *s;
            f(s);
            if *s == before {
                return false;
            }
            for (name, was, is) in [
                ("memory", before.memory, s.memory),
                ("disk", before.disk, s.disk),
            ] {
                if !was && is {
                    tracing::warn!(
                        "{name} resource limit alarm set; publishers will be blocked until this alarm clears"
                    );
                } else if was && !is {
                    tracing::info!("{name} resource limit alarm cleared");
                }
            }
            self.active.store(s.any(), Ordering::Release);
            true
        });
    }

    fn check_memory(&self) {
        let limit = self.memory_limit();
        let over = limit > 0 && resident_bytes().is_some_and(|rss| rss > limit);
        self.update(|s| s.memory = over);
    }

    fn check_disk(&self) {
        let Some(dir) = &self.data_dir else {
            return;
        };
        let limit = self.disk_free_limit();
        let low = disk_free_bytes(dir).is_some_and(|free| free < limit);
        self.update(|s| s.disk = low);
    }

    /// Samples memory and disk until `shutdown`.
    pub fn spawn_monitor(self: &Arc<Self>, shutdown: CancellationToken) {
        let alarms = Arc::clone(self);
        alarms.check_memory();
        alarms.check_disk();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                alarms.check_memory();
                n += 1;
                if n.is_multiple_of(10) {
                    alarms.check_disk();
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_raise_and_clear_alarms() {
        let dir = std::env::temp_dir();
        let a = Alarms::new(0, 0, Some(dir));
        a.check_memory();
        a.check_disk();
        assert!(!a.any());
        a.set_disk_free_limit(u64::MAX);
        assert_eq!(
            a.state(),
            AlarmState {
                memory: false,
                disk: true
            }
        );
        assert!(a.any());
        a.set_memory_limit(1);
        assert_eq!(a.state().reason(), "low on memory & low on disk");
        a.set_disk_free_limit(0);
        a.set_memory_limit(0);
        assert!(!a.any());
        assert!(total_memory_bytes().unwrap() > 0);
    }
}
