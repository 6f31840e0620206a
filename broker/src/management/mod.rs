//! The management HTTP API (RabbitMQ's, on 15672) and the Prometheus endpoint (RabbitMQ's
//! names, on 15692). This module only observes and asks: it reads the [`Registry`] (vhosts,
//! connections, channels and their counters) and the queues' published counters, and changes
//! things through the vhost's public operations, as a client would; it never reaches into a
//! queue.
//!
//! - [`api`]: the `/api` routes and RabbitMQ's JSON shapes;
//! - [`list`]: paging, sorting, filtering and `columns` of list endpoints;
//! - [`rates`]: counters sampled every 5 s into `*_details.rate`, as RabbitMQ does;
//! - [`metrics`]: `/metrics` in Prometheus' text format.

pub mod api;
pub mod client;
pub mod consumers;
pub mod dashboard;
pub mod definitions;
pub mod list;
pub mod metrics;
pub mod ops;
pub mod rates;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::password_ok;
use crate::config::UserConfig;
use crate::registry::Registry;

/// What the management servers know of the broker.
pub struct Management {
    pub(crate) registry: Arc<Registry>,
    pub(crate) users: Vec<UserConfig>,
    /// The node's name, as RabbitMQ's `rabbit@host`: `warren@host`.
    pub(crate) node: String,
    pub(crate) amqp: SocketAddr,
    pub(crate) http: Option<SocketAddr>,
    pub(crate) prometheus: Option<SocketAddr>,
    pub(crate) rates: rates::Rates,
    pub(crate) started: Instant,
    /// The store (None: an in-memory broker): its file system's free space, flush times and
    /// segment bytes are metrics.
    pub(crate) disk: Option<Arc<crate::store::disk::Disk>>,
}

/// The management listeners, bound before the broker announces itself.
#[derive(Default)]
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub prometheus: Option<TcpListener>,
}

impl Listeners {
    /// Binds what `http` and `prometheus` ask for (None: that server is off).
    pub async fn bind(
        http: Option<SocketAddr>,
        prometheus: Option<SocketAddr>,
    ) -> std::io::Result<Listeners> {
        let bind = |a: Option<SocketAddr>| async move {
            match a {
                Some(a) => TcpListener::bind(a).await.map(Some),
                None => Ok(None),
            }
        };
        Ok(Listeners {
            http: bind(http).await?,
            prometheus: bind(prometheus).await?,
        })
    }

    /// The HTTP API's address, if it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The Prometheus endpoint's address, if it is on.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// The node name: `warren@` and the host name.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("warren@{host}")
}

/// Starts the servers on `listeners` (and the rate sampler), until `shutdown`.
pub fn spawn(
    listeners: Listeners,
    registry: Arc<Registry>,
    users: Vec<UserConfig>,
    amqp: SocketAddr,
    disk: Option<Arc<crate::store::disk::Disk>>,
    shutdown: CancellationToken,
) {
    if listeners.http.is_none() && listeners.prometheus.is_none() {
        return;
    }
    let m = Arc::new(Management {
        registry,
        users,
        node: node_name(),
        amqp,
        http: listeners.http_addr(),
        prometheus: listeners.prometheus_addr(),
        rates: rates::Rates::default(),
        started: Instant::now(),
        disk,
    });
    tokio::spawn(rates::run(Arc::clone(&m), shutdown.clone()));
    if let Some(l) = listeners.http {
        if let Some(a) = m.http {
            tracing::info!(addr = %a, "management API listening");
        }
        let app = api::router(Arc::clone(&m)).merge(dashboard::router());
        tokio::spawn(serve(l, app, shutdown.clone()));
    }
    if let Some(l) = listeners.prometheus {
        if let Some(a) = m.prometheus {
            tracing::info!(addr = %a, "Prometheus metrics listening");
        }
        let app = metrics::router(Arc::clone(&m));
        tokio::spawn(serve(l, app, shutdown));
    }
}

async fn serve(listener: TcpListener, app: axum::Router, shutdown: CancellationToken) {
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "management server failed");
    }
}

/// An error answered as RabbitMQ's management API does: `{"error": ..., "reason": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    reason: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            reason: reason.into(),
        }
    }

    /// 404 as RabbitMQ answers for an object or path that does not exist.
    pub fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "Object Not Found", "Not Found")
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Its reason, as the body carries it.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// 500 with a reason: the broker failed to do what was asked.
    pub fn internal(reason: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            reason,
        )
    }

    /// 401 as RabbitMQ answers an operation the user may not do.
    pub fn access_refused() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "not_authorised",
            "Access refused.",
        )
    }

    /// 400 for a field the request lacks, in RabbitMQ's words.
    pub fn missing(key: &str) -> Self {
        ApiError::bad_request(format!("[{{key_missing,{key}}}]"))
    }

    /// 404 for a request naming a vhost that does not exist.
    pub fn no_vhost() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "vhost_not_found")
    }

    /// 400 with a reason.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({"error": self.error, "reason": self.reason})),
        )
            .into_response()
    }
}

/// The user a request authenticated as (its `Authorization: Basic` credentials). The
/// password is kept for the request's own AMQP connection ([`client`]), never logged.
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// HTTP Basic authentication against the broker's users, as RabbitMQ's management API:
/// 401 with `WWW-Authenticate` (and an empty body when no credentials came at all).
/// `guest` (or any loopback-only user) only from a loopback address. Until users have tags
/// (the multi-tenancy issue), every user may use the API as an administrator.
pub(crate) async fn authenticate(
    State(m): State<Arc<Management>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    // A script's request (the dashboard's) gets no challenge: a browser would answer one
    // with its own login dialog over the page's.
    let from_script = req
        .headers()
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    let challenge = |body: bool| {
        let mut r = if body {
            ApiError::new(StatusCode::UNAUTHORIZED, "not_authorized", "Login failed")
                .into_response()
        } else {
            StatusCode::UNAUTHORIZED.into_response()
        };
        if !from_script {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        r
    };
    let Some(auth) = req.headers().get(header::AUTHORIZATION) else {
        return challenge(false);
    };
    let credentials = auth
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| crate::protocol::json::from_base64(b.trim()))
        .and_then(|b| String::from_utf8(b).ok());
    let Some((name, password)) = credentials.as_deref().and_then(|c| c.split_once(':')) else {
        return challenge(true);
    };
    if !password_ok(&m.users, name, password, peer.ip()) {
        // Named, never with the password, as the AMQP side logs a refused login.
        tracing::info!(user = name, %peer, "management API login refused");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        return challenge(true);
    }
    req.extensions_mut().insert(User {
        name: name.to_owned(),
        password: password.to_owned(),
    });
    next.run(req).await
}
