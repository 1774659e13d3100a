//! The `portcullis` command: `serve` runs the gateway, `validate` checks a
//! configuration and every plugin it names without serving, and `plugin`
//! holds the plugin author's tools (`new`, `inspect`, `call`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use portcullis::plugin_tools::{self, call::CallArgs, scaffold::Kind};
use portcullis::telemetry::log_format::LogFormat;
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
    /// The gateway's own log on stderr: text, or JSON lines with the
    /// request and trace ids on every line a request causes (default:
    /// $PORTCULLIS_LOG_FORMAT, else text).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
}

/// Exit statuses, the same for every command: scripts tell a typo in the
/// command line from a configuration to fix from a failure at run time.
mod exit {
    /// Something failed at run time (a listener that cannot bind, a
    /// plugin call that failed, files that cannot be written).
    pub const FAILURE: u8 = 1;
    /// The command line is wrong, or an input file it names is (clap uses 2 too).
    pub const USAGE: u8 = 2;
    /// The configuration is invalid: nothing was served.
    pub const CONFIG: u8 = 3;
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the APIs of a gateway configuration.
    Serve {
        /// The gateway configuration file (gateway.yaml).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Listen on this address instead of the file's `listen`
        /// (`127.0.0.1:0` picks a free port; the address is printed as
        /// `listening on http://ADDR`).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Serve HTTPS on this address instead of the file's `tls.listen`
        /// (the `tls:` block supplies the certificates; printed as
        /// `listening on https://ADDR`).
        #[arg(long, value_name = "ADDR")]
        listen_tls: Option<String>,
        /// Request-serving threads (default: one per CPU). With 1 the gateway
        /// runs a single-threaded event loop, like one nginx worker.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
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
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print a completion script for a shell, e.g.
    /// `portcullis completions bash > /etc/bash_completion.d/portcullis`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
        #[arg(value_name = "NAME")]
        name: String,
        /// The kind of function it starts with.
        #[arg(long, value_enum, default_value = "request")]
        kind: Kind,
        /// The directory to create it in (default: the current one).
        #[arg(long, default_value = ".", value_name = "DIR")]
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
        /// The `.wasm` component.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The exported function to call (as an API file's `function:`).
        #[arg(value_name = "FUNCTION")]
        function: String,
        /// The request: JSON ({"method","path","headers","params","body",...})
        /// or a raw HTTP/1.1 request. Default: GET /.
        #[arg(long, value_name = "FILE")]
        request: Option<PathBuf>,
        /// A path parameter, as an endpoint template would capture it
        /// (repeatable; adds to the request's `params`).
        #[arg(long, value_name = "NAME=VALUE")]
        param: Vec<String>,
        /// The plugin reference's `config:`: JSON, or @FILE (JSON or YAML).
        /// (`--config` is an older name for it.)
        #[arg(long = "plugin-config", alias = "config", value_name = "JSON|@FILE")]
        plugin_config: Option<String>,
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
        /// A host outbound calls may reach (as `outbound.allow`), the
        /// plugin's own and the fan-out's; repeat it, or separate hosts with
        /// commas. None by default.
        #[arg(long, value_name = "HOST", value_delimiter = ',')]
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
    let log_format = match cli.log_format.map_or_else(LogFormat::from_env, Ok) {
        Ok(format) => format,
        Err(why) => {
            eprintln!("error: {why}");
            return ExitCode::from(exit::USAGE);
        }
    };
    log_format.install();
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
            .with(print(log_format).with_filter(tracing_subscriber::filter::filter_fn(|m| m.target() != "plugin")))
            .init();
    } else {
        registry.with(print(log_format)).init();
    }
    let workers = match &cli.command {
        Command::Serve { workers, .. } => *workers,
        Command::Validate { .. } | Command::Plugin { .. } | Command::Import { .. } | Command::Completions { .. } => {
            None
        }
    };
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut <Cli as clap::CommandFactory>::command(),
            "portcullis",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let mut builder = match workers {
        // One worker: a single-threaded event loop, no cross-thread wake-ups.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(n));
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
                    // A configuration that does not load is the operator's
                    // to fix, not a failure of the running gateway.
                    if e.downcast_ref::<portcullis::server::routes::BuildError>().is_some()
                        || e.downcast_ref::<portcullis::config::ConfigError>().is_some()
                    {
                        ExitCode::from(exit::CONFIG)
                    } else {
                        ExitCode::from(exit::FAILURE)
                    }
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
                    ExitCode::from(exit::CONFIG)
                }
            },
            Command::Completions { .. } => ExitCode::SUCCESS,
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

/// The log, printed to stderr: text (coloured on a terminal) or JSON
/// lines, each with the request's span (`span.request_id`,
/// `span.trace_id`, ...) when a request caused it.
fn print<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => layer
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }
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
            plugin_config: config,
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
        ExitCode::from(exit::USAGE)
    })
}
