//! The `portcullis` command: `serve` runs the gateway, `validate` checks a
//! configuration and every plugin it names without serving.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    },
    /// Load a configuration and every plugin it names, report, and exit.
    Validate {
        /// The gateway configuration file (gateway.yaml).
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let workers = match &cli.command {
        Command::Serve { workers, .. } => *workers,
        Command::Validate { .. } => None,
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
                ..
            } => match portcullis::app::serve(
                config,
                portcullis::app::ListenOverrides {
                    plain: listen,
                    tls: listen_tls,
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
            Command::Validate { config } => match portcullis::app::validate(&config).await {
                Ok(routes) => {
                    print!("{}", portcullis::app::summary(&routes));
                    println!("configuration OK");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}
