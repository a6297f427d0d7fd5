//! What `kubectl vc` prints: tables, objects as YAML/JSON/name, describe pages and errors,
//! in kubectl's layout. Pure: every function takes the data and the current time.
//!
//! `spec.kubeconfig` holds the tenant's admin credentials, so it never appears here; only
//! `kubectl vc kubeconfig` and `use-context --print` print credentials.

use jiff::Timestamp;
use kube::core::Status;
use serde_json::Value;
use vc_api::constants::{GROUP, PLURAL};
use vc_api::{Phase, VirtualCluster};

/// `virtualcluster.kosmos.io`, kubectl's resource prefix for `-o name` and messages.
pub fn resource_prefix() -> String {
    let singular = PLURAL.strip_suffix('s').unwrap_or(PLURAL);
    format!("{singular}.{GROUP}")
}

/// `virtualcluster.kosmos.io/NAME`.
pub fn resource_name(cluster: &VirtualCluster) -> String {
    format!(
        "{}/{}",
        resource_prefix(),
        cluster.metadata.name.as_deref().unwrap_or_default()
    )
}

/// kubectl's `HumanDuration`: `45s`, `3m20s`, `5h`, `2d3h`, `45d`, `3y`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            rest => format!("{minutes}m{rest}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            rest => format!("{hours}h{rest}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            rest => format!("{}d{rest}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            rest => format!("{}y{rest}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(since: Option<Timestamp>, now: Timestamp) -> String {
    since.map_or_else(
        || "<unknown>".to_owned(),
        |since| human_duration(now.as_second() - since.as_second()),
    )
}

/// The object as printed by `-o yaml|json`: without `managedFields` (as kubectl hides them)
/// and without `spec.kubeconfig` (a credential).
pub fn printable(cluster: &VirtualCluster) -> Value {
    let mut value = serde_json::to_value(cluster).unwrap_or(Value::Null);
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    if let Some(spec) = value.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("kubeconfig");
    }
    value
}

/// Several objects as kubectl's `-o yaml|json` of a listing prints them: a `v1` `List`.
pub fn printable_list(clusters: &[VirtualCluster]) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "items": clusters.iter().map(printable).collect::<Vec<_>>(),
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    })
}

/// YAML text of a value.
pub fn to_yaml(value: &Value) -> String {
    serde_yaml::to_string(value).unwrap_or_default()
}

/// JSON text of a value, indented with four spaces like kubectl, ending in a newline.
pub fn to_json(value: &Value) -> String {
    use serde::Serialize;
    let mut buffer = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut buffer, formatter);
    if value.serialize(&mut serializer).is_err() {
        return String::new();
    }
    buffer.push(b'\n');
    String::from_utf8(buffer).unwrap_or_default()
}

/// Which table to print.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// Add a NAMESPACE column first (`-A`).
    pub all_namespaces: bool,
    /// Add CONDITIONS and ENDPOINT (`-o wide`).
    pub wide: bool,
    /// Print the header line.
    pub headers: bool,
}

/// The listing table: NAME PHASE NODES CPU MEMORY VERSION AGE.
pub fn table(clusters: &[VirtualCluster], options: TableOptions, now: Timestamp) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    if options.headers {
        let mut header = Vec::new();
        if options.all_namespaces {
            header.push("NAMESPACE");
        }
        header.extend(["NAME", "PHASE", "NODES", "CPU", "MEMORY", "VERSION", "AGE"]);
        if options.wide {
            header.extend(["CONDITIONS", "ENDPOINT"]);
        }
        rows.push(header.into_iter().map(str::to_owned).collect());
    }
    for cluster in clusters {
        rows.push(table_row(cluster, options, now));
    }
    align(&rows)
}

fn or_none(text: String) -> String {
    if text.is_empty() {
        "<none>".to_owned()
    } else {
        text
    }
}

fn table_row(cluster: &VirtualCluster, options: TableOptions, now: Timestamp) -> Vec<String> {
    let status = cluster.status.clone().unwrap_or_default();
    let resources = &cluster.spec.promote_resources.resources;
    let resource = |name: &str| {
        resources
            .get(name)
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    let mut row = Vec::new();
    if options.all_namespaces {
        row.push(cluster.metadata.namespace.clone().unwrap_or_default());
    }
    row.extend([
        cluster.metadata.name.clone().unwrap_or_default(),
        or_none(
            status
                .phase
                .map(|phase| phase.to_string())
                .unwrap_or_default(),
        ),
        or_none(cluster.spec.promote_resources.nodes.join(",")),
        or_none(resource("cpu")),
        or_none(resource("memory")),
        or_none(cluster.spec.kubernetes_version.clone().unwrap_or_default()),
        age(
            cluster
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|time| time.0),
            now,
        ),
    ]);
    if options.wide {
        let conditions = status
            .conditions
            .iter()
            .map(|condition| format!("{}={}", condition.type_, condition.status))
            .collect::<Vec<_>>()
            .join(",");
        row.push(or_none(conditions));
        row.push(or_none(status.api_server_endpoint.unwrap_or_default()));
    }
    row
}

/// Left-aligned columns separated by three spaces, as kubectl's tabwriter prints them;
/// the last column is not padded. Every cell is shown through [`shown`]: cells carry
/// names, messages and conditions others wrote.
pub fn align(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| shown(cell)).collect())
        .collect();
    let rows = rows.as_slice();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if column + 1 < row.len() {
                let padding = widths[column] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', padding));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Readiness of a promoted host node, as `describe` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReadiness {
    /// Node name.
    pub name: String,
    /// `True`, `False`, `Unknown`, or why it could not be read.
    pub ready: String,
}

/// One event line of `describe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLine {
    /// `Normal` or `Warning`.
    pub type_: String,
    /// Short reason.
    pub reason: String,
    /// When it last happened.
    pub last_seen: Option<Timestamp>,
    /// How many times.
    pub count: i32,
    /// Reporting component.
    pub from: String,
    /// What happened.
    pub message: String,
}

/// kubectl-describe-style page of one VirtualCluster.
pub fn describe(
    cluster: &VirtualCluster,
    nodes: &[NodeReadiness],
    events: Option<&[EventLine]>,
    now: Timestamp,
) -> String {
    let metadata = &cluster.metadata;
    let spec = &cluster.spec;
    let status = cluster.status.clone().unwrap_or_default();
    let mut page = Page::default();
    page.field(0, "Name", metadata.name.as_deref().unwrap_or_default());
    page.field(
        0,
        "Namespace",
        metadata.namespace.as_deref().unwrap_or_default(),
    );
    page.map(0, "Labels", metadata.labels.iter().flatten());
    page.map(0, "Annotations", metadata.annotations.iter().flatten());
    page.field(0, "API Version", vc_api::constants::API_VERSION);
    page.field(0, "Kind", vc_api::constants::KIND);
    if let Some(created) = &metadata.creation_timestamp {
        page.field(0, "Creation Timestamp", &created.0.to_string());
    }
    if let Some(deleted) = &metadata.deletion_timestamp {
        page.field(0, "Deletion Timestamp", &deleted.0.to_string());
    }
    if let Some(finalizers) = metadata.finalizers.as_ref().filter(|list| !list.is_empty()) {
        page.field(0, "Finalizers", &finalizers.join(", "));
    }
    page.heading(0, "Spec");
    page.field(
        1,
        "Kubernetes Version",
        spec.kubernetes_version.as_deref().unwrap_or("<none>"),
    );
    page.field(
        1,
        "Kubeconfig",
        if spec.kubeconfig.is_some() {
            "<set; print it with kubectl vc kubeconfig>"
        } else {
            "<none>"
        },
    );
    page.heading(1, "Promote Resources");
    page.field(
        2,
        "Nodes",
        &or_none(spec.promote_resources.nodes.join(", ")),
    );
    page.map(2, "Resources", spec.promote_resources.resources.iter());
    if let Some(control_plane) = &spec.control_plane {
        page.heading(1, "Control Plane");
        if let Some(api_server) = &control_plane.api_server {
            page.field(
                2,
                "API Server Replicas",
                &display_or_none(api_server.replicas),
            );
            page.field(
                2,
                "API Server Service Type",
                &display_or_none(api_server.service_type.map(|kind| format!("{kind:?}"))),
            );
            page.field(
                2,
                "External Hosts",
                &or_none(api_server.external_hosts.join(", ")),
            );
        }
        if let Some(etcd) = &control_plane.etcd {
            page.field(2, "Etcd Replicas", &display_or_none(etcd.replicas));
            page.field(
                2,
                "Etcd Storage Size",
                &display_or_none(etcd.storage_size.as_ref()),
            );
            page.field(
                2,
                "Etcd Storage Class",
                etcd.storage_class_name.as_deref().unwrap_or("<default>"),
            );
        }
    }
    if let Some(image) = spec
        .cluster_tree
        .as_ref()
        .and_then(|tree| tree.image.as_deref())
    {
        page.field(1, "Cluster Tree Image", image);
    }
    page.heading(0, "Status");
    page.field(
        1,
        "Phase",
        &display_or_none(status.phase.map(Phase::as_str)),
    );
    page.field(1, "Message", status.message.as_deref().unwrap_or("<none>"));
    page.field(
        1,
        "API Server Endpoint",
        status.api_server_endpoint.as_deref().unwrap_or("<none>"),
    );
    page.field(
        1,
        "Observed Generation",
        &display_or_none(status.observed_generation),
    );
    page.table(
        "Conditions",
        &["Type", "Status", "Reason", "Age", "Message"],
        status
            .conditions
            .iter()
            .map(|condition| {
                vec![
                    condition.type_.clone(),
                    condition.status.clone(),
                    condition.reason.clone(),
                    human_duration(now.as_second() - condition.last_transition_time.0.as_second()),
                    condition.message.clone(),
                ]
            })
            .collect(),
    );
    page.table(
        "Promoted Nodes",
        &["Node", "Host Ready"],
        nodes
            .iter()
            .map(|node| vec![node.name.clone(), node.ready.clone()])
            .collect(),
    );
    match events {
        Some(events) => page.table(
            "Events",
            &["Type", "Reason", "Age", "From", "Message"],
            events
                .iter()
                .map(|event| {
                    let seen = age(event.last_seen, now);
                    let age = if event.count > 1 {
                        format!("{seen} (x{})", event.count)
                    } else {
                        seen
                    };
                    vec![
                        event.type_.clone(),
                        event.reason.clone(),
                        age,
                        event.from.clone(),
                        event.message.clone(),
                    ]
                })
                .collect(),
        ),
        None => page.field(0, "Events", "<unable to list events>"),
    }
    page.text
}

/// Text from the cluster as printed: on one line, control characters and terminal
/// escapes shown as escapes (`\x1b`, `\n`), at most `vc_api::text::OUTPUT_CHARS`
/// characters. Status messages, conditions and Events are written by the controller from
/// tenant apiservers' answers, and by anyone who may update a VirtualCluster's status.
pub fn shown(text: &str) -> String {
    vc_api::text::sanitize(text, vc_api::text::OUTPUT_CHARS)
}

fn display_or_none<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "<none>".to_owned(), |value| value.to_string())
}

/// Column where describe values start; kubectl aligns them with a tabwriter, a fixed
/// column wide enough for the longest label keeps the page readable in one pass.
const LABEL_COLUMN: usize = 24;

/// A describe page under construction: `Key:  value` lines at indentation levels of two
/// spaces, values of one level aligned, and sub-tables like kubectl's.
#[derive(Debug, Default)]
struct Page {
    text: String,
}

impl Page {
    fn field(&mut self, level: usize, key: &str, value: &str) {
        let indent = "  ".repeat(level);
        let label = format!("{key}:");
        let width = LABEL_COLUMN
            .saturating_sub(indent.len())
            .max(label.len() + 1);
        let value = shown(value);
        self.text
            .push_str(format!("{indent}{label:<width$}{value}").trim_end_matches(' '));
        self.text.push('\n');
    }

    fn heading(&mut self, level: usize, key: &str) {
        self.text
            .push_str(&format!("{}{key}:\n", "  ".repeat(level)));
    }

    fn map<'a, K, V>(
        &mut self,
        level: usize,
        key: &str,
        entries: impl Iterator<Item = (&'a K, &'a V)>,
    ) where
        K: std::fmt::Display + 'a,
        V: std::fmt::Display + 'a,
    {
        let lines: Vec<String> = entries
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        match lines.split_first() {
            None => self.field(level, key, "<none>"),
            Some((first, rest)) => {
                self.field(level, key, first);
                let indent = " ".repeat(LABEL_COLUMN.max(2 * level));
                for line in rest {
                    let line = shown(line);
                    self.text.push_str(&format!("{indent}{line}\n"));
                }
            }
        }
    }

    fn table(&mut self, title: &str, header: &[&str], rows: Vec<Vec<String>>) {
        if rows.is_empty() {
            self.field(0, title, "<none>");
            return;
        }
        self.heading(0, title);
        let mut all = vec![
            header
                .iter()
                .map(|cell| (*cell).to_owned())
                .collect::<Vec<_>>(),
            header.iter().map(|cell| "-".repeat(cell.len())).collect(),
        ];
        all.extend(rows);
        for line in align(&all).lines() {
            self.text.push_str(&format!("  {line}\n"));
        }
    }
}

/// The apiserver's answer to a failed request, as kubectl prints it:
/// `Error from server (Reason): message`, the message verbatim (a webhook denial reads
/// exactly as the webhook wrote it).
pub fn server_error(status: &Status) -> String {
    let reason = if status.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", status.reason)
    };
    format!(
        "Error from server{}: {}",
        shown(&reason),
        vc_api::text::sanitize(&status.message, vc_api::text::ERROR_CHARS)
    )
}

/// A NotFound for one VirtualCluster, naming it, its namespace, and what to try.
pub fn not_found(name: &str, namespace: &str) -> String {
    format!(
        "Error from server (NotFound): VirtualCluster \"{name}\" not found in namespace \"{namespace}\"\n\
         hint: run \"kubectl vc list -A\" to see VirtualClusters of every namespace, or pass -n NAMESPACE"
    )
}

/// A 404 for the resource type itself: the CRD is missing.
pub fn resource_type_missing() -> String {
    format!(
        "error: the server does not know {} (kosmos.io/v1alpha1): is kosmos-vc installed in this cluster? \
         Check with \"kubectl get crd {}\"",
        vc_api::constants::KIND,
        vc_api::constants::CRD_NAME
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use pretty_assertions::assert_eq;
    use vc_api::{VirtualClusterSpec, VirtualClusterStatus};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn cluster(name: &str, namespace: &str) -> VirtualCluster {
        let mut cluster = VirtualCluster::new(name, VirtualClusterSpec::default());
        cluster.metadata.namespace = Some(namespace.into());
        cluster.metadata.creation_timestamp = Some(Time(at("2026-11-26T10:00:00Z")));
        cluster
    }

    fn complete() -> VirtualCluster {
        let mut cluster = cluster("prod", "team-a");
        cluster.spec.kubeconfig = Some("c2VjcmV0".into());
        cluster.spec.kubernetes_version = Some("v1.33.4".into());
        cluster.spec.promote_resources.nodes = vec!["node1".into(), "node2".into()];
        cluster
            .spec
            .promote_resources
            .resources
            .insert("cpu".into(), 10.into());
        cluster
            .spec
            .promote_resources
            .resources
            .insert("memory".into(), "100Gi".into());
        cluster.status = Some(VirtualClusterStatus {
            phase: Some(Phase::Completed),
            api_server_endpoint: Some("https://127.100.0.3:6443".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "AllReady".into(),
                message: "tenant usable".into(),
                last_transition_time: Time(at("2026-11-26T10:05:00Z")),
                observed_generation: Some(1),
            }],
            ..VirtualClusterStatus::default()
        });
        cluster
    }

    #[test]
    fn durations_read_like_kubectl() {
        for (seconds, text) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (45, "45s"),
            (119, "119s"),
            (200, "3m20s"),
            (300, "5m"),
            (3000, "50m"),
            (5 * 3600, "5h"),
            (5 * 3600 + 600, "5h10m"),
            (30 * 3600, "30h"),
            (51 * 3600, "2d3h"),
            (45 * 86400, "45d"),
            (3 * 365 * 86400, "3y"),
            (3 * 365 * 86400 + 86400 * 5, "3y5d"),
            (10 * 365 * 86400, "10y"),
        ] {
            assert_eq!(human_duration(seconds), text, "{seconds}s");
        }
    }

    #[test]
    fn table_is_aligned_like_kubectl() {
        let now = at("2026-11-26T12:00:00Z");
        let text = table(
            &[complete(), cluster("a", "default")],
            TableOptions {
                headers: true,
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            text,
            "NAME   PHASE       NODES         CPU      MEMORY   VERSION   AGE\n\
             prod   Completed   node1,node2   10       100Gi    v1.33.4   120m\n\
             a      <none>      <none>        <none>   <none>   <none>    120m\n"
        );
    }

    #[test]
    fn wide_table_adds_namespace_conditions_and_endpoint() {
        let now = at("2026-11-26T12:00:00Z");
        let options = TableOptions {
            all_namespaces: true,
            wide: true,
            headers: false,
        };
        let text = table(&[complete()], options, now);
        assert_eq!(
            text,
            "team-a   prod   Completed   node1,node2   10   100Gi   v1.33.4   120m   Ready=True   https://127.100.0.3:6443\n"
        );
    }

    #[test]
    fn printed_objects_never_carry_the_kubeconfig_or_managed_fields() {
        let mut cluster = complete();
        cluster.metadata.managed_fields = Some(vec![Default::default()]);
        let value = printable(&cluster);
        assert_eq!(value["spec"].get("kubeconfig"), None);
        assert_eq!(value["metadata"].get("managedFields"), None);
        assert_eq!(value["spec"]["promoteResources"]["resources"]["cpu"], 10);
        let list = printable_list(&[cluster]);
        assert_eq!(list["kind"], "List");
        assert!(!to_yaml(&list).contains("c2VjcmV0"));
        assert!(!to_json(&list).contains("c2VjcmV0"));
    }

    #[test]
    fn json_uses_four_spaces() {
        assert_eq!(
            to_json(&serde_json::json!({"a": 1})),
            "{\n    \"a\": 1\n}\n"
        );
    }

    #[test]
    fn name_output_uses_the_resource_prefix() {
        assert_eq!(resource_name(&complete()), "virtualcluster.kosmos.io/prod");
    }

    #[test]
    fn describe_shows_every_part_and_no_credential() {
        let now = at("2026-11-26T12:00:00Z");
        let nodes = [
            NodeReadiness {
                name: "node1".into(),
                ready: "True".into(),
            },
            NodeReadiness {
                name: "node2".into(),
                ready: "<not found on the host>".into(),
            },
        ];
        let events = [EventLine {
            type_: "Normal".into(),
            reason: "Provisioned".into(),
            last_seen: Some(at("2026-11-26T11:59:00Z")),
            count: 3,
            from: "kosmos-vc-controller".into(),
            message: "control plane ready".into(),
        }];
        let page = describe(&complete(), &nodes, Some(&events), now);
        assert!(!page.contains("c2VjcmV0"), "{page}");
        for expected in [
            "Name:                   prod\n",
            "Namespace:              team-a\n",
            "Labels:                 <none>\n",
            "Spec:\n  Kubernetes Version:   v1.33.4\n",
            "  Promote Resources:\n    Nodes:              node1, node2\n    Resources:          cpu=10\n                        memory=100Gi\n",
            "Status:\n  Phase:                Completed\n",
            "  API Server Endpoint:  https://127.100.0.3:6443\n",
            "Conditions:\n  Type    Status   Reason     Age    Message\n  ----    ------   ------     ---    -------\n  Ready   True     AllReady   115m   tenant usable\n",
            "Promoted Nodes:\n  Node    Host Ready\n  ----    ----------\n  node1   True\n  node2   <not found on the host>\n",
            "Events:\n  Type     Reason        Age        From                   Message\n",
            "  Normal   Provisioned   60s (x3)   kosmos-vc-controller   control plane ready\n",
        ] {
            assert!(page.contains(expected), "missing {expected:?} in\n{page}");
        }
    }

    #[test]
    fn describe_without_events_says_none() {
        let page = describe(
            &cluster("a", "default"),
            &[],
            Some(&[]),
            at("2026-11-26T12:00:00Z"),
        );
        assert!(page.contains("Events:                 <none>\n"), "{page}");
        assert!(page.contains("Promoted Nodes:         <none>\n"), "{page}");
    }

    #[test]
    fn server_errors_keep_the_message_verbatim() {
        let status: Status = serde_json::from_str(
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"admission webhook \"validate.kosmos.io\" denied the request: node \"node7\" already belongs to VirtualCluster team-a/prod","reason":"Forbidden","code":403}"#,
        )
        .unwrap();
        assert_eq!(
            server_error(&status),
            "Error from server (Forbidden): admission webhook \"validate.kosmos.io\" denied the request: node \"node7\" already belongs to VirtualCluster team-a/prod"
        );
        let no_reason: Status = serde_json::from_str(r#"{"message":"denied","code":400}"#).unwrap();
        assert_eq!(server_error(&no_reason), "Error from server: denied");
    }

    /// Server errors quote tenants and webhooks: printed on one escaped line.
    #[test]
    fn server_errors_and_cells_show_control_characters_as_escapes() {
        let status: Status = serde_json::from_str(
            r#"{"message":"denied\u001b]0;owned\u0007\nforged","reason":"Forbidden","code":403}"#,
        )
        .unwrap();
        assert_eq!(
            server_error(&status),
            "Error from server (Forbidden): denied\\x1b]0;owned\\x07\\nforged"
        );
        assert_eq!(
            align(&[vec!["a\u{1b}[8m".to_owned(), "b\nc".to_owned()]]),
            "a\\x1b[8m   b\\nc\n"
        );
        let mut hostile = complete();
        if let Some(status) = hostile.status.as_mut() {
            status.message = Some("ok\u{1b}[2J\u{202e}".to_owned());
        }
        let page = describe(&hostile, &[], None, at("2026-01-01T00:00:00Z"));
        assert!(page.contains("ok\\x1b[2J\\u{202e}"), "{page}");
        assert!(!page.contains('\u{1b}'), "{page}");
    }

    #[test]
    fn not_found_names_the_cluster_and_what_to_try() {
        let text = not_found("x", "y");
        assert!(text.starts_with(
            "Error from server (NotFound): VirtualCluster \"x\" not found in namespace \"y\""
        ));
        assert!(text.contains("kubectl vc list -A"));
    }
}
