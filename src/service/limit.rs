//! Bounds on what the listeners take in, for all callers together: open
//! connections per listener, and requests in flight across both doors.
//! Both refuse at once instead of queueing: a connection past the limit
//! is accepted and closed, a request past the limit is answered
//! RESOURCE_EXHAUSTED (gRPC) or 429 with `Retry-After` (HTTP) before any
//! work, and counted in `gavel_overload_refusals_total`. Health probes
//! and metric scrapes are never refused, so an overloaded server still
//! says so.

use crate::refusal::{Reason, Refusal};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What is counted against a limit, for the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    Connections,
    Requests,
}

impl Overload {
    pub fn as_str(self) -> &'static str {
        match self {
            Overload::Connections => "connections",
            Overload::Requests => "requests",
        }
    }
}

/// A count with a ceiling; `None` where the limit is off (0).
#[derive(Clone)]
pub struct Ceiling {
    permits: Option<Arc<Semaphore>>,
    max: usize,
    what: Overload,
    refused: Arc<dyn Fn(Overload) + Send + Sync>,
}

impl Ceiling {
    /// A ceiling of `max` (0: none); `refused` is told of each refusal.
    pub fn new(max: usize, what: Overload, refused: Arc<dyn Fn(Overload) + Send + Sync>) -> Self {
        Ceiling {
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            max,
            what,
            refused,
        }
    }

    /// One more, or `Err` at the ceiling. `Ok(None)` when there is none.
    fn take(&self) -> Result<Option<OwnedSemaphorePermit>, ()> {
        match &self.permits {
            None => Ok(None),
            Some(p) => p.clone().try_acquire_owned().map(Some).map_err(|_| {
                (self.refused)(self.what);
                // A refused request has its own log line (the request
                // layer's, with its reason); a closed connection has none.
                if self.what == Overload::Connections {
                    tracing::warn!(
                        limit = self.max,
                        "at the connection limit; a connection was closed"
                    );
                }
            }),
        }
    }
}

// ------------------------------------------------------------ connections

/// A connection that holds its place under the ceiling until it closes.
pub struct Counted<T> {
    inner: T,
    _place: Option<OwnedSemaphorePermit>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Counted<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Accepts the next connection that fits under `ceiling`; one past it is
/// closed at once. Accept errors (out of file descriptors, say) are
/// logged and retried after a short pause.
async fn accept(
    listener: &TcpListener,
    ceiling: &Ceiling,
) -> (Counted<TcpStream>, std::net::SocketAddr) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(place) = ceiling.take() else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        return (
            Counted {
                inner: tcp,
                _place: place,
            },
            remote,
        );
    }
}

/// Takes one place under `ceiling` for a connection accepted elsewhere
/// (the TLS listener, before its handshake); `None`: close it.
pub fn place_for(ceiling: &Ceiling) -> Option<Option<OwnedSemaphorePermit>> {
    ceiling.take().ok()
}

/// The plaintext gRPC listener's connections, for tonic's
/// `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    ceiling: Ceiling,
) -> impl tokio_stream::Stream<Item = io::Result<Counted<TcpStream>>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (conn, _) = tokio::select! {
                c = accept(&listener, &ceiling) => c,
                _ = tx.closed() => return,
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The plaintext HTTP listener under a ceiling, for `axum::serve`.
pub struct Limited {
    pub listener: TcpListener,
    pub ceiling: Ceiling,
}

impl axum::serve::Listener for Limited {
    type Io = Counted<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        accept(&self.listener, &self.ceiling).await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

// ------------------------------------------------------------ requests

/// Paths never refused for load: health, readiness, metrics.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// How each door answers a request refused for load.
pub trait Refuse {
    fn refuse(r: &Refusal) -> Self;
}

impl Refuse for axum::http::Response<tonic::body::Body> {
    fn refuse(r: &Refusal) -> Self {
        super::convert::status(r).into_http()
    }
}

impl Refuse for axum::response::Response {
    fn refuse(r: &Refusal) -> Self {
        use axum::response::IntoResponse;
        super::http::ApiError::from(r.clone()).into_response()
    }
}

/// The layer bounding requests in flight (one ceiling shared by both doors).
#[derive(Clone)]
pub struct InFlight(pub Ceiling);

impl<S> tower_layer::Layer<S> for InFlight {
    type Service = InFlightService<S>;

    fn layer(&self, inner: S) -> InFlightService<S> {
        InFlightService {
            inner,
            ceiling: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct InFlightService<S> {
    inner: S,
    ceiling: Ceiling,
}

impl<S, B, R> tower_service::Service<axum::http::Request<B>> for InFlightService<S>
where
    S: tower_service::Service<axum::http::Request<B>, Response = R>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Refuse + Send + 'static,
{
    type Response = R;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<R, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        if exempt(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        match self.ceiling.take() {
            Ok(place) => {
                let answer = self.inner.call(req);
                Box::pin(async move {
                    let out = answer.await;
                    // A streaming answer (WatchJob) has its own bound; its
                    // place is given back once its headers are out.
                    drop(place);
                    out
                })
            }
            Err(()) => {
                let max = self.ceiling.max;
                // Built inside the future, where the request's notes are
                // kept, so the log line names the reason.
                Box::pin(async move {
                    Ok(R::refuse(&Refusal::new(
                        Reason::ResourceExhausted,
                        format!(
                            "the server has {max} requests in flight (resources.max_requests_in_flight); retry shortly"
                        ),
                    )))
                })
            }
        }
    }
}
