//! A small client for a management HTTP API (Warren's or RabbitMQ's): Basic credentials, JSON
//! in and out, one connection per request. Built on hyper, which the broker's HTTP server
//! already brings in.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::client::Failure;

/// Where the API is when neither --http-url nor WARREN_HTTP_URL says.
pub const DEFAULT_HTTP_URL: &str = "http://guest:guest@127.0.0.1:15672";

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The flags of every command that talks to the management API.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// Management API to talk to: http://user:pass@host:port (Warren's or RabbitMQ's).
    #[arg(
        long,
        env = "WARREN_HTTP_URL",
        hide_env_values = true,
        default_value = DEFAULT_HTTP_URL,
        value_name = "URL"
    )]
    pub http_url: String,
}

/// A management API endpoint.
pub struct Api {
    host: String,
    port: u16,
    /// A path the API sits under ("" normally; "/rabbitmq" behind some proxies).
    prefix: String,
    authorization: HeaderValue,
    /// The URL without its password, for messages.
    shown: String,
}

/// What the API answered.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes one path segment (a vhost, a queue or connection name) for a URL.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Api {
    /// Parses `http://user:pass@host:port/prefix`.
    pub fn new(args: &HttpArgs) -> anyhow::Result<Api> {
        let url = args.http_url.trim();
        let bad = |why: &str| {
            Failure::new(format!(
                "invalid --http-url: {why}; expected http://user:pass@host:port"
            ))
        };
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(Failure::new(
                "https:// is not supported by this build of warren; use http://",
            )
            .into());
        } else {
            return Err(bad("it does not start with http://").into());
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (percent_decode(n), percent_decode(p)),
                None => (percent_decode(u), String::new()),
            },
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (h.to_owned(), p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host").into());
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad(&format!("port '{p}'")))?,
            None => 15672,
        };
        let credentials =
            warren_broker::protocol::json::base64(format!("{user}:{password}").as_bytes());
        Ok(Api {
            shown: format!("http://{hostport}{prefix}"),
            host,
            port,
            prefix: prefix.to_owned(),
            authorization: HeaderValue::from_str(&format!("Basic {credentials}"))
                .context("credentials")?,
        })
    }

    /// One request; `path` starts with `/api/`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Answer> {
        let work = async {
            let stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| {
                    Failure::new(format!(
                        "cannot connect to the management API at {} ({e}); is the broker \
                         running with its HTTP API on? (warren serve --http-bind)",
                        self.shown
                    ))
                })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .context("HTTP handshake")?;
            tokio::spawn(conn);
            let host = if self.host.contains(':') {
                format!("[{}]:{}", self.host, self.port)
            } else {
                format!("{}:{}", self.host, self.port)
            };
            let mut req = Request::builder()
                .method(method)
                .uri(format!("{}{path}", self.prefix))
                .header(HOST, host)
                .header(AUTHORIZATION, self.authorization.clone());
            if body.is_some() {
                req = req.header(CONTENT_TYPE, "application/json");
            }
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
            let res = sender.send_request(req).await.context("HTTP request")?;
            let status = res.status();
            let body = res
                .into_body()
                .collect()
                .await
                .context("reading the answer")?
                .to_bytes();
            anyhow::Ok(Answer { status, body })
        };
        match tokio::time::timeout(TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(format!(
                "the management API at {} did not answer within {}s",
                self.shown,
                TIMEOUT.as_secs()
            ))
            .into()),
        }
    }

    /// A request that must succeed (2xx); otherwise the API's own reason, as one line.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Bytes> {
        let a = self.request(method.clone(), path, body, headers).await?;
        if a.status.is_success() {
            return Ok(a.body);
        }
        let reason = serde_json::from_slice::<Value>(&a.body)
            .ok()
            .and_then(|v| {
                let reason = v.get("reason")?;
                Some(match reason {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&a.body).trim().to_owned());
        // One line, whatever the API put in it (RabbitMQ's validation texts have newlines).
        let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
        let what = match a.status {
            StatusCode::UNAUTHORIZED => format!(
                "the management API at {} refused the credentials ({reason})",
                self.shown
            ),
            StatusCode::NOT_FOUND => format!("{path}: not found"),
            _ => format!("{method} {path}: {reason}"),
        };
        Err(Failure::new(format!("{what} (HTTP {})", a.status.as_u16())).into())
    }

    /// GET, as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let body = self.call(Method::GET, path, None, &[]).await?;
        serde_json::from_slice(&body)
            .with_context(|| format!("GET {path} did not answer with JSON"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(url: &str) -> anyhow::Result<Api> {
        Api::new(&HttpArgs {
            http_url: url.into(),
        })
    }

    #[test]
    fn urls_give_host_port_prefix_and_credentials() {
        let a = api("http://bob:p%40ss@example:8080/rabbitmq/").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.prefix.as_str()),
            ("example", 8080, "/rabbitmq")
        );
        assert_eq!(
            a.authorization,
            format!(
                "Basic {}",
                warren_broker::protocol::json::base64(b"bob:p@ss")
            )
        );
        assert_eq!(
            a.shown, "http://example:8080/rabbitmq",
            "no password in messages"
        );
        let a = api("http://[::1]").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 15672));
        assert!(api("https://h").is_err());
        assert!(api("ftp://h").is_err());
        assert!(api("http://h:notaport").is_err());
        assert_eq!(segment("/"), "%2F");
        assert_eq!(segment("a b->c"), "a%20b-%3Ec");
    }
}
