//! End-to-end tests: the real `portcullis` binary, the real compiled plugins
//! and real upstream HTTP servers on loopback, all on OS-chosen ports.

mod access_log;
mod aggregation;
mod balancing;
mod boundary;
mod chain;
mod cluster;
mod config_errors;
mod contract;
mod dashboard;
mod deploy;
mod edge;
mod fan_out;
mod grpc;
mod import;
mod jwt;
mod keys;
mod metrics;
mod operator;
mod plugins;
mod policies;
mod proxy;
mod rate_limits;
mod registry;
mod sandbox;
mod support;
mod tls;
mod tools;
mod traces;
mod tunnels;
mod watch;
