//! In-process micro-benchmarks of the hot path: one plugin invocation (a
//! fresh instance from the pre-instantiated component, the call, the drop)
//! with a typical request of 10 headers and no body / 1 KiB / 64 KiB, the
//! same call on an opt-in reused instance (`reuse: 1000`), a function that
//! does nothing (the floor of any call), the same functions built with the
//! 0.1 SDK (the 0.1 contract's boundary), and the routing step (API by
//! listen path, endpoint by template and method).
//!
//! Prints median and p99 per case. Run with `cargo xtask bench` (which
//! builds the plugins and unsets RUST_BACKTRACE) or
//! `cargo bench -p portcullis --bench hot_path` after `cargo xtask plugins`.
//! Words after `--` select the cases whose label contains one of them
//! (`-- header routing`), e.g. to profile one case. For instruction counts,
//! run one case under `valgrind --tool=callgrind` with `HOT_PATH_CALLGRIND=1`
//! at two `HOT_PATH_ITERATIONS` and divide the difference by the difference
//! in calls (docs/benchmarks.md).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::config;
use portcullis::plugin::{PluginRuntime, RequestRecord, Session};
use portcullis::server::routes::Routes;
use portcullis::telemetry::RequestId;
use portcullis::upstream::outbound::OutboundClient;

/// Iterations per case (`HOT_PATH_ITERATIONS`, default 20,000), after a
/// tenth as many warm-up calls.
fn iterations() -> usize {
    std::env::var("HOT_PATH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; other words select cases.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let selected = |label: &str| filters.is_empty() || filters.iter().any(|f| label.contains(f.as_str()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root");
    let plugin = root.join("example-plugins/target/wasm32-wasip2/release/bench.wasm");
    // The same functions built with the 0.1 SDK, for the contract-0.1 cases.
    let plugin_v01 = root.join("compat/v0.1/examples/target/wasm32-wasip2/release/bench.wasm");
    for file in [&plugin, &plugin_v01] {
        anyhow::ensure!(
            file.is_file(),
            "{} missing: run `cargo xtask plugins` first",
            file.display()
        );
    }
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("apis"))?;
    // Under valgrind (`HOT_PATH_CALLGRIND=1`) the pooling allocator cannot
    // reserve its default address space: a small pool, and compiled
    // components cached between runs (compiling under valgrind is slow).
    let gateway = if std::env::var_os("HOT_PATH_CALLGRIND").is_some() {
        format!(
            "apis: [apis/]\nplugin_cache: {}\nplugin_limits: {{ pool_size: 4, memory_mb: 16 }}\n",
            root.join("target/hot-path-cache").display()
        )
    } else {
        "apis: [apis/]\nplugin_cache: false\n".to_owned()
    };
    std::fs::write(dir.path().join("gateway.yaml"), gateway)?;
    let (iterations, warmup) = (iterations(), iterations() / 10);
    let mut api = String::from(
        "id: bench\nlisten_path: /bench/\nstrip_listen_path: true\nupstream: http://127.0.0.1:9\nendpoints:\n",
    );
    for function in ["noop", "virtual", "header", "read-body"] {
        api.push_str(&format!(
            "  - path: /{function}\n    plugin: {{ path: {}, function: {function} }}\n",
            plugin.display()
        ));
    }
    for function in ["noop", "virtual", "header"] {
        api.push_str(&format!(
            "  - path: /v01-{function}\n    plugin: {{ path: {}, function: {function} }}\n",
            plugin_v01.display()
        ));
    }
    api.push_str(&format!(
        "  - path: /header-reused\n    plugin: {{ path: {}, function: header, reuse: 1000 }}\n",
        plugin.display()
    ));
    for i in 0..20 {
        api.push_str(&format!(
            "  - method: GET\n    path: /other{i}/{{id}}/items\n    plugin: {{ path: {}, function: header }}\n",
            plugin.display()
        ));
    }
    std::fs::write(dir.path().join("apis/bench.yaml"), api)?;
    for i in 0..20 {
        std::fs::write(
            dir.path().join(format!("apis/filler{i}.yaml")),
            format!("id: filler{i}\nlisten_path: /filler{i}/\nupstream: http://127.0.0.1:9\n"),
        )?;
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let config = config::load(&dir.path().join("gateway.yaml"))?;
        let plugins = Arc::new(PluginRuntime::new(&config.limits, None, OutboundClient::new(16))?);
        let routes = Routes::build(config, &plugins, None).await?;

        println!("{:<52} {:>10} {:>10}", "case", "median", "p99");
        for (endpoint, body) in [
            ("noop", None),
            ("virtual", None),
            ("header", None),
            ("read-body", Some(0)),
            ("read-body", Some(1 << 10)),
            ("read-body", Some(64 << 10)),
            ("header-reused", None),
            ("v01-noop", None),
            ("v01-virtual", None),
            ("v01-header", None),
        ] {
            let label = match (endpoint, body) {
                ("header-reused", _) => "plugin call: header, reused instance (reuse: 1000)".to_owned(),
                (_, None) if endpoint.starts_with("v01-") => {
                    format!("plugin call (0.1): {}, 10 headers, no body", &endpoint[4..])
                }
                (_, None) => format!("plugin call: {endpoint}, 10 headers, no body"),
                (_, Some(n)) => format!("plugin call: {endpoint}, 10 headers, {} KiB body", n >> 10),
            };
            if !selected(&label) {
                continue;
            }
            let path = format!("/bench/{endpoint}");
            let (api, rest) = routes.route(&path).expect("bench API");
            let matched = api.match_endpoint(&http::Method::GET, rest).expect("endpoint");
            let plugin = matched
                .endpoint
                .plugin
                .as_ref()
                .expect("the bench endpoint has a plugin");
            let ctx = api.call_context(RequestId::none(), &http::HeaderMap::new(), None);
            let body = body.map(|n| vec![b'x'; n]);
            let request = typical_request(&path, body.as_deref());
            let session = Session::anonymous();
            let mut samples = Vec::with_capacity(iterations);
            for i in 0..warmup + iterations {
                let started = Instant::now();
                let outcome = plugin.on_request(&ctx, &request, &session).await?;
                let elapsed = started.elapsed();
                std::hint::black_box(outcome);
                if i >= warmup {
                    samples.push(elapsed);
                }
            }
            report(&label, samples);
        }

        let label = "routing: 41 APIs, 23 endpoints";
        if !selected(label) {
            return anyhow::Ok(());
        }
        let mut samples = Vec::with_capacity(iterations);
        let paths = ["/bench/other7/42/items", "/filler13/x", "/bench/virtual", "/nowhere"];
        for i in 0..warmup + iterations {
            let path = paths[i % paths.len()];
            let started = Instant::now();
            let found = routes
                .route(path)
                .map(|(api, rest)| api.match_endpoint(&http::Method::GET, rest).is_some());
            let elapsed = started.elapsed();
            std::hint::black_box(found);
            if i >= warmup {
                samples.push(elapsed);
            }
        }
        report(label, samples);
        anyhow::Ok(())
    })
}

fn typical_request<'a>(path: &'a str, body: Option<&'a [u8]>) -> RequestRecord<'a> {
    RequestRecord {
        method: "GET",
        path,
        upstream_path: "/",
        query: "a=1&b=2",
        headers: vec![
            ("host", "api.example.com"),
            ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench/1.0"),
            ("accept", "application/json"),
            ("accept-encoding", "gzip, deflate, br"),
            ("accept-language", "en-GB,en;q=0.9"),
            ("x-user", "alice"),
            ("x-request-id", "0b6c4c5e-8f44-4a5c-9d1e-1f7d2b3c4d5e"),
            ("x-forwarded-for", "203.0.113.7"),
            ("cookie", "session=abc123; theme=dark"),
            ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
        ],
        body,
        client_addr: "127.0.0.1:40000",
        params: &[],
        request_id: "bench",
    }
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{label:<52} {:>8.1}us {:>8.1}us",
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6
    );
}
