//! Portcullis: an API gateway whose custom logic runs as sandboxed
//! WebAssembly components.
//!
//! Operators describe APIs in YAML ([`config`]); requests are matched to an
//! API and endpoint ([`routes`]), run through the endpoint's plugin
//! ([`plugin`], the only module that uses wasmtime) and proxied to the
//! upstream ([`proxy`], through the targets, pools and health state of
//! [`upstream`]) by the public listener ([`server`]). [`app`] ties them
//! together for the `serve` and `validate` commands.
//!
//! Dependencies point one way: [`config`] is plain data at the bottom;
//! [`upstream`], [`outbound`] and [`plugin`] build on it; [`error`] maps
//! their failures to responses, and [`server`] sits on top.

/// mimalloc instead of the system allocator: fewer instructions per request
/// on every path (docs/benchmarks.md, "The allocator"). Declared here, not in
/// `main.rs`, so that everything built on this crate (the binary, `hot_path`,
/// the `bare_proxy` floor, the tests) allocates the way the gateway ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod config;
pub mod control;
pub mod framing;
pub mod plugin;
pub mod plugin_tools;
pub mod server;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod upstream;
