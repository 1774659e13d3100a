//! Everything between the gateway and the servers behind it: one pooled
//! client per upstream (TLS, connect and idle timeouts), its targets and how
//! one is picked, their health (active probes, passive ejection), retries
//! under a budget, and DNS names resolved again while running. Proxied
//! requests, health probes and plugins' outbound calls all get their
//! connections here, so they never disagree about a target's settings.
//!
//! This module answers with [`UpstreamError`]; what the client sees is
//! decided in `error`.

mod balance;
pub mod client;
mod group;
mod health;
pub mod outbound;
mod retry;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use hyper::body::Incoming;

pub use client::{Failure, HttpClient, failure, pooled_client, root_cause};

use crate::config::upstream::{HashOn, UpstreamConfig};
use crate::config::{ApiConfig, BaseUrl, Destination};
use crate::telemetry::metrics::TargetMetrics;
use crate::tls::ClientTls;
use balance::{Balancer, hash_of};
pub use group::{Group, Target};
use health::{Health, State, now_ms};
use retry::*;

/// Attempts of one request at most (the first and its retries).
const MAX_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to upstream {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("TLS handshake with upstream {target} failed: {reason}")]
    Tls { target: String, reason: String },
    /// The client's streamed body went over the API's limit on its way.
    #[error("request body over the API's max_request_body_bytes; sending it was stopped")]
    RequestBodyTooLarge,
    #[error("upstream {target} did not answer within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    #[error("upstream {target} failed: {reason}")]
    Reset { target: String, reason: String },
    /// No target may take requests: all ejected or failing their probes.
    #[error("no target of upstream {upstream:?} is available: {why}")]
    Unavailable {
        upstream: Arc<str>,
        why: &'static str,
        retry_after: Duration,
    },
    /// Every available target has `max_in_flight` requests in flight.
    #[error("every available target of upstream {0:?} has max_in_flight requests in flight")]
    AtCapacity(Arc<str>),
    #[error("cannot build the upstream request: {0}")]
    Invalid(String),
    /// An answer HTTP does not allow here, e.g. a 101 nobody asked for.
    #[error("upstream broke the protocol: {0}")]
    Protocol(&'static str),
}

impl UpstreamError {
    /// When the client may try again, for `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Unavailable { retry_after, .. } => Some(*retry_after),
            UpstreamError::AtCapacity(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// A request on its way to an upstream: the head as the plugin chain left
/// it, the path under the target's base path, and the body.
#[derive(Debug)]
pub struct Outgoing {
    pub parts: http::request::Parts,
    pub path: String,
    pub body: OutBody,
}

#[derive(Debug)]
pub enum OutBody {
    /// Streams from the client: sent once, never retried.
    Stream(Body),
    /// Whole in memory (or empty): can be sent again.
    Bytes(Bytes),
}

impl OutBody {
    fn body(&self) -> Body {
        match self {
            OutBody::Bytes(bytes) => Body::from(bytes.clone()),
            OutBody::Stream(_) => Body::empty(),
        }
    }
}

/// What `consistent_hash` may hash besides the request's headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Affinity<'a> {
    pub client_ip: &'a [u8],
    pub key_id: Option<&'a str>,
}

/// A target's response head, and the target's in-flight slot, to be held
/// until the response body is done.
#[derive(Debug)]
pub struct Exchanged {
    pub response: http::Response<Incoming>,
    pub in_flight: Option<InFlight>,
    /// The target that answered, as the admin API names it.
    pub target: Arc<str>,
    /// Targets tried, this one included.
    pub tries: u32,
}

/// How one exchange with a target went, and the `retries.on` condition it
/// met, if any.
struct Attempt {
    outcome: Result<Exchanged, UpstreamError>,
    /// The `retries.on` entry: `connect_error`, `reset`, `timeout` or a status.
    retry_on: Option<Cow<'static, str>>,
}

/// One request in flight to a target; released when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Target>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An API's upstreams, in [`Destination::Upstream`] order.
#[derive(Debug)]
pub struct ApiUpstreams {
    groups: Vec<Arc<Group>>,
    default: usize,
    /// For URLs a plugin routes to: the API's TLS settings, no targets.
    direct: HttpClient<Body>,
}

impl ApiUpstreams {
    /// Builds the API's upstreams and starts their probes and DNS refresh
    /// (they stop when these are dropped). Targets that were in `previous`
    /// keep their health, so a reload does not send traffic back to a
    /// target just ejected.
    pub fn build(api: &ApiConfig, previous: Option<&ApiUpstreams>) -> Self {
        let tls = api.upstream_tls.clone().unwrap_or_else(ClientTls::system);
        let id: Arc<str> = api.id.as_str().into();
        let groups = api
            .upstreams
            .iter()
            .map(|config| {
                let before = previous.and_then(|p| p.groups.iter().find(|g| *g.name == *config.name));
                Group::start(&id, config.clone(), tls.clone(), before.map(|g| &**g))
            })
            .collect();
        ApiUpstreams {
            groups,
            default: api.default_upstream,
            direct: pooled_client(Duration::from_secs(5), Duration::from_secs(90), &tls),
        }
    }

    pub fn groups(&self) -> &[Arc<Group>] {
        &self.groups
    }

    /// The upstream that serves requests no plugin routed elsewhere.
    pub fn default_destination(&self) -> Destination {
        Destination::Upstream(self.default)
    }

    /// The name of the upstream that serves requests no plugin routed.
    pub fn default_name(&self) -> &str {
        &self.groups[self.default].name
    }

    /// For `validate`: `http://a:80`, or `default: http://a:80 +1 (least_request); us: http://b:80`.
    pub fn summary(&self) -> String {
        if let [only] = &self.groups[..]
            && only.targets.len() == 1
        {
            return only.targets[0].label.to_string();
        }
        let describe = |g: &Group| {
            let more = g.targets.len() - 1;
            let extra = if more > 0 {
                format!(" +{more} ({})", g.config.balance.name())
            } else {
                String::new()
            };
            format!("{}: {}{extra}", g.name, g.targets[0].label)
        };
        // The default first.
        let others = (0..self.groups.len()).filter(|&i| i != self.default);
        std::iter::once(self.default)
            .chain(others)
            .map(|i| describe(&self.groups[i]))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The first target of the default upstream, as plugins see it in the
    /// API record.
    pub fn default_url(&self) -> String {
        self.groups[self.default].targets[0].url.to_string()
    }

    /// Sends `out` to `destination`, waiting at most `timeout` for each
    /// attempt's response head.
    pub async fn send(
        &self,
        destination: &Destination,
        out: Outgoing,
        timeout: Duration,
        affinity: Affinity<'_>,
    ) -> Result<Exchanged, UpstreamError> {
        match destination {
            Destination::Upstream(i) => self.groups[*i].send(out, timeout, affinity).await,
            Destination::Url(url) => {
                let request = request_to(url, out.parts, &out.path, body_of(out.body))?;
                // On a target's host and port: that target's pool, slot,
                // metrics and health, like any request to it.
                let owner = self.groups.iter().find_map(|group| {
                    let target = group.targets.iter().find(|t| t.url.same_origin(url))?;
                    Some((group, target))
                });
                if let Some((group, target)) = owner {
                    let client = group.client.load_full();
                    return group.attempt(&client, target, request, timeout, false).await.outcome;
                }
                let target = url.to_string();
                match tokio::time::timeout(timeout, self.direct.request(request)).await {
                    Err(_) => Err(UpstreamError::Timeout { target, timeout }),
                    Ok(Err(e)) => Err(error_of(failure(&e), target)),
                    Ok(Ok(response)) => Ok(Exchanged {
                        response,
                        in_flight: None,
                        target: target.into(),
                        tries: 1,
                    }),
                }
            }
        }
    }
}

fn body_of(body: OutBody) -> Body {
    match body {
        OutBody::Stream(body) => body,
        OutBody::Bytes(bytes) => Body::from(bytes),
    }
}

fn request_to(
    url: &BaseUrl,
    mut parts: http::request::Parts,
    path: &str,
    body: Body,
) -> Result<http::Request<Body>, UpstreamError> {
    parts.uri = url
        .uri(path, parts.uri.query())
        .map_err(|e| UpstreamError::Invalid(e.to_string()))?;
    Ok(http::Request::from_parts(parts, body))
}

fn error_of(failure: Failure, target: String) -> UpstreamError {
    match failure {
        Failure::Connect(reason) => UpstreamError::Connect { target, reason },
        Failure::Tls(reason) => UpstreamError::Tls { target, reason },
        Failure::BodyTooLarge => UpstreamError::RequestBodyTooLarge,
        Failure::Reset(reason) => UpstreamError::Reset { target, reason },
    }
}
