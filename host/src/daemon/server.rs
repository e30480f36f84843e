//! The HTTP server: accepts TCP connections, handshakes TLS when configured,
//! and serves HTTP/1.1 and HTTP/2 (hyper-util's automatic connection
//! builder; over TLS the protocol ALPN chose) through the axum router.
//!
//! Every connection is held in [`Connections`] from accept to close, so the
//! limit, the shedding and the header and idle timeouts apply alike to
//! plain and TLS connections, handshake included. Closing (`close`) stops
//! accepting, asks every connection to finish (HTTP/2 `GOAWAY`, HTTP/1.1
//! closes after the response in flight), and waits up to
//! [`CLOSE_GRACE`] for them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use super::connections::{Connection, Connections, InFlight};
use super::http::access;
use super::tls::TlsFiles;
use crate::shutdown::StopSignal;

/// Longest the server waits, once closing, for connections to finish.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The listen backlog asked for (the kernel caps it at `somaxconn`):
/// connections the kernel completes before the accept loop takes them. A
/// short one (std's and tokio's 128) overflows under a connection flood,
/// and then a probe's SYN is dropped and retried a second later.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Pause after a failed accept (out of descriptors and the like), so the
/// loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `close`, then closes gracefully.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<TlsFiles>>,
    router: Router,
    connections: Arc<Connections>,
    close: StopSignal,
) {
    let limits = connections.limits();
    let sweep_period = (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let sweeper = tokio::spawn(Arc::clone(&connections).sweep_until(sweep_period, close.clone()));
    let builder = Arc::new(builder());
    let mut stop = close.clone();
    let mut accept_errors_logged = 0u64;
    loop {
        tokio::select! {
            _ = connections.room() => {}
            _ = stop.stopped() => break,
        }
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    // Logged once in a while, not at every retry.
                    if accept_errors_logged.is_multiple_of(100) {
                        tracing::warn!(error = %e, "accepting a TCP connection failed");
                    }
                    accept_errors_logged += 1;
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = stop.stopped() => break,
        };
        let Some(connection) = connections.admit() else {
            continue; // refused: every connection is busy
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connect(
            tcp,
            peer,
            connection,
            tls.clone(),
            router.clone(),
            Arc::clone(&builder),
            close.clone(),
        ));
    }
    drop(listener);
    if tokio::time::timeout(CLOSE_GRACE, connections.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "HTTP connections still open after {CLOSE_GRACE:?}; closing them"
        );
    }
    let _ = sweeper.await;
}

/// HTTP/1.1 and HTTP/2. The header and idle timeouts are the sweep's
/// ([`Connections::sweep`]), alike for both protocols: hyper's own HTTP/1.1
/// header-read timeout is off, since it would also cut keep-alive
/// connections idle for that long.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// One connection: TLS handshake when configured, then HTTP.
async fn connect(
    tcp: TcpStream,
    peer: SocketAddr,
    connection: Connection,
    tls: Option<Arc<TlsFiles>>,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut close: StopSignal,
) {
    let Some(tls) = tls else {
        return http(tcp, connection, router, &builder, close).await;
    };
    let stream = tokio::select! {
        handshake = tls.acceptor().accept(tcp) => match handshake {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
        },
        // The header timeout covers the handshake: a silent client is swept.
        _ = connection.killed() => return,
        _ = close.stopped() => return,
    };
    http(stream, connection, router, &builder, close).await
}

/// Serves HTTP on `io` until the client closes, the host closes the
/// connection (shed, timeout), or the server closes.
async fn http<I>(
    io: I,
    connection: Connection,
    router: Router,
    builder: &auto::Builder<TokioExecutor>,
    mut close: StopSignal,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = Arc::new(connection);
    let service = {
        let connection = Arc::clone(&connection);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = connection.request();
            let router = router.clone();
            async move {
                let response = router
                    .oneshot(request.map(Body::new))
                    .await
                    .unwrap_or_else(|never| match never {});
                // A route that declared no access is refused here.
                let response = access::declared_only(response);
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let serving = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(serving);
    tokio::select! {
        _ = serving.as_mut() => return,
        _ = connection.killed() => return,
        _ = close.stopped() => {}
    }
    serving.as_mut().graceful_shutdown();
    tokio::select! {
        _ = serving => {}
        _ = connection.killed() => {}
        _ = tokio::time::sleep(CLOSE_GRACE) => {}
    }
}

/// A response body that keeps its request counted as in flight until the
/// body is sent (or dropped): a change stream keeps its connection busy.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
