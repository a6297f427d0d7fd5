//! Field ownership (`metadata.managedFields`) and server-side apply, modelled on
//! structured-merge-diff closely enough for controllers that apply whole desired
//! objects: per-manager field sets, conflicts between managers, force, removal of fields
//! a manager stops applying, and no write at all when an apply changes nothing.
//!
//! Simplifications: lists of objects are associative by `name` (else `uid`, else `type`),
//! lists of scalars are atomic except `metadata.finalizers` (a set); no "." entries.

use serde_json::{Map, Value, json};

/// A field set in `FieldsV1` form: `{"f:spec": {"f:replicas": {}}}`.
pub type FieldTree = Map<String, Value>;

/// One path of a field set, e.g. `["f:spec", "f:replicas"]`.
pub type FieldPath = Vec<String>;

fn list_key(item: &Value) -> Option<(&'static str, &Value)> {
    ["name", "uid", "type"]
        .into_iter()
        .find_map(|k| item.get(k).filter(|v| v.is_string()).map(|v| (k, v)))
}

fn is_set_list(path: &[String], key: &str) -> bool {
    key == "finalizers" && path.len() == 1 && path[0] == "f:metadata"
}

/// The fields an object sets (apiVersion, kind, name, namespace and server-owned metadata
/// are not tracked, as in the apiserver).
pub fn field_tree(obj: &Value, skip_status: bool) -> FieldTree {
    let mut tree = Map::new();
    let Some(map) = obj.as_object() else {
        return tree;
    };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" => continue,
            "status" if skip_status => continue,
            "metadata" => {
                let mut meta_tree = Map::new();
                for (mk, mv) in value.as_object().into_iter().flatten() {
                    if matches!(
                        mk.as_str(),
                        "labels" | "annotations" | "finalizers" | "ownerReferences"
                    ) {
                        let sub = subtree(mv, &["f:metadata".to_string()], mk);
                        meta_tree.insert(format!("f:{mk}"), sub);
                    }
                }
                if !meta_tree.is_empty() {
                    tree.insert("f:metadata".to_string(), Value::Object(meta_tree));
                }
            }
            _ => {
                tree.insert(format!("f:{key}"), subtree(value, &[], key));
            }
        }
    }
    tree
}

fn subtree(value: &Value, parent: &[String], key: &str) -> Value {
    let mut path = parent.to_vec();
    path.push(format!("f:{key}"));
    match value {
        Value::Object(m) if !m.is_empty() => {
            let children: Map<String, Value> = m
                .iter()
                .map(|(k, v)| (format!("f:{k}"), subtree(v, &path, k)))
                .collect();
            Value::Object(children)
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(|i| list_key(i).is_some()) => {
            let children: Map<String, Value> = items
                .iter()
                .filter_map(|item| {
                    let (k, v) = list_key(item)?;
                    let inner = match subtree(item, &path, "") {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                    Some((format!("k:{}", json!({ k: v })), Value::Object(inner)))
                })
                .collect();
            Value::Object(children)
        }
        Value::Array(items) if is_set_list(parent, key) => Value::Object(
            items
                .iter()
                .map(|i| (format!("v:{i}"), json!({})))
                .collect(),
        ),
        _ => json!({}),
    }
}

/// Every leaf path of a field set.
pub fn leaves(tree: &FieldTree) -> Vec<FieldPath> {
    let mut out = Vec::new();
    fn walk(tree: &FieldTree, prefix: &mut FieldPath, out: &mut Vec<FieldPath>) {
        for (k, v) in tree {
            prefix.push(k.clone());
            match v.as_object() {
                Some(children) if !children.is_empty() => walk(children, prefix, out),
                _ => out.push(prefix.clone()),
            }
            prefix.pop();
        }
    }
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// True if `tree` owns `path`, an ancestor of it (atomic owner) or a descendant.
fn owns_overlapping(tree: &FieldTree, path: &[String]) -> bool {
    let mut node = tree;
    for (i, seg) in path.iter().enumerate() {
        match node.get(seg).and_then(Value::as_object) {
            Some(children) if children.is_empty() => return true,
            Some(_) if i + 1 == path.len() => return true,
            Some(children) => node = children,
            None => return false,
        }
    }
    false
}

/// Removes `path` (and everything under it) from a field set, pruning empty parents.
pub fn remove_path(tree: &mut FieldTree, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        tree.remove(first);
        return;
    }
    let now_empty = match tree.get_mut(first).and_then(Value::as_object_mut) {
        Some(child) => {
            remove_path(child, rest);
            child.is_empty()
        }
        None => false,
    };
    if now_empty {
        tree.remove(first);
    }
}

fn contains_leaf(tree: &FieldTree, path: &[String]) -> bool {
    let mut node = tree;
    for seg in path {
        match node.get(seg).and_then(Value::as_object) {
            Some(children) => node = children,
            None => return false,
        }
    }
    true
}

/// The value an object holds at a field path, if any.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = if let Some(field) = seg.strip_prefix("f:") {
            cur.get(field)?
        } else if let Some(key) = seg.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(key).ok()?;
            cur.as_array()?
                .iter()
                .find(|item| want.iter().all(|(k, v)| item.get(k) == Some(v)))?
        } else if let Some(v) = seg.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur.as_array()?.iter().find(|item| **item == want)?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Removes the field at `path` from an object.
pub fn remove_value(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parents {
        let next = if let Some(field) = seg.strip_prefix("f:") {
            cur.get_mut(field)
        } else if let Some(key) = seg.strip_prefix("k:") {
            let Ok(want) = serde_json::from_str::<Map<String, Value>>(key) else {
                return;
            };
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|item| want.iter().all(|(k, v)| item.get(k) == Some(v)))
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(field);
        }
    } else if let Some(key) = last.strip_prefix("k:") {
        if let (Ok(want), Some(items)) = (
            serde_json::from_str::<Map<String, Value>>(key),
            cur.as_array_mut(),
        ) {
            items.retain(|item| !want.iter().all(|(k, v)| item.get(k) == Some(v)));
        }
    } else if let Some(v) = last.strip_prefix("v:")
        && let (Ok(want), Some(items)) = (serde_json::from_str::<Value>(v), cur.as_array_mut())
    {
        items.retain(|item| *item != want);
    }
}

/// Merges an applied configuration into an object: maps deep-merged, associative lists
/// merged by key, everything else replaced.
pub fn merge_applied(target: &mut Value, applied: &Value, path: &[String]) {
    match (target.as_object_mut(), applied) {
        (Some(tmap), Value::Object(amap)) => {
            for (k, av) in amap {
                let mut child_path = path.to_vec();
                child_path.push(format!("f:{k}"));
                match tmap.get_mut(k) {
                    Some(tv) => merge_applied(tv, av, &child_path),
                    None => {
                        tmap.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        _ => match (target.as_array_mut(), applied) {
            (Some(titems), Value::Array(aitems))
                if !aitems.is_empty()
                    && aitems.iter().all(|i| list_key(i).is_some())
                    && titems.iter().all(|i| list_key(i).is_some()) =>
            {
                for item in aitems {
                    let Some((k, v)) = list_key(item) else {
                        continue;
                    };
                    match titems.iter_mut().find(|t| t.get(k) == Some(v)) {
                        Some(existing) => merge_applied(existing, item, path),
                        None => titems.push(item.clone()),
                    }
                }
            }
            (Some(titems), Value::Array(aitems))
                if path.len() == 2 && path[0] == "f:metadata" && path[1] == "f:finalizers" =>
            {
                for item in aitems {
                    if !titems.contains(item) {
                        titems.push(item.clone());
                    }
                }
            }
            _ => *target = applied.clone(),
        },
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub subresource: String,
    pub time: String,
    pub fields: FieldTree,
}

impl Entry {
    pub fn from_value(v: &Value) -> Option<Self> {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some(Self {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            subresource: s("subresource"),
            time: s("time"),
            fields: v
                .get("fieldsV1")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }

    pub fn to_value(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields,
        });
        if !self.subresource.is_empty() {
            v["subresource"] = json!(self.subresource);
        }
        v
    }
}

pub fn entries_of(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Entry::from_value).collect())
        .unwrap_or_default()
}

pub fn set_entries(obj: &mut Value, entries: &[Entry]) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let list: Vec<Value> = entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(Entry::to_value)
            .collect();
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".to_string(), Value::Array(list));
        }
    }
}

/// What an apply asks for.
#[derive(Debug)]
pub struct ApplyRequest<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: &'a str,
    pub force: bool,
    pub now: &'a str,
}

/// Applies `applied` over `current` (None when creating). Returns the new object with
/// updated managedFields, or the conflicts as (manager, `.path`) pairs.
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    req: &ApplyRequest<'_>,
    status_separate: bool,
) -> Result<Value, Vec<(String, String)>> {
    let skip_status = status_separate && req.subresource.is_empty();
    let mut applied = applied.clone();
    if skip_status && let Some(m) = applied.as_object_mut() {
        m.remove("status");
    }
    if status_separate && req.subresource == "status" {
        // An apply to /status only owns status.
        if let Some(m) = applied.as_object_mut() {
            m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace"));
            }
        }
    }
    let new_fields = field_tree(&applied, skip_status);
    let mut entries = current.map(entries_of).unwrap_or_default();
    let mut result = current.cloned().unwrap_or_else(|| json!({}));

    let mut conflicts = Vec::new();
    for leaf in leaves(&new_fields) {
        let applied_value = value_at(&applied, &leaf);
        let current_value = value_at(&result, &leaf);
        if applied_value == current_value {
            continue;
        }
        for entry in entries.iter_mut() {
            let same = entry.manager == req.manager
                && entry.operation == "Apply"
                && entry.subresource == req.subresource;
            if same || !owns_overlapping(&entry.fields, &leaf) {
                continue;
            }
            if req.force {
                remove_path(&mut entry.fields, &leaf);
            } else {
                conflicts.push((entry.manager.clone(), dotted(&leaf)));
            }
        }
    }
    if !conflicts.is_empty() {
        conflicts.dedup();
        return Err(conflicts);
    }

    let previous = entries.iter().position(|e| {
        e.manager == req.manager && e.operation == "Apply" && e.subresource == req.subresource
    });
    if let Some(pos) = previous {
        for leaf in leaves(&entries[pos].fields) {
            if contains_leaf(&new_fields, &leaf) {
                continue;
            }
            let owned_by_other = entries
                .iter()
                .enumerate()
                .any(|(i, e)| i != pos && contains_leaf(&e.fields, &leaf));
            if !owned_by_other {
                remove_value(&mut result, &leaf);
            }
        }
    }
    merge_applied(&mut result, &applied, &[]);

    let entry = Entry {
        manager: req.manager.to_string(),
        operation: "Apply".to_string(),
        api_version: req.api_version.to_string(),
        subresource: req.subresource.to_string(),
        time: req.now.to_string(),
        fields: new_fields,
    };
    match previous {
        Some(pos) if entries[pos].fields == entry.fields => {}
        Some(pos) => entries[pos] = entry,
        None => entries.push(entry),
    }
    set_entries(&mut result, &entries);
    Ok(result)
}

/// Records an Update by `manager`: it takes ownership of every field it changed.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    now: &str,
    status_separate: bool,
) {
    let skip_status = status_separate && subresource.is_empty();
    let mut entries = old.map(entries_of).unwrap_or_default();
    let new_tree = field_tree(new, skip_status);
    let changed: Vec<FieldPath> = leaves(&new_tree)
        .into_iter()
        .filter(|leaf| {
            if status_separate
                && subresource == "status"
                && leaf.first().map(String::as_str) != Some("f:status")
            {
                return false;
            }
            old.is_none_or(|o| value_at(o, leaf) != value_at(new, leaf))
        })
        .collect();
    // Fields that disappeared are no longer owned by anyone.
    if let Some(o) = old {
        for leaf in leaves(&field_tree(o, skip_status)) {
            if value_at(new, &leaf).is_none() {
                for e in entries.iter_mut() {
                    remove_path(&mut e.fields, &leaf);
                }
            }
        }
    }
    if changed.is_empty() {
        set_entries(new, &entries);
        return;
    }
    for e in entries.iter_mut() {
        if e.manager == manager && e.operation == "Update" && e.subresource == subresource {
            continue;
        }
        for leaf in &changed {
            remove_path(&mut e.fields, leaf);
        }
    }
    let pos = entries.iter().position(|e| {
        e.manager == manager && e.operation == "Update" && e.subresource == subresource
    });
    let idx = match pos {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".to_string(),
                api_version: api_version.to_string(),
                subresource: subresource.to_string(),
                time: now.to_string(),
                fields: Map::new(),
            });
            entries.len() - 1
        }
    };
    entries[idx].time = now.to_string();
    for leaf in &changed {
        insert_path(&mut entries[idx].fields, leaf);
    }
    set_entries(new, &entries);
}

fn insert_path(tree: &mut FieldTree, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let child = tree.entry(first.clone()).or_insert_with(|| json!({}));
    if let Some(m) = child.as_object_mut() {
        insert_path(m, rest);
    }
}

/// `.spec.promoteResources.resources.cpu`, as apply conflicts print paths.
pub fn dotted(path: &[String]) -> String {
    path.iter()
        .map(|seg| match seg.strip_prefix("f:") {
            Some(f) => format!(".{f}"),
            None => match seg.strip_prefix("k:").or_else(|| seg.strip_prefix("v:")) {
                Some(k) => format!("[{k}]"),
                None => seg.clone(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(manager: &'a str, force: bool) -> ApplyRequest<'a> {
        ApplyRequest {
            manager,
            api_version: "v1",
            subresource: "",
            force,
            now: "2026-01-01T00:00:00Z",
        }
    }

    #[test]
    fn repeated_apply_is_a_no_op() {
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v"}});
        let first = apply(None, &applied, &req("ctl", false), false).unwrap();
        let second = apply(Some(&first), &applied, &req("ctl", false), false).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn conflicting_manager_gets_conflict_and_force_takes_ownership() {
        let applied = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        let first = apply(None, &applied, &req("one", false), false).unwrap();
        let other = json!({"metadata": {"name": "a"}, "data": {"k": "w"}});
        let conflicts = apply(Some(&first), &other, &req("two", false), false).unwrap_err();
        assert_eq!(conflicts, vec![("one".to_string(), ".data.k".to_string())]);
        let forced = apply(Some(&first), &other, &req("two", true), false).unwrap();
        assert_eq!(forced["data"]["k"], json!("w"));
        let managers: Vec<String> = entries_of(&forced).into_iter().map(|e| e.manager).collect();
        assert_eq!(managers, vec!["two"]);
    }

    #[test]
    fn fields_a_manager_stops_applying_are_removed() {
        let v1 = json!({"metadata": {"name": "a", "labels": {"keep": "1", "drop": "1"}}, "data": {"k": "v"}});
        let first = apply(None, &v1, &req("ctl", false), false).unwrap();
        let v2 = json!({"metadata": {"name": "a", "labels": {"keep": "1"}}, "data": {"k": "v"}});
        let second = apply(Some(&first), &v2, &req("ctl", false), false).unwrap();
        assert_eq!(second["metadata"]["labels"], json!({"keep": "1"}));
    }

    #[test]
    fn same_value_from_another_manager_is_shared_not_a_conflict() {
        let applied = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        let first = apply(None, &applied, &req("one", false), false).unwrap();
        assert!(apply(Some(&first), &applied, &req("two", false), false).is_ok());
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let applied = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        let first = apply(None, &applied, &req("one", false), false).unwrap();
        let mut updated = first.clone();
        updated["data"]["k"] = json!("w");
        record_update(Some(&first), &mut updated, "kubectl", "v1", "", "t", false);
        let entries = entries_of(&updated);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager, "kubectl");
    }
}
