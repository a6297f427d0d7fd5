//! `meta.k8s.io/v1` Table answers (what `kubectl get` asks for): `Name` plus the CRD's
//! printer columns, or a fixed set of columns per built-in kind close to the apiserver's.

use serde_json::{Value, json};

use super::registry::{PrinterColumn, ResourceType};

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// What rows carry in `object` (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

fn columns(rt: &ResourceType) -> Vec<PrinterColumn> {
    if let Some(crd) = &rt.crd {
        if crd.printer_columns.is_empty() {
            return vec![col("Age", "date", ".metadata.creationTimestamp")];
        }
        return crd.printer_columns.clone();
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "nodes") => vec![
            col("Status", "string", "@nodeStatus"),
            col("Roles", "string", "@nodeRoles"),
            col("Age", "date", ".metadata.creationTimestamp"),
            col("Version", "string", ".status.nodeInfo.kubeletVersion"),
        ],
        ("", "namespaces") => vec![
            col("Status", "string", ".status.phase"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        ("", "pods") => vec![
            col("Ready", "string", "@podReady"),
            col("Status", "string", ".status.phase"),
            col("Restarts", "string", "@podRestarts"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        ("", "secrets") => vec![
            col("Type", "string", ".type"),
            col("Data", "string", "@dataCount"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        ("", "configmaps") => vec![
            col("Data", "string", "@dataCount"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        ("", "services") => vec![
            col("Type", "string", ".spec.type"),
            col("Cluster-IP", "string", ".spec.clusterIP"),
            col("External-IP", "string", "@externalIP"),
            col("Port(s)", "string", "@ports"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        ("apps", "deployments") => vec![
            col("Ready", "string", "@replicasReady"),
            col("Up-to-date", "integer", ".status.updatedReplicas"),
            col("Available", "integer", ".status.availableReplicas"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        ("apps", "statefulsets") => vec![
            col("Ready", "string", "@replicasReady"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ],
        _ => vec![col("Age", "date", ".metadata.creationTimestamp")],
    }
}

fn col(name: &str, type_: &str, path: &str) -> PrinterColumn {
    PrinterColumn {
        name: name.to_string(),
        type_: type_.to_string(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: path.to_string(),
    }
}

fn column_definitions(rt: &ResourceType) -> Value {
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0}),
    ];
    for c in columns(rt) {
        let description = if c.description.is_empty() && rt.crd.is_some() {
            format!(
                "Custom resource definition column (in JSONPath format): {}",
                c.json_path
            )
        } else {
            c.description.clone()
        };
        defs.push(json!({"name": c.name, "type": c.type_, "format": c.format, "description": description, "priority": c.priority}));
    }
    Value::Array(defs)
}

/// A Table of `objects`; `with_columns` false gives `"columnDefinitions": null` (watch
/// events after the first).
pub fn table(
    rt: &ResourceType,
    objects: &[&Value],
    list_meta: Value,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let cols = columns(rt);
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut cells = vec![obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(cols.iter().map(|c| cell(obj, c)));
            let mut row = json!({"cells": cells});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({}))});
                }
                IncludeObject::Object => row["object"] = (*obj).clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": if with_columns { column_definitions(rt) } else { Value::Null },
        "rows": rows,
    })
}

fn cell(obj: &Value, c: &PrinterColumn) -> Value {
    let computed = match c.json_path.as_str() {
        "@nodeStatus" => Some(node_status(obj)),
        "@nodeRoles" => Some(node_roles(obj)),
        "@podReady" => {
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses
                .iter()
                .filter(|s| s.get("ready").and_then(Value::as_bool) == Some(true))
                .count();
            Some(format!("{ready}/{total}"))
        }
        "@podRestarts" => {
            let n: i64 = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("restartCount").and_then(Value::as_i64))
                .sum();
            Some(n.to_string())
        }
        "@dataCount" => Some(
            obj.get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                .to_string(),
        ),
        "@externalIP" => Some(
            obj.pointer("/status/loadBalancer/ingress/0/ip")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    if obj.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer") {
                        "<pending>".into()
                    } else {
                        "<none>".into()
                    }
                }),
        ),
        "@ports" => {
            let ports: Vec<String> = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let port = p.get("port").map(|v| v.to_string()).unwrap_or_default();
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort") {
                        Some(np) => format!("{port}:{np}/{proto}"),
                        None => format!("{port}/{proto}"),
                    }
                })
                .collect();
            Some(if ports.is_empty() {
                "<none>".into()
            } else {
                ports.join(",")
            })
        }
        "@replicasReady" => {
            let ready = obj
                .pointer("/status/readyReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let want = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            Some(format!("{ready}/{want}"))
        }
        _ => None,
    };
    if let Some(text) = computed {
        return Value::String(text);
    }
    let values = jsonpath(obj, &c.json_path);
    let value = match values.as_slice() {
        [] => return Value::Null,
        [one] => (*one).clone(),
        many => Value::Array(many.iter().map(|v| (*v).clone()).collect()),
    };
    match (c.type_.as_str(), &value) {
        ("date", Value::String(ts)) => Value::String(age(ts)),
        ("integer" | "number" | "boolean", v) => v.clone(),
        (_, Value::String(s)) => Value::String(s.clone()),
        (_, other) => Value::String(other.to_string()),
    }
}

fn node_status(obj: &Value) -> String {
    let ready = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("status").and_then(Value::as_str))
        .map(|s| if s == "True" { "Ready" } else { "NotReady" })
        .unwrap_or("Unknown");
    let unschedulable = obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true);
    if unschedulable {
        format!("{ready},SchedulingDisabled")
    } else {
        ready.to_string()
    }
}

fn node_roles(obj: &Value) -> String {
    let roles: Vec<&str> = obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect()
        })
        .unwrap_or_default();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

/// `5s`, `3m`, `2h`, `4d` like kubectl's HumanDuration (coarse).
pub fn age(ts: &str) -> String {
    let Ok(then) = ts.parse::<jiff::Timestamp>() else {
        return ts.to_string();
    };
    let secs = (jiff::Timestamp::now().as_second() - then.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A small JSONPath subset: `.a.b`, `[n]`, `[*]`, `[?(@.k=="v")]`, `{...}` wrappers.
pub fn jsonpath<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut current: Vec<&Value> = vec![obj];
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let field = &r[..end];
            rest = &r[end..];
            if field.is_empty() {
                continue;
            }
            current = current.into_iter().filter_map(|v| v.get(field)).collect();
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Vec::new();
            };
            let selector = &r[..end];
            rest = &r[end + 1..];
            current = current
                .into_iter()
                .flat_map(|v| {
                    let items: Vec<&Value> =
                        v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
                    if selector == "*" {
                        items
                    } else if let Ok(i) = selector.parse::<usize>() {
                        items.get(i).copied().into_iter().collect()
                    } else if let Some(filter) = selector
                        .strip_prefix("?(@.")
                        .and_then(|f| f.strip_suffix(')'))
                    {
                        let (key, want) = filter.split_once("==").unwrap_or((filter, ""));
                        let want = want.trim().trim_matches('"').trim_matches('\'');
                        items
                            .into_iter()
                            .filter(|item| {
                                item.get(key.trim()).and_then(Value::as_str) == Some(want)
                            })
                            .collect()
                    } else {
                        Vec::new()
                    }
                })
                .collect();
        } else {
            return Vec::new();
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset_handles_fields_indexes_and_filters() {
        let obj = json!({"status": {"phase": "Ready", "conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(jsonpath(&obj, ".status.phase"), vec![&json!("Ready")]);
        assert_eq!(
            jsonpath(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("True")]
        );
        assert_eq!(
            jsonpath(&obj, ".status.conditions[0].type"),
            vec![&json!("A")]
        );
        assert!(jsonpath(&obj, ".status.missing").is_empty());
    }
}
