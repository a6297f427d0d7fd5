//! What the tenant apiserver asks of a kubelet, read without trusting it: pure
//! functions from the request path and query to the tenant pod meant and to the query of
//! the host apiserver's own `pods/log` and `pods/exec`.
//!
//! Only the parameters those subresources define are passed on, and `container` is
//! always ours: nothing in a tenant request picks another container, pod or namespace
//! on the host, nor a host-only option such as `insecureSkipTLSVerifyBackend`.

/// The largest Kubernetes object name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// Log options of `pods/log` that a kubelet's `containerLogs` takes under the same names.
const LOG_PARAMETERS: [&str; 8] = [
    "follow",
    "previous",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
    "tailLines",
    "limitBytes",
    "stream",
];

/// Kubelet API paths vc-clustertree knows but does not serve for tenant pods.
const UNSUPPORTED: [&str; 11] = [
    "attach",
    "portForward",
    "run",
    "logs",
    "stats",
    "metrics",
    "pods",
    "runningpods",
    "checkpoint",
    "configz",
    "debug",
];

/// One container of one tenant pod, as named in a kubelet API path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    pub namespace: String,
    pub pod: String,
    /// The pod UID, when the path names it (`/exec/NS/POD/UID/CONTAINER`).
    pub uid: Option<String>,
    pub container: String,
}

/// What a request path asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Logs(ContainerRef),
    Exec(ContainerRef),
    /// A kubelet API this one does not offer, by its first path segment.
    Unsupported(String),
    NotFound,
}

/// Whether `segment` can be a namespace, pod, container name or UID: lower-case DNS
/// characters only, so nothing decoded later can turn into a separator.
fn plain(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= MAX_NAME
        && segment
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && segment != "."
        && segment != ".."
}

fn container_ref(
    namespace: &str,
    pod: &str,
    uid: Option<&str>,
    container: &str,
) -> Option<ContainerRef> {
    let all_plain = [namespace, pod, container]
        .into_iter()
        .chain(uid)
        .all(plain);
    all_plain.then(|| ContainerRef {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        uid: uid.map(str::to_owned),
        container: container.to_owned(),
    })
}

/// The route of a request path.
pub fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let found = match segments.as_slice() {
        ["containerLogs", namespace, pod, container] => {
            container_ref(namespace, pod, None, container).map(Route::Logs)
        }
        ["exec", namespace, pod, container] => {
            container_ref(namespace, pod, None, container).map(Route::Exec)
        }
        ["exec", namespace, pod, uid, container] => {
            container_ref(namespace, pod, Some(uid), container).map(Route::Exec)
        }
        [root, ..] if UNSUPPORTED.contains(root) => Some(Route::Unsupported((*root).to_owned())),
        _ => None,
    };
    found.unwrap_or(Route::NotFound)
}

/// The `key=value` pairs of a raw query, values still percent-encoded.
fn pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Whether a boolean query value says yes, as Go's `strconv.ParseBool` reads it.
fn truthy(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "True" | "TRUE")
}

/// The query of the host's `pods/log` for a kubelet `containerLogs` query.
pub fn host_log_query(query: Option<&str>, container: &str) -> String {
    std::iter::once(format!("container={container}"))
        .chain(
            pairs(query)
                .filter(|(key, _)| LOG_PARAMETERS.contains(key))
                .map(|(key, value)| format!("{key}={value}")),
        )
        .collect::<Vec<_>>()
        .join("&")
}

/// The query of the host's `pods/exec` for a kubelet `exec` query. kube-apiserver asks
/// kubelets for `input`, `output`, `error` (its `ExecStdinParam` ...) where `pods/exec`
/// takes `stdin`, `stdout`, `stderr`; both spellings are read.
pub fn host_exec_query(query: Option<&str>, container: &str) -> String {
    let mut streams = std::collections::BTreeSet::new();
    let mut command = Vec::new();
    for (key, value) in pairs(query) {
        let stream = match key {
            "command" => {
                command.push(format!("command={value}"));
                continue;
            }
            "input" | "stdin" => "stdin",
            "output" | "stdout" => "stdout",
            "error" | "stderr" => "stderr",
            "tty" => "tty",
            _ => continue,
        };
        if truthy(value) {
            streams.insert(stream);
        }
    }
    std::iter::once(format!("container={container}"))
        .chain(command)
        .chain(streams.into_iter().map(|stream| format!("{stream}=true")))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    fn container(uid: Option<&str>) -> ContainerRef {
        ContainerRef {
            namespace: "shop".to_owned(),
            pod: "echo-1".to_owned(),
            uid: uid.map(str::to_owned),
            container: "echo".to_owned(),
        }
    }

    #[test]
    fn logs_and_exec_name_one_container_of_one_pod() {
        assert_eq!(
            route("/containerLogs/shop/echo-1/echo"),
            Route::Logs(container(None))
        );
        assert_eq!(
            route("/exec/shop/echo-1/echo"),
            Route::Exec(container(None))
        );
        assert_eq!(
            route("/exec/shop/echo-1/0f2c-9a/echo"),
            Route::Exec(container(Some("0f2c-9a")))
        );
    }

    #[test]
    fn anything_else_is_unsupported_or_not_found() {
        assert_eq!(
            route("/portForward/shop/echo-1"),
            Route::Unsupported("portForward".to_owned())
        );
        assert_eq!(
            route("/attach/shop/echo-1/echo"),
            Route::Unsupported("attach".to_owned())
        );
        for path in [
            "/",
            "/healthz",
            "/containerLogs/shop/echo-1",
            "/containerLogs/shop/echo-1/echo/extra",
            "/containerLogs/shop/../echo",
            "/containerLogs/Shop/echo-1/echo",
            "/containerLogs/shop/echo%2F1/echo",
            "/containerLogs//echo-1/echo",
            "/exec/shop/echo-1/a/b/c",
        ] {
            assert_eq!(route(path), Route::NotFound, "{path}");
        }
    }

    #[test]
    fn log_options_pass_and_the_container_is_ours() {
        assert_eq!(
            host_log_query(
                Some(
                    "follow=true&tailLines=10&container=other&insecureSkipTLSVerifyBackend=true&timestamps=1&limitBytes=5&sinceSeconds=3&previous=false"
                ),
                "echo"
            ),
            "container=echo&follow=true&tailLines=10&timestamps=1&limitBytes=5&sinceSeconds=3&previous=false"
        );
        assert_eq!(host_log_query(None, "echo"), "container=echo");
    }

    #[test]
    fn exec_streams_are_renamed_and_commands_kept_encoded() {
        assert_eq!(
            host_exec_query(
                Some(
                    "command=sh&command=-c&command=echo%20a%26b&input=1&output=1&error=1&tty=1&container=other"
                ),
                "echo"
            ),
            "container=echo&command=sh&command=-c&command=echo%20a%26b&stderr=true&stdin=true&stdout=true&tty=true"
        );
        assert_eq!(
            host_exec_query(
                Some("command=hostname&stdout=true&stderr=false&tty=0"),
                "echo"
            ),
            "container=echo&command=hostname&stdout=true"
        );
    }
}
