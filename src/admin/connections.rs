//! The console's HTTP connections, plain or TLS: accepted here and served
//! by hyper with limits, so that a client cannot hold a connection open
//! without using it.
//!
//! - `[admin] header_read_timeout_secs`: a request's headers must arrive
//!   whole within this time, counted from when the server starts waiting
//!   for them (a new connection, or one kept open after an answer).
//!   Otherwise the connection is closed.
//! - `[admin] idle_timeout_secs`: a connection on which nothing is sent
//!   or received for this long is closed (a request body that stalls, an
//!   answer the client stops reading). The console's event stream sends a
//!   keep-alive every 15 seconds, so this should be longer than that.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use openssl::ssl::{Ssl, SslAcceptor};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_openssl::SslStream;
use tokio_util::sync::CancellationToken;

use super::settings::AdminSettings;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The time limits on one connection (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read: Duration,
    pub idle: Duration,
}

impl Limits {
    pub fn of(settings: &AdminSettings) -> Limits {
        Limits {
            header_read: Duration::from_secs(settings.header_read_timeout_secs.max(1)),
            idle: Duration::from_secs(settings.idle_timeout_secs.max(1)),
        }
    }
}

/// Serves `app` until `shutdown`, over TLS when given an acceptor; open
/// connections are closed gracefully (answers in flight finish).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    acceptor: Option<SslAcceptor>,
    limits: Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = acceptor.map(Arc::new);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(target: "bramble::admin", "cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                // Handlers learn the client's address (sign-in throttling).
                let app = app.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    match acceptor {
                        None => serve_connection(tcp, app, limits, shutdown).await,
                        Some(acceptor) => {
                            let Some(stream) = handshake(&acceptor, tcp, peer).await else { return };
                            serve_connection(stream, app, limits, shutdown).await;
                        }
                    }
                });
            }
        }
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn handshake(
    acceptor: &SslAcceptor,
    tcp: TcpStream,
    peer: std::net::SocketAddr,
) -> Option<SslStream<TcpStream>> {
    let ssl = Ssl::new(acceptor.context()).ok()?;
    let mut stream = SslStream::new(ssl, tcp).ok()?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut stream).accept()).await {
        Ok(Ok(())) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(target: "bramble::admin", %peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(target: "bramble::admin", %peer, "the client did not finish the TLS handshake in time; closed");
            None
        }
    }
}

/// Serves one connection until the client closes it, a limit closes it, or
/// `shutdown`.
async fn serve_connection<S>(stream: S, app: Router, limits: Limits, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let stream = Watched {
        inner: stream,
        started,
        activity: activity.clone(),
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    let mut deadline = started + limits.idle;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
                return;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let last = started + Duration::from_millis(activity.load(Ordering::Relaxed));
                if last + limits.idle <= Instant::now() {
                    tracing::debug!(target: "bramble::admin", "closed a console connection idle for {} s ([admin] idle_timeout_secs)", limits.idle.as_secs());
                    return;
                }
                deadline = last + limits.idle;
            }
        }
    }
}

/// A stream that notes when it last sent or received something
/// (milliseconds since `started`).
struct Watched<S> {
    inner: S,
    started: Instant,
    activity: Arc<AtomicU64>,
}

impl<S> Watched<S> {
    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.activity.fetch_max(now, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
