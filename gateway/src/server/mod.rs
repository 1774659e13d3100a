//! The public listener and the request path:
//!
//! listener -> match API (longest listen path) -> match endpoint (method +
//! template) -> `rate_limit`s (endpoint's, API's) -> `pre` hooks -> auth
//! (keyless, API key, or `auth` plugin) -> `post_auth` hooks -> the key's
//! rate limit and quota -> endpoint plugin -> `post`
//! hooks -> upstream (streamed) or the plugin's response -> `response` hooks
//! -> client.
//!
//! A `respond` outcome anywhere in the request phase ends it; the response
//! hooks still run on that response. The routing table sits behind an
//! `ArcSwap`: a reload swaps in a complete new table, and requests in flight
//! finish on the one (and the plugin versions) they started with.

pub mod auth;
pub mod canonical;
pub mod client_io;
pub mod error;
pub mod live_tls;
pub mod proxy;
pub mod routes;
pub mod tunnel;

mod chain;
mod exchange;
mod forward;
mod handle;
mod hooks;
pub mod jwt;
mod listener;
pub mod policy;

use chain::*;
use exchange::*;
use forward::*;
use handle::*;
use hooks::*;
pub use listener::Listeners;
use listener::*;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::config::{ClientTimeouts, Destination, Limits, OnError, OverrideHeaders, Transport, Unmatched};
use crate::framing;
use crate::plugin::{
    self, AuthResult, CallContext, Changes, HeaderText, Plugin, PluginError, Reply, RequestOutcome, RequestRecord,
    ResponseRecord, Session,
};
use crate::store::SessionStore;
use crate::sync::lock;
use crate::telemetry;
use crate::telemetry::RequestId;
use crate::telemetry::access_log::{AccessLog, Usage};
use crate::telemetry::metrics::ApiMetrics;
use crate::telemetry::{Accounting, Observer};
use crate::tls;
use crate::upstream::{Affinity, OutBody, Outgoing, UpstreamError};
use auth::{Caller, Denied, LimitHeaders, RateLimiter};
use canonical::PathError;
use client_io::ClientIo;
use error::RequestError;
use live_tls::LiveTls;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use routes::{ApiRoute, Auth, EndpointMatch, Routes};

type Request = http::Request<Body>;

/// Shared state of the public listener.
#[derive(Debug)]
pub struct Gateway {
    routes: ArcSwap<Routes>,
    store: SessionStore,
    /// One line per request, when configured.
    access_log: Option<AccessLog>,
    /// The HTTPS listener's certificates, replaced by reloads.
    tls: Option<Arc<LiveTls>>,
}

impl Gateway {
    pub fn new(routes: Routes, store: SessionStore, tls: Option<Arc<LiveTls>>) -> Self {
        routes.publish_certificates();
        Gateway {
            routes: ArcSwap::from_pointee(routes),
            store,
            access_log: None,
            tls,
        }
    }

    /// Writes one line per request to `log`.
    pub fn with_access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
    }

    pub fn tls(&self) -> Option<&Arc<LiveTls>> {
        self.tls.as_ref()
    }

    /// Serves new requests with `routes` from now on.
    pub fn swap(&self, routes: Routes) {
        routes.publish_certificates();
        self.routes.store(Arc::new(routes));
    }

    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    pub fn store(&self) -> &SessionStore {
        &self.store
    }
}

#[cfg(test)]
mod chain_tests;
#[cfg(test)]
mod props;
