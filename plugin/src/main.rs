//! `kubectl-vc`: found by kubectl on PATH and run as `kubectl vc ...`.

mod app;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use kubectl_vc::cli::{Cli, Command};

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some("__complete") {
        // kubectl's plugin completion protocol (see `kubectl_vc::completion`).
        return match start_runtime() {
            Some(runtime) => {
                print!("{}", runtime.block_on(app::complete(&raw[1..])));
                ExitCode::SUCCESS
            }
            None => ExitCode::FAILURE,
        };
    }
    let cli = Cli::parse();
    match &cli.command {
        // Commands that need no cluster run without starting a runtime: `--help`, `version`
        // and `completion` stay as fast as kubectl's own.
        Command::Version => {
            println!(
                "kubectl-vc {} ({} {})",
                env!("CARGO_PKG_VERSION"),
                vc_api::constants::API_VERSION,
                vc_api::constants::KIND
            );
            return ExitCode::SUCCESS;
        }
        Command::Completion(args) => {
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "kubectl-vc",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    // kube's rustls client needs a process-wide crypto provider; ring is the workspace's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(reported) = error.downcast_ref::<app::errors::Reported>() {
                eprintln!("{reported}");
            } else if error
                .downcast_ref::<app::errors::AlreadyReported>()
                .is_none()
            {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn start_runtime() -> Option<tokio::runtime::Runtime> {
    // kube's rustls client needs a process-wide crypto provider; ring is the workspace's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            None
        }
    }
}
