//! Prometheus metrics, served in the text format on the admin listener's
//! `/metrics`.
//!
//! One registry per process. The handles a request touches are resolved
//! when a configuration loads ([`ApiMetrics`] per API, [`PluginMetrics`] per
//! plugin reference), so the hot path costs an `Instant`, one family lookup
//! for the status code and a few atomic or uncontended mutex operations.
//!
//! One file, past 500 lines: the registry is declared in one place, every
//! family beside the handle that feeds it, so a metric's name, help text
//! and labels are read together.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;

use crate::tls::CertInfo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The API's id; empty for requests that match no API.
    api: Arc<str>,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    api: Arc<str>,
    /// `client`, `upstream`, `plugin` or `gateway`.
    blame: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    api: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    /// The API whose reference it is (two APIs' `auth.wasm` stay apart).
    api: Arc<str>,
    /// `file.wasm#function`.
    plugin: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginFailureLabels {
    api: Arc<str>,
    plugin: Arc<str>,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundLabels {
    api: Arc<str>,
    plugin: Arc<str>,
    /// `ok`, or why the call got no response: `not_allowed`, `invalid`,
    /// `connect_error`, `timeout`, `too_large`, `other`.
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    api: Arc<str>,
    /// `rate` or `quota`.
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    /// `get`, `list`, `put`, `delete`, `acquire`, `peek`, `ping`.
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    /// `listener`, `client_ca`, `upstream_ca` or `upstream_client`.
    role: &'static str,
    /// Where it was loaded from: `listener`, or `api:ID`.
    source: Arc<str>,
    file: String,
    subject: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    api: Arc<str>,
    upstream: Arc<str>,
    target: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetCodeLabels {
    api: Arc<str>,
    upstream: Arc<str>,
    target: Arc<str>,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetReasonLabels {
    api: Arc<str>,
    upstream: Arc<str>,
    target: Arc<str>,
    /// `connect_error`, `tls`, `timeout`, `reset`, `at_capacity`.
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetStateLabels {
    api: Arc<str>,
    upstream: Arc<str>,
    target: Arc<str>,
    /// `healthy`, `unhealthy`, `ejected`.
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    api: Arc<str>,
    upstream: Arc<str>,
    reason: Arc<str>,
}

/// A certificate's labels and its expiry, in Unix seconds.
type CertExpiry = (CertLabels, i64);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_failures: Family<FailureLabels, Counter>,
    request_duration: HistogramFamily<ApiLabel>,
    plugin_calls: Family<PluginLabel, Counter>,
    plugin_failures: Family<PluginFailureLabels, Counter>,
    plugin_duration: HistogramFamily<PluginLabel>,
    reloads: Family<ResultLabel, Counter>,
    last_reload: Gauge<f64, AtomicU64>,
    instances_in_use: Gauge,
    pool_size: Gauge,
    in_flight: Gauge,
    limited: Family<LimitLabels, Counter>,
    outbound_calls: Family<OutboundLabels, Counter>,
    outbound_duration: HistogramFamily<PluginLabel>,
    store_duration: HistogramFamily<StoreLabels>,
    store_errors: Family<StoreLabels, Counter>,
    cert_not_after: Family<CertLabels, Gauge>,
    access_log_dropped: Counter,
    upstream_requests: Family<TargetCodeLabels, Counter>,
    upstream_errors: Family<TargetReasonLabels, Counter>,
    upstream_duration: HistogramFamily<TargetLabels>,
    upstream_state_changes: Family<TargetStateLabels, Counter>,
    upstream_state: Family<TargetStateLabels, Gauge>,
    upstream_retries: Family<RetryLabels, Counter>,
    cert_expiry: Family<CertLabels, Gauge<f64, AtomicU64>>,
    /// Every loaded certificate by source, with its expiry (Unix seconds);
    /// the gauge is computed from it at scrape time.
    certificates: Mutex<BTreeMap<Arc<str>, Vec<CertExpiry>>>,
}

/// 100 us to about 13 s.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// 10 us to about 1.3 s.
fn plugin_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00001, 2.0, 18))
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let requests = Family::<RequestLabels, Counter>::default();
        let request_failures = Family::<FailureLabels, Counter>::default();
        let request_duration: HistogramFamily<ApiLabel> = Family::new_with_constructor(request_histogram);
        let plugin_calls = Family::<PluginLabel, Counter>::default();
        let plugin_failures = Family::<PluginFailureLabels, Counter>::default();
        let plugin_duration: HistogramFamily<PluginLabel> = Family::new_with_constructor(plugin_histogram);
        let reloads = Family::<ResultLabel, Counter>::default();
        let last_reload = Gauge::<f64, AtomicU64>::default();
        let instances_in_use = Gauge::default();
        let pool_size = Gauge::default();
        let in_flight = Gauge::default();
        let limited = Family::<LimitLabels, Counter>::default();
        let outbound_calls = Family::<OutboundLabels, Counter>::default();
        let outbound_duration: HistogramFamily<PluginLabel> = Family::new_with_constructor(request_histogram);
        let store_duration: HistogramFamily<StoreLabels> = Family::new_with_constructor(plugin_histogram);
        let store_errors = Family::<StoreLabels, Counter>::default();
        let cert_not_after = Family::<CertLabels, Gauge>::default();
        let access_log_dropped = Counter::default();
        let cert_expiry = Family::<CertLabels, Gauge<f64, AtomicU64>>::default();
        let upstream_requests = Family::<TargetCodeLabels, Counter>::default();
        let upstream_errors = Family::<TargetReasonLabels, Counter>::default();
        let upstream_duration: HistogramFamily<TargetLabels> = Family::new_with_constructor(request_histogram);
        let upstream_state_changes = Family::<TargetStateLabels, Counter>::default();
        let upstream_state = Family::<TargetStateLabels, Gauge>::default();
        let upstream_retries = Family::<RetryLabels, Counter>::default();

        let mut registry = Registry::with_prefix("portcullis");
        let build = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        registry.register("build", "The gateway's version", build);
        registry.register(
            "http_requests",
            "Requests answered on the public listener, by API and status code",
            requests.clone(),
        );
        registry.register(
            "http_request_failures",
            "Requests the gateway answered with an error, by API and whose fault it was (client, upstream, plugin, gateway)",
            request_failures.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response head, by API",
            request_duration.clone(),
        );
        registry.register(
            "plugin_calls",
            "Plugin invocations, by plugin (file.wasm#function)",
            plugin_calls.clone(),
        );
        registry.register(
            "plugin_failures",
            "Plugin invocations that failed, by plugin and reason",
            plugin_failures.clone(),
        );
        registry.register(
            "plugin_call_duration_seconds",
            "Wall time of one plugin invocation (instantiation, call, outbound waits), by plugin",
            plugin_duration.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP or POST /reload), by result",
            reloads.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration serving now was loaded (at start or by the last successful reload), Unix seconds",
            last_reload.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests on the public listener being handled (until their response head)",
            in_flight.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a rate limit or a quota, by API and limit (rate, quota)",
            limited.clone(),
        );
        registry.register(
            "plugin_outbound_calls",
            "Outbound HTTP calls plugins made, by API, plugin and result (ok; not_allowed, invalid, connect_error, timeout, too_large, other; cancelled when a batch stopped first)",
            outbound_calls.clone(),
        );
        registry.register(
            "plugin_outbound_call_duration_seconds",
            "Time of one outbound call a plugin made, to its response or failure, by API and plugin",
            outbound_duration.clone(),
        );
        registry.register(
            "session_store_operation_duration_seconds",
            "Time of one session store operation, by operation",
            store_duration.clone(),
        );
        registry.register(
            "session_store_errors",
            "Session store operations that failed (store unreachable or its answer unreadable), by operation",
            store_errors.clone(),
        );
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        registry.register(
            "plugin_instances_in_use",
            "Plugin instance slots in use (of plugin_limits.pool_size), idle reused instances included",
            instances_in_use.clone(),
        );
        registry.register(
            "plugin_instance_pool_size",
            "Plugin instance slots in all (plugin_limits.pool_size)",
            pool_size.clone(),
        );
        registry.register(
            "tls_certificate_not_after_timestamp_seconds",
            "When a loaded certificate expires, Unix seconds, by role, source, file and subject",
            cert_not_after.clone(),
        );
        registry.register(
            "tls_certificate_expiry_seconds",
            "Seconds until a loaded certificate expires (negative: expired), by role, source, file and subject",
            cert_expiry.clone(),
        );
        registry.register(
            "upstream_requests",
            "Responses from upstream targets, by API, upstream, target and status code",
            upstream_requests.clone(),
        );
        registry.register(
            "upstream_errors",
            "Exchanges with a target that got no response, by reason (connect_error, tls, timeout, reset), and requests refused for at_capacity",
            upstream_errors.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Time from sending a request to a target until its response head, by target",
            upstream_duration.clone(),
        );
        registry.register(
            "upstream_state_changes",
            "Target state changes, by the state entered (healthy, unhealthy, ejected)",
            upstream_state_changes.clone(),
        );
        registry.register(
            "upstream_target_state",
            "1 for each target's current state (healthy, unhealthy, ejected)",
            upstream_state.clone(),
        );
        registry.register(
            "upstream_retries",
            "Retries to another target, by the reason (connect_error, reset, timeout, a status code; budget_exhausted for retries refused)",
            upstream_retries.clone(),
        );
        Metrics {
            upstream_requests,
            upstream_errors,
            upstream_duration,
            upstream_state_changes,
            upstream_state,
            upstream_retries,
            cert_expiry,
            certificates: Mutex::default(),
            registry,
            requests,
            request_failures,
            request_duration,
            plugin_calls,
            plugin_failures,
            plugin_duration,
            reloads,
            last_reload,
            instances_in_use,
            pool_size,
            in_flight,
            limited,
            outbound_calls,
            outbound_duration,
            store_duration,
            store_errors,
            cert_not_after,
            access_log_dropped,
        }
    })
}

/// The counters of one label set by status code, each resolved from its
/// family once: a request then costs a short scan under an uncontended
/// lock, not hashing the labels.
#[derive(Debug, Default)]
struct ByCode(Mutex<Vec<(u16, Counter)>>);

impl ByCode {
    /// Codes seen beyond this many are counted through the family.
    const MAX: usize = 32;

    fn inc(&self, code: u16, resolve: impl FnOnce() -> Counter) {
        let mut codes = crate::sync::lock(&self.0);
        if let Some((_, counter)) = codes.iter().find(|(c, _)| *c == code) {
            counter.inc();
            return;
        }
        let counter = resolve();
        counter.inc();
        if codes.len() < Self::MAX {
            codes.push((code, counter));
        }
    }
}

/// The metrics of one API, resolved when its configuration loads.
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    api: Arc<str>,
    duration: Histogram,
    requests: Arc<ByCode>,
}

impl ApiMetrics {
    pub fn new(api: &Arc<str>) -> Self {
        let label = ApiLabel { api: Arc::clone(api) };
        ApiMetrics {
            api: Arc::clone(api),
            duration: metrics().request_duration.get_or_create_owned(&label),
            requests: Arc::default(),
        }
    }

    /// For requests that match no API.
    pub fn unrouted() -> &'static Self {
        static UNROUTED: OnceLock<ApiMetrics> = OnceLock::new();
        UNROUTED.get_or_init(|| ApiMetrics::new(&Arc::from("")))
    }

    /// One request answered with `code` after `elapsed`.
    pub fn observe(&self, code: u16, elapsed: Duration) {
        self.requests.inc(code, || {
            let labels = RequestLabels {
                api: Arc::clone(&self.api),
                code,
            };
            metrics().requests.get_or_create_owned(&labels)
        });
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// One request refused by a rate limit (`rate`) or a quota (`quota`).
    pub fn limited(&self, limit: &'static str) {
        let labels = LimitLabels {
            api: Arc::clone(&self.api),
            limit,
        };
        metrics().limited.get_or_create(&labels).inc();
    }

    /// One failed request, `blame`'s fault (`client`, `upstream`, `plugin`
    /// or `gateway`). Off the common path: the labels are hashed here.
    pub fn failed(&self, blame: &'static str) {
        let labels = FailureLabels {
            api: Arc::clone(&self.api),
            blame,
        };
        metrics().request_failures.get_or_create(&labels).inc();
    }
}

/// The metrics of one plugin reference, resolved when it loads.
#[derive(Debug, Clone)]
pub struct PluginMetrics {
    label: PluginLabel,
    calls: Counter,
    duration: Histogram,
    outbound_duration: Histogram,
}

impl PluginMetrics {
    /// `plugin` (`file.wasm#function`) referenced by API `api` (empty for
    /// `plugin call`).
    pub fn new(api: &str, plugin: &Arc<str>) -> Self {
        let label = PluginLabel {
            api: api.into(),
            plugin: Arc::clone(plugin),
        };
        let m = metrics();
        PluginMetrics {
            calls: m.plugin_calls.get_or_create_owned(&label),
            duration: m.plugin_duration.get_or_create_owned(&label),
            outbound_duration: m.outbound_duration.get_or_create_owned(&label),
            label,
        }
    }

    /// One outbound call the plugin made: `result` is `ok` or why it got
    /// no response.
    pub fn outbound(&self, result: &'static str, elapsed: Duration) {
        let labels = OutboundLabels {
            api: Arc::clone(&self.label.api),
            plugin: Arc::clone(&self.label.plugin),
            result,
        };
        metrics().outbound_calls.get_or_create(&labels).inc();
        self.outbound_duration.observe(elapsed.as_secs_f64());
    }

    /// One invocation that took `elapsed`, whatever its outcome.
    pub fn observe(&self, elapsed: Duration) {
        self.calls.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// One failed invocation; `reason` is a short snake_case word.
    pub fn failed(&self, reason: &'static str) {
        let labels = PluginFailureLabels {
            api: Arc::clone(&self.label.api),
            plugin: Arc::clone(&self.label.plugin),
            reason,
        };
        metrics().plugin_failures.get_or_create(&labels).inc();
    }
}

/// The metrics of one upstream target, resolved when its configuration loads.
#[derive(Debug, Clone)]
pub struct TargetMetrics {
    labels: TargetLabels,
    duration: Histogram,
    requests: Arc<ByCode>,
}

impl TargetMetrics {
    pub fn new(api: &Arc<str>, upstream: &Arc<str>, target: &str) -> Self {
        let labels = TargetLabels {
            api: Arc::clone(api),
            upstream: Arc::clone(upstream),
            target: target.into(),
        };
        TargetMetrics {
            duration: metrics().upstream_duration.get_or_create_owned(&labels),
            labels,
            requests: Arc::default(),
        }
    }

    fn with(&self, reason: &'static str) -> TargetReasonLabels {
        TargetReasonLabels {
            api: Arc::clone(&self.labels.api),
            upstream: Arc::clone(&self.labels.upstream),
            target: Arc::clone(&self.labels.target),
            reason,
        }
    }

    fn in_state(&self, state: &'static str) -> TargetStateLabels {
        TargetStateLabels {
            api: Arc::clone(&self.labels.api),
            upstream: Arc::clone(&self.labels.upstream),
            target: Arc::clone(&self.labels.target),
            state,
        }
    }

    /// A response head with `code`, `elapsed` after sending.
    pub fn answered(&self, code: u16, elapsed: Duration) {
        self.requests.inc(code, || {
            let labels = TargetCodeLabels {
                api: Arc::clone(&self.labels.api),
                upstream: Arc::clone(&self.labels.upstream),
                target: Arc::clone(&self.labels.target),
                code,
            };
            metrics().upstream_requests.get_or_create_owned(&labels)
        });
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// An exchange without a response, or a request refused for this target.
    pub fn failed(&self, reason: &'static str) {
        metrics().upstream_errors.get_or_create(&self.with(reason)).inc();
    }

    /// The target entered `state`.
    pub fn changed(&self, state: &'static str) {
        metrics()
            .upstream_state_changes
            .get_or_create(&self.in_state(state))
            .inc();
    }

    /// For [`set_target_states`].
    pub fn state(&self, state: &'static str) -> TargetState {
        TargetState(self.in_state(state))
    }
}

/// A target's current state, as the `upstream_target_state` gauge shows it.
#[derive(Debug)]
pub struct TargetState(TargetStateLabels);

/// Replaces the `upstream_target_state` gauge (computed at scrape time, as
/// ejections run out without an event).
pub fn set_target_states(states: impl IntoIterator<Item = TargetState>) {
    let m = metrics();
    m.upstream_state.clear();
    for TargetState(labels) in states {
        m.upstream_state.get_or_create(&labels).set(1);
    }
}

/// One retry (`reason`: why), or one refused by the budget
/// (`budget_exhausted`).
pub fn retried(api: &Arc<str>, upstream: &Arc<str>, reason: &str) {
    let labels = RetryLabels {
        api: Arc::clone(api),
        upstream: Arc::clone(upstream),
        reason: reason.into(),
    };
    metrics().upstream_retries.get_or_create(&labels).inc();
}

/// One configuration reload, successful or not.
/// The access log dropped a line: its writer fell behind.
pub fn access_log_dropped() {
    metrics().access_log_dropped.inc();
}

pub fn reloaded(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics().reloads.get_or_create(&ResultLabel { result }).inc();
    if ok {
        config_loaded();
    }
}

/// The configuration serving now was loaded (at start, or by a reload).
pub fn config_loaded() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics().last_reload.set(now);
}

/// A request on the public listener, counted in `http_requests_in_flight`
/// until the guard drops.
pub fn in_flight() -> InFlightGuard {
    metrics().in_flight.inc();
    InFlightGuard(())
}

/// See [`in_flight`].
#[derive(Debug)]
pub struct InFlightGuard(());

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        metrics().in_flight.dec();
    }
}

/// One session store operation that took `elapsed`, failed or not.
pub fn store_operation(operation: &'static str, elapsed: Duration, ok: bool) {
    let m = metrics();
    let labels = StoreLabels { operation };
    m.store_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    if !ok {
        m.store_errors.get_or_create(&labels).inc();
    }
}

/// The certificates `source` (`listener`, `api:ID`) has loaded, replacing
/// what it had before.
pub fn set_certificates(source: &str, certificates: &[CertInfo]) {
    let source: Arc<str> = source.into();
    let entries = certificates
        .iter()
        .map(|c| {
            let labels = CertLabels {
                role: c.role,
                source: Arc::clone(&source),
                file: c.file.display().to_string(),
                subject: c.subject.clone(),
            };
            (labels, c.not_after)
        })
        .collect();
    let mut all = crate::sync::lock(&metrics().certificates);
    all.insert(source, entries);
}

/// Forgets the certificates of sources that are no longer configured
/// (APIs removed by a reload).
pub fn retain_certificate_sources(keep: impl Fn(&str) -> bool) {
    let mut all = crate::sync::lock(&metrics().certificates);
    all.retain(|source, _| keep(source));
}

/// Everything, in the Prometheus text format; `instances_in_use` and the
/// certificates' time left are computed at scrape time.
pub fn encode(instances_in_use: u32, pool_size: u32) -> String {
    let m = metrics();
    m.instances_in_use.set(i64::from(instances_in_use));
    m.pool_size.set(i64::from(pool_size));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    m.cert_expiry.clear();
    m.cert_not_after.clear();
    for (labels, not_after) in m
        .certificates
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .flatten()
    {
        m.cert_expiry.get_or_create(labels).set(*not_after as f64 - now);
        m.cert_not_after.get_or_create(labels).set(*not_after);
    }
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &m.registry);
    text
}
