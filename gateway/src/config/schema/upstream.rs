//! The long form of an upstream as written: targets, balance, health
//! checks, retries.

use super::*;

/// The long form of an upstream: several targets and how to use them.
/// Absent fields take their defaults (`targets` must list one at least).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamGroupFile {
    pub targets: Vec<UrlOr<TargetFile>>,
    pub balance: BalanceFile,
    /// With `consistent_hash`: `header:NAME`, `client_ip` or `key_id`.
    pub hash_on: Option<String>,
    #[serde(deserialize_with = "units::ms")]
    pub connect_timeout_ms: u64,
    #[serde(deserialize_with = "units::ms")]
    pub idle_timeout_ms: u64,
    /// Requests in flight per target; beyond it, 503 at once.
    pub max_in_flight: u32,
    pub health_check: Option<HealthCheckFile>,
    pub passive: PassiveFile,
    pub retries: RetriesFile,
    /// How often DNS names among the targets are resolved again.
    #[serde(deserialize_with = "units::ms")]
    pub dns_refresh_ms: u64,
}

impl Default for UpstreamGroupFile {
    fn default() -> Self {
        UpstreamGroupFile {
            targets: Vec::new(),
            balance: BalanceFile::default(),
            hash_on: None,
            connect_timeout_ms: 5_000,
            idle_timeout_ms: 90_000,
            max_in_flight: 1_024,
            health_check: None,
            passive: PassiveFile::default(),
            retries: RetriesFile::default(),
            dns_refresh_ms: 30_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    pub url: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceFile {
    RoundRobin,
    #[default]
    LeastRequest,
    ConsistentHash,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    /// `GET` this path: 2xx or 3xx is healthy.
    #[serde(default)]
    pub path: Option<String>,
    /// Or ask the gRPC health service (`grpc.health.v1.Health/Check`) about
    /// this service (`""`: the server as a whole): `SERVING` is healthy.
    #[serde(default)]
    pub grpc_service: Option<String>,
    #[serde(default = "default_probe_interval_ms")]
    #[serde(deserialize_with = "units::ms")]
    pub interval_ms: u64,
    #[serde(default = "default_probe_timeout_ms")]
    #[serde(deserialize_with = "units::ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: u32,
    #[serde(default = "default_healthy_after")]
    pub healthy_after: u32,
}

/// Outlier ejection; `failures: 0` turns it off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveFile {
    #[serde(default = "default_passive_failures")]
    pub failures: u32,
    #[serde(default = "default_eject_ms")]
    #[serde(deserialize_with = "units::ms")]
    pub eject_ms: u64,
}

impl Default for PassiveFile {
    fn default() -> Self {
        PassiveFile {
            failures: default_passive_failures(),
            eject_ms: default_eject_ms(),
        }
    }
}

/// Retries to another target; `attempts: 0` turns them off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesFile {
    #[serde(default = "default_retry_attempts")]
    pub attempts: u32,
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOnFile>,
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// Retries always allowed per second, whatever the share.
    #[serde(default = "default_min_retries_per_second")]
    pub min_per_second: u32,
}

impl Default for RetriesFile {
    fn default() -> Self {
        RetriesFile {
            attempts: default_retry_attempts(),
            on: default_retry_on(),
            budget_percent: default_budget_percent(),
            min_per_second: default_min_retries_per_second(),
        }
    }
}

/// One entry of `retries.on`: a condition name or a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOnFile {
    ConnectError,
    Reset,
    Timeout,
    Status(u16),
}

impl<'de> Deserialize<'de> for RetryOnFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entry;
        impl serde::de::Visitor<'_> for Entry {
            type Value = RetryOnFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connect_error, reset, timeout or a status code from 500 to 599")
            }
            fn visit_u64<E: serde::de::Error>(self, code: u64) -> Result<RetryOnFile, E> {
                match u16::try_from(code) {
                    Ok(code @ 500..=599) => Ok(RetryOnFile::Status(code)),
                    _ => Err(E::custom(format!(
                        "status {code} cannot be retried: only 500 to 599 mean the target failed"
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, code: i64) -> Result<RetryOnFile, E> {
                self.visit_u64(u64::try_from(code).unwrap_or(u64::MAX))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RetryOnFile, E> {
                match s {
                    "connect_error" => Ok(RetryOnFile::ConnectError),
                    "reset" => Ok(RetryOnFile::Reset),
                    "timeout" => Ok(RetryOnFile::Timeout),
                    other => match other.parse::<u64>() {
                        Ok(code) => self.visit_u64(code),
                        Err(_) => Err(E::custom(format!(
                            "unknown retry condition {other:?}: expected connect_error, reset, timeout or a 5xx status"
                        ))),
                    },
                }
            }
        }
        deserializer.deserialize_any(Entry)
    }
}

fn default_weight() -> u32 {
    1
}

fn default_probe_interval_ms() -> u64 {
    5_000
}

fn default_probe_timeout_ms() -> u64 {
    1_000
}

fn default_unhealthy_after() -> u32 {
    3
}

fn default_healthy_after() -> u32 {
    2
}

fn default_passive_failures() -> u32 {
    5
}

fn default_eject_ms() -> u64 {
    30_000
}

fn default_retry_attempts() -> u32 {
    1
}

fn default_retry_on() -> Vec<RetryOnFile> {
    vec![
        RetryOnFile::ConnectError,
        RetryOnFile::Reset,
        RetryOnFile::Status(502),
        RetryOnFile::Status(503),
        RetryOnFile::Status(504),
    ]
}

fn default_budget_percent() -> u32 {
    20
}

fn default_min_retries_per_second() -> u32 {
    10
}
