//! The project's everyday commands, in Rust so a fresh machine needs nothing
//! but rustup's toolchain: `cargo xtask demo | test | lint | plugins | bench | image | image-test`.
//!
//! Each command installs what it needs first (the `wasm32-wasip2` target)
//! and says what it runs.
//!
//! One file, past 500 lines: each command is one function, read on its own;
//! the image test and the layering check have files of their own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};

use anyhow::{Context, bail};

mod bench;
mod image_test;
mod layers;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  demo      build everything, start the example upstreams and the gateway on demo/gateway.yaml
  test      build the plugins and run the whole test suite
  lint      cargo fmt --check and clippy -D warnings, host and guest workspaces
  plugins   build the example and test plugins (wasm32-wasip2, release)
  bench     the table of record: the release build beside nginx and nginx+Lua in one bench/peers.sh
            run, every scenario and variant (settings via peers.sh's environment, e.g. REPEAT=1)
  bench scale   how cost grows: cores, idle and slow connections, configuration size, bodies, overload
  bench extra   micro-benchmarks, the access log, TLS, load balancing, HAProxy, Caddy and njs
  image     build the container image portcullis:VERSION with podman (or docker): the release binary,
            its shared libraries and an example configuration, FROM scratch
  image-test  build the image, then run it (podman or docker) and check what docs/operations.md
            promises: its user, the bundled example, a mounted configuration, the cache and store
            volumes, a clean stop on SIGTERM, the CA bundle";

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(&root),
        Some("test") => test(&root, &args[1..]),
        Some("lint") => lint(&root),
        Some("plugins") => plugins(&root).map(|_| ()),
        Some("bench") => bench::bench(&root, &args[1..]),
        Some("image") => image(&root),
        Some("image-test") => image_test::image_test(&root),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cargo, without the variables `cargo run` set for xtask itself
/// (`CARGO_PKG_NAME=xtask`, `CARGO_MANIFEST_DIR`, ...): build scripts such as
/// ring's declare `rerun-if-env-changed` on them, so inheriting them made
/// every `cargo xtask` build and every plain `cargo build` after it rebuild
/// ring and everything above it.
pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || matches!(
                &*name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            command.env_remove(&*name);
        }
    }
    command
}

/// Runs `command`, echoing it, and fails if it fails.
pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {command:?}");
    let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

/// Installs the `wasm32-wasip2` target if rustup does not have it yet.
fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2") =>
        {
            Ok(())
        }
        Ok(_) => run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"])),
        Err(e) => bail!("rustup not found ({e}); install the target another way: it must provide wasm32-wasip2"),
    }
}

/// Builds every guest crate; returns the directory holding the `.wasm` files.
pub(crate) fn plugins(root: &Path) -> anyhow::Result<PathBuf> {
    ensure_wasm_target()?;
    // The examples and test plugins (0.2), and the examples as written for
    // the 0.1 contract, which the compatibility tests load beside them.
    for workspace in ["example-plugins", "compat/v0.1/examples"] {
        let dir = root.join(workspace);
        run(guest_cargo(&dir).args(["build", "--release"]))?;
    }
    Ok(root.join("example-plugins/target/wasm32-wasip2/release"))
}

/// Cargo in a guest workspace, whose own .cargo/config.toml sets the target,
/// the stack size and the test runner: host-side flags must not leak in.
fn guest_cargo(dir: &Path) -> Command {
    let mut command = cargo();
    command.current_dir(dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        command.env_remove(var);
    }
    command
}

/// Whether `program` runs.
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Installs what the tests run for real if it is missing: Debian's
/// redis-server (the cluster tests), docker-registry (the CNCF
/// distribution server, for plugins from registries) and chromium (the
/// dashboard, tested in a real browser).
fn ensure_test_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["redis-server", "docker-registry", "chromium"]
        .into_iter()
        .filter(|program| !have(program))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let apt = |args: &[&str]| {
        let mut command = if root {
            Command::new("apt-get")
        } else {
            Command::new("sudo")
        };
        if !root {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut command)
    };
    apt(&["update", "-q"])?;
    apt(&[&["install", "-y", "-q"][..], &missing].concat()).with_context(|| {
        format!(
            "the tests need {}; install it with your package manager",
            missing.join(" ")
        )
    })?;
    // Debian starts the services on install; the tests run their own servers.
    for service in missing.into_iter().filter(|p| *p != "chromium") {
        let _ = Command::new("service").args([service, "stop"]).status();
    }
    Ok(())
}

/// The real gRPC server and client the gRPC tests run (`tests/grpc/`):
/// grpcio and its health service, pinned, in `target/grpc-venv` (from
/// PyPI; made once, kept while the requirements are unchanged).
fn ensure_grpc_venv(root: &Path) -> anyhow::Result<()> {
    let venv = root.join("target/grpc-venv");
    let requirements = root.join("tests/grpc/requirements.txt");
    let stamp = venv.join("requirements.txt");
    let wanted = std::fs::read(&requirements).context("reading tests/grpc/requirements.txt")?;
    if std::fs::read(&stamp).is_ok_and(|had| had == wanted) {
        return Ok(());
    }
    let python = if have("python3") { "python3" } else { "python" };
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new(python).arg("-m").arg("venv").arg(&venv))
        .context("the gRPC tests need Python 3 with venv (Debian: apt-get install python3-venv)")?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

fn test(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    ensure_test_packages()?;
    ensure_grpc_venv(root)?;
    plugins(root)?;
    // The workspace includes the SDK: its unit tests and doc examples run
    // on the host with the gateway's.
    run(cargo().current_dir(root).args(["test", "--workspace"]).args(extra))?;
    // The example plugins' unit tests, the way a plugin author runs them:
    // `cargo test` in the guest workspace (run natively by its runner).
    run(guest_cargo(&root.join("example-plugins")).arg("test"))?;
    eprintln!("all tests passed");
    Ok(())
}

fn lint(root: &Path) -> anyhow::Result<()> {
    layers::check(&root.join("gateway/src"))?;
    ensure_wasm_target()?;
    run(cargo().current_dir(root).args(["fmt", "--all", "--check"]))?;
    run(cargo()
        .current_dir(root)
        .args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The SDK again as a plugin builds it, and the example plugins.
    run(cargo().current_dir(root).args([
        "clippy",
        "-p",
        "portcullis-sdk",
        "--target",
        "wasm32-wasip2",
        "--",
        "-D",
        "warnings",
    ]))?;
    let guests = root.join("example-plugins");
    run(cargo().current_dir(&guests).args(["fmt", "--all", "--check"]))?;
    run(cargo()
        .current_dir(&guests)
        .args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    deny(root)
}

/// Licences, duplicate major versions and sources of every dependency
/// (deny.toml), with cargo-deny, installed at its locked versions when
/// missing. The advisory database is not checked: it is fetched from
/// GitHub, which CI machines cannot reach.
fn deny(root: &Path) -> anyhow::Result<()> {
    let installed = Command::new("cargo").args(["deny", "--version"]).output();
    if !installed.is_ok_and(|o| o.status.success()) {
        run(cargo().args(["install", "--locked", "cargo-deny@0.20.2"]))?;
    }
    run(cargo()
        .current_dir(root)
        .args(["deny", "--all-features", "check", "licenses", "bans", "sources"]))
}

/// Stages `target/image/` (the binary, the shared libraries it links, the
/// example configuration) and builds `image/Containerfile` on it.
fn image(root: &Path) -> anyhow::Result<()> {
    let engine = ["podman", "docker"]
        .into_iter()
        .find(|engine| have(engine))
        .context("building the image needs podman or docker")?;
    let built = plugins(root)?;
    run(cargo()
        .current_dir(root)
        .args(["build", "--release", "-p", "portcullis"]))?;
    let binary = root.join("target/release/portcullis");

    let context = root.join("target/image");
    if context.exists() {
        std::fs::remove_dir_all(&context)?;
    }
    let rootfs = context.join("rootfs");
    let etc = rootfs.join("etc/portcullis");
    for dir in [
        context.join("cache"),
        context.join("data"),
        etc.join("apis"),
        etc.join("plugins"),
    ] {
        std::fs::create_dir_all(dir)?;
    }
    let copy = |from: &Path, to: &Path| -> anyhow::Result<()> {
        std::fs::create_dir_all(to.parent().context("a file has a parent")?)?;
        std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        Ok(())
    };
    copy(&root.join("image/Containerfile"), &context.join("Containerfile"))?;
    copy(&binary, &rootfs.join("usr/local/bin/portcullis"))?;
    for library in shared_libraries(&binary)? {
        copy(&library, &rootfs.join(library.strip_prefix("/")?))?;
    }
    // The trust store `https://` upstreams and plugin calls are verified
    // against (the image has no package manager to install one).
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if !bundle.is_file() {
        bail!(
            "{} is missing: install the ca-certificates package, whose bundle the image carries",
            bundle.display()
        );
    }
    copy(bundle, &rootfs.join("etc/ssl/certs/ca-certificates.crt"))?;
    copy(&root.join("image/gateway.yaml"), &etc.join("gateway.yaml"))?;
    copy(&root.join("image/apis/hello.yaml"), &etc.join("apis/hello.yaml"))?;
    copy(&built.join("hello.wasm"), &etc.join("plugins/hello.wasm"))?;

    let version = env!("CARGO_PKG_VERSION");
    run(Command::new(engine)
        .arg("build")
        .args(["-t", &format!("portcullis:{version}"), "-t", "portcullis:latest"])
        .arg(&context))?;
    eprintln!(
        "built portcullis:{version}; run it with\n  \
         {engine} run --rm -p 8080:8080 portcullis:{version}\n  \
         curl http://127.0.0.1:8080/hello/you"
    );
    Ok(())
}

/// The shared libraries `binary` loads, by absolute path, as `ldd` lists
/// them (the dynamic loader included, the kernel's vDSO left out).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd to list the binary's shared libraries")?;
    if !out.status.success() {
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
            // `/lib64/ld-linux-x86-64.so.2 (0x...)`.
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Kills the child when dropped, so the upstreams never outlive the demo.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Process ids of the demo's children, for the signal handler.
static DEMO_CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Starts `command` as a demo child: killed when the returned guard drops,
/// and stopped (SIGTERM) if the demo itself gets SIGINT, SIGTERM or SIGHUP.
fn spawn_demo_child(command: &mut Command, what: &str) -> anyhow::Result<KillOnDrop> {
    let child = command.spawn().with_context(|| format!("starting {what}"))?;
    DEMO_CHILDREN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(child.id());
    Ok(KillOnDrop(child))
}

/// On SIGINT (Ctrl-C), SIGTERM or SIGHUP: stop the children, then exit.
/// A throwaway CA (`ca.pem`) and a certificate for `localhost` and
/// `127.0.0.1` signed by it (`server.pem`, `server.key`; ECDSA P-256), made
/// once into `dir` (kept across runs, so a browser or curl told to trust
/// the CA keeps trusting it).
pub(crate) fn throwaway_certificates(dir: &Path) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let (ca_file, cert_file, key_file) = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    if ca_file.is_file() && cert_file.is_file() && key_file.is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis throwaway CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    std::fs::write(&ca_file, ca.pem())?;
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;
    eprintln!("made a throwaway CA and a localhost certificate in {}", dir.display());
    Ok(())
}

/// Without this a `kill` of the demo would leave them holding its ports.
fn stop_demo_children_on_signal() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        let pids = DEMO_CHILDREN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for pid in pids.iter() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        std::process::exit(130);
    })
    .context("installing the demo's signal handler")
}

fn demo(root: &Path) -> anyhow::Result<()> {
    let built = plugins(root)?;
    let dest = root.join("demo/plugins");
    std::fs::create_dir_all(&dest)?;
    for name in ["hello", "policy", "router", "aggregate", "auth"] {
        let file = format!("{name}.wasm");
        std::fs::copy(built.join(&file), dest.join(&file))
            .with_context(|| format!("copying {file} into demo/plugins"))?;
    }
    throwaway_certificates(&root.join("demo/certs"))?;
    // The dev profile optimises dependencies (wasmtime, cranelift), so this
    // build is quick to make and shares its artifacts with `cargo xtask test`.
    run(cargo()
        .current_dir(root)
        .args(["build", "-p", "portcullis", "-p", "portcullis-upstreams"]))?;
    let bin = root.join("target/debug");

    stop_demo_children_on_signal()?;
    let _upstreams = spawn_demo_child(&mut Command::new(bin.join("demo-upstreams")), "demo-upstreams")?;
    let config = root.join("demo/gateway.yaml");
    let mut gateway = spawn_demo_child(
        Command::new(bin.join("portcullis"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped()),
        "portcullis",
    )?;
    let stdout = gateway.0.stdout.take().context("gateway stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut next_line = || -> anyhow::Result<String> {
        match lines.next() {
            Some(line) => {
                let line = line?;
                println!("{line}");
                Ok(line)
            }
            None => bail!("the gateway exited before listening (see the error above)"),
        }
    };
    let base = loop {
        if let Some(addr) = next_line()?.strip_prefix("listening on ") {
            break addr.to_owned();
        }
    };
    let secure = next_line()?
        .strip_prefix("listening on https://")
        .map(|addr| addr.replace("127.0.0.1", "localhost"))
        .context("the demo configuration has a tls: listener")?;
    println!(
        "
Portcullis is running on {base} with demo/gateway.yaml. Try:

  # virtual endpoint: the hello plugin answers, no upstream involved
  curl -s {base}/hello/ada

  # custom policy: 403 without the header, proxied with added headers with it
  curl -si {base}/orders/42
  curl -s -H 'x-api-client: demo' {base}/orders/42

  # aggregation: one response merged from three internal services
  curl -s {base}/orders/summary/7

  # the same, with the gateway making the calls (fan_out) and the plugin merging
  curl -s {base}/orders/overview/7

  # dynamic routing: the region picks the upstream
  curl -s {base}/shop/us/items/7
  curl -s -H 'x-region: eu' {base}/shop/us/items/7

  # custom auth plugin and a rate limit (3 per 10 s): 401, then 200 x3, then 429
  curl -si {base}/secure/hello/you
  curl -si -H 'authorization: Bearer demo-token' {base}/secure/hello/you

  # the same over HTTPS (HTTP/2), trusting the demo's throwaway CA
  curl -s --cacert demo/certs/ca.pem https://{secure}/hello/ada

  # the dashboard, in a browser: http://127.0.0.1:9900/dashboard
  # (any user name, the password demo-admin-secret); probes and metrics:
  curl -s 127.0.0.1:9900/readyz
  curl -s 127.0.0.1:9900/metrics | grep portcullis_http_requests_total

  # plugins from a registry (apt-get install docker-registry): start one,
  # push the demo's plugins, and run the hello API with its plugin pulled
  # by tag (docs/plugins-from-registries.md)
  docker-registry serve demo/registry/registry.yml &
  for p in hello policy router aggregate auth; do
    target/debug/portcullis plugin push demo/plugins/$p.wasm oci://127.0.0.1:5000/demo/$p:1
  done
  target/debug/portcullis plugin inspect oci://127.0.0.1:5000/demo/hello:1
  target/debug/portcullis serve --config demo/registry/gateway.yaml &
  curl -s 127.0.0.1:8081/hello/ada

Press Ctrl-C to stop."
    );
    for line in lines {
        println!("{}", line?);
    }
    let status = gateway.0.wait()?;
    if !status.success() {
        bail!("the gateway exited: {status}");
    }
    Ok(())
}
