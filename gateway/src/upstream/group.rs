//! One upstream's targets as they live: picked by its balancer, health
//! checked (active probes, passive ejection), re-resolved from DNS, each
//! with its in-flight count and metrics.

use super::*;

/// One upstream: its targets, how they are picked, their client.
#[derive(Debug)]
pub struct Group {
    pub name: Arc<str>,
    pub(super) api: Arc<str>,
    pub(super) config: UpstreamConfig,
    pub(super) targets: Vec<Arc<Target>>,
    pub(super) balancer: Balancer,
    /// Replaced when a target's DNS name resolves to new addresses, so no
    /// pooled connection keeps traffic on an old one.
    pub(super) client: ArcSwap<HttpClient<Body>>,
    pub(super) tls: ClientTls,
    pub(super) budget: RetryBudget,
}

#[derive(Debug)]
pub struct Target {
    pub(super) url: BaseUrl,
    pub(super) label: Arc<str>,
    pub(super) weight: u32,
    /// Shared with the same target before and after a reload, like its
    /// health, so `max_in_flight` counts the requests the old one still has.
    pub(super) in_flight: Arc<AtomicU32>,
    pub(super) health: Arc<Health>,
    pub(super) metrics: TargetMetrics,
    /// What the DNS name resolved to last (empty for IP addresses).
    pub(super) addresses: Mutex<Vec<SocketAddr>>,
}

impl Target {
    pub(super) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// The client of an upstream's targets: HTTP/2 only when they are `h2c://`
/// (all or none are: the configuration checks).
fn group_client(config: &UpstreamConfig, tls: &ClientTls) -> HttpClient<Body> {
    if config.targets.iter().any(|t| t.url.is_h2c()) {
        client::h2c_client(config.connect_timeout, config.idle_timeout, tls)
    } else {
        pooled_client(config.connect_timeout, config.idle_timeout, tls)
    }
}

impl Group {
    pub(super) fn start(api: &Arc<str>, config: UpstreamConfig, tls: ClientTls, previous: Option<&Group>) -> Arc<Self> {
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
                    label: label.into(),
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
            client: ArcSwap::from_pointee(group_client(&config, &tls)),
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

    pub(super) fn hash_key(&self, headers: &HeaderMap, affinity: Affinity<'_>) -> Option<u64> {
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
    pub(super) fn pick(&self, key: Option<u64>, tried: &[usize]) -> Result<usize, UpstreamError> {
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
    pub(super) async fn send(
        &self,
        out: Outgoing,
        timeout: Duration,
        affinity: Affinity<'_>,
    ) -> Result<Exchanged, UpstreamError> {
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
            let Attempt { mut outcome, retry_on } = self.attempt(&client, target, request, timeout, idempotent).await;
            if let Ok(exchanged) = &mut outcome {
                exchanged.tries = attempt as u32 + 1;
            }
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
    pub(super) async fn attempt(
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
                    target: Arc::clone(&target.label),
                    tries: 1,
                };
                (Ok(exchanged), retry.then(|| status.to_string().into()))
            }
            Err(_) => {
                drop(slot);
                target.metrics.failed("timeout");
                self.observe(target, false, || format!("no response within {timeout:?}"));
                let error = UpstreamError::Timeout {
                    target: target.label.to_string(),
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
                let error = error_of(failed, target.label.to_string());
                self.observe(target, false, || error.to_string());
                (Err(error), retry.then_some(condition.into()))
            }
        };
        Attempt { outcome, retry_on }
    }

    /// Whether the budget allows one more retry (counted either way).
    pub(super) fn may_retry(&self, reason: &str) -> bool {
        let allowed = self.budget.withdraw();
        crate::telemetry::metrics::retried(&self.api, &self.name, if allowed { reason } else { "budget_exhausted" });
        allowed
    }

    /// Feeds a live request's outcome to the target's passive health.
    pub(super) fn observe(&self, target: &Target, ok: bool, why: impl FnOnce() -> String) {
        for change in target.health.record(self.config.passive.as_ref(), ok, why) {
            self.announce(target, &change);
        }
    }

    pub(super) fn announce(&self, target: &Target, change: &health::Change) {
        target.metrics.changed(change.to.name());
        let (api, upstream, url) = (&*self.api, &*self.name, &*target.label);
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
                    "url": &*target.label,
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
    pub(super) fn snapshot(&self, target: &Target, now: u64) -> health::Snapshot {
        let seen = target.health.snapshot(now);
        if let Some(change) = &seen.change {
            self.announce(target, change);
        }
        seen
    }

    /// Probes every target once, at once.
    pub(super) async fn probe_all(&self, check: &crate::config::upstream::HealthCheck) {
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
pub(super) async fn probe(
    client: &HttpClient<Body>,
    target: &Target,
    check: &crate::config::upstream::HealthCheck,
) -> Result<u16, String> {
    let uri = target
        .url
        .uri(&check.path, None)
        .map_err(|e| format!("invalid probe URL: {e}"))?;
    let mut request = match &check.grpc_service {
        Some(service) => {
            let mut request = http::Request::new(Body::from(crate::grpc::health_request(service)));
            *request.method_mut() = Method::POST;
            let headers = request.headers_mut();
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
            request
        }
        None => http::Request::new(Body::empty()),
    };
    *request.uri_mut() = uri;
    request.headers_mut().insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("portcullis-health-check"),
    );
    let exchange = async {
        let response = client.request(request).await.map_err(|e| match failure(&e) {
            Failure::Connect(why) | Failure::Reset(why) => why,
            Failure::Tls(why) => format!("TLS handshake failed: {why}"),
            Failure::BodyTooLarge => "request body too large".into(),
        })?;
        match &check.grpc_service {
            Some(_) => grpc_verdict(response).await,
            None => Ok(response.status().as_u16()),
        }
    };
    tokio::time::timeout(check.timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", check.timeout)))
}

/// A gRPC health answer as a probe result: 200 when the service is
/// `SERVING`, otherwise why not (the gRPC status, or the serving status).
async fn grpc_verdict(response: http::Response<Incoming>) -> Result<u16, String> {
    use http_body_util::BodyExt;
    let (parts, body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(format!("HTTP {}", parts.status.as_u16()));
    }
    // A health answer is a few bytes: anything much larger is not one.
    let collected = http_body_util::Limited::new(body, 4096)
        .collect()
        .await
        .map_err(|e| format!("reading the health answer: {e}"))?;
    let status = parts
        .headers
        .get("grpc-status")
        .or_else(|| collected.trailers().and_then(|t| t.get("grpc-status")))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match status.as_deref() {
        Some("0") => {}
        Some(code) => return Err(format!("grpc-status {code}")),
        None => return Err("no grpc-status".into()),
    }
    match crate::grpc::health_status(&collected.to_bytes()) {
        Some(1) => Ok(200),
        Some(other) => Err(crate::grpc::serving_status_name(other).into()),
        None => Err("not a HealthCheckResponse".into()),
    }
}

pub(super) async fn probe_loop(group: Weak<Group>, check: crate::config::upstream::HealthCheck) {
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
pub(super) async fn dns_loop(group: Weak<Group>) {
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
                        target = &*target.label,
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
            group.client.store(Arc::new(group_client(config, &group.tls)));
        }
    }
}
