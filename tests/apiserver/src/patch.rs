//! JSON patch, JSON merge patch and strategic merge patch, applied to stored JSON.

use serde_json::{Map, Value};

use super::status::ApiError;

/// The patch content types, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

pub const CR_PATCH_TYPES: &str =
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";
pub const BUILTIN_PATCH_TYPES: &str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies a JSON patch (RFC 6902); failures are the apiserver's 422 with `details: {}`.
pub fn apply_json_patch(doc: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let ops: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !ops.is_array() {
        return Err(ApiError::bad_request(
            "error decoding patch: json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp",
        ));
    }
    let patch: json_patch::Patch = serde_json::from_value(ops)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let rejected =
        || ApiError::patch_failed("the server rejected our request due to an error in our request");
    let mut out = doc.clone();
    for operation in patch.0 {
        if is_null_test_of_absent_member(&out, &operation) {
            continue;
        }
        json_patch::patch(&mut out, &[operation]).map_err(|_| rejected())?;
    }
    Ok(out)
}

/// The apiserver's JSON patch library treats `test` of a member that does not exist
/// against `null` as a success (its parent must exist). kube-runtime's finalizer helper
/// relies on it to add the first finalizer race-free; RFC 6902 alone would refuse it.
fn is_null_test_of_absent_member(doc: &Value, operation: &json_patch::PatchOperation) -> bool {
    let json_patch::PatchOperation::Test(test) = operation else {
        return false;
    };
    if !test.value.is_null() {
        return false;
    }
    let path = test.path.as_str();
    let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
    doc.pointer(parent).is_some_and(Value::is_object) && doc.pointer(path).is_none()
}

/// Applies a JSON merge patch (RFC 7386).
pub fn apply_merge_patch(doc: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("error decoding patch: {}", go_json_error(&e)))
    })?;
    let mut out = doc.clone();
    json_patch::merge(&mut out, &patch);
    Ok(out)
}

/// Applies a strategic merge patch to a built-in object.
pub fn apply_strategic_merge_patch(doc: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("error decoding patch: {}", go_json_error(&e)))
    })?;
    let mut out = doc.clone();
    smp_merge(&mut out, &patch, "");
    Ok(out)
}

/// Go's wording for the common JSON syntax errors.
pub fn go_json_error(e: &serde_json::Error) -> String {
    if e.is_eof() {
        "unexpected end of JSON input".to_string()
    } else {
        e.to_string()
    }
}

/// The merge key of a list field under strategic merge patch (from the Go struct tags
/// of the built-in types), or None when the list is replaced as a whole.
fn merge_key(path: &str, field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" if path.contains("ontainers") => "containerPort",
        "ports" => "port",
        "taints" => "key",
        "conditions" => "type",
        "addresses" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "resourceClaims" => "name",
        _ => return None,
    })
}

/// Lists of scalars merged as sets under strategic merge patch.
fn is_primitive_merge_list(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn smp_merge(target: &mut Value, patch: &Value, path: &str) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target_map) = target.as_object_mut() else {
        return;
    };
    for (key, value) in patch_map {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(existing)), Some(remove)) =
                (target_map.get_mut(field), value.as_array())
            {
                existing.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        let child_path = format!("{path}/{key}");
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(inner)
                if inner.get("$patch").and_then(Value::as_str) == Some("delete") =>
            {
                target_map.remove(key);
            }
            Value::Object(_) => {
                let slot = target_map.entry(key.clone()).or_insert(Value::Null);
                smp_merge(slot, value, &child_path);
            }
            Value::Array(items) => {
                let merged = match (target_map.get(key), merge_key(path, key)) {
                    (Some(Value::Array(existing)), Some(mk)) => {
                        merge_keyed_list(existing, items, mk, &child_path)
                    }
                    (Some(Value::Array(existing)), None) if is_primitive_merge_list(key) => {
                        let mut out = existing.clone();
                        for item in items {
                            if !out.contains(item) {
                                out.push(item.clone());
                            }
                        }
                        out
                    }
                    _ => items
                        .iter()
                        .filter(|i| !is_delete_directive(i))
                        .map(strip_directives)
                        .collect(),
                };
                target_map.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                target_map.insert(key.clone(), scalar.clone());
            }
        }
    }
    if let Some(Value::Array(retain)) = patch_map.get("$retainKeys") {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target_map.retain(|k, _| keep.contains(&k.as_str()));
    }
}

fn is_delete_directive(item: &Value) -> bool {
    item.get("$patch").and_then(Value::as_str) == Some("delete")
}

fn merge_keyed_list(
    existing: &[Value],
    patch_items: &[Value],
    key: &str,
    path: &str,
) -> Vec<Value> {
    let mut out: Vec<Value> = existing.to_vec();
    if patch_items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return patch_items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip_directives)
            .collect();
    }
    for item in patch_items {
        let id = item.get(key);
        let position = id.and_then(|id| out.iter().position(|e| e.get(key) == Some(id)));
        match (is_delete_directive(item), position) {
            (true, Some(pos)) => {
                out.remove(pos);
            }
            (true, None) => {}
            (false, Some(pos)) => smp_merge(&mut out[pos], item, path),
            (false, None) => out.push(strip_directives(item)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_patch_merges_taints_by_key_like_kubectl_taint() {
        let node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}, "metadata": {"labels": {"x": "1"}}});
        let patch = br#"{"spec":{"taints":[{"key":"b","effect":"NoExecute"}]},"metadata":{"labels":{"x":null,"y":"2"}}}"#;
        let out = apply_strategic_merge_patch(&node, patch).unwrap();
        assert_eq!(
            out["spec"]["taints"],
            json!([{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoExecute"}])
        );
        assert_eq!(out["metadata"]["labels"], json!({"y": "2"}));
    }

    #[test]
    fn strategic_merge_patch_honours_delete_and_replace_directives() {
        let dep = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}}}});
        let patch = br#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"a"}],"containers":[{"name":"a","image":"a:2"},{"name":"b","$patch":"delete"}]}}}}"#;
        let out = apply_strategic_merge_patch(&dep, patch).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}]}])
        );
    }

    #[test]
    fn json_patch_errors_are_422_with_empty_details() {
        let err =
            apply_json_patch(&json!({"a": 1}), br#"[{"op":"remove","path":"/b"}]"#).unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            String::from_utf8(err.body()).unwrap(),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"the server rejected our request due to an error in our request\",\"reason\":\"Invalid\",\"details\":{},\"code\":422}"
        );
        let err = apply_json_patch(&json!({}), br#"{"op":"add"}"#).unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn testing_an_absent_member_against_null_succeeds_like_the_apiserver() {
        let doc = json!({"metadata": {"name": "a"}});
        let patch = br#"[{"op":"test","path":"/metadata/finalizers","value":null},{"op":"add","path":"/metadata/finalizers","value":["kosmos.io/finalizer"]}]"#;
        let out = apply_json_patch(&doc, patch).unwrap();
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["kosmos.io/finalizer"])
        );

        // Once the member exists the test compares values again, so a racing writer loses.
        let err = apply_json_patch(&out, patch).unwrap_err();
        assert_eq!(err.code, 422);

        // The parent must exist, as in the apiserver.
        let err = apply_json_patch(
            &doc,
            br#"[{"op":"test","path":"/spec/missing","value":null}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn merge_patch_null_deletes_keys() {
        let out =
            apply_merge_patch(&json!({"a": {"b": 1, "c": 2}}), br#"{"a":{"b":null}}"#).unwrap();
        assert_eq!(out, json!({"a": {"c": 2}}));
    }
}
