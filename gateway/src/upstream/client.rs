//! The pooled HTTP client every connection the gateway opens goes through
//! (proxied requests, health probes, plugins' outbound calls), and what its
//! failures mean.

use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::tls::ClientTls;

/// A pooled keep-alive client over plain TCP or TLS, HTTP/1.1 or HTTP/2
/// (offered by ALPN on TLS connections).
pub type HttpClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// A keep-alive client: TCP_NODELAY, `connect` as the limit on opening a
/// connection (TCP only; the TLS handshake counts against the exchange's
/// own timeout), idle connections kept for `idle`, `https://` verified with
/// `tls`. Names are resolved for every new connection.
pub fn pooled_client<B>(connect: Duration, idle: Duration, tls: &ClientTls) -> HttpClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    client(connect, idle, tls, false)
}

/// [`pooled_client`] speaking HTTP/2 only, with prior knowledge on plain
/// connections: for `h2c://` targets (gRPC without TLS).
pub fn h2c_client<B>(connect: Duration, idle: Duration, tls: &ClientTls) -> HttpClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    client(connect, idle, tls, true)
}

fn client<B>(connect: Duration, idle: Duration, tls: &ClientTls, http2_only: bool) -> HttpClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect));
    tcp.enforce_http(false);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config((*tls.config).clone())
        .https_or_http();
    let builder = match &tls.server_name {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name.clone())),
        None => builder,
    };
    let connector = builder.enable_http1().enable_http2().wrap_connector(tcp);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle)
        .pool_timer(TokioTimer::new())
        .http2_only(http2_only)
        .build(connector)
}

/// How an exchange failed before a response head arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection: refused, unreachable, DNS, connect timeout. The
    /// target never saw the request.
    Connect(String),
    /// The TLS handshake failed, for this reason. Never saw it either.
    Tls(String),
    /// The request body went over its limit while being sent.
    BodyTooLarge,
    /// The connection broke after the request was (maybe) sent.
    Reset(String),
}

/// Classifies a client error.
pub fn failure(e: &hyper_util::client::legacy::Error) -> Failure {
    // With TLS 1.3 a server that refuses the client's certificate says so
    // after the client finished its part of the handshake: look for a TLS
    // error whatever the stage.
    if let Some(reason) = crate::tls::handshake_failure(e) {
        Failure::Tls(reason)
    } else if over_body_limit(e) {
        Failure::BodyTooLarge
    } else if e.is_connect() {
        Failure::Connect(root_cause(e))
    } else {
        Failure::Reset(root_cause(e))
    }
}

/// Whether sending failed because the request body went over its limit.
fn over_body_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The innermost cause of an error chain, for log lines that should say
/// "connection refused" rather than "error trying to connect".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
