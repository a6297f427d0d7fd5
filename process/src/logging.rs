//! One log set-up for every binary: `--log-format text|json` and `--log-level`.
//!
//! JSON lines are tracing-subscriber's own JSON (what kube-rs' examples and controllers
//! write): `timestamp`, `level`, `target`, the event's `fields` (its `message` among them)
//! as one object, and `span`/`spans` when the event happened inside spans. Log collectors
//! therefore find an event's fields at the same place whichever binary wrote it.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `--log-level` is not tracing's filter syntax.
    #[error(
        "--log-level {filter:?} is not a valid tracing filter; use e.g. `info` or `vc_controller=debug`"
    )]
    ParseFilter {
        /// The flag value.
        filter: String,
        /// What the parser refused.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// Another subscriber was installed first.
    #[error("cannot install the log subscriber")]
    Install(#[source] tracing_subscriber::util::TryInitError),
}

/// A subscriber writing `format` lines that pass `filter` to `writer`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, LoggingError>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let parsed = EnvFilter::try_new(filter).map_err(|source| LoggingError::ParseFilter {
        filter: filter.to_owned(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(parsed)
        .with_writer(writer);
    Ok(match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    })
}

/// Installs the process-wide subscriber writing to stdout, and routes the `log` records
/// of dependencies (rustls) through it.
pub fn init(format: LogFormat, filter: &str) -> Result<(), LoggingError> {
    subscriber(format, filter, std::io::stdout)?
        .try_init()
        .map_err(LoggingError::Install)
}

/// `error` and each of its sources, joined by `: `, for a log line: errors name their
/// step in Display and carry the cause as a source, so `%error` alone loses the cause.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(format: LogFormat, filter: &str, log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = subscriber(format, filter, move || writer.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_carry_the_event_fields_in_one_object() {
        let text = lines(LogFormat::Json, "info", || {
            let span = tracing::info_span!("reconcile", name = "prod");
            let _entered = span.enter();
            tracing::info!(namespace = "team-a", "stopped");
            tracing::debug!("below the filter");
        });
        let mut parsed = text.lines().map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|error| {
                panic!("{error}: {line}");
            })
        });
        let line = parsed.next().unwrap();
        assert_eq!(parsed.next(), None, "{text}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["target"], module_path!(), "{line}");
        assert_eq!(
            line["fields"],
            serde_json::json!({"message": "stopped", "namespace": "team-a"}),
            "{line}"
        );
        assert_eq!(line["span"]["name"], "reconcile", "{line}");
        assert_eq!(line["span"]["name"], line["spans"][0]["name"], "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
    }

    #[test]
    fn text_lines_are_one_line_each() {
        let text = lines(LogFormat::Text, "warn", || {
            tracing::info!("below the filter");
            tracing::warn!(reason = "x", "listening");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        for part in ["WARN", "listening", "reason"] {
            assert!(text.contains(part), "{part} missing: {text}");
        }
        assert!(!text.trim_start().starts_with('{'), "{text}");
    }

    #[test]
    fn a_bad_filter_names_the_flag() {
        let Err(error) = subscriber(LogFormat::Json, "info,[", std::io::sink) else {
            panic!("`info,[` parsed");
        };
        assert_eq!(
            error.to_string(),
            "--log-level \"info,[\" is not a valid tracing filter; use e.g. `info` or `vc_controller=debug`"
        );
        assert!(
            chain(&error).starts_with(&format!("{error}: ")),
            "the cause follows: {}",
            chain(&error)
        );
    }
}
