//! TLS for the AMQP listener (`amqps`) and the management API, with rustls on the `ring`
//! backend (no C toolchain, no cmake): TLS 1.2 and 1.3 only, certificate and key from PEM
//! files, optional client certificates checked against a CA (RabbitMQ's `verify_peer` and
//! `fail_if_no_peer_cert`), and a reload of every file without a restart ([`Tls::reload`],
//! which `warren serve` calls on SIGHUP). Handshakes run in their own tasks, bounded in time
//! and in number, so a slow or silent client never holds up the accept loop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The `[tls]` section of the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CAs whose client certificates are accepted (PEM); needed for `verify_peer`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Ask clients for a certificate and check it against `ca_file` (RabbitMQ's
    /// `verify_peer`).
    #[serde(default)]
    pub verify_peer: bool,
    /// With `verify_peer`: refuse clients that send none (RabbitMQ's `fail_if_no_peer_cert`).
    #[serde(default)]
    pub fail_if_no_peer_cert: bool,
    /// Serve the management API over HTTPS too (on `http_bind`).
    #[serde(default)]
    pub management: bool,
}

/// Why the TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("cannot read {}: {e}", path.display())))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Builds the rustls server configuration from the files `c` names.
pub fn server_config(c: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&c.cert_file)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&c.key_file)?)
        .map_err(|e| TlsError(format!("{}: {e}", c.key_file.display())))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = if c.verify_peer {
        let Some(ca) = &c.ca_file else {
            return Err(TlsError(
                "verify_peer needs ca_file, the CAs client certificates are checked against".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        for cert in certs(ca)? {
            roots
                .add(cert)
                .map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if c.fail_if_no_peer_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        builder.with_client_cert_verifier(
            verifier
                .build()
                .map_err(|e| TlsError(format!("client verifier: {e}")))?,
        )
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(format!("certificate and key: {e}")))?;
    // HTTP/1.1 for the management API; AMQP does not negotiate ALPN.
    config.alpn_protocols = Vec::new();
    Ok(Arc::new(config))
}

/// The subject's common name of a client certificate (SASL EXTERNAL's user name).
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The live TLS settings: what new handshakes use, replaced by [`reload`](Self::reload).
pub struct Tls {
    settings: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads the files `settings` names.
    pub fn new(settings: TlsConfig) -> Result<Arc<Tls>, TlsError> {
        let config = server_config(&settings)?;
        Ok(Arc::new(Tls {
            settings,
            current: RwLock::new(config),
        }))
    }

    /// Reads the certificate, key and CA files again; new connections use them, open ones
    /// keep theirs. On an error the previous settings stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.settings)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// Whether the management API is served over HTTPS.
    pub fn for_management(&self) -> bool {
        self.settings.management
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Accepts TCP connections on `listener` and hands out those whose TLS handshake
    /// finished within `timeout` (at most `max_handshakes` at a time), with the client's
    /// address and its certificate's common name if it sent a verified one. Stops when
    /// `shutdown` is cancelled.
    pub fn accept_loop(
        self: &Arc<Self>,
        listener: TcpListener,
        timeout: Duration,
        max_handshakes: usize,
        shutdown: CancellationToken,
    ) -> mpsc::Receiver<Accepted> {
        let (tx, rx) = mpsc::channel(64);
        let tls = Arc::clone(self);
        let slots = Arc::new(Semaphore::new(max_handshakes.max(1)));
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let (tcp, peer) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "TLS accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tls.acceptor();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let done = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                    drop(permit);
                    match done {
                        Ok(Ok(stream)) => {
                            let cn = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(common_name);
                            let _ = tx
                                .send(Accepted {
                                    stream,
                                    peer,
                                    common_name: cn,
                                })
                                .await;
                        }
                        // A plain-text client, a bad certificate: its socket closes, with
                        // rustls' alert where it got that far.
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        rx
    }
}

/// A connection whose TLS handshake finished.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    pub peer: SocketAddr,
    /// The subject CN of the client's verified certificate, if it sent one.
    pub common_name: Option<String>,
}
