//! TLS for the gRPC and HTTP listeners (rustls), with optional client
//! certificates (mTLS). Certificates are read from PEM files and read again
//! on SIGHUP or when a file changes; a connection keeps the configuration it
//! was accepted with, so a reload drops nothing.
//!
//! A verified client certificate is described by [`ClientCert`] (subject and
//! subject alternative names) and reaches the doors as [`Peer`], in the
//! request extensions; `identity::Directory::by_certificate` names its owner.

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The `[tls]` table of the configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) client certificates are verified against;
    /// absent: no client certificates are asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse connections without a verified client certificate.
    #[serde(default)]
    pub require_client_cert: bool,
}

/// Why the TLS configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(pub String);

/// A verified client certificate, as far as identities look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject as an RFC 4514 string (`CN=alice,O=Example`).
    pub subject: String,
    /// Subject alternative names: `dns:…`, `uri:…`, `email:…`, `ip:…`.
    pub names: Vec<String>,
}

impl ClientCert {
    /// Reads the subject and alternative names of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<ClientCert, TlsError> {
        use x509_cert::der::Decode;
        use x509_cert::ext::pkix::SubjectAltName;
        use x509_cert::ext::pkix::name::GeneralName;
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| TlsError(format!("the client certificate does not parse: {e}")))?;
        // RFC 4514 writes the sequence from its last element back to its
        // first (`CN=alice,O=Example`).
        let subject = cert
            .tbs_certificate
            .subject
            .0
            .iter()
            .rev()
            .map(|rdn| rdn.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut names = Vec::new();
        if let Ok(Some((_, san))) = cert.tbs_certificate.get::<SubjectAltName>() {
            for n in san.0 {
                match n {
                    GeneralName::DnsName(s) => names.push(format!("dns:{}", s.as_str())),
                    GeneralName::UniformResourceIdentifier(s) => {
                        names.push(format!("uri:{}", s.as_str()))
                    }
                    GeneralName::Rfc822Name(s) => names.push(format!("email:{}", s.as_str())),
                    GeneralName::IpAddress(o) => {
                        let b = o.as_bytes();
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
                            16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            names.push(format!("ip:{ip}"));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(ClientCert { subject, names })
    }

    /// Every string an identity's `cert_subjects` entry may equal: the
    /// subject, and each alternative name.
    pub fn handles(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.subject.as_str()).chain(self.names.iter().map(String::as_str))
    }
}

/// Who is at the other end of a connection: its address and, over mTLS,
/// its verified certificate. In the request extensions of both doors.
#[derive(Debug, Clone)]
pub struct Peer {
    pub remote: SocketAddr,
    pub cert: Option<Arc<ClientCert>>,
}

/// Which listener a configuration is for: they differ in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// HTTP/2 only.
    Grpc,
    /// HTTP/1.1.
    Http,
}

/// The live TLS configuration of both listeners, reloadable.
pub struct Tls {
    files: TlsConfig,
    grpc: ArcSwap<rustls::ServerConfig>,
    http: ArcSwap<rustls::ServerConfig>,
    /// The files' modification times at the last load.
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn server_config(files: &TlsConfig, door: Door) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert, "cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError(format!("key {}: {e}", files.key.display())))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match &files.client_ca {
        None if files.require_client_cert => {
            return Err(TlsError(
                "require_client_cert needs client_ca, the CAs client certificates are checked against"
                    .into(),
            ));
        }
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca, "client_ca")? {
                roots
                    .add(c)
                    .map_err(|e| TlsError(format!("client_ca {}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError(format!("client_ca {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("cert and key: {e}")))?;
    config.alpn_protocols = match door {
        Door::Grpc => vec![b"h2".to_vec()],
        Door::Http => vec![b"http/1.1".to_vec()],
    };
    Ok(config)
}

fn stamps(files: &TlsConfig) -> Vec<Option<SystemTime>> {
    let mut paths = vec![&files.cert, &files.key];
    paths.extend(files.client_ca.as_ref());
    paths
        .into_iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Tls {
    /// Whether connections without a client certificate are refused.
    pub fn requires_client_cert(&self) -> bool {
        self.files.require_client_cert
    }

    /// Whether client certificates are asked for.
    pub fn asks_client_cert(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Loads the files; every problem is named with its file.
    pub fn load(files: TlsConfig) -> Result<Arc<Tls>, TlsError> {
        let grpc = server_config(&files, Door::Grpc)?;
        let http = server_config(&files, Door::Http)?;
        let stamps = stamps(&files);
        Ok(Arc::new(Tls {
            files,
            grpc: ArcSwap::from_pointee(grpc),
            http: ArcSwap::from_pointee(http),
            stamps: Mutex::new(stamps),
        }))
    }

    /// Reads the files again. On any error the configuration in use stays.
    /// New connections get the new configuration; open ones keep theirs.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = stamps(&self.files);
        let grpc = server_config(&self.files, Door::Grpc)?;
        let http = server_config(&self.files, Door::Http)?;
        self.grpc.store(Arc::new(grpc));
        self.http.store(Arc::new(http));
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
        Ok(())
    }

    /// Reloads when a file's modification time changed since the last load.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.files);
        let changed = *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) != now;
        if changed {
            self.reload()?;
        }
        Ok(changed)
    }

    /// Reloads on SIGHUP and when a file changes (checked every 2 s),
    /// until `stop` is told; a failed reload is logged and changes nothing.
    pub fn watch(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let me = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<()>();
                tokio::select! {
                    _ = hangup => match me.reload() {
                        Ok(()) => tracing::info!("TLS certificates reloaded (SIGHUP)"),
                        Err(e) => tracing::error!(error = %e, "TLS reload failed; the previous certificates stay"),
                    },
                    _ = tick.tick() => match me.reload_if_changed() {
                        Ok(true) => tracing::info!("TLS certificates reloaded (files changed)"),
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "TLS reload failed; the previous certificates stay"),
                    },
                    _ = stop.changed() => break,
                }
            }
        });
    }

    /// Accepts TCP connections on `listener` and completes their handshakes
    /// concurrently (a slow client holds up nobody); established
    /// connections come out of the returned channel.
    /// Connections past `ceiling` are closed before their handshake.
    pub fn accept(
        self: &Arc<Self>,
        listener: TcpListener,
        door: Door,
        ceiling: crate::service::limit::Ceiling,
    ) -> TlsIncoming {
        let local = listener.local_addr().ok();
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    break;
                }
                let Some(place) = crate::service::limit::place_for(&ceiling) else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let config = match door {
                    Door::Grpc => me.grpc.load_full(),
                    Door::Http => me.http.load_full(),
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return;
                            }
                        };
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| ClientCert::from_der(c.as_ref()));
                    let cert = match cert {
                        None => None,
                        Some(Ok(c)) => Some(Arc::new(c)),
                        Some(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "client certificate refused");
                            return;
                        }
                    };
                    let conn = TlsConn {
                        inner: Box::new(stream),
                        peer: Peer { remote, cert },
                        _place: place,
                    };
                    let _ = tx.send(conn).await;
                });
            }
        });
        TlsIncoming { rx, local }
    }
}

/// One established TLS connection and who is on the other end.
pub struct TlsConn {
    inner: Box<tokio_rustls::server::TlsStream<TcpStream>>,
    peer: Peer,
    /// Its place under the listener's connection limit, given back when
    /// it closes.
    _place: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// The established connections of one TLS listener.
pub struct TlsIncoming {
    rx: mpsc::Receiver<TlsConn>,
    local: Option<SocketAddr>,
}

impl TlsIncoming {
    /// As a stream, for tonic's `serve_with_incoming`.
    pub fn into_stream(
        self,
    ) -> impl tokio_stream::Stream<Item = Result<TlsConn, std::io::Error>> + Send + 'static {
        use tokio_stream::StreamExt;
        tokio_stream::wrappers::ReceiverStream::new(self.rx).map(Ok)
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsConn;
    type Addr = Peer;

    async fn accept(&mut self) -> (TlsConn, Peer) {
        match self.rx.recv().await {
            Some(conn) => {
                let peer = conn.peer.clone();
                (conn, peer)
            }
            // The accept loop only ends with the process.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        let remote = self
            .local
            .ok_or_else(|| std::io::Error::other("the listener has no local address"))?;
        Ok(Peer { remote, cert: None })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsIncoming>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsIncoming>) -> Peer {
        stream.remote_addr().clone()
    }
}

/// The client side of TLS for the CLI, `gavel bench` and the agent doors:
/// `--ca`, `--cert`, `--key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// The CA (PEM) the server's certificate is checked against; the
    /// system's roots when absent.
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) and its key, for mTLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientFiles {
    /// Whether a client certificate is presented.
    pub fn has_cert(&self) -> bool {
        self.cert.is_some()
    }
}

/// A gRPC endpoint for `server`: TLS for `https://` (with `files`),
/// plaintext for `http://`.
pub fn endpoint(server: &str, files: &ClientFiles) -> Result<tonic::transport::Endpoint, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let ep = Endpoint::from_shared(server.to_owned())
        .map_err(|e| format!("--server `{server}`: {e}"))?;
    let https = server.starts_with("https://");
    if !https {
        if files.ca.is_some() || files.cert.is_some() || files.key.is_some() {
            return Err(format!(
                "--ca, --cert and --key are for a TLS server: use an https:// --server (not `{server}`)"
            ));
        }
        return Ok(ep);
    }
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| format!("--{what} {}: {e}", p.display()))
    };
    let mut config = ClientTlsConfig::new();
    config = match &files.ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca, "ca")?)),
        None => config.with_native_roots(),
    };
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(read(cert, "cert")?, read(key, "key")?));
        }
        (None, None) => {}
        _ => return Err("--cert and --key go together".into()),
    }
    ep.tls_config(config)
        .map_err(|e| format!("TLS for {server}: {e}"))
}
