//! The API server's `Warning` headers, shown as kubectl shows them.
//!
//! Admission webhooks answer "allowed, but..." through warnings (a promoted node that is
//! NotReady, for one); the API server relays them as `Warning: 299 - "text"` response
//! headers. kube-rs drops response headers before a caller sees them, so without this
//! layer the operator never learns what the webhook said. kubectl prints each distinct
//! warning once per run as `Warning: text` on stderr; so does this.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use tower::{Layer, Service};

/// The warn-code of RFC 7234 that Kubernetes uses for every warning it sends.
const KUBERNETES_WARN_CODE: u16 = 299;

/// One `Warning` header entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The warn-code, `299` for Kubernetes warnings.
    pub code: u16,
    /// The warn-agent, `-` from the API server.
    pub agent: String,
    /// The unquoted text.
    pub text: String,
}

/// Parses one `Warning` header value: comma-separated `CODE AGENT "TEXT" ["DATE"]` entries,
/// as client-go does. A malformed entry ends parsing; what was read before it is kept.
pub fn parse_header(value: &str) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let mut rest = value.trim_start();
    while !rest.is_empty() {
        let Some((warning, after)) = parse_entry(rest) else {
            break;
        };
        warnings.push(warning);
        rest = after.trim_start();
        match rest.strip_prefix(',') {
            Some(next) => rest = next.trim_start(),
            None => break,
        }
    }
    warnings
}

fn parse_entry(text: &str) -> Option<(Warning, &str)> {
    let (code, rest) = text.split_once(' ')?;
    if code.len() != 3 {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    let (agent, rest) = rest.split_once(' ')?;
    let (text, rest) = quoted(rest)?;
    // An optional warn-date, also a quoted string.
    let rest = match rest.strip_prefix(' ') {
        Some(after) if after.starts_with('"') => quoted(after).map_or(rest, |(_, after)| after),
        _ => rest,
    };
    Some((
        Warning {
            code,
            agent: agent.to_owned(),
            text,
        },
        rest,
    ))
}

/// A quoted-string at the start of `text` with its `\x` escapes undone, and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut unquoted = String::new();
    let mut chars = body.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Some((unquoted, &body[index + 1..])),
            '\\' => unquoted.push(chars.next()?.1),
            c => unquoted.push(c),
        }
    }
    None
}

/// Where warnings go once: each distinct text is printed on its first appearance only.
pub struct WarningPrinter {
    seen: Mutex<HashSet<String>>,
    sink: Box<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for WarningPrinter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WarningPrinter")
            .finish_non_exhaustive()
    }
}

impl WarningPrinter {
    /// A printer that hands each line (`Warning: text`) to `sink`.
    pub fn new(sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            seen: Mutex::new(HashSet::new()),
            sink: Box::new(sink),
        }
    }

    /// Prints the Kubernetes warnings among `headers` not printed before.
    pub fn observe(&self, headers: &HeaderMap) {
        for value in headers.get_all(http::header::WARNING) {
            let Ok(value) = value.to_str() else {
                continue;
            };
            for warning in parse_header(value) {
                if warning.code != KUBERNETES_WARN_CODE || warning.text.is_empty() {
                    continue;
                }
                let first_time = match self.seen.lock() {
                    Ok(mut seen) => seen.insert(warning.text.clone()),
                    Err(poisoned) => poisoned.into_inner().insert(warning.text.clone()),
                };
                if first_time {
                    (self.sink)(&format!("Warning: {}", warning.text));
                }
            }
        }
    }
}

/// A tower layer for the kube client that prints the warnings of every response.
#[derive(Clone, Debug)]
pub struct WarningLayer {
    printer: Arc<WarningPrinter>,
}

impl WarningLayer {
    /// Prints through `printer`.
    pub fn new(printer: Arc<WarningPrinter>) -> Self {
        Self { printer }
    }

    /// Prints to stderr, as kubectl does.
    pub fn to_stderr() -> Self {
        Self::new(Arc::new(WarningPrinter::new(|line| eprintln!("{line}"))))
    }
}

impl<S> Layer<S> for WarningLayer {
    type Service = WarningService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WarningService {
            inner,
            printer: Arc::clone(&self.printer),
        }
    }
}

/// The service [`WarningLayer`] wraps around the client's stack.
#[derive(Clone, Debug)]
pub struct WarningService<S> {
    inner: S,
    printer: Arc<WarningPrinter>,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for WarningService<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let response = self.inner.call(request);
        let printer = Arc::clone(&self.printer);
        Box::pin(async move {
            let response = response.await?;
            printer.observe(response.headers());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn texts(value: &str) -> Vec<String> {
        parse_header(value)
            .into_iter()
            .map(|warning| warning.text)
            .collect()
    }

    #[test]
    fn header_as_the_api_server_sends_it() {
        // From kube-apiserver v1.36 (admission/mutated-create-response-with-warning-header).
        assert_eq!(
            parse_header(r#"299 - "fixture-webhook added label mutated-by""#),
            [Warning {
                code: 299,
                agent: "-".into(),
                text: "fixture-webhook added label mutated-by".into()
            }]
        );
    }

    #[test]
    fn escapes_dates_and_lists_are_understood() {
        assert_eq!(
            texts(
                r#"299 - "node \"node2\" is NotReady" "Thu, 26 Nov 2026 05:27:04 GMT", 299 - "second""#
            ),
            ["node \"node2\" is NotReady", "second"]
        );
    }

    #[test]
    fn malformed_entries_end_parsing() {
        assert_eq!(texts(r#"299 - "unterminated"#), Vec::<String>::new());
        assert_eq!(texts(r#"nonsense"#), Vec::<String>::new());
        assert_eq!(texts(r#"299 - "ok", garbage"#), ["ok"]);
    }

    #[test]
    fn only_new_kubernetes_warnings_are_printed() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let printer = WarningPrinter::new(move |line| sink.lock().unwrap().push(line.to_owned()));
        let mut headers = HeaderMap::new();
        headers.append(http::header::WARNING, r#"299 - "first""#.parse().unwrap());
        headers.append(
            http::header::WARNING,
            r#"199 - "not kubernetes""#.parse().unwrap(),
        );
        headers.append(http::header::WARNING, r#"299 - """#.parse().unwrap());
        printer.observe(&headers);
        printer.observe(&headers);
        assert_eq!(*lines.lock().unwrap(), ["Warning: first"]);
    }

    #[tokio::test]
    async fn the_layer_prints_what_the_response_carries() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let layer = WarningLayer::new(Arc::new(WarningPrinter::new(move |line| {
            sink.lock().unwrap().push(line.to_owned())
        })));
        let inner = tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .header("Warning", r#"299 - "node \"node2\" is NotReady""#)
                    .body(())
                    .unwrap(),
            )
        });
        let mut service = layer.layer(inner);
        let response = tower::ServiceExt::oneshot(&mut service, Request::new(()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            *lines.lock().unwrap(),
            ["Warning: node \"node2\" is NotReady"]
        );
    }
}
