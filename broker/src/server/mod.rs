//! The AMQP listener: accepts connections (up to a limit), runs one task per connection, and
//! shuts down gracefully: every client gets connection.close 320 and the broker waits for the
//! connection tasks to finish.

mod basic;
mod channel;
mod confirm;
mod connection;
mod exchange;
mod queue;
mod tx;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::config::{Config, UserConfig};
use crate::store::disk::{Disk, OpenError};
use crate::store::faults::Faults;
use crate::vhost::Vhost;

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding the listener failed.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// The data directory could not be used.
    #[error(transparent)]
    Store(#[from] OpenError),
}

/// What every connection shares.
pub(crate) struct BrokerContext {
    /// Settings.
    pub config: Config,
    /// Users that may log in.
    pub users: Vec<UserConfig>,
    /// The one virtual host, "/".
    pub vhost: Arc<Vhost>,
    /// Connection ids, for exclusive queues and consumers.
    pub next_conn_id: AtomicU64,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
}

/// A running broker embedded in this process.
pub struct Broker {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// The store's fault injection (for tests), when the broker has a store.
    faults: Option<Arc<Faults>>,
}

impl Broker {
    /// Opens the store (if `config.persistence`), binds `config.bind` and starts serving in
    /// the background.
    pub async fn start(config: Config) -> Result<Broker, StartError> {
        let vhost = open_vhost(&config)?;
        let faults = vhost.disk().map(|d| Arc::clone(d.faults()));
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task =
            tokio::spawn(
                async move { serve(listener, config, vhost, token.cancelled_owned()).await },
            );
        Ok(Broker {
            addr,
            shutdown,
            task,
            faults,
        })
    }

    /// Failures a test can inject into the store's file operations (failing or held segment
    /// writes and syncs); `None` without a store.
    pub fn faults(&self) -> Option<&Arc<Faults>> {
        self.faults.as_ref()
    }

    /// The address the broker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// An AMQP URL for the default user and vhost.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Closes every connection (320 CONNECTION_FORCED) and waits for the broker to stop.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Opens the data directory and rebuilds what it holds (or an empty in-memory vhost).
fn open_vhost(config: &Config) -> Result<Arc<Vhost>, OpenError> {
    if !config.persistence {
        let vhost = Vhost::new("/", None);
        vhost.set_max_queues_per_connection(config.max_queues_per_connection);
        return Ok(vhost);
    }
    let started = std::time::Instant::now();
    let (disk, recovered) = Disk::open(&config.data_dir, config.store_cache_mb * 1024 * 1024)?;
    let vhost = Vhost::new("/", Some(disk));
    vhost.set_max_queues_per_connection(config.max_queues_per_connection);
    vhost.recover(recovered);
    info!(data_dir = %config.data_dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, "store open");
    Ok(vhost)
}

/// Opens the store, then serves AMQP on `listener` until `shutdown` completes, then closes
/// every connection, waits for them and marks the store cleanly closed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    Prepared::open(config)?.serve(listener, shutdown).await;
    Ok(())
}

/// A broker whose store is open and recovered, ready to serve: lets a caller report start-up
/// failures (a locked or foreign data directory) before it announces the listener.
pub struct Prepared {
    config: Config,
    vhost: Arc<Vhost>,
}

impl Prepared {
    /// Opens the data directory (if `config.persistence`) and rebuilds what it holds.
    pub fn open(config: Config) -> Result<Prepared, StartError> {
        let vhost = open_vhost(&config)?;
        Ok(Prepared { config, vhost })
    }

    /// Serves AMQP on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        serve(listener, self.config, self.vhost, shutdown).await;
    }
}

async fn serve(
    listener: TcpListener,
    config: Config,
    vhost: Arc<Vhost>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let token = CancellationToken::new();
    let ctx = Arc::new(BrokerContext {
        users: config.effective_users(),
        vhost,
        next_conn_id: AtomicU64::new(1),
        shutdown: token.clone(),
        config,
    });
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections.max(1)));
    let tracker = TaskTracker::new();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "listening for AMQP 0-9-1");
    }
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let id = ctx.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("conn", id, %peer, user = tracing::field::Empty, vhost = tracing::field::Empty);
        let ctx = ctx.clone();
        tracker.spawn(
            async move {
                connection::serve(ctx, id, stream, peer).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    drop(listener);
    token.cancel();
    tracker.close();
    tracker.wait().await;
    if let Some(disk) = ctx.vhost.disk() {
        ctx.vhost.snapshot().await;
        disk.close_cleanly();
    }
    info!("broker stopped");
}
