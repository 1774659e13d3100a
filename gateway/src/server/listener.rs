//! The listeners: accepting connections (plain, or TLS with its handshake
//! in the connection's own task), the client deadlines on each socket, and
//! hyper serving HTTP/1.1 and HTTP/2 on it.

use super::*;

impl Gateway {
    /// Serves HTTP/1.1 and HTTP/2 connections from the listeners until
    /// `shutdown` completes, then waits for the requests in flight.
    ///
    /// A bare hyper service rather than a web framework's router: the
    /// routing table is ours, and every layer on this path costs CPU on
    /// every request.
    pub async fn serve(self: Arc<Self>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let Listeners { plain, tls, timeouts } = listeners;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Without a timer hyper cannot enforce its header read timeout, and a
        // client trickling a request head would hold a connection forever.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.head);
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (accepted, secure) = tokio::select! {
                accepted = accept(plain.as_ref()) => (accepted, None),
                accepted = accept(tls.as_ref().map(|(listener, _)| listener)) => (accepted, tls.as_ref().map(|(_, live)| live)),
                () = &mut shutdown => break,
            };
            let (stream, client) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: back off rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Responses leave in one write; do not hold the last segment back.
            let _ = stream.set_nodelay(true);
            let gateway = Arc::clone(&self);
            let Some(live) = secure else {
                let stream = ClientIo::new(stream, timeouts.head, timeouts.send);
                let connection = serve_connection(&builder, gateway, Peer::new(client, None), stream);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%client, error = %e, "connection ended with an error");
                    }
                });
                continue;
            };
            // The handshake runs in the connection's own task, so a slow
            // client holds up no one else; it uses the certificates current
            // when the connection arrived.
            let acceptor = tokio_rustls::TlsAcceptor::from(live.server_config());
            let (builder, watcher) = (Arc::clone(&builder), graceful.watcher());
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%client, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%client, "TLS handshake timed out");
                        return;
                    }
                };
                let client_cert = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(tls::forwarded_client_cert);
                let peer = Peer::new(client, Some(client_cert));
                let stream = ClientIo::new(stream, timeouts.head, timeouts.send);
                let connection = serve_connection(&builder, gateway, peer, stream);
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(%client, error = %e, "connection ended with an error");
                }
            });
        }
        drop((plain, tls));
        graceful.shutdown().await;
    }
}

/// The sockets the gateway serves: plain HTTP, HTTPS, or both.
#[derive(Debug)]
pub struct Listeners {
    pub plain: Option<TcpListener>,
    pub tls: Option<(TcpListener, Arc<LiveTls>)>,
    /// Deadlines on clients, on both.
    pub timeouts: ClientTimeouts,
}

/// The next connection on `listener`; never, without one.
pub(super) async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

pub(super) fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    gateway: Arc<Gateway>,
    peer: Peer,
    stream: S,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = Box<dyn std::error::Error + Send + Sync>> + use<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let service = service_fn(move |request: http::Request<Incoming>| {
        let gateway = Arc::clone(&gateway);
        let peer = Arc::clone(&peer);
        // Boxed per request: hyper keeps room for the service's future in
        // every connection for as long as it is open, and the whole chain's
        // state machine is kilobytes. An idle keep-alive connection should
        // not pay for a request it is not serving.
        Box::pin(async move { Ok::<_, Infallible>(handle(&gateway, peer, request.map(Body::new)).await) })
    });
    builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned()
}

/// The client end of a connection, formatted once for all its requests.
#[derive(Debug)]
pub(super) struct Peer {
    /// `ip:port`, what plugins see as `client-addr`.
    pub(super) addr: String,
    /// The IP alone, for `X-Forwarded-For`.
    pub(super) ip: HeaderValue,
    /// The same, for `client_ips`.
    pub(super) ip_addr: std::net::IpAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub(super) proto: HeaderValue,
    /// Whether the connection is TLS.
    pub(super) tls: bool,
    /// On TLS connections with a verified client certificate, its
    /// `x-forwarded-client-cert` value.
    pub(super) client_cert: Option<HeaderValue>,
}

impl Peer {
    /// `tls` is `None` for plain connections, `Some` (with the client
    /// certificate's XFCC value, if one was verified) for TLS ones.
    pub(super) fn new(addr: SocketAddr, tls: Option<Option<HeaderValue>>) -> Self {
        let ip = addr.ip().to_string();
        Peer {
            addr: addr.to_string(),
            ip: HeaderValue::from_str(&ip).unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            ip_addr: addr.ip(),
            proto: HeaderValue::from_static(if tls.is_some() { "https" } else { "http" }),
            tls: tls.is_some(),
            client_cert: tls.flatten(),
        }
    }
}
