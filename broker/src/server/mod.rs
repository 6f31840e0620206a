//! The AMQP listener: accepts connections (up to a limit), runs one task per connection, and
//! shuts down gracefully: every client gets connection.close 320 and the broker waits for the
//! connection tasks to finish.

mod assembly;
mod basic;
mod channel;
mod confirm;
mod connection;
mod exchange;
mod handshake;
mod queue;
mod transport;
mod tx;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::access::Access;
use crate::config::Config;
use crate::management;
use crate::registry::Registry;
use crate::store::disk::{Disk, OpenError};
use crate::store::faults::Faults;
use crate::tls::Tls;
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
    /// The users and permissions in the store could not be read or seeded.
    #[error("cannot load users and permissions: {0}")]
    Access(String),
    /// The TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// What every connection shares.
pub(crate) struct BrokerContext {
    /// Settings.
    pub config: Config,
    /// Users, permissions and vhost lifecycle.
    pub access: Arc<Access>,
    /// Virtual hosts, connections and channels.
    pub registry: Arc<Registry>,
    /// The durable store, if any (shared by every vhost).
    pub disk: Option<Arc<Disk>>,
    /// Connection ids, for exclusive queues and consumers.
    pub next_conn_id: AtomicU64,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown waits for them.
    pub tracker: TaskTracker,
    /// TLS settings, when configured (reloaded on request).
    pub tls: Option<Arc<Tls>>,
    /// Memory and disk alarms.
    pub alarms: Arc<crate::alarms::Alarms>,
}

impl BrokerContext {
    /// Starts the management servers on `mgmt`, if any, until the broker stops.
    fn spawn_management(
        &self,
        mgmt: management::Listeners,
        amqp: SocketAddr,
        routes: Option<axum::Router>,
    ) {
        management::spawn(
            mgmt,
            management::Parts {
                registry: Arc::clone(&self.registry),
                access: Arc::clone(&self.access),
                amqp,
                disk: self.disk.clone(),
                tls: self.tls.clone(),
                alarms: Arc::clone(&self.alarms),
                tracker: self.tracker.clone(),
                routes,
            },
            self.shutdown.clone(),
        );
    }

    fn new(
        config: Config,
        registry: Arc<Registry>,
        disk: Option<Arc<Disk>>,
        access: Arc<Access>,
        tls: Option<Arc<Tls>>,
    ) -> Arc<Self> {
        let shutdown = CancellationToken::new();
        let alarms = crate::alarms::Alarms::new(
            config.memory_limit(),
            config.disk_free_limit_bytes,
            disk.as_ref().map(|d| d.path().to_owned()),
        );
        alarms.spawn_monitor(shutdown.clone());
        Arc::new(BrokerContext {
            alarms,
            access,
            registry,
            disk,
            next_conn_id: AtomicU64::new(1),
            shutdown,
            tracker: TaskTracker::new(),
            tls,
            config,
        })
    }

    /// Serves `amqps` on `listener`: connections whose TLS handshake finished run as the
    /// plain ones do, with the client certificate's common name for SASL EXTERNAL.
    fn serve_tls(self: &Arc<Self>, listener: TcpListener) {
        let Some(tls) = self.tls.clone() else {
            return;
        };
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "listening for AMQP 0-9-1 over TLS");
        }
        let mut accepted = tls.accept_loop(
            listener,
            self.config.handshake_timeout(),
            1024,
            self.shutdown.clone(),
        );
        let ctx = self.clone();
        tokio::spawn(async move {
            while let Some(a) = accepted.recv().await {
                if ctx.shutdown.is_cancelled() {
                    break;
                }
                let local = a
                    .stream
                    .get_ref()
                    .0
                    .local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                ctx.spawn_connection(
                    transport::Stream {
                        inner: a.stream,
                        peer: a.peer,
                        local,
                        identity: a.common_name,
                    },
                    None,
                );
            }
        });
    }

    /// Runs a connection over `stream` in its own task.
    fn spawn_connection<T: transport::Transport>(
        self: &Arc<Self>,
        stream: T,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let (peer, _) = stream.addrs();
        let span = tracing::info_span!("conn", id, %peer, user = tracing::field::Empty, vhost = tracing::field::Empty);
        let ctx = self.clone();
        self.tracker.spawn(
            async move {
                connection::serve(ctx, id, stream).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// A running broker embedded in this process.
pub struct Broker {
    addr: SocketAddr,
    /// The `amqps` listener's address, when TLS is configured.
    amqps_addr: Option<SocketAddr>,
    /// The management API's and the Prometheus endpoint's addresses, when they are on.
    http_addr: Option<SocketAddr>,
    prometheus_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// The store's fault injection (for tests), when the broker has a store.
    faults: Option<Arc<Faults>>,
    ctx: Arc<BrokerContext>,
}

impl Broker {
    /// Opens the store (if `config.persistence`), binds `config.bind` and starts serving in
    /// the background.
    pub async fn start(config: Config) -> Result<Broker, StartError> {
        let tls = config.tls.clone().map(Tls::new).transpose()?;
        let (registry, disk, access) = open_store(&config)?;
        let faults = disk.as_ref().map(|d| Arc::clone(d.faults()));
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let amqps = match (&tls, config.amqps_bind) {
            (Some(_), Some(a)) => Some(TcpListener::bind(a).await?),
            _ => None,
        };
        let amqps_addr = amqps.as_ref().and_then(|l| l.local_addr().ok());
        let mgmt = management::Listeners::bind(config.http_bind, config.prometheus_bind).await?;
        let (http_addr, prometheus_addr) = (mgmt.http_addr(), mgmt.prometheus_addr());
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let ctx = BrokerContext::new(config, registry, disk, access, tls);
        ctx.spawn_management(mgmt, addr, None);
        if let Some(l) = amqps {
            ctx.serve_tls(l);
        }
        let serving = ctx.clone();
        let task =
            tokio::spawn(async move { serve(listener, serving, token.cancelled_owned()).await });
        Ok(Broker {
            addr,
            amqps_addr,
            http_addr,
            prometheus_addr,
            shutdown,
            task,
            faults,
            ctx,
        })
    }

    /// What exists in the broker: vhosts, connections, channels and their counters.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.ctx.registry
    }

    /// Users, permissions and vhosts.
    pub fn access(&self) -> &Arc<Access> {
        &self.ctx.access
    }

    /// The memory and disk alarms (their limits can be changed while it runs).
    pub fn alarms(&self) -> &Arc<crate::alarms::Alarms> {
        &self.ctx.alarms
    }

    /// Serves an AMQP connection over any byte stream (an in-process pipe, a stream the
    /// application secured itself), as if it had been accepted on the listener. `peer` and
    /// `local` are the addresses to report for it (logins from a non-loopback `peer` are
    /// treated as remote).
    pub fn serve_stream<S>(&self, stream: S, peer: SocketAddr, local: SocketAddr)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        self.ctx.spawn_connection(
            transport::Stream {
                inner: stream,
                peer,
                local,
                identity: None,
            },
            None,
        );
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

    /// The `amqps` listener's address, when TLS is configured.
    pub fn amqps_addr(&self) -> Option<SocketAddr> {
        self.amqps_addr
    }

    /// Reads the TLS certificate, key and CA files again (new connections use them).
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        match &self.ctx.tls {
            Some(t) => t.reload(),
            None => Ok(()),
        }
    }

    /// An AMQP URL for the default user and vhost.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// The management HTTP API's address, if `Config::http_bind` turned it on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The Prometheus endpoint's address, if `Config::prometheus_bind` turned it on.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus_addr
    }

    /// Closes every connection (320 CONNECTION_FORCED) and waits for the broker to stop,
    /// and for the last task holding its store to let go of it, so that a broker started
    /// right after on the same data directory finds it unlocked. (A queue's task answers the
    /// shutdown snapshot and ends a moment later; an immediate restart once found the store
    /// still locked in CI.)
    pub async fn shutdown(self) {
        let Broker {
            shutdown,
            task,
            ctx,
            faults,
            ..
        } = self;
        let store = ctx.disk.as_ref().map(Arc::downgrade);
        let lock = ctx.config.data_dir.join("warren.lock");
        shutdown.cancel();
        let _ = task.await;
        drop((ctx, faults));
        let Some(store) = store else { return };
        // Bounded: the embedding program may itself still hold a vhost or a queue (and so
        // the store); then it is the one to let go. Queue tasks end within milliseconds of
        // their snapshot, more on a loaded machine.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while store.strong_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        // The last holder is dropping it: its flush thread joins, then the lock goes.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            let free = std::fs::File::open(&lock)
                .map(|f| f.try_lock().is_ok())
                .unwrap_or(true);
            if free {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
}

/// Opens the data directory and rebuilds what it holds (or an empty in-memory broker): the
/// registry with the default vhost "/", and the store.
type Opened = (Arc<Registry>, Option<Arc<Disk>>, Arc<Access>);

fn open_store(config: &Config) -> Result<Opened, StartError> {
    let registry = Registry::new();
    if !config.persistence {
        // "/" comes with the users.
        let access = Access::open(config, registry.clone(), None).map_err(StartError::Access)?;
        return Ok((registry, None, access));
    }
    let started = std::time::Instant::now();
    let (disk, recovered) = Disk::open(&config.data_dir, config.store_cache_mb * 1024 * 1024)?;
    // A vhost exists because the store holds its record or definitions ("/" is made on
    // first start, see `Access::open`).
    for (name, defs) in recovered.vhosts {
        let vhost = Vhost::new(&name, Some(disk.clone()));
        vhost.set_max_queues_per_connection(config.max_queues_per_connection);
        vhost.recover(defs, recovered.unclean);
        registry.add_vhost(vhost);
    }
    // Every queue counted the segments its chunks are in: the others go.
    disk.sweep_segments();
    let access =
        Access::open(config, registry.clone(), Some(disk.clone())).map_err(StartError::Access)?;
    info!(data_dir = %config.data_dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, "store open");
    Ok((registry, Some(disk), access))
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
    registry: Arc<Registry>,
    disk: Option<Arc<Disk>>,
    access: Arc<Access>,
    tls: Option<Arc<Tls>>,
    amqps: Option<TcpListener>,
    mgmt: management::Listeners,
    routes: Option<HttpRoutes>,
}

/// More routes for the HTTP server, made once the AMQP listener's address is known (the
/// peer module's WebSocket signalling, which connects back to it).
pub type HttpRoutes = Box<dyn FnOnce(SocketAddr) -> axum::Router + Send>;

impl Prepared {
    /// Opens the data directory (if `config.persistence`) and rebuilds what it holds.
    pub fn open(config: Config) -> Result<Prepared, StartError> {
        let tls = config.tls.clone().map(Tls::new).transpose()?;
        let (registry, disk, access) = open_store(&config)?;
        Ok(Prepared {
            config,
            registry,
            disk,
            access,
            tls,
            amqps: None,
            mgmt: management::Listeners::default(),
            routes: None,
        })
    }

    /// The settings it will serve with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves the management API and the Prometheus endpoint on these listeners (bound by
    /// the caller with [`management::Listeners::bind`], so that a port in use is reported
    /// before anything else happens). Without this `serve` runs neither.
    pub fn with_management(mut self, listeners: management::Listeners) -> Self {
        self.mgmt = listeners;
        self
    }

    /// Serves these routes too on the management HTTP server (outside `/api` and its
    /// authentication: they authenticate on their own).
    pub fn with_http_routes(mut self, routes: HttpRoutes) -> Self {
        self.routes = Some(routes);
        self
    }

    /// What exists in the broker: vhosts, connections, channels and their counters.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Serves `amqps` on this listener (bound by the caller), when TLS is configured.
    pub fn with_amqps(mut self, listener: TcpListener) -> Self {
        self.amqps = Some(listener);
        self
    }

    /// The TLS settings, to reload them (SIGHUP), when TLS is configured.
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.clone()
    }

    /// Serves AMQP on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let ctx = BrokerContext::new(self.config, self.registry, self.disk, self.access, self.tls);
        if let Ok(addr) = listener.local_addr() {
            let routes = self.routes.map(|make| make(addr));
            ctx.spawn_management(self.mgmt, addr, routes);
        }
        if let Some(l) = self.amqps {
            ctx.serve_tls(l);
        }
        serve(listener, ctx, shutdown).await;
    }
}

async fn serve(
    listener: TcpListener,
    ctx: Arc<BrokerContext>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections.max(1)));
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
        let (stream, _) = tokio::select! {
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
        ctx.spawn_connection(stream, Some(permit));
    }
    drop(listener);
    ctx.shutdown.cancel();
    ctx.tracker.close();
    ctx.tracker.wait().await;
    if let Some(disk) = &ctx.disk {
        for vhost in ctx.registry.vhosts() {
            vhost.snapshot().await;
        }
        disk.close_cleanly();
    }
    info!("broker stopped");
}
