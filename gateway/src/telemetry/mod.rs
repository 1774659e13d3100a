//! Everything the gateway tells about itself. Each request is observed once
//! ([`observer`]), which feeds Prometheus metrics ([`metrics`]), the access
//! log ([`access_log`]) and OpenTelemetry traces ([`traces`]); [`ids`] is
//! the request id and trace context every call a request makes carries.

pub mod access_log;
pub mod ids;
pub mod log_format;
pub mod metrics;
pub mod observer;
pub mod traces;

pub use ids::{RequestId, TraceContext};
pub use observer::{Accounting, Blame, Observer};
pub use traces::*;

/// What the plugin calls of one request (or one `plugin call`) used.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    pub calls: u32,
    /// Time the calls took, outbound waits included.
    pub time: std::time::Duration,
    /// Time the guests ran (waits for outbound calls excluded).
    pub cpu: std::time::Duration,
    /// The most linear memory an instance had.
    pub peak_memory_bytes: usize,
    /// The plugins that ran, each once: `label@digest`.
    pub ran: Vec<std::sync::Arc<str>>,
}
