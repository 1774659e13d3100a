//! Everything the gateway tells about itself: the request id and trace
//! context ([`ids`]), Prometheus metrics ([`metrics`]), the access log
//! ([`access_log`]) and OpenTelemetry traces ([`traces`]).

pub mod access_log;
pub mod ids;
pub mod metrics;
pub mod traces;

pub use ids::{RequestId, TraceContext};
pub use traces::*;
