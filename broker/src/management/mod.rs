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

pub mod access;
pub mod api;
pub mod client;
pub mod consumers;
pub mod dashboard;
pub mod definitions;
pub mod list;
pub mod metrics;
pub mod ops;
pub mod policies;
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

use crate::access::Access;
use crate::registry::Registry;

/// What the management servers know of the broker.
pub struct Management {
    pub(crate) registry: Arc<Registry>,
    /// Users, permissions, vhosts.
    pub(crate) access: Arc<Access>,
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
    /// Memory and disk alarms (health checks, metrics).
    pub(crate) alarms: Arc<crate::alarms::Alarms>,
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

/// What the management servers are given of the broker.
pub struct Parts {
    pub registry: Arc<Registry>,
    pub access: Arc<Access>,
    /// The AMQP listener (the API's own connections go there).
    pub amqp: SocketAddr,
    pub disk: Option<Arc<crate::store::disk::Disk>>,
    /// TLS, for HTTPS when its `management` setting asks for it.
    pub tls: Option<Arc<crate::tls::Tls>>,
    pub alarms: Arc<crate::alarms::Alarms>,
    /// The broker's tasks: it waits for these servers (and their hold on the store) to end
    /// before it stops.
    pub tracker: tokio_util::task::TaskTracker,
    /// More routes for the HTTP server (see [`crate::server::HttpRoutes`]).
    pub routes: Option<axum::Router>,
}

/// Starts the servers on `listeners` (and the rate sampler), until `shutdown`.
pub fn spawn(listeners: Listeners, parts: Parts, shutdown: CancellationToken) {
    if listeners.http.is_none() && listeners.prometheus.is_none() {
        return;
    }
    let Parts {
        registry,
        access,
        amqp,
        disk,
        tls,
        alarms,
        tracker,
        routes,
    } = parts;
    let m = Arc::new(Management {
        registry,
        access,
        node: node_name(),
        amqp,
        http: listeners.http_addr(),
        prometheus: listeners.prometheus_addr(),
        rates: rates::Rates::default(),
        started: Instant::now(),
        disk,
        alarms,
    });
    tracker.spawn(rates::run(Arc::clone(&m), shutdown.clone()));
    if let Some(l) = listeners.http {
        if let Some(a) = m.http {
            tracing::info!(addr = %a, "management API listening");
        }
        let mut app = api::router(Arc::clone(&m)).merge(dashboard::router());
        if let Some(routes) = routes {
            app = app.merge(routes);
        }
        match tls.filter(|t| t.for_management()) {
            Some(tls) => {
                let local = l.local_addr();
                let accepted = tls.accept_loop(
                    l,
                    std::time::Duration::from_secs(10),
                    1024,
                    shutdown.clone(),
                );
                tracker.spawn(serve(
                    TlsListener { accepted, local },
                    app,
                    shutdown.clone(),
                ));
            }
            None => {
                tracker.spawn(serve(l, app, shutdown.clone()));
            }
        }
    }
    if let Some(l) = listeners.prometheus {
        if let Some(a) = m.prometheus {
            tracing::info!(addr = %a, "Prometheus metrics listening");
        }
        let app = metrics::router(Arc::clone(&m));
        tracker.spawn(serve(l, app, shutdown));
    }
}

/// The client's address, as the authentication middleware sees it (over TCP or TLS).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(s: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        Peer(*s.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(s: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Peer(*s.remote_addr())
    }
}

/// HTTPS: the connections whose TLS handshake finished (see [`crate::tls::Tls::accept_loop`]).
pub struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<crate::tls::Accepted>,
    local: std::io::Result<SocketAddr>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.accepted.recv().await {
            Some(a) => (a.stream, a.peer),
            // The accept loop stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

async fn serve<L>(listener: L, app: axum::Router, shutdown: CancellationToken)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    Peer: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
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
    /// A reason RabbitMQ gives as a JSON term rather than a string.
    reason_value: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            reason: reason.into(),
            reason_value: None,
        }
    }

    /// 400 with a reason that is a JSON term (`["no_such_user","x"]`), as RabbitMQ gives some.
    pub fn bad_request_value(reason: serde_json::Value) -> Self {
        match reason {
            serde_json::Value::String(s) => ApiError::bad_request(s),
            other => ApiError {
                reason: other.to_string(),
                reason_value: Some(other),
                ..ApiError::bad_request("")
            },
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
            axum::Json(json!({
                "error": self.error,
                "reason": self.reason_value.unwrap_or(serde_json::Value::String(self.reason)),
            })),
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
    /// Its tags when it logged in.
    pub tags: Vec<String>,
}

impl User {
    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// An administrator (401 "Not administrator user" otherwise, as RabbitMQ).
    pub fn admin(&self) -> Result<(), ApiError> {
        if self.has("administrator") {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "not_authorised",
                "Not administrator user",
            ))
        }
    }

    /// Sees every vhost (administrator or monitoring); others see the vhosts they have
    /// permissions in.
    pub fn sees_all(&self) -> bool {
        self.has("administrator") || self.has("monitoring")
    }
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
/// `guest` (or any loopback-only user) only from a loopback address. Tags decide what a user
/// may use (401 `Not management user`), and a user without `administrator` or `monitoring`
/// sees only the vhosts it has permissions in.
pub(crate) async fn authenticate(
    State(m): State<Arc<Management>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
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
    let record = match m.access.login(name, password, peer.ip()) {
        Ok(r) => r,
        Err(why) => {
            // Named, never with the password, as the AMQP side logs a refused login.
            tracing::warn!(%peer, "HTTP access denied: user '{name}' - {why}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            return challenge(true);
        }
    };
    let user = User {
        name: name.to_owned(),
        password: password.to_owned(),
        tags: record.tags,
    };
    if !["administrator", "monitoring", "policymaker", "management"]
        .iter()
        .any(|t| user.has(t))
    {
        tracing::warn!(%peer, "HTTP access denied: user '{name}' - Not management user");
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "not_authorised",
            "Not management user",
        )
        .into_response();
    }
    if !user.sees_all() {
        if let Some(v) = vhost_in_path(req.uri().path()) {
            if m.access.permission(&v, name).is_none() {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "not_authorised",
                    "User not authorised to access virtual host",
                )
                .into_response();
            }
        }
    }
    let sees_all = user.sees_all();
    req.extensions_mut().insert(user);
    let response = next.run(req).await;
    if sees_all {
        return response;
    }
    only_own_vhosts(&m, name, response).await
}

/// The vhost a vhost-scoped path names (`/api/queues/{vhost}/...` and the like).
fn vhost_in_path(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches('/').split('/');
    let (Some("api"), Some(kind), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let scoped = [
        "queues",
        "exchanges",
        "bindings",
        "consumers",
        "definitions",
        "aliveness-test",
        "policies",
        "operator-policies",
    ];
    if !scoped.contains(&kind) || v.is_empty() {
        return None;
    }
    percent_decode(v)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// For a user who does not see every vhost: a list answer keeps the objects of the vhosts
/// it has permissions in (RabbitMQ filters its lists the same way).
async fn only_own_vhosts(m: &Management, user: &str, response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json || !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let allowed = |item: &serde_json::Value| {
        let vhost = item.get("vhost").or_else(|| {
            item.get("name")
                .filter(|_| item.get("cluster_state").is_some())
        });
        match vhost.and_then(|v| v.as_str()) {
            Some(vh) => m.access.permission(vh, user).is_some(),
            None => true,
        }
    };
    match &mut v {
        serde_json::Value::Array(items) => items.retain(allowed),
        serde_json::Value::Object(o) => {
            if let Some(serde_json::Value::Array(items)) = o.get_mut("items") {
                items.retain(allowed);
                let n = items.len();
                o.insert("item_count".into(), n.into());
            }
        }
        _ => {}
    }
    let mut r = axum::Json(v).into_response();
    *r.status_mut() = parts.status;
    r
}
