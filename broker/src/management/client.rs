//! The management API's own AMQP client. What the API changes in a virtual host (declare,
//! delete, bind, purge, publish, get) it changes over an AMQP connection to this broker, as
//! the user who made the request, as RabbitMQ's management plugin does over its direct
//! connection. So an HTTP request passes every check an AMQP client's would (arguments,
//! exclusivity, limits, and the permissions of the multi-tenancy work) and answers with the
//! same reply texts, and this module needs nothing from a queue's insides.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::uri::{AMQPAuthority, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind, Event};

use super::{ApiError, User};
use crate::error::ReplyCode;

/// How long the API waits for its own connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to this broker with one channel, for one request.
pub struct Session {
    connection: Connection,
    /// The channel every operation uses.
    pub channel: Channel,
    events: std::pin::Pin<Box<dyn futures_util::Stream<Item = Event> + Send>>,
}

/// Where this broker can be reached from inside: its AMQP address, loopback if it listens on
/// every address.
fn local(amqp: SocketAddr) -> SocketAddr {
    match amqp.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, amqp.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, amqp.port()).into(),
        _ => amqp,
    }
}

impl Session {
    /// Opens a connection to `vhost` as `user` and a channel on it.
    pub async fn open(amqp: SocketAddr, user: &User, vhost: &str) -> Result<Session, ApiError> {
        let at = local(amqp);
        let uri = AMQPUri {
            scheme: AMQPScheme::AMQP,
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: user.name.clone(),
                    password: user.password.clone(),
                },
                host: at.ip().to_string(),
                port: at.port(),
            },
            vhost: vhost.to_owned(),
            query: Default::default(),
        };
        let properties =
            ConnectionProperties::default().with_connection_name("warren management".into());
        let connection =
            match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, properties))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(error(&e)),
                Err(_) => {
                    return Err(ApiError::internal(format!(
                        "the broker did not answer the management API's connection on {at}"
                    )))
                }
            };
        let events = Box::pin(connection.events_listener());
        let channel = match connection.create_channel().await {
            Ok(c) => c,
            Err(e) => return Err(error(&e)),
        };
        Ok(Session {
            connection,
            channel,
            events,
        })
    }

    /// The API error for a failed operation: the broker's reply code and text. When the broker
    /// closes the channel, the call under way only learns that it is closing; the code and
    /// text arrive through the connection's events a moment later.
    pub async fn fail(&mut self, err: lapin::Error) -> lapin::Error {
        if err.is_amqp_error() {
            return err;
        }
        let deadline = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return err,
                event = self.events.next() => match event {
                    Some(Event::Error(e)) if e.is_amqp_error() => return e,
                    Some(_) => {}
                    None => return err,
                },
            }
        }
    }

    /// Opens a session, runs `op` on its channel and closes it: the operation's result, or
    /// the broker's reason for refusing it as the API answers it.
    pub async fn run<T, F, Fut>(
        amqp: SocketAddr,
        user: &User,
        vhost: &str,
        op: F,
    ) -> Result<T, ApiError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = lapin::Result<T>>,
    {
        Session::run_as(amqp, user, vhost, op, error).await
    }

    /// [`run`](Self::run), with the broker's refusal answered by `answer`.
    pub async fn run_as<T, F, Fut>(
        amqp: SocketAddr,
        user: &User,
        vhost: &str,
        op: F,
        answer: fn(&lapin::Error) -> ApiError,
    ) -> Result<T, ApiError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = lapin::Result<T>>,
    {
        let mut s = Session::open(amqp, user, vhost).await?;
        let out = match op(s.channel.clone()).await {
            Ok(t) => Ok(t),
            Err(e) => Err(answer(&s.fail(e).await)),
        };
        s.close().await;
        out
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = self.connection.close(200, "OK".into()).await;
    }
}

/// An AMQP failure as RabbitMQ's management API answers it (`rabbit_mgmt_util:with_channel`):
/// 404 for NOT_FOUND, 401 "Access refused." for ACCESS_REFUSED, 400 with the reply text
/// (without its `NAME - ` prefix) for the rest.
fn error(e: &lapin::Error) -> ApiError {
    use axum::http::StatusCode;
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let text = amqp.get_message().to_string();
            let code = amqp.get_id();
            if code == ReplyCode::NotFound.code() {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", text)
            } else if code == ReplyCode::AccessRefused.code()
                || code == ReplyCode::NotAllowed.code()
            {
                ApiError::access_refused()
            } else {
                let detail = text.split_once(" - ").map_or(&*text, |(_, d)| d);
                ApiError::bad_request(detail)
            }
        }
        _ => ApiError::internal(format!("the management API's AMQP connection failed: {e}")),
    }
}

/// A failed publish, as RabbitMQ's API reports it: 400 with the reply code and text
/// (`404 NOT_FOUND - no exchange 'x' in vhost '/'`).
pub fn publish_error(e: &lapin::Error) -> ApiError {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => {
            ApiError::bad_request(format!("{} {}", amqp.get_id(), amqp.get_message()))
        }
        _ => error(e),
    }
}
