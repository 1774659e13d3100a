//! Portcullis: an API gateway whose custom logic runs as sandboxed
//! WebAssembly components.
//!
//! Operators describe APIs in YAML ([`config`]). The public listener
//! ([`server`]) puts each request's path in canonical form, matches it to an
//! API and endpoint, runs the hooks and the endpoint's plugin ([`plugin`],
//! the only module that uses wasmtime) and proxies it to the upstream
//! ([`upstream`]: targets, pools, health, and the outbound client plugins
//! call through). [`telemetry`] observes every request (metrics, access
//! log, traces); [`control`] starts the gateway, reloads it and serves the
//! admin API. docs/architecture.md draws the map.
//!
//! ## Layers
//!
//! A module imports only from its own layer and the layers below it, and no
//! files import each other in a circle; `cargo xtask lint` checks both.
//!
//! 1. `sync`, `text`, `framing`, `grpc`: rules every layer shares (the lock, hex and log-safe text, HTTP framing, gRPC's statuses, deadlines and health messages).
//! 2. `tls`, `cosign`: loading and verifying certificates and keys; cosign's keys and signatures.
//! 3. `config`: the configuration as plain, validated data.
//! 4. `telemetry`, `store`: observing requests; keeping sessions.
//! 5. `upstream`, `registry`: the upstream targets and the one outbound client; plugins fetched from OCI registries and checked against the trust policy.
//! 6. `plugin`: the wasmtime glue, the contract, and calling plugins.
//! 7. `server`: the listener and the request path.
//! 8. `control`, `plugin_tools`, `import`: start-up, reload, cluster and admin; the plugin CLI tools; importing other gateways' API definitions.

/// mimalloc instead of the system allocator: fewer instructions per request
/// on every path (docs/benchmarks.md, "The allocator"). Declared here, not in
/// `main.rs`, so that everything built on this crate (the binary, `hot_path`,
/// the `bare_proxy` floor, the tests) allocates the way the gateway ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod config;
pub mod control;
pub mod cosign;
pub mod framing;
pub mod grpc;
pub mod import;
pub mod plugin;
pub mod plugin_tools;
pub mod registry;
pub mod server;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod upstream;
