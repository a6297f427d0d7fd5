//! Structural-schema handling of custom resources, in the order kube-apiserver runs it:
//! prune unknown fields, apply defaults, then validate (types, int-or-string, nullable,
//! enum, required, bounds, patterns, set lists, anyOf). CEL rules are not evaluated.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};

use super::status::{Cause, go_value};

/// Removes fields the schema does not know; returns their paths (`spec.bogusField`).
pub fn prune(value: &mut Value, schema: &Value, path: &str, pruned: &mut Vec<String>) {
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
        && schema.get("properties").is_none()
        && schema.get("additionalProperties").is_none()
        && schema.get("items").is_none()
    {
        return;
    }
    match value {
        Value::Object(map) => {
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                let child_schema = props.and_then(|p| p.get(&key)).or(match additional {
                    Some(Value::Object(_)) => additional,
                    _ => None,
                });
                match child_schema {
                    Some(s) => {
                        if let Some(child) = map.get_mut(&key) {
                            prune(child, s, &child_path, pruned);
                        }
                    }
                    None if preserve || matches!(additional, Some(Value::Bool(true))) => {}
                    None if path.is_empty()
                        && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") => {}
                    None => {
                        map.remove(&key);
                        pruned.push(child_path);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item, item_schema, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

/// Fills `default`s of absent (or null, when not nullable) properties, recursively.
pub fn apply_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, prop) in props {
                    let nullable = prop.get("nullable").and_then(Value::as_bool) == Some(true);
                    let absent = match map.get(key) {
                        None => true,
                        Some(Value::Null) => !nullable,
                        Some(_) => false,
                    };
                    if absent {
                        if let Some(default) = prop.get("default") {
                            map.insert(key.clone(), default.clone());
                        } else if map.get(key) == Some(&Value::Null) && !nullable {
                            // The apiserver drops nulls of non-nullable fields before validation.
                            map.remove(key);
                        }
                    }
                    if let Some(child) = map.get_mut(key) {
                        apply_defaults(child, prop);
                    }
                }
            }
            if let Some(additional @ Value::Object(_)) = schema.get("additionalProperties") {
                for child in map.values_mut() {
                    apply_defaults(child, additional);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_cause(path: &str, value: &Value, expected: &str) -> Cause {
    let actual = type_name(value);
    Cause {
        reason: "FieldValueTypeInvalid".to_string(),
        message: format!(
            "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
        ),
        field: path.to_string(),
    }
}

fn invalid_cause(path: &str, value: &Value, detail: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid".to_string(),
        message: format!("Invalid value: {}: {detail}", go_value(value)),
        field: path.to_string(),
    }
}

fn regex_matches(pattern: &str, text: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let compiled = cache
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok());
    compiled.as_ref().is_none_or(|re| re.is_match(text))
}

/// Validates `value` at `path` against `schema`, appending causes like the apiserver's.
pub fn validate(value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let nullable = schema.get("nullable").and_then(Value::as_bool) == Some(true);
    if value.is_null() {
        if !nullable && let Some(t) = schema.get("type").and_then(Value::as_str) {
            causes.push(type_cause(path, value, t));
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !matches!(type_name(value), "integer" | "string") {
            causes.push(type_cause(path, value, "integer,string"));
        }
    } else if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = actual == expected || (expected == "number" && actual == "integer");
        if !ok {
            causes.push(type_cause(path, value, expected));
            return;
        }
    }
    if let Some(any_of) = schema.get("anyOf").and_then(Value::as_array) {
        let branch_errors: Vec<Vec<Cause>> = any_of
            .iter()
            .map(|branch| {
                let mut errs = Vec::new();
                validate(value, branch, path, &mut errs);
                errs
            })
            .collect();
        if !branch_errors.iter().any(Vec::is_empty) {
            causes.push(Cause {
                reason: "FieldValueInvalid".to_string(),
                message: format!(
                    "Invalid value: \"\": \"{path}\" must validate at least one schema (anyOf)"
                ),
                field: "<nil>".to_string(),
            });
            if let Some(first) = branch_errors.into_iter().next() {
                causes.extend(first);
            }
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let list: Vec<String> = options.iter().map(go_value).collect();
        causes.push(Cause {
            reason: "FieldValueNotSupported".to_string(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                go_value(value),
                list.join(", ")
            ),
            field: path.to_string(),
        });
    }
    match value {
        Value::String(s) => validate_string(s, value, schema, path, causes),
        Value::Number(n) => validate_number(n.as_f64().unwrap_or(0.0), value, schema, path, causes),
        Value::Object(map) => validate_object(map, schema, path, causes),
        Value::Array(items) => validate_array(items, schema, path, causes),
        _ => {}
    }
}

fn validate_string(s: &str, value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && !regex_matches(pattern, s)
    {
        causes.push(invalid_cause(
            path,
            value,
            format!("{path} in body should match '{pattern}'"),
        ));
    }
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        causes.push(Cause {
            reason: "FieldValueTooLong".to_string(),
            message: format!("Too long: may not be more than {max} bytes"),
            field: path.to_string(),
        });
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        causes.push(invalid_cause(
            path,
            value,
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
}

fn validate_number(n: f64, value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let fmt = |v: f64| {
        if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            v.to_string()
        }
    };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
        if n < min || (exclusive && n == min) {
            let op = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push(invalid_cause(
                path,
                value,
                format!("{path} in body should be {op} {}", fmt(min)),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
        if n > max || (exclusive && n == max) {
            let op = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push(invalid_cause(
                path,
                value,
                format!("{path} in body should be {op} {}", fmt(max)),
            ));
        }
    }
}

fn validate_object(map: &Map<String, Value>, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                causes.push(Cause {
                    reason: "FieldValueRequired".to_string(),
                    message: "Required value".to_string(),
                    field: join(path, key),
                });
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    for (key, child) in map {
        if path.is_empty() && key == "metadata" {
            continue;
        }
        let child_schema =
            props
                .and_then(|p| p.get(key))
                .or(match schema.get("additionalProperties") {
                    Some(s @ Value::Object(_)) => Some(s),
                    _ => None,
                });
        if let Some(s) = child_schema {
            validate(child, s, &join(path, key), causes);
        }
    }
}

fn validate_array(items: &[Value], schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        causes.push(Cause {
            reason: "FieldValueTooMany".to_string(),
            message: format!("Too many: {}: must have at most {max} items", items.len()),
            field: path.to_string(),
        });
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        causes.push(invalid_cause(
            path,
            &Value::from(items.len()),
            format!("{path} in body should have at least {min} items"),
        ));
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            validate(item, item_schema, &format!("{path}[{i}]"), causes);
        }
    }
}

/// The list-type checks (duplicates in `set` and `map` lists), which the apiserver runs
/// after schema validation, so their causes come last.
pub fn validate_list_types(value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            for (key, child) in map {
                let child_schema =
                    props
                        .and_then(|p| p.get(key))
                        .or(match schema.get("additionalProperties") {
                            Some(s @ Value::Object(_)) => Some(s),
                            _ => None,
                        });
                if let Some(s) = child_schema {
                    validate_list_types(child, s, &join(path, key), causes);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_list_types(item, item_schema, &format!("{path}[{i}]"), causes);
                }
            }
            check_list_type(items, schema, path, causes);
        }
        _ => {}
    }
}

fn check_list_type(items: &[Value], schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    causes.push(Cause {
                        reason: "FieldValueDuplicate".to_string(),
                        message: format!("Duplicate value: {}", go_value(item)),
                        field: format!("{path}[{i}]"),
                    });
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key_of = |item: &Value| -> Vec<Value> {
                keys.iter()
                    .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                    .collect()
            };
            for (i, item) in items.iter().enumerate() {
                let this = key_of(item);
                if items[..i].iter().any(|other| key_of(other) == this) {
                    let shown: Map<String, Value> = keys
                        .iter()
                        .map(|k| (k.to_string(), item.get(*k).cloned().unwrap_or(Value::Null)))
                        .collect();
                    causes.push(Cause {
                        reason: "FieldValueDuplicate".to_string(),
                        message: format!("Duplicate value: {}", Value::Object(shown)),
                        field: format!("{path}[{i}]"),
                    });
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "default": {},
                    "properties": {
                        "kubeconfig": {"type": "string", "nullable": true},
                        "replicas": {"type": "integer", "default": 1, "minimum": 1.0},
                        "cpu": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true},
                        "nodes": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                        "mode": {"type": "string", "enum": ["A", "B"]},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    },
                    "required": ["mode"]
                },
                "status": {"type": "object", "nullable": true, "properties": {"phase": {"type": "string"}}}
            }
        })
    }

    #[test]
    fn prunes_unknown_fields_and_keeps_preserved_ones() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"mode": "A", "bogus": 1, "free": {"anything": {"deep": true}}}});
        let mut pruned = Vec::new();
        prune(&mut obj, &schema(), "", &mut pruned);
        assert_eq!(pruned, vec!["spec.bogus"]);
        assert_eq!(obj["spec"]["free"]["anything"]["deep"], json!(true));
        assert_eq!(obj["metadata"]["name"], json!("a"));
    }

    #[test]
    fn defaults_fill_absent_fields_and_int_or_string_keeps_its_type() {
        let mut obj = json!({"spec": {"mode": "A", "cpu": 10}});
        apply_defaults(&mut obj, &schema());
        assert_eq!(obj["spec"]["replicas"], json!(1));
        let mut causes = Vec::new();
        validate(&obj, &schema(), "", &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        assert_eq!(obj["spec"]["cpu"], json!(10));
        let mut empty = json!({});
        apply_defaults(&mut empty, &schema());
        assert_eq!(empty["spec"]["replicas"], json!(1));
    }

    #[test]
    fn validation_reports_causes_like_the_apiserver() {
        let obj = json!({"spec": {"kubeconfig": 5, "cpu": true, "nodes": ["n1", "n1"], "mode": "C", "replicas": 0}});
        let mut causes = Vec::new();
        validate(&obj, &schema(), "", &mut causes);
        validate_list_types(&obj, &schema(), "", &mut causes);
        let fields: Vec<(&str, &str)> = causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason.as_str()))
            .collect();
        assert!(fields.contains(&("spec.kubeconfig", "FieldValueTypeInvalid")));
        assert!(fields.contains(&("spec.cpu", "FieldValueTypeInvalid")));
        assert!(fields.contains(&("<nil>", "FieldValueInvalid")));
        assert!(fields.contains(&("spec.nodes[1]", "FieldValueDuplicate")));
        assert!(fields.contains(&("spec.mode", "FieldValueNotSupported")));
        assert!(fields.contains(&("spec.replicas", "FieldValueInvalid")));
        let kc = causes
            .iter()
            .find(|c| c.field == "spec.kubeconfig")
            .unwrap();
        assert_eq!(
            kc.message,
            "Invalid value: \"integer\": spec.kubeconfig in body must be of type string: \"integer\""
        );
        let mut missing = Vec::new();
        validate(&json!({"spec": {}}), &schema(), "", &mut missing);
        assert_eq!(missing[0].field, "spec.mode");
        assert_eq!(missing[0].reason, "FieldValueRequired");
    }
}
