//! One shutdown for the whole process: SIGTERM (the kubelet stopping the pod) or SIGINT
//! (Ctrl-C) cancels a single token that every loop, server and stop deadline watches.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A signal handler could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {signal}")]
pub struct SignalError {
    /// The signal, such as `SIGTERM`.
    pub signal: &'static str,
    /// Why the handler was refused.
    #[source]
    pub source: std::io::Error,
}

/// A token cancelled on the first SIGTERM or SIGINT. The handlers are installed before
/// this returns, so a signal arriving right after start is not lost, and a process that
/// could not hear SIGTERM fails at start instead of being killed at the end of its grace
/// period with its work cut.
pub fn on_signal() -> Result<CancellationToken, SignalError> {
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| SignalError {
            signal: name,
            source,
        })
    };
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT")?;
    let shutdown = CancellationToken::new();
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        let received = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!("{received} received; shutting down");
        cancel.cancel();
    });
    Ok(shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Sends `signal` to this test process with the real `kill`.
    fn kill(signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[tokio::test]
    async fn sigterm_and_sigint_each_cancel_the_token() {
        for signal in ["-TERM", "-INT"] {
            let shutdown = on_signal().unwrap();
            assert!(!shutdown.is_cancelled());
            kill(signal);
            tokio::time::timeout(Duration::from_secs(10), shutdown.cancelled())
                .await
                .unwrap_or_else(|_| panic!("{signal} did not cancel the token"));
        }
    }
}
