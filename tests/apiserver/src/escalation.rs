//! RBAC escalation prevention on writes of roles and bindings, as kube-apiserver's
//! `policybased` storages in front of `roles`, `clusterroles`, `rolebindings` and
//! `clusterrolebindings` do it: a writer may grant only rules it holds
//! ([`rbac::confirm_no_escalation`]), unless it may `escalate` the role it writes or
//! `bind` the role its binding references. Members of `system:masters` are exempt.
//!
//! The real storage checks the object it is about to store, after mutating admission and
//! before validation and validating admission, dry run or not; the callers in `state.rs`
//! call [`confirm_no_escalation`] at that same point. Without it a controller could grant
//! more than its own ClusterRole here and only fail on a real cluster.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::api::{decide, rbac_snapshot};
use super::hooks::{AuthzAttributes, AuthzDecision};
use super::registry::ResourceType;
use super::state::{State, WriteCtx};
use super::status::ApiError;
use super::wiring::rbac_objects;
use crate::rbac;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// One create or update of an object, as it would be stored.
pub(super) struct RbacWrite<'a> {
    pub rt: &'a ResourceType,
    /// Empty for cluster-scoped objects.
    pub namespace: &'a str,
    /// The name in the request URL, which is the name `escalate` is asked for: empty for a
    /// POST, since kube-apiserver's request info has no name for a create.
    pub url_name: &'a str,
    pub object: &'a Value,
    /// The stored object of an update.
    pub old: Option<&'a Value>,
}

/// Refuses the write with kube-apiserver's 403 when it grants rights the writer does not
/// hold; a binding to a missing role the writer may not `bind` is that role's 404.
pub(super) fn confirm_no_escalation(
    state: &State,
    ctx: &WriteCtx,
    write: &RbacWrite<'_>,
) -> Result<(), ApiError> {
    if !state.enforce_rbac
        || ctx.internal
        || ctx.user.is_master()
        || write.rt.group != RBAC_GROUP
        || write
            .old
            .is_some_and(|old| only_gc_fields_change(write.object, old))
    {
        return Ok(());
    }
    match write.rt.plural.as_str() {
        "roles" => {
            let role: Role = decode(write)?;
            if may_escalate(state, ctx, write) {
                return Ok(());
            }
            let name = role.metadata.name.unwrap_or_default();
            confirm_held(state, ctx, write, &name, &role.rules.unwrap_or_default())
        }
        "clusterroles" => {
            let role: ClusterRole = decode(write)?;
            if may_escalate(state, ctx, write) {
                return Ok(());
            }
            let name = role.metadata.name.clone().unwrap_or_default();
            confirm_held(
                state,
                ctx,
                write,
                &name,
                role.rules.as_deref().unwrap_or_default(),
            )?;
            // An aggregated role gathers whatever its selectors pick, now or later.
            let aggregates = |object: &Value| {
                object
                    .pointer("/aggregationRule/clusterRoleSelectors")
                    .and_then(Value::as_array)
                    .is_some_and(|selectors| !selectors.is_empty())
            };
            if aggregates(write.object) || write.old.is_some_and(aggregates) {
                confirm_held(state, ctx, write, &name, &rbac::full_authority()).map_err(|_| {
                    ApiError::forbidden(
                        write.rt,
                        Some(&name),
                        "must have cluster-admin privileges to use the aggregationRule",
                    )
                })?;
            }
            Ok(())
        }
        "rolebindings" => {
            let binding: RoleBinding = decode(write)?;
            let name = binding.metadata.name.unwrap_or_default();
            confirm_binding(state, ctx, write, &name, &binding.role_ref)
        }
        "clusterrolebindings" => {
            let binding: ClusterRoleBinding = decode(write)?;
            let name = binding.metadata.name.unwrap_or_default();
            confirm_binding(state, ctx, write, &name, &binding.role_ref)
        }
        _ => Ok(()),
    }
}

fn decode<T: DeserializeOwned>(write: &RbacWrite<'_>) -> Result<T, ApiError> {
    serde_json::from_value(write.object.clone()).map_err(|error| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): {error}",
            write.rt.kind
        ))
    })
}

/// Asks the server's authorizer, as kube-apiserver asks its own for `escalate`/`bind`.
fn may(
    state: &State,
    ctx: &WriteCtx,
    verb: &str,
    api_group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let attrs = AuthzAttributes {
        user: ctx.user.username.clone(),
        groups: ctx.user.groups.clone(),
        verb: verb.to_owned(),
        api_group: api_group.to_owned(),
        resource: resource.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        ..AuthzAttributes::default()
    };
    decide(state, &attrs, &ctx.user) == AuthzDecision::Allow
}

fn may_escalate(state: &State, ctx: &WriteCtx, write: &RbacWrite<'_>) -> bool {
    may(
        state,
        ctx,
        "escalate",
        &write.rt.group,
        &write.rt.plural,
        write.namespace,
        write.url_name,
    )
}

fn confirm_held(
    state: &State,
    ctx: &WriteCtx,
    write: &RbacWrite<'_>,
    name: &str,
    rules: &[PolicyRule],
) -> Result<(), ApiError> {
    let objects = rbac_objects(&rbac_snapshot(state));
    let namespace = Some(write.namespace).filter(|ns| !ns.is_empty());
    rbac::confirm_no_escalation(
        &objects,
        &ctx.user.username,
        &ctx.user.groups,
        namespace,
        rules,
    )
    .map_err(|refused| ApiError::forbidden(write.rt, Some(name), &refused.to_string()))
}

/// A binding passes when its writer may `bind` the referenced role (in the binding's
/// namespace) or holds every rule of it.
fn confirm_binding(
    state: &State,
    ctx: &WriteCtx,
    write: &RbacWrite<'_>,
    name: &str,
    role_ref: &RoleRef,
) -> Result<(), ApiError> {
    let role_resource = match role_ref.kind.as_str() {
        "ClusterRole" => Some("clusterroles"),
        "Role" => Some("roles"),
        _ => None,
    };
    if let Some(resource) = role_resource
        && may(
            state,
            ctx,
            "bind",
            &role_ref.api_group,
            resource,
            write.namespace,
            &role_ref.name,
        )
    {
        return Ok(());
    }
    let objects = rbac_objects(&rbac_snapshot(state));
    let namespace = Some(write.namespace).filter(|ns| !ns.is_empty());
    let rules = rbac::role_reference_rules(&objects, role_ref, namespace)
        .map_err(|error| unresolvable(state, &error))?;
    confirm_held(state, ctx, write, name, &rules)
}

/// kube-apiserver returns the role getter's error as is: the NotFound of the referenced
/// role, or for an unknown kind a plain error, which becomes a 500 without reason.
fn unresolvable(state: &State, error: &rbac::RoleRefError) -> ApiError {
    let missing = match error {
        rbac::RoleRefError::RoleNotFound { name } => Some(("roles", name)),
        rbac::RoleRefError::ClusterRoleNotFound { name } => Some(("clusterroles", name)),
        rbac::RoleRefError::UnsupportedKind { .. } => None,
    };
    let looked_up = missing.and_then(|(plural, name)| {
        Some((state.registry().lookup(RBAC_GROUP, "v1", plural)?, name))
    });
    match looked_up {
        Some((rt, name)) => ApiError::not_found(&rt, name),
        None => ApiError::with_code(500, None, error.to_string()),
    }
}

/// kube-apiserver's `IsOnlyMutatingGCFields`: an update changing nothing but
/// ownerReferences and finalizers (what the garbage collector writes) is not checked; the
/// managedFields such a write records do not count (kubernetes/kubernetes#90534).
fn only_gc_fields_change(new: &Value, old: &Value) -> bool {
    let mut copied = new.clone();
    if let Some(meta) = copied.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["ownerReferences", "finalizers", "selfLink", "managedFields"] {
            match old.get("metadata").and_then(|m| m.get(field)) {
                Some(value) => {
                    meta.insert(field.to_owned(), value.clone());
                }
                None => {
                    meta.remove(field);
                }
            }
        }
    }
    semantically_equal(&copied, old)
}

/// JSON equality where an absent field, `null`, `[]` and `{}` are the same, as Go's
/// semantic equality treats nil and empty slices and maps.
fn semantically_equal(a: &Value, b: &Value) -> bool {
    let empty = |value: Option<&Value>| match value {
        None | Some(Value::Null) => true,
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Object(fields)) => fields.is_empty(),
        Some(_) => false,
    };
    match (a, b) {
        (Value::Object(left), Value::Object(right)) => {
            left.keys()
                .chain(right.keys())
                .all(|key| match (left.get(key), right.get(key)) {
                    (l, r) if empty(l) && empty(r) => true,
                    (Some(l), Some(r)) => semantically_equal(l, r),
                    _ => false,
                })
        }
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .zip(right)
                    .all(|(l, r)| semantically_equal(l, r))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_owner_references_and_finalizers_changing_skips_the_check() {
        let old = json!({"metadata": {"name": "r", "resourceVersion": "5"}, "rules": []});
        let gc = json!({"metadata": {"name": "r", "resourceVersion": "5",
            "ownerReferences": [{"uid": "u"}], "finalizers": ["f"],
            "managedFields": [{"manager": "gc"}]}});
        assert!(only_gc_fields_change(&gc, &old));
        let same =
            json!({"metadata": {"name": "r", "resourceVersion": "5", "labels": {}}, "rules": null});
        assert!(only_gc_fields_change(&same, &old));
        let rules = json!({"metadata": {"name": "r", "resourceVersion": "5"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
        assert!(!only_gc_fields_change(&rules, &old));
        let labelled =
            json!({"metadata": {"name": "r", "resourceVersion": "5", "labels": {"a": "b"}}});
        assert!(!only_gc_fields_change(&labelled, &old));
    }
}
