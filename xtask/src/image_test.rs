//! `cargo xtask image-test`: builds the image, then runs its own entrypoint
//! in containers and checks what docs/operations.md promises of it:
//!
//! 1. it runs as its user (65534), and serves the bundled example;
//! 2. it reads a configuration mounted on /etc/portcullis;
//! 3. it writes its plugin cache to /var/cache/portcullis and its session
//!    store to /var/lib/portcullis (volumes), which a new container reuses;
//! 4. it stops cleanly (exit 0) on SIGTERM;
//! 5. it carries a CA bundle for HTTPS upstreams, where SSL_CERT_FILE says.
//!
//! Containers use the host's network (nothing to set up) on free loopback
//! ports, given to the image's own `serve` command with `--listen`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

const IMAGE: &str = "portcullis:latest";
const SECRET: &str = "image-test-admin-secret";

pub fn image_test(root: &Path) -> anyhow::Result<()> {
    let engine = Engine::find()?;
    super::image(root)?;
    let work = tempdir()?;
    let result = checks(root, &engine, &work);
    let _ = std::fs::remove_dir_all(&work);
    result?;
    eprintln!("image test passed");
    Ok(())
}

fn checks(root: &Path, engine: &Engine, work: &Path) -> anyhow::Result<()> {
    // 5. The CA bundle, and the user, as the image declares them.
    let config = engine.output(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}} {{json .Config.Env}}",
        IMAGE,
    ])?;
    ensure!(config.starts_with("65534:65534 "), "the image's user: {config}");
    ensure!(
        config.contains("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"),
        "SSL_CERT_FILE in {config}"
    );
    let bundle = work.join("ca-certificates.crt");
    let probe = engine.output(&["create", IMAGE])?;
    let copied = engine.output(&[
        "cp",
        &format!("{probe}:/etc/ssl/certs/ca-certificates.crt"),
        bundle.to_str().context("UTF-8 path")?,
    ]);
    engine.output(&["rm", &probe])?;
    copied?;
    let certificates = std::fs::read_to_string(&bundle)?.matches("BEGIN CERTIFICATE").count();
    ensure!(certificates >= 50, "the CA bundle holds {certificates} certificates");
    eprintln!("ok: user 65534, CA bundle of {certificates} certificates at SSL_CERT_FILE");

    // 1. The bundled example, as the image's user.
    let port = free_port()?;
    let container = engine.start(&[], &["--listen", &format!("127.0.0.1:{port}")])?;
    let result = (|| {
        wait_for(port)?;
        let (status, body) = http(port, "GET", "/hello/you", &[], "")?;
        ensure!(status == 200 && body.contains("Hello, you!"), "{status} {body}");
        let pid = engine.output(&["inspect", "--format", "{{.State.Pid}}", &container])?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default();
        ensure!(
            uid_line.split_whitespace().skip(1).all(|id| id == "65534"),
            "the gateway runs as 65534: {uid_line}"
        );
        eprintln!("ok: the bundled example serves GET /hello/you, as uid 65534");
        Ok(())
    })();
    engine.stop_and_check(&container, result)?;

    // 2-4. A mounted configuration, with volumes for the cache and store.
    let etc = work.join("etc");
    let cache = work.join("cache");
    let data = work.join("data");
    for dir in [etc.join("apis"), etc.join("plugins"), cache.clone(), data.clone()] {
        std::fs::create_dir_all(dir)?;
    }
    // The image's user owns its volumes, as a volume's owner would be set.
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&cache)
        .arg(&data)
        .status()?;
    ensure!(chown.success(), "chown the volumes");
    std::fs::copy(
        root.join("example-plugins/target/wasm32-wasip2/release/hello.wasm"),
        etc.join("plugins/hello.wasm"),
    )?;
    let admin_port = free_port()?;
    std::fs::write(
        etc.join("gateway.yaml"),
        format!("apis: [apis/]\nadmin_listen: 127.0.0.1:{admin_port}\nadmin_secret: {SECRET}\n"),
    )?;
    std::fs::write(
        etc.join("apis/mounted.yaml"),
        "id: mounted\nlisten_path: /mounted/\nupstream: http://127.0.0.1:9\nauth: { type: api_key }\nendpoints:\n  - path: /hello/{name}\n    plugin: { path: ../plugins/hello.wasm, function: hello, config: { greeting: Mounted } }\n",
    )?;
    let volumes = [
        "-v".to_owned(),
        format!("{}:/etc/portcullis:ro", etc.display()),
        "-v".to_owned(),
        format!("{}:/var/cache/portcullis", cache.display()),
        "-v".to_owned(),
        format!("{}:/var/lib/portcullis", data.display()),
    ];
    let volumes: Vec<&str> = volumes.iter().map(String::as_str).collect();
    let port = free_port()?;
    let listen = ["--listen".to_owned(), format!("127.0.0.1:{port}")];
    let listen: Vec<&str> = listen.iter().map(String::as_str).collect();

    let container = engine.start(&volumes, &listen)?;
    let mut key = String::new();
    let result = (|| {
        wait_for(port)?;
        wait_for(admin_port)?;
        let (status, body) = http(
            admin_port,
            "POST",
            "/keys",
            &[("x-admin-secret", SECRET)],
            r#"{"apis":["mounted"]}"#,
        )?;
        ensure!(status == 201, "POST /keys: {status} {body}");
        key = body
            .split("\"key\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .context("the new key")?
            .to_owned();
        let (status, body) = http(port, "GET", "/mounted/hello/you", &[("authorization", &key)], "")?;
        ensure!(status == 200 && body.contains("Mounted, you!"), "{status} {body}");
        eprintln!("ok: the mounted configuration serves, with a key made through its admin API");
        Ok(())
    })();
    engine.stop_and_check(&container, result)?;
    let compiled: Vec<_> = std::fs::read_dir(&cache)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    ensure!(
        compiled.len() == 1,
        "one compiled plugin in the cache volume: {compiled:?}"
    );
    let written = std::fs::metadata(&compiled[0])?.modified()?;
    ensure!(
        data.join("sessions.redb").is_file(),
        "the session store in the data volume"
    );
    eprintln!("ok: the plugin cache and the session store are on their volumes");

    // A new container on the same volumes: the key still works, and the
    // plugin is not compiled again.
    let container = engine.start(&volumes, &listen)?;
    let result = (|| {
        wait_for(port)?;
        let (status, body) = http(port, "GET", "/mounted/hello/you", &[("authorization", &key)], "")?;
        ensure!(status == 200, "the key survives the container: {status} {body}");
        ensure!(
            std::fs::metadata(&compiled[0])?.modified()? == written,
            "the compiled plugin was written again instead of reused"
        );
        Ok(())
    })();
    engine.stop_and_check(&container, result)?;
    eprintln!("ok: a new container reuses the volumes");
    Ok(())
}

/// Podman or Docker, with what this host needs to run containers.
struct Engine {
    program: &'static str,
    /// Global flags before the subcommand (podman's runtime choice).
    global: Vec<&'static str>,
}

impl Engine {
    fn find() -> anyhow::Result<Self> {
        let works = |program: &str| {
            Command::new(program)
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if works("podman") {
            let mut global = Vec::new();
            // Where crun cannot set up cgroups (no systemd), runc can.
            if super::have("runc") {
                global.push("--runtime=runc");
            }
            if !Path::new("/run/systemd/system").exists() {
                global.push("--cgroup-manager=cgroupfs");
            }
            return Ok(Engine {
                program: "podman",
                global,
            });
        }
        if works("docker") {
            return Ok(Engine {
                program: "docker",
                global: Vec::new(),
            });
        }
        bail!("the image test needs podman or docker able to run containers (`podman info` fails)")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.program);
        command.args(&self.global).args(args);
        command
    }

    /// Runs a command; its trimmed stdout.
    fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command(args).output()?;
        if !out.status.success() {
            bail!(
                "{} {} failed: {}",
                self.program,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Starts the image's entrypoint with `serve --config
    /// /etc/portcullis/gateway.yaml` (its default command) and `extra`.
    fn start(&self, volumes: &[&str], extra: &[&str]) -> anyhow::Result<String> {
        let mut args = vec![
            "run",
            "-d",
            "--network=host",
            // At or below the shell's own limits.
            "--ulimit=nofile=1024:1024",
            "--ulimit=nproc=1024:1024",
        ];
        args.extend(volumes);
        args.extend([IMAGE, "serve", "--config", "/etc/portcullis/gateway.yaml"]);
        args.extend(extra);
        self.output(&args)
    }

    /// Stops the container with SIGTERM and checks it exited 0 having
    /// finished its work; then removes it. `result` is the checks made
    /// while it ran: its logs are shown if they failed.
    fn stop_and_check(&self, container: &str, result: anyhow::Result<()>) -> anyhow::Result<()> {
        // The engine writes the container's stderr (the gateway's log) to
        // its own stderr.
        let logs = || {
            self.command(&["logs", container])
                .output()
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default()
        };
        if let Err(e) = result {
            let logs = logs();
            let _ = self.output(&["rm", "-f", container]);
            return Err(e.context(format!("container log:\n{logs}")));
        }
        let stopped = Instant::now();
        let stop = self.output(&["stop", "--time", "20", container]);
        let code = self.output(&["wait", container]);
        let logs = logs();
        let _ = self.output(&["rm", "-f", container]);
        stop?;
        let code = code?;
        ensure!(code == "0", "exit status {code} after SIGTERM; log:\n{logs}");
        ensure!(
            logs.contains("stopped"),
            "no `stopped` line after SIGTERM; log:\n{logs}"
        );
        eprintln!("ok: SIGTERM stopped it cleanly in {:?}", stopped.elapsed());
        Ok(())
    }
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("portcullis-image-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on `port`.
fn wait_for(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// One HTTP/1.1 request on its own connection: status and body.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
