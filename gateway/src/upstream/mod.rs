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
mod client;
mod health;
pub mod outbound;

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
use health::{Health, State, now_ms};

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
            return only.targets[0].label.clone();
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

/// One upstream: its targets, how they are picked, their client.
#[derive(Debug)]
pub struct Group {
    pub name: Arc<str>,
    api: Arc<str>,
    config: UpstreamConfig,
    targets: Vec<Arc<Target>>,
    balancer: Balancer,
    /// Replaced when a target's DNS name resolves to new addresses, so no
    /// pooled connection keeps traffic on an old one.
    client: ArcSwap<HttpClient<Body>>,
    tls: ClientTls,
    budget: RetryBudget,
}

#[derive(Debug)]
pub struct Target {
    url: BaseUrl,
    label: String,
    weight: u32,
    /// Shared with the same target before and after a reload, like its
    /// health, so `max_in_flight` counts the requests the old one still has.
    in_flight: Arc<AtomicU32>,
    health: Arc<Health>,
    metrics: TargetMetrics,
    /// What the DNS name resolved to last (empty for IP addresses).
    addresses: Mutex<Vec<SocketAddr>>,
}

impl Target {
    fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

impl Group {
    fn start(api: &Arc<str>, config: UpstreamConfig, tls: ClientTls, previous: Option<&Group>) -> Arc<Self> {
        let name: Arc<str> = config.name.as_str().into();
        let targets = config
            .targets
            .iter()
            .map(|t| {
                let label = t.url.to_string();
                let before = previous.and_then(|p| p.targets.iter().find(|old| old.url == t.url));
                Arc::new(Target {
                    metrics: TargetMetrics::new(api, &name, &label),
                    url: t.url.clone(),
                    label,
                    weight: t.weight,
                    in_flight: before.map_or_else(Arc::default, |old| Arc::clone(&old.in_flight)),
                    health: before.map_or_else(Arc::default, |old| Arc::clone(&old.health)),
                    addresses: Mutex::default(),
                })
            })
            .collect();
        let weights: Vec<u32> = config.targets.iter().map(|t| t.weight).collect();
        let group = Arc::new(Group {
            balancer: Balancer::new(&config.balance, &weights),
            client: ArcSwap::from_pointee(pooled_client(config.connect_timeout, config.idle_timeout, &tls)),
            budget: RetryBudget::new(config.retries.budget_percent, config.retries.min_per_second),
            name,
            api: Arc::clone(api),
            targets,
            tls,
            config,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            if let Some(check) = group.config.health_check.clone() {
                runtime.spawn(probe_loop(Arc::downgrade(&group), check));
            }
            if group.targets.iter().any(|t| t.url.is_dns_name()) {
                runtime.spawn(dns_loop(Arc::downgrade(&group)));
            }
        }
        group
    }

    fn hash_key(&self, headers: &HeaderMap, affinity: Affinity<'_>) -> Option<u64> {
        match &self.config.balance {
            crate::config::upstream::Balance::ConsistentHash(on) => match on {
                HashOn::Header(name) => headers.get(name).map(|v| hash_of(&v.as_bytes())),
                HashOn::ClientIp => Some(hash_of(&affinity.client_ip)),
                HashOn::KeyId => affinity.key_id.map(|k| hash_of(&k.as_bytes())),
            },
            _ => None,
        }
    }

    /// A target that may take one more request, not among `tried`.
    fn pick(&self, key: Option<u64>, tried: &[usize]) -> Result<usize, UpstreamError> {
        let now = now_ms();
        let max = self.config.max_in_flight;
        let targets = &self.targets;
        let open = |t: usize| !tried.contains(&t) && targets[t].health.available(now);
        if let Some(t) = self.balancer.pick(
            key,
            |t| open(t) && targets[t].in_flight() < max,
            |t| targets[t].in_flight(),
        ) {
            return Ok(t);
        }
        if (0..targets.len()).any(open) {
            for target in targets.iter() {
                target.metrics.failed("at_capacity");
            }
            return Err(UpstreamError::AtCapacity(Arc::clone(&self.name)));
        }
        // When the first may be back: an ejection's end, or the probes'
        // next verdict.
        let probes = self.config.health_check.as_ref().map(|c| c.interval * c.healthy_after);
        let back = targets
            .iter()
            .map(|t| match t.health.back_at() {
                Some(at) => Duration::from_millis(at.saturating_sub(now)),
                None => probes.unwrap_or(Duration::from_secs(1)),
            })
            .min()
            .unwrap_or(Duration::from_secs(1));
        Err(UpstreamError::Unavailable {
            upstream: Arc::clone(&self.name),
            why: if probes.is_some() {
                "every target is ejected or failing its health checks"
            } else {
                "every target is ejected"
            },
            retry_after: back.max(Duration::from_secs(1)),
        })
    }

    /// Sends to a target picked by the balance; on a failure listed in
    /// `retries.on`, to another one, while the request can be sent again
    /// and the retry budget allows.
    async fn send(&self, out: Outgoing, timeout: Duration, affinity: Affinity<'_>) -> Result<Exchanged, UpstreamError> {
        let Outgoing { parts, path, body } = out;
        let key = self.hash_key(&parts.headers, affinity);
        let retries = &self.config.retries;
        let idempotent = is_idempotent(&parts.method);
        let attempts = if matches!(body, OutBody::Bytes(_)) {
            (retries.attempts as usize + 1).min(MAX_ATTEMPTS)
        } else {
            1
        };
        if retries.attempts > 0 {
            self.budget.deposit();
        }
        let client = self.client.load_full();
        let mut tried = [usize::MAX; MAX_ATTEMPTS];
        let mut parts = Some(parts);
        let mut body = Some(body);
        let mut next = self.pick(key, &[])?;
        let mut attempt = 0;
        loop {
            tried[attempt] = next;
            let target = &self.targets[next];
            let last = attempt + 1 == attempts;
            let (head, content) = if last {
                let body = body.take().map(body_of).unwrap_or_default();
                (parts.take().unwrap_or_else(empty_head), body)
            } else {
                let head = parts.as_ref().map_or_else(empty_head, clone_head);
                (head, body.as_ref().map(OutBody::body).unwrap_or_default())
            };
            let request = request_to(&target.url, head, &path, content)?;
            let Attempt { outcome, retry_on } = self.attempt(&client, target, request, timeout, idempotent).await;
            // Another target, if there is one and the budget allows;
            // otherwise this outcome stands.
            match retry_on {
                Some(reason) if !last => match self.pick(key, &tried[..=attempt]) {
                    Ok(other) if self.may_retry(&reason) => {
                        next = other;
                        attempt += 1;
                    }
                    _ => return outcome,
                },
                _ => return outcome,
            }
        }
    }

    /// One exchange with `target`: its slot, metrics and passive health,
    /// and whether `retries.on` lists what went wrong.
    async fn attempt(
        &self,
        client: &HttpClient<Body>,
        target: &Arc<Target>,
        request: http::Request<Body>,
        timeout: Duration,
        idempotent: bool,
    ) -> Attempt {
        let on = &self.config.retries.on;
        target.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = InFlight(Arc::clone(target));
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(timeout, client.request(request)).await;
        let (outcome, retry_on) = match result {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                target.metrics.answered(status, started.elapsed());
                self.observe(target, status < 500, || format!("answered {status}"));
                let retry = idempotent && on.statuses.contains(&status);
                let exchanged = Exchanged {
                    response,
                    in_flight: Some(slot),
                };
                (Ok(exchanged), retry.then(|| status.to_string().into()))
            }
            Err(_) => {
                drop(slot);
                target.metrics.failed("timeout");
                self.observe(target, false, || format!("no response within {timeout:?}"));
                let error = UpstreamError::Timeout {
                    target: target.label.clone(),
                    timeout,
                };
                (Err(error), (idempotent && on.timeout).then_some("timeout".into()))
            }
            Ok(Err(e)) => {
                drop(slot);
                let failed = failure(&e);
                // The error's metric label, and its `retries.on` name.
                let (label, condition, retry) = match &failed {
                    // The client's fault, not the target's.
                    Failure::BodyTooLarge => {
                        return Attempt {
                            outcome: Err(UpstreamError::RequestBodyTooLarge),
                            retry_on: None,
                        };
                    }
                    // Not connected: the target never saw the request.
                    Failure::Connect(_) => ("connect_error", "connect_error", on.connect_error),
                    Failure::Tls(_) => ("tls", "connect_error", on.connect_error),
                    Failure::Reset(_) => ("reset", "reset", idempotent && on.reset),
                };
                target.metrics.failed(label);
                let error = error_of(failed, target.label.clone());
                self.observe(target, false, || error.to_string());
                (Err(error), retry.then_some(condition.into()))
            }
        };
        Attempt { outcome, retry_on }
    }

    /// Whether the budget allows one more retry (counted either way).
    fn may_retry(&self, reason: &str) -> bool {
        let allowed = self.budget.withdraw();
        crate::telemetry::metrics::retried(&self.api, &self.name, if allowed { reason } else { "budget_exhausted" });
        allowed
    }

    /// Feeds a live request's outcome to the target's passive health.
    fn observe(&self, target: &Target, ok: bool, why: impl FnOnce() -> String) {
        for change in target.health.record(self.config.passive.as_ref(), ok, why) {
            self.announce(target, &change);
        }
    }

    fn announce(&self, target: &Target, change: &health::Change) {
        target.metrics.changed(change.to.name());
        let (api, upstream, url) = (&*self.api, &*self.name, target.label.as_str());
        match change.to {
            State::Healthy => tracing::info!(api, upstream, target = url, reason = %change.reason, "target healthy"),
            State::Unhealthy => {
                tracing::warn!(api, upstream, target = url, reason = %change.reason, "target unhealthy")
            }
            State::Ejected => tracing::warn!(api, upstream, target = url, reason = %change.reason, "target ejected"),
        }
    }

    /// Each target's state, for `GET /upstreams`.
    pub fn describe(&self) -> serde_json::Value {
        let now = now_ms();
        let config = &self.config;
        let targets: Vec<serde_json::Value> = self
            .targets
            .iter()
            .map(|target| {
                let seen = self.snapshot(target, now);
                let detail = &seen.detail;
                let since = detail
                    .since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let addresses: Vec<String> = crate::sync::lock(&target.addresses)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                serde_json::json!({
                    "url": target.label,
                    "weight": target.weight,
                    "state": detail.state.name(),
                    "since": since,
                    "for_seconds": SystemTime::now().duration_since(detail.since).map_or(0, |d| d.as_secs()),
                    "reason": detail.reason,
                    "ejected_for_ms": seen.ejected_for.map(|d| d.as_millis() as u64),
                    "ejections": detail.ejections,
                    "consecutive_failures": seen.failures,
                    "last_probe": detail.last_probe,
                    "in_flight": target.in_flight(),
                    "addresses": addresses,
                })
            })
            .collect();
        serde_json::json!({
            "name": &*self.name,
            "balance": config.balance.name(),
            "max_in_flight": config.max_in_flight,
            "health_check": config.health_check.as_ref().map(|c| c.path.as_str()),
            "passive": config.passive.is_some(),
            "retries": config.retries.attempts,
            "targets": targets,
        })
    }

    /// Each target's current state, for the `upstream_target_state` gauge.
    pub fn states(&self) -> impl Iterator<Item = crate::telemetry::metrics::TargetState> + '_ {
        let now = now_ms();
        self.targets
            .iter()
            .map(move |target| target.metrics.state(self.snapshot(target, now).detail.state.name()))
    }

    /// A target's health at `now`, announcing an ejection this look ended.
    fn snapshot(&self, target: &Target, now: u64) -> health::Snapshot {
        let seen = target.health.snapshot(now);
        if let Some(change) = &seen.change {
            self.announce(target, change);
        }
        seen
    }

    /// Probes every target once, at once.
    async fn probe_all(&self, check: &crate::config::upstream::HealthCheck) {
        let client = self.client.load_full();
        let probes = self.targets.iter().map(|target| {
            let client = Arc::clone(&client);
            async move {
                let result = probe(&client, target, check).await;
                if let Some(change) = target.health.probed(check, result) {
                    self.announce(target, &change);
                }
            }
        });
        futures_util::future::join_all(probes).await;
    }
}

/// One probe: `GET` the health check path; the status, or why none came.
async fn probe(
    client: &HttpClient<Body>,
    target: &Target,
    check: &crate::config::upstream::HealthCheck,
) -> Result<u16, String> {
    let uri = target
        .url
        .uri(&check.path, None)
        .map_err(|e| format!("invalid probe URL: {e}"))?;
    let mut request = http::Request::new(Body::empty());
    *request.uri_mut() = uri;
    request.headers_mut().insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("portcullis-health-check"),
    );
    match tokio::time::timeout(check.timeout, client.request(request)).await {
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
        Ok(Err(e)) => Err(match failure(&e) {
            Failure::Connect(why) | Failure::Reset(why) => why,
            Failure::Tls(why) => format!("TLS handshake failed: {why}"),
            Failure::BodyTooLarge => "request body too large".into(),
        }),
        Ok(Ok(response)) => Ok(response.status().as_u16()),
    }
}

async fn probe_loop(group: Weak<Group>, check: crate::config::upstream::HealthCheck) {
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(group) = group.upgrade() else {
            return;
        };
        group.probe_all(&check).await;
    }
}

/// Resolves the targets' DNS names every `dns_refresh`; when one now
/// resolves to other addresses, the upstream gets a fresh connection pool,
/// so pooled connections to the old ones are not reused. (Every new
/// connection resolves the name anyway; this catches the kept-alive ones.)
async fn dns_loop(group: Weak<Group>) {
    let Some(interval) = group.upgrade().map(|g| g.config.dns_refresh) else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(group) = group.upgrade() else {
            return;
        };
        let mut changed = false;
        for target in group.targets.iter().filter(|t| t.url.is_dns_name()) {
            let Ok(found) = tokio::net::lookup_host((target.url.host(), target.url.port())).await else {
                continue;
            };
            let mut found: Vec<SocketAddr> = found.collect();
            found.sort();
            found.dedup();
            let mut known = crate::sync::lock(&target.addresses);
            if *known != found {
                if !known.is_empty() {
                    tracing::info!(
                        api = &*group.api,
                        upstream = &*group.name,
                        target = target.label,
                        before = ?*known,
                        now = ?found,
                        "target's DNS name resolves to new addresses; new connections go there"
                    );
                    changed = true;
                }
                *known = found;
            }
        }
        if changed {
            let config = &group.config;
            group.client.store(Arc::new(pooled_client(
                config.connect_timeout,
                config.idle_timeout,
                &group.tls,
            )));
        }
    }
}

/// Methods a client may repeat without changing the outcome (RFC 9110 9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn empty_head() -> http::request::Parts {
    http::Request::new(()).into_parts().0
}

/// A copy of a request head for another attempt, without its extensions
/// (the client connection's, of no use upstream, and each a boxed clone).
fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut request = http::Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

/// Retries allowed as a share of requests (`budget_percent`), plus
/// `min_per_second` whatever the traffic: a token bucket in thousandths,
/// filled by each request and by time, emptied by each retry.
#[derive(Debug)]
struct RetryBudget {
    per_request: u64,
    per_second: u64,
    cap: u64,
    state: Mutex<(u64, std::time::Instant)>,
}

impl RetryBudget {
    fn new(percent: u32, min_per_second: u32) -> Self {
        let per_second = u64::from(min_per_second) * 1000;
        RetryBudget {
            per_request: u64::from(percent) * 10,
            per_second,
            cap: per_second.max(10_000),
            state: Mutex::new((per_second, std::time::Instant::now())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, std::time::Instant)> {
        crate::sync::lock(&self.state)
    }

    fn deposit(&self) {
        let mut state = self.lock();
        state.0 = (state.0 + self.per_request).min(self.cap);
    }

    fn withdraw(&self) -> bool {
        let mut state = self.lock();
        let now = std::time::Instant::now();
        let earned = (now - state.1).as_millis() as u64 * self.per_second / 1000;
        if earned > 0 {
            state.0 = (state.0 + earned).min(self.cap);
            state.1 = now;
        }
        if state.0 >= 1000 {
            state.0 -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_budget_is_a_share_of_requests() {
        let budget = RetryBudget::new(20, 0);
        let mut allowed = 0;
        for _ in 0..100 {
            budget.deposit();
            if budget.withdraw() {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 20);
        let floor = RetryBudget::new(0, 5);
        let first: usize = (0..10).filter(|_| floor.withdraw()).count();
        assert_eq!(first, 5, "a second's worth to start with");
    }
}
