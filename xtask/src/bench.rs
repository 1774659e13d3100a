//! `cargo xtask bench [scale | extra]`: the benchmarks of docs/benchmarks.md,
//! run from a clone with what they need installed by bench/peers.sh.
//!
//! - `bench`: the table of record. One bench/peers.sh run holds nginx,
//!   nginx+Lua and every gateway row (the four scenarios, instance reuse,
//!   the no-op plugin on the proxy path, the host-run fan-out and the 0.1
//!   plugins), so each ratio is against a baseline measured in the same
//!   run; then the ratios against the targets of docs/benchmarks.md.
//! - `bench scale`: bench/scale.sh, how cost grows with cores, connections,
//!   configuration size, bodies and load.
//! - `bench extra`: the in-process micro-benchmarks, the other peers
//!   (nginx+njs, HAProxy, Caddy), the access log, balancing and TLS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::{cargo, plugins, run, throwaway_certificates};

pub fn bench(root: &Path, args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        None => record(root),
        Some("scale") => scale(root, &args[1..]),
        Some("extra") => extra(root),
        Some(other) => bail!("unknown benchmark `{other}`: `bench`, `bench scale` or `bench extra`"),
    }
}

/// The gateway's rows in the run of record: scenario (and variant) and the
/// API of bench/gateway.yaml that serves it.
const RECORD_URLS: &[(&str, &str)] = &[
    ("S1", "s1"),
    ("S2", "s2"),
    ("S3", "s3"),
    ("S4", "s4"),
    ("S2/reuse", "r2"),
    ("S3/reuse", "r3"),
    ("S4/reuse", "r4"),
    // S1 through a plugin that does nothing: what a fresh instance costs on
    // the proxy path.
    ("S1/noop", "f1"),
    // S4 with the calls made by the gateway (`fan_out`), merged by the
    // aggregate example, then by a component that imports no `http`.
    ("S4/fan-out", "h4"),
    ("S4/fan-out-lean", "l4"),
    // The same plugins built for the 0.1 contract.
    ("S2/0.1", "o2"),
    ("S3/0.1", "o3"),
    ("S4/0.1", "o4"),
];

/// The targets docs/benchmarks.md holds the table of record to: the row,
/// its same-run baseline, and the largest ratio of CPU per request.
const TARGETS: &[(&str, &str, f64)] = &[
    ("portcullis S1", "nginx S1", 1.2),
    ("portcullis S2", "nginx-lua S2", 1.8),
    ("portcullis S3", "nginx-lua S3", 2.0),
    ("portcullis/reuse S3", "nginx-lua S3", 1.1),
    ("portcullis/fan-out S4", "nginx-lua S4", 1.7),
];

fn record(root: &Path) -> anyhow::Result<()> {
    let binary = prepare(root)?;
    let results = root.join("target/bench/record");
    let _ = std::fs::remove_dir_all(&results);
    let urls = gateway_urls(RECORD_URLS);
    eprintln!("\n== bench/peers.sh: every gateway row beside nginx and nginx+Lua, one worker each ==");
    run(peers(root, &binary, &root.join("bench/gateway.yaml"), &urls)
        .env(
            "PEERS",
            std::env::var("PEERS").unwrap_or_else(|_| "nginx nginx-lua".into()),
        )
        .env("RESULTS_DIR", &results))?;
    let tsv = std::fs::read_to_string(results.join("results.tsv")).context("reading the run's results.tsv")?;
    let report = ratios(&tsv);
    print!("{report}");
    std::fs::write(results.join("ratios.md"), &report)?;
    eprintln!(
        "the table and the ratios: {}/table.txt and ratios.md",
        results.display()
    );
    Ok(())
}

/// bench/scale.sh, all its sections or those named.
fn scale(root: &Path, sections: &[String]) -> anyhow::Result<()> {
    let binary = prepare(root)?;
    run(Command::new("bash")
        .arg(root.join("bench/scale.sh"))
        .arg(&binary)
        .args(sections)
        .env_remove("RUST_BACKTRACE"))
}

fn extra(root: &Path) -> anyhow::Result<()> {
    let binary = prepare(root)?;
    eprintln!("\n== in-process micro-benchmarks ==");
    run(cargo()
        .current_dir(root)
        .args(["bench", "-p", "portcullis", "--bench", "hot_path"])
        .env_remove("RUST_BACKTRACE"))?;
    eprintln!("\n== bench/peers.sh: the four scenarios beside nginx+njs, HAProxy (native and Lua) and Caddy ==");
    let urls = gateway_urls(&RECORD_URLS[..4]);
    run(peers(root, &binary, &root.join("bench/gateway.yaml"), &urls)
        .env("PEERS", "nginx-njs haproxy haproxy-lua caddy"))?;
    // S1 with the access log on (a file on the local disk): what writing
    // one JSON line per request costs.
    eprintln!("\n== bench/peers.sh: S1 with the access log written to a file ==");
    let logged = root.join("target/bench/access-log");
    std::fs::create_dir_all(&logged)?;
    let _ = std::fs::remove_file(logged.join("access.log"));
    let logged_config = logged.join("gateway.yaml");
    std::fs::write(
        &logged_config,
        format!(
            "listen: 127.0.0.1:19000\napis: [{}]\naccess_log: {{ path: access.log }}\n",
            root.join("bench/apis/s1.yaml").display()
        ),
    )?;
    run(peers(root, &binary, &logged_config, "S1=http://127.0.0.1:19000/s1")
        .env("PEERS", " ")
        .env("GATEWAY_NAME", "portcullis-access-log"))?;
    eprintln!("\n== bench/balance.sh: S1 to one and to two upstream servers, beside nginx ==");
    run(Command::new("bash")
        .arg(root.join("bench/balance.sh"))
        .arg(&binary)
        .env_remove("RUST_BACKTRACE"))?;
    eprintln!("\n== bench/registry.sh: S3 with its plugin from a file and from a registry ==");
    run(Command::new("bash")
        .arg(root.join("bench/registry.sh"))
        .arg(&binary)
        .env_remove("RUST_BACKTRACE"))?;
    eprintln!("\n== bench/tls.sh: S1 over HTTPS, beside nginx with the same certificate ==");
    let certs = root.join("target/bench/tls");
    throwaway_certificates(&certs)?;
    run(Command::new("bash")
        .arg(root.join("bench/tls.sh"))
        .arg(&binary)
        .arg(&certs)
        .env_remove("RUST_BACKTRACE"))
}

/// peers.sh's GATEWAY_URLS for these rows of bench/gateway.yaml.
fn gateway_urls(rows: &[(&str, &str)]) -> String {
    rows.iter()
        .map(|(scenario, api)| format!("{scenario}=http://127.0.0.1:19000/{api}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks the ports, builds the plugins into bench/plugins and the release
/// binary; returns the binary.
fn prepare(root: &Path) -> anyhow::Result<PathBuf> {
    // peers.sh stops when a port it needs is taken, and so would the
    // gateway (bench/gateway.yaml): say so before the builds, not after.
    let busy: Vec<u16> = (18080..=18086)
        .chain(18090..=18097)
        .chain([19000])
        .filter(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_err())
        .collect();
    if !busy.is_empty() {
        bail!(
            "127.0.0.1 port(s) {busy:?} are in use (a server left from an earlier run?): \
             the benchmarks need 18080-18086 for peers.sh, 19000 for the gateway and 18090-18097 for the others"
        );
    }
    let built = plugins(root)?;
    let dest = root.join("bench/plugins");
    std::fs::create_dir_all(&dest)?;
    // The same plugins built for the 0.1 contract, as `NAME-0.1.wasm`
    // (bench/apis/o*.yaml): 0.1 against 0.2 in the same run.
    let built_v01 = root.join("compat/v0.1/examples/target/wasm32-wasip2/release");
    for name in ["bench", "aggregate"] {
        let file = format!("{name}.wasm");
        std::fs::copy(built.join(&file), dest.join(&file))
            .with_context(|| format!("copying {file} into bench/plugins"))?;
        std::fs::copy(built_v01.join(&file), dest.join(format!("{name}-0.1.wasm")))
            .with_context(|| format!("copying the 0.1 {file} into bench/plugins"))?;
    }
    // The release profile is the production one (Cargo.toml).
    run(cargo()
        .current_dir(root)
        .args(["build", "--release", "-p", "portcullis"]))?;
    Ok(root.join("target/release/portcullis"))
}

/// bench/peers.sh with the gateway on `config` at `urls`, one worker
/// (`WORKERS` in the environment says otherwise), pinned like the peers.
fn peers(root: &Path, binary: &Path, config: &Path, urls: &str) -> Command {
    // RUST_BACKTRACE makes every wasmtime Store drop slower; benchmarks run without it.
    let gateway = format!(
        "exec env -u RUST_BACKTRACE {} serve --config {} --workers $BENCH_WORKERS",
        binary.display(),
        config.display()
    );
    let mut command = Command::new("bash");
    command
        .arg(root.join("bench/peers.sh"))
        .env("GATEWAY_CMD", gateway)
        .env("GATEWAY_URLS", urls)
        .env("GATEWAY_NAME", "portcullis")
        .env("GATEWAY_KIND", "wasm")
        .env("PORT_BASE", "18080")
        .env_remove("RUST_BACKTRACE");
    command
}

/// The ratios of CPU per request (the median `gw_us_per_req` of each row
/// in peers.sh's results.tsv) against the targets, as a Markdown table.
fn ratios(tsv: &str) -> String {
    let mut runs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (Some(peer), Some(scenario), Some(cpu)) = (column("peer"), column("scenario"), column("gw_us_per_req")) else {
        return "results.tsv has no peer, scenario and gw_us_per_req columns\n".into();
    };
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        if let (Some(p), Some(s), Some(Ok(us))) = (
            fields.get(peer),
            fields.get(scenario),
            fields.get(cpu).map(|v| v.parse::<f64>()),
        ) {
            runs.entry(format!("{p} {s}")).or_default().push(us);
        }
    }
    let median = |row: &str| {
        let mut values = runs.get(row)?.clone();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        Some(if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        })
    };
    let mut out =
        String::from("| row | us/req | baseline | us/req | ratio | target | met |\n|---|---|---|---|---|---|---|\n");
    for (row, baseline, target) in TARGETS {
        match (median(row), median(baseline)) {
            (Some(ours), Some(theirs)) if theirs > 0.0 => {
                let ratio = ours / theirs;
                let met = if ratio <= *target { "yes" } else { "no" };
                out += &format!("| {row} | {ours:.1} | {baseline} | {theirs:.1} | {ratio:.2}x | {target}x | {met} |\n");
            }
            _ => out += &format!("| {row} | - | {baseline} | - | - | {target}x | not measured |\n"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_take_the_median_of_each_row_against_its_baseline() {
        let tsv = "rep\tpeer\tscenario\tgw_us_per_req\n\
                   1\tnginx\tS1\t20.0\n2\tnginx\tS1\t18.0\n3\tnginx\tS1\t100.0\n\
                   1\tportcullis\tS1\t22.0\n2\tportcullis\tS1\t23.0\n\
                   1\tnginx-lua\tS3\t10.0\n1\tportcullis\tS3\t25.0\n\
                   0\tportcullis\tS2\tFAIL\n";
        let table = ratios(tsv);
        // nginx S1's median is 20 (not the mean 46), ours 22.5.
        assert!(
            table.contains("| portcullis S1 | 22.5 | nginx S1 | 20.0 | 1.12x | 1.2x | yes |"),
            "{table}"
        );
        assert!(
            table.contains("| portcullis S3 | 25.0 | nginx-lua S3 | 10.0 | 2.50x | 2x | no |"),
            "{table}"
        );
        // A row that failed validation has no numbers and is not passed.
        assert!(
            table.contains("| portcullis S2 | - | nginx-lua S2 | - | - | 1.8x | not measured |"),
            "{table}"
        );
    }
}
