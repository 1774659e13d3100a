//! The `portcullis` command: `serve` runs the gateway, `validate` checks a
//! configuration and every plugin it names without serving, and `plugin`
//! holds the plugin author's tools (`new`, `inspect`, `call`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use portcullis::plugin_tools::{self, call::CallArgs, scaffold::Kind};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An API gateway with sandboxed WebAssembly plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the APIs of a gateway configuration.
    Serve {
        /// The gateway configuration file (gateway.yaml).
        #[arg(long, short)]
        config: PathBuf,
        /// Listen on this address instead of the file's `listen`
        /// (`127.0.0.1:0` picks a free port; the address is printed as
        /// `listening on http://ADDR`).
        #[arg(long)]
        listen: Option<String>,
        /// Serve HTTPS on this address instead of the file's `tls.listen`
        /// (the `tls:` block supplies the certificates; printed as
        /// `listening on https://ADDR`).
        #[arg(long, value_name = "ADDR")]
        listen_tls: Option<String>,
        /// Request-serving threads (default: one per CPU). With 1 the gateway
        /// runs a single-threaded event loop, like one nginx worker.
        #[arg(long)]
        workers: Option<usize>,
        /// This node's id in `GET /cluster` (default: $PORTCULLIS_NODE_ID,
        /// else `<hostname>:<pid>`). Keep it across restarts to rejoin as
        /// the same node.
        #[arg(long, value_name = "ID")]
        node_id: Option<String>,
        /// SIGHUP reloads every node sharing this node's Redis session
        /// store, not just this one (as `POST /reload?cluster=true` does).
        #[arg(long)]
        broadcast: bool,
    },
    /// Load a configuration and every plugin it names, report, and exit.
    Validate {
        /// The gateway configuration file (gateway.yaml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Tools for writing plugins: scaffold, inspect, run one call.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Import another gateway's API definitions.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Tyk API definitions (classic JSON or Tyk OAS) as Portcullis API
    /// files, a gateway file and a report (IMPORT.md) of every field.
    Tyk {
        /// Definition files, or directories of them (*.json).
        #[arg(required = true, value_name = "FILE_OR_DIR")]
        inputs: Vec<PathBuf>,
        /// Where to write gateway.yaml, apis/ and IMPORT.md.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Print the report as JSON instead of the summary.
        #[arg(long)]
        json: bool,
        /// Write and build a plugin scaffold (the `plugin new` template,
        /// exporting the Tyk function's name) per custom middleware, so the
        /// output validates at once.
        #[arg(long)]
        stub_plugins: bool,
        /// The plugin SDK the stubs use (as `plugin new --sdk`).
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
    },
}

/// How the plugin tools reach registries.
#[derive(Debug, clap::Args)]
struct RegistryFlags {
    /// Use this gateway file's `plugin_registries` (credentials, CAs, plain
    /// HTTP) and `plugin_cache`.
    #[arg(long, value_name = "FILE")]
    gateway: Option<PathBuf>,
    /// A Docker or Podman auth.json (default: $REGISTRY_AUTH_FILE, Podman's,
    /// then Docker's, when present).
    #[arg(long, value_name = "FILE")]
    auth_file: Option<PathBuf>,
}

impl From<RegistryFlags> for plugin_tools::registry::RegistryArgs {
    fn from(flags: RegistryFlags) -> Self {
        plugin_tools::registry::RegistryArgs {
            gateway: flags.gateway,
            auth_file: flags.auth_file,
        }
    }
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Create a plugin crate that builds, tests and loads as it stands.
    New {
        /// The crate's name (also the `.wasm` file's).
        name: String,
        /// The kind of function it starts with.
        #[arg(long, value_enum, default_value = "request")]
        kind: Kind,
        /// The directory to create it in (default: the current one).
        #[arg(long, default_value = ".")]
        path: PathBuf,
        /// Use the SDK in this directory (default: this gateway's source
        /// tree when present, else crates.io).
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
    },
    /// Describe a component: contract, functions, config schemas, imports,
    /// size and SHA-256. An `oci://` reference is fetched first, as the
    /// gateway would fetch it.
    Inspect {
        /// A `.wasm` file, or oci://HOST/REPOSITORY:TAG (or @sha256:DIGEST).
        #[arg(value_name = "FILE|oci://REF")]
        file: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        registry: RegistryFlags,
    },
    /// Push a component to a registry as a wasm OCI artifact, annotated with
    /// its contract and functions; prints the reference with its digest.
    Push {
        /// The `.wasm` component.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Where: oci://HOST/REPOSITORY:TAG.
        #[arg(value_name = "oci://REF")]
        reference: String,
        #[command(flatten)]
        registry: RegistryFlags,
    },
    /// Sign a plugin with a cosign key, in cosign's format: a registry
    /// manifest (the signature stored at its `sha256-<hex>.sig` tag), or a
    /// local file (`FILE.sig`, as `cosign sign-blob` writes). The key's
    /// password is read from COSIGN_PASSWORD.
    Sign {
        /// oci://HOST/REPOSITORY@sha256:DIGEST (a tag is resolved first), or a `.wasm` file.
        #[arg(value_name = "oci://REF|FILE")]
        target: String,
        /// The private key: cosign's (cosign.key) or a PEM PKCS#8 key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[command(flatten)]
        registry: RegistryFlags,
    },
    /// Run one function once in the real sandbox, with the gateway's
    /// limits, and print its outcome, log lines and what it used. The exit
    /// status is 0 when the call succeeded.
    Call {
        file: PathBuf,
        function: String,
        /// The request: JSON ({"method","path","headers","params","body",...})
        /// or a raw HTTP/1.1 request. Default: GET /.
        #[arg(long, value_name = "FILE")]
        request: Option<PathBuf>,
        /// A path parameter, as an endpoint template would capture it
        /// (repeatable; adds to the request's `params`).
        #[arg(long, value_name = "NAME=VALUE")]
        param: Vec<String>,
        /// The plugin reference's config: JSON, or @FILE (JSON or YAML).
        #[arg(long, value_name = "JSON|@FILE")]
        config: Option<String>,
        /// The caller's session, JSON ({"key_id","alias","metadata",...}).
        #[arg(long, value_name = "FILE")]
        session: Option<PathBuf>,
        /// The API definition, JSON ({"id","name","listen_path","upstream","config"}).
        #[arg(long, value_name = "FILE")]
        api: Option<PathBuf>,
        /// For a response function: the upstream's response, JSON
        /// ({"status","headers","body"}). Default: 200, empty.
        #[arg(long, value_name = "FILE")]
        response: Option<PathBuf>,
        /// Take the limits from this gateway file's `plugin_limits`
        /// (default: the gateway's defaults).
        #[arg(long, value_name = "FILE")]
        gateway: Option<PathBuf>,
        /// Hosts outbound calls may reach (as `outbound.allow`), the
        /// plugin's own and the fan-out's; none by default.
        #[arg(long, value_name = "HOST", num_args = 1..)]
        allow: Vec<String>,
        /// The reference's `fan_out` block ({"calls": {NAME: URL, ...}}),
        /// JSON, or @FILE (JSON or YAML): the gateway makes the calls before
        /// the function runs, and the function reads their results.
        #[arg(long, value_name = "JSON|@FILE")]
        fan_out: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The plugin tools print their own report; their log shows warnings
    // only, and `plugin call` keeps the plugin's own lines for its report.
    let plugin_logs = Arc::new(Mutex::new(Vec::new()));
    let default_filter = if matches!(cli.command, Command::Plugin { .. }) {
        "warn,plugin=trace"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    if matches!(
        cli.command,
        Command::Plugin {
            command: PluginCommand::Call { .. }
        }
    ) {
        registry
            .with(plugin_tools::CaptureLogs(Arc::clone(&plugin_logs)))
            .with(print().with_filter(tracing_subscriber::filter::filter_fn(|m| m.target() != "plugin")))
            .init();
    } else {
        registry.with(print()).init();
    }
    let workers = match &cli.command {
        Command::Serve { workers, .. } => *workers,
        Command::Validate { .. } | Command::Plugin { .. } | Command::Import { .. } => None,
    };
    let mut builder = match workers {
        Some(0) => {
            eprintln!("error: --workers must be at least 1");
            return ExitCode::FAILURE;
        }
        // One worker: a single-threaded event loop, no cross-thread wake-ups.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Serve {
                config,
                listen,
                listen_tls,
                node_id,
                broadcast,
                ..
            } => match portcullis::control::serve(
                config,
                portcullis::control::ServeOptions {
                    listen,
                    listen_tls,
                    node_id: node_id.or_else(|| std::env::var("PORTCULLIS_NODE_ID").ok()),
                    broadcast,
                },
            )
            .await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Command::Validate { config } => match portcullis::control::validate(&config).await {
                Ok(routes) => {
                    print!("{}", portcullis::control::summary(&routes));
                    println!("configuration OK");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Plugin { command } => plugin_command(command, plugin_logs).await,
            Command::Import {
                command:
                    ImportCommand::Tyk {
                        inputs,
                        out,
                        json,
                        stub_plugins,
                        sdk,
                    },
            } => {
                let options = portcullis::import::Options {
                    inputs,
                    out,
                    stub_plugins,
                    sdk,
                };
                match portcullis::import::run(&options) {
                    Ok(report) => {
                        if json {
                            match serde_json::to_string_pretty(&report) {
                                Ok(text) => println!("{text}"),
                                Err(e) => eprintln!("error: {e}"),
                            }
                        } else {
                            print!("{}", report.summary(&options.out));
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    })
}

/// The log, printed to stderr.
fn print<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

/// `plugin inspect` of a file, or of a registry reference fetched first.
async fn inspect(target: &str, json: bool, registry: plugin_tools::registry::RegistryArgs) -> anyhow::Result<ExitCode> {
    let (file, remote) = if target.starts_with("oci://") {
        let (digest, path, signatures) = plugin_tools::registry::fetch(target, &registry).await?;
        (path, Some((digest, signatures)))
    } else {
        (PathBuf::from(target), None)
    };
    let inspection = plugin_tools::inspect(&file).await?;
    if json {
        let mut value = plugin_tools::inspection_json(&file, &inspection);
        if let Some((digest, signatures)) = &remote {
            value["reference"] = target.into();
            value["manifest_digest"] = digest.as_str().into();
            value["signatures"] = (*signatures).into();
        }
        println!("{value:#}");
    } else {
        if let Some((digest, signatures)) = &remote {
            println!("{target}\n  manifest  {digest}\n  signed    {signatures} cosign signature(s) stored");
        }
        print!("{}", plugin_tools::inspection_text(&file, &inspection));
    }
    Ok(ExitCode::SUCCESS)
}

async fn plugin_command(command: PluginCommand, logs: Arc<Mutex<Vec<plugin_tools::call::LogLine>>>) -> ExitCode {
    let result = match command {
        PluginCommand::New { name, kind, path, sdk } => plugin_tools::scaffold::new(&name, kind, &path, sdk.as_deref())
            .map(|dir| {
                println!("created {}", dir.display());
                println!("next: cd {} && cargo test && cargo build --release", dir.display());
                ExitCode::SUCCESS
            }),
        PluginCommand::Inspect { file, json, registry } => inspect(&file, json, registry.into()).await,
        PluginCommand::Push {
            file,
            reference,
            registry,
        } => plugin_tools::registry::push(&file, &reference, &registry.into())
            .await
            .map(|pushed| {
                println!("pushed {pushed}");
                ExitCode::SUCCESS
            }),
        PluginCommand::Sign { target, key, registry } => plugin_tools::registry::sign(&target, &key, &registry.into())
            .await
            .map(|done| {
                println!("{done}");
                ExitCode::SUCCESS
            }),
        PluginCommand::Call {
            file,
            function,
            request,
            param,
            config,
            session,
            api,
            response,
            gateway,
            allow,
            fan_out,
            json,
        } => {
            let args = CallArgs {
                gateway,
                file,
                function,
                request,
                params: param,
                response,
                config,
                session,
                api,
                allow,
                fan_out,
            };
            plugin_tools::call::call(args, logs).await.map(|report| {
                if json {
                    println!("{:#}", serde_json::to_value(&report).unwrap_or_default());
                } else {
                    print!("{}", plugin_tools::call::text(&report));
                }
                if report.succeeded() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            })
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}
