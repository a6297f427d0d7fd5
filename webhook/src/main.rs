//! `vc-webhook`: the kosmos-vc admission webhook. See `vc_webhook::cli` for the flags.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = vc_webhook::cli::Cli::parse();
    vc_webhook::cli::init_logging(cli.log_format, &cli.log_level)?;
    if let Err(error) = vc_webhook::cli::run(cli).await {
        tracing::error!("{error:#}");
        return Err(error);
    }
    Ok(())
}
