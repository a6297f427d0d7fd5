//! `vc-webhook`: the kosmos-vc admission webhook. See `vc_webhook::cli` for the flags.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = vc_webhook::cli::Cli::parse();
    if let Err(error) = vc_process::logging::init(cli.log_format, &cli.log_level) {
        eprintln!("vc-webhook: {error:#}");
        return ExitCode::FAILURE;
    }
    match vc_webhook::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
