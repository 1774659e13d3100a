//! An API's upstreams as configured: targets, balancing, health checks,
//! ejection and retries. Plain data; the `upstream` module runs them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::ConfigError;
use super::net::BaseUrl;
use super::schema::{
    BalanceFile, HealthCheckFile, PassiveFile, RetriesFile, RetryOnFile, TargetFile, UpstreamGroupFile, UpstreamName,
    UrlOr,
};

/// The name `upstream:` gets when it is defined in place.
pub const DEFAULT_UPSTREAM: &str = "default";

/// Most targets in one upstream; most weight of one target.
const MAX_TARGETS: usize = 256;
const MAX_WEIGHT: u32 = 1_000;

/// One upstream: where requests go and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// `default` for the API's `upstream`, otherwise its key in `upstreams`.
    pub name: String,
    pub targets: Vec<TargetConfig>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Requests in flight per target.
    pub max_in_flight: u32,
    pub health_check: Option<HealthCheck>,
    pub passive: Option<Passive>,
    pub retries: Retries,
    /// How often DNS names among the targets are resolved again.
    pub dns_refresh: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    pub url: BaseUrl,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    /// Power of two choices, drawn by weight.
    LeastRequest,
    ConsistentHash(HashOn),
}

impl Balance {
    pub fn name(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequest => "least_request",
            Balance::ConsistentHash(_) => "consistent_hash",
        }
    }
}

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(http::HeaderName),
    ClientIp,
    KeyId,
}

/// The gRPC health service's method (grpc.health.v1).
pub const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";

/// Active probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    /// Probe with `grpc.health.v1.Health/Check` for this service.
    pub grpc_service: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

/// Outlier ejection from live traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passive {
    /// Consecutive connect errors, timeouts or 5xx answers.
    pub failures: u32,
    pub eject: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    /// Further attempts after the first; 0: none.
    pub attempts: u32,
    pub on: RetryOn,
    pub budget_percent: u32,
    pub min_per_second: u32,
}

/// The failures a retry is allowed for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub connect_error: bool,
    pub reset: bool,
    pub timeout: bool,
    pub statuses: Vec<u16>,
}

impl Retries {
    fn none() -> Self {
        Retries {
            attempts: 0,
            on: RetryOn::default(),
            budget_percent: 0,
            min_per_second: 0,
        }
    }
}

/// The API's upstreams, index 0 first (see [`super::net::Destination`]),
/// and the index of the default one.
pub(super) fn load(
    file: &Path,
    upstream: UrlOr<UpstreamGroupFile>,
    named: BTreeMap<UpstreamName, UrlOr<UpstreamGroupFile>>,
) -> Result<(Vec<UpstreamConfig>, usize), ConfigError> {
    let mut upstreams = Vec::with_capacity(named.len() + 1);
    let default = match upstream {
        UrlOr::Text(name) if !name.contains(':') => match named.keys().position(|n| n.0 == name) {
            Some(index) => index,
            None => {
                return Err(ConfigError::new(
                    file,
                    Some("upstream".into()),
                    format!("{name:?} is neither a URL nor one of `upstreams`"),
                ));
            }
        },
        inline => {
            if named.keys().any(|n| n.0 == DEFAULT_UPSTREAM) {
                return Err(ConfigError::new(
                    file,
                    Some("upstreams.default".into()),
                    "`default` names the upstream defined under `upstream`; pick another name, or write `upstream: default`",
                ));
            }
            upstreams.push(group(file, "upstream", DEFAULT_UPSTREAM, inline)?);
            0
        }
    };
    for (name, spec) in named {
        upstreams.push(group(file, &format!("upstreams.{}", name.0), &name.0, spec)?);
    }
    Ok((upstreams, default))
}

fn group(file: &Path, field: &str, name: &str, spec: UrlOr<UpstreamGroupFile>) -> Result<UpstreamConfig, ConfigError> {
    let bad = |sub: &str, why: String| ConfigError::new(file, Some(format!("{field}.{sub}")), why);
    let spec = match spec {
        // `upstream: http://host:port`: one target, no ejection, no
        // retries, as before targets existed.
        UrlOr::Text(url) => UpstreamGroupFile {
            targets: vec![UrlOr::Text(url)],
            balance: BalanceFile::RoundRobin,
            passive: PassiveFile {
                failures: 0,
                ..PassiveFile::default()
            },
            retries: RetriesFile {
                attempts: 0,
                ..RetriesFile::default()
            },
            ..UpstreamGroupFile::default()
        },
        UrlOr::Full(spec) => spec,
    };
    if spec.targets.is_empty() {
        return Err(bad("targets", "list at least one target".into()));
    }
    if spec.targets.len() > MAX_TARGETS {
        return Err(bad("targets", format!("at most {MAX_TARGETS} targets")));
    }
    let mut targets: Vec<TargetConfig> = Vec::with_capacity(spec.targets.len());
    for (i, target) in spec.targets.into_iter().enumerate() {
        let (url, weight) = match target {
            UrlOr::Text(url) => (url, 1),
            UrlOr::Full(TargetFile { url, weight }) => (url, weight),
        };
        let url = BaseUrl::parse(&url).map_err(|why| bad(&format!("targets[{i}].url"), why))?;
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(bad(
                &format!("targets[{i}].weight"),
                format!("must be between 1 and {MAX_WEIGHT}"),
            ));
        }
        if targets.first().is_some_and(|first| first.url.is_h2c() != url.is_h2c()) {
            return Err(bad(
                &format!("targets[{i}].url"),
                "an upstream's targets are all h2c:// or none is (one client speaks to them all)".into(),
            ));
        }
        if targets.iter().any(|t| t.url == url) {
            return Err(bad(&format!("targets[{i}].url"), format!("{url} is listed twice")));
        }
        targets.push(TargetConfig { url, weight });
    }
    let balance = match (spec.balance, spec.hash_on) {
        (BalanceFile::ConsistentHash, Some(on)) => {
            Balance::ConsistentHash(hash_on(&on).map_err(|why| bad("hash_on", why))?)
        }
        (BalanceFile::ConsistentHash, None) => {
            return Err(bad(
                "hash_on",
                "consistent_hash needs hash_on: header:NAME, client_ip or key_id".into(),
            ));
        }
        (_, Some(_)) => return Err(bad("hash_on", "only used with balance: consistent_hash".into())),
        (BalanceFile::RoundRobin, None) => Balance::RoundRobin,
        (BalanceFile::LeastRequest, None) => Balance::LeastRequest,
    };
    let positive = |sub: &str, ms: u64| {
        if ms == 0 {
            Err(bad(sub, "must be at least 1".into()))
        } else {
            Ok(Duration::from_millis(ms))
        }
    };
    let health_check = match spec.health_check {
        None => None,
        Some(HealthCheckFile {
            path,
            grpc_service,
            interval_ms,
            timeout_ms,
            unhealthy_after,
            healthy_after,
        }) => {
            let path = match (path, &grpc_service) {
                (Some(path), None) => path,
                (None, Some(_)) if targets.iter().all(|t| t.url.is_h2c()) => GRPC_HEALTH_PATH.to_owned(),
                (None, Some(_)) => {
                    return Err(bad(
                        "health_check.grpc_service",
                        "gRPC health checks need h2c:// targets".into(),
                    ));
                }
                _ => {
                    return Err(bad(
                        "health_check",
                        "give a `path` to GET, or a `grpc_service` to ask the gRPC health service about".into(),
                    ));
                }
            };
            if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
                return Err(bad(
                    "health_check.path",
                    format!("{path:?} is not a path such as /healthz"),
                ));
            }
            if unhealthy_after == 0 || healthy_after == 0 {
                return Err(bad(
                    "health_check",
                    "unhealthy_after and healthy_after must be at least 1".into(),
                ));
            }
            Some(HealthCheck {
                path,
                grpc_service,
                interval: positive("health_check.interval_ms", interval_ms)?,
                timeout: positive("health_check.timeout_ms", timeout_ms)?,
                unhealthy_after,
                healthy_after,
            })
        }
    };
    let passive = match spec.passive.failures {
        0 => None,
        failures => Some(Passive {
            failures,
            eject: positive("passive.eject_ms", spec.passive.eject_ms)?,
        }),
    };
    let retries = match spec.retries.attempts {
        0 => Retries::none(),
        attempts => {
            if spec.retries.budget_percent > 100 {
                return Err(bad("retries.budget_percent", "must be between 0 and 100".into()));
            }
            let mut on = RetryOn::default();
            for entry in spec.retries.on {
                match entry {
                    RetryOnFile::ConnectError => on.connect_error = true,
                    RetryOnFile::Reset => on.reset = true,
                    RetryOnFile::Timeout => on.timeout = true,
                    RetryOnFile::Status(code) if !on.statuses.contains(&code) => on.statuses.push(code),
                    RetryOnFile::Status(_) => {}
                }
            }
            Retries {
                // Each retry goes to a target not tried yet.
                attempts: attempts.min(targets.len().saturating_sub(1) as u32),
                on,
                budget_percent: spec.retries.budget_percent,
                min_per_second: spec.retries.min_per_second,
            }
        }
    };
    Ok(UpstreamConfig {
        name: name.to_owned(),
        targets,
        balance,
        connect_timeout: positive("connect_timeout_ms", spec.connect_timeout_ms)?,
        idle_timeout: Duration::from_millis(spec.idle_timeout_ms),
        max_in_flight: match spec.max_in_flight {
            0 => return Err(bad("max_in_flight", "must be at least 1".into())),
            n => n,
        },
        health_check,
        passive,
        retries,
        dns_refresh: positive("dns_refresh_ms", spec.dns_refresh_ms)?,
    })
}

fn hash_on(text: &str) -> Result<HashOn, String> {
    match text {
        "client_ip" => Ok(HashOn::ClientIp),
        "key_id" => Ok(HashOn::KeyId),
        other => match other.strip_prefix("header:") {
            Some(name) => http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                .map(HashOn::Header)
                .map_err(|_| format!("invalid header name {name:?}")),
            None => Err(format!(
                "unknown hash_on {other:?}: expected header:NAME, client_ip or key_id"
            )),
        },
    }
}
