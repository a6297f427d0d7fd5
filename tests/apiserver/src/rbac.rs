//! Kubernetes RBAC authorization, as kube-apiserver's RBAC authorizer decides it.
//!
//! Pure functions over the stored Roles, ClusterRoles and bindings, so the test API server
//! can refuse exactly what a real cluster would refuse, and every rule is unit-tested
//! without a server. The API server core calls, per request:
//!
//! 1. [`RequestInfo::parse`] with the HTTP method, path and query string (the same
//!    parsing kube-apiserver's `RequestInfoFactory` does: verb, group, namespace,
//!    resource, subresource, name — including the name taken from a
//!    `fieldSelector=metadata.name=X` on list/watch);
//! 2. [`RequestInfo::attributes`] with the authenticated user and groups;
//! 3. [`authorize`] with the RBAC objects currently stored;
//! 4. on [`Decision::Deny`], [`forbidden_message`] for the 403 Status `message`.
//!
//! Members of `system:masters` are always allowed (kube-apiserver's privileged-group
//! authorizer runs before RBAC). ClusterRoles with an `aggregationRule` are resolved here
//! the way the clusterrole-aggregation controller would fill them.
//!
//! Writes of roles and bindings are also checked for escalation: [`confirm_no_escalation`]
//! refuses rules the writer does not hold ([`uncovered_rules`]), as kube-apiserver's RBAC
//! storage does, so a controller granting more than its own ClusterRole fails here too.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The group whose members bypass authorization, as in kube-apiserver.
pub const PRIVILEGED_GROUP: &str = "system:masters";

/// The RBAC objects stored in the server, the input of every decision.
#[derive(Clone, Debug, Default)]
pub struct RbacObjects {
    pub roles: Vec<Role>,
    pub cluster_roles: Vec<ClusterRole>,
    pub role_bindings: Vec<RoleBinding>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

/// What is being asked, by whom: kube-apiserver's `authorizer.Attributes`.
#[derive(Clone, Copy, Debug)]
pub struct RequestAttributes<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`
    /// for resource requests; the lower-cased HTTP method for non-resource requests.
    pub verb: &'a str,
    /// `""` for the core group.
    pub api_group: &'a str,
    /// Plural resource name; empty for non-resource requests.
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    /// Set for non-resource requests (`/healthz`, `/version`, `/apis`...), `None` otherwise.
    pub non_resource_path: Option<&'a str>,
}

/// The authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// `reason` is empty when simply no rule matched; it names unresolvable role
    /// references (`RBAC: clusterrole.rbac.authorization.k8s.io "x" not found`) otherwise,
    /// exactly as kube-apiserver appends it to the Forbidden message.
    Deny {
        reason: String,
    },
}

/// Decides `attrs` against the stored RBAC objects.
pub fn authorize(objects: &RbacObjects, attrs: &RequestAttributes<'_>) -> Decision {
    if attrs.groups.iter().any(|group| group == PRIVILEGED_GROUP) {
        return Decision::Allow;
    }
    let mut errors: Vec<String> = Vec::new();
    for binding in &objects.cluster_role_bindings {
        if !subjects_apply(attrs.user, attrs.groups, binding.subjects.as_deref(), None) {
            continue;
        }
        match role_ref_rules(objects, &binding.role_ref, None) {
            Ok(rules) if rules.iter().any(|rule| rule_allows(attrs, rule)) => {
                return Decision::Allow;
            }
            Ok(_) => {}
            Err(error) => push_unique(&mut errors, error),
        }
    }
    if let Some(namespace) = attrs.namespace.filter(|ns| !ns.is_empty()) {
        for binding in &objects.role_bindings {
            if binding.metadata.namespace.as_deref() != Some(namespace)
                || !subjects_apply(
                    attrs.user,
                    attrs.groups,
                    binding.subjects.as_deref(),
                    Some(namespace),
                )
            {
                continue;
            }
            match role_ref_rules(objects, &binding.role_ref, Some(namespace)) {
                Ok(rules) if rules.iter().any(|rule| rule_allows(attrs, rule)) => {
                    return Decision::Allow;
                }
                Ok(_) => {}
                Err(error) => push_unique(&mut errors, error),
            }
        }
    }
    Decision::Deny {
        reason: aggregate_reason(&errors),
    }
}

/// The text after `is forbidden: ` in kube-apiserver's 403 Status, reason included.
///
/// Built like `forbiddenMessage` + `responsewriters.Forbidden` in kube-apiserver, e.g.
/// `virtualclusters.kosmos.io "vc2" is forbidden: User "nobody" cannot get resource
/// "virtualclusters" in API group "kosmos.io" in the namespace "default"`.
pub fn forbidden_message(attrs: &RequestAttributes<'_>, reason: &str) -> String {
    let mut detail = match attrs.non_resource_path {
        Some(path) => format!(
            "User {:?} cannot {} path {:?}",
            attrs.user, attrs.verb, path
        ),
        None => {
            let resource = match attrs.subresource.filter(|s| !s.is_empty()) {
                Some(sub) => format!("{}/{sub}", attrs.resource),
                None => attrs.resource.to_owned(),
            };
            let scope = match attrs.namespace.filter(|ns| !ns.is_empty()) {
                Some(ns) => format!("in the namespace {ns:?}"),
                None => "at the cluster scope".to_owned(),
            };
            format!(
                "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
                attrs.user, attrs.verb, attrs.api_group
            )
        }
    };
    if !reason.is_empty() {
        detail = format!("{detail}: {reason}");
    }
    if attrs.non_resource_path.is_some() || attrs.resource.is_empty() {
        return format!("forbidden: {detail}");
    }
    let qualified = if attrs.api_group.is_empty() {
        attrs.resource.to_owned()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    match attrs.name.filter(|n| !n.is_empty()) {
        Some(name) => format!("{qualified} {name:?} is forbidden: {detail}"),
        None => format!("{qualified} is forbidden: {detail}"),
    }
}

fn push_unique(errors: &mut Vec<String>, error: String) {
    if !errors.contains(&error) {
        errors.push(error);
    }
}

/// `RBAC: <aggregate>` like Go's `utilerrors.NewAggregate`, or empty without errors.
fn aggregate_reason(errors: &[String]) -> String {
    match errors {
        [] => String::new(),
        [one] => format!("RBAC: {one}"),
        many => format!("RBAC: [{}]", many.join(", ")),
    }
}

fn subjects_apply(
    user: &str,
    groups: &[String],
    subjects: Option<&[Subject]>,
    binding_namespace: Option<&str>,
) -> bool {
    subjects
        .unwrap_or_default()
        .iter()
        .any(|subject| subject_applies(user, groups, subject, binding_namespace))
}

fn subject_applies(
    user: &str,
    groups: &[String],
    subject: &Subject,
    binding_namespace: Option<&str>,
) -> bool {
    match subject.kind.as_str() {
        "User" => user == subject.name,
        "Group" => groups.contains(&subject.name),
        "ServiceAccount" => {
            // An unqualified ServiceAccount subject means one in the binding's namespace.
            let namespace = subject
                .namespace
                .as_deref()
                .filter(|ns| !ns.is_empty())
                .or(binding_namespace);
            namespace.is_some_and(|ns| user == service_account_username(ns, &subject.name))
        }
        _ => false,
    }
}

/// The username a ServiceAccount token authenticates as.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The rules a binding grants, or the error the RBAC authorizer reports for a dangling
/// roleRef (its informer listers word a missing object with the singular resource).
fn role_ref_rules<'o>(
    objects: &'o RbacObjects,
    role_ref: &RoleRef,
    binding_namespace: Option<&str>,
) -> Result<Vec<&'o PolicyRule>, String> {
    resolve_role_ref(objects, role_ref, binding_namespace).map_err(|error| match error {
        RoleRefError::RoleNotFound { name } => {
            format!("role.rbac.authorization.k8s.io {name:?} not found")
        }
        RoleRefError::ClusterRoleNotFound { name } => {
            format!("clusterrole.rbac.authorization.k8s.io {name:?} not found")
        }
        unsupported @ RoleRefError::UnsupportedKind { .. } => unsupported.to_string(),
    })
}

/// Why a roleRef yields no rules, worded as kube-apiserver's RBAC storage words it: the
/// escalation checks read roles through the registry, whose NotFound names the plural
/// resource (`clusterroles.rbac.authorization.k8s.io "x" not found`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleRefError {
    #[error("roles.rbac.authorization.k8s.io {} not found", go_quote(.name))]
    RoleNotFound { name: String },
    #[error("clusterroles.rbac.authorization.k8s.io {} not found", go_quote(.name))]
    ClusterRoleNotFound { name: String },
    #[error("unsupported role reference kind: {}", go_quote(.kind))]
    UnsupportedKind { kind: String },
}

fn resolve_role_ref<'o>(
    objects: &'o RbacObjects,
    role_ref: &RoleRef,
    binding_namespace: Option<&str>,
) -> Result<Vec<&'o PolicyRule>, RoleRefError> {
    match role_ref.kind.as_str() {
        "ClusterRole" => objects
            .cluster_roles
            .iter()
            .find(|role| role.metadata.name.as_deref() == Some(role_ref.name.as_str()))
            .map(|role| cluster_role_rules(objects, role))
            .ok_or_else(|| RoleRefError::ClusterRoleNotFound {
                name: role_ref.name.clone(),
            }),
        // A Role outside any namespace (a ClusterRoleBinding's) is never found.
        "Role" => objects
            .roles
            .iter()
            .find(|role| {
                role.metadata.name.as_deref() == Some(role_ref.name.as_str())
                    && binding_namespace.is_some()
                    && role.metadata.namespace.as_deref() == binding_namespace
            })
            .map(|role| role.rules.iter().flatten().collect())
            .ok_or_else(|| RoleRefError::RoleNotFound {
                name: role_ref.name.clone(),
            }),
        kind => Err(RoleRefError::UnsupportedKind {
            kind: kind.to_owned(),
        }),
    }
}

/// A ClusterRole's effective rules: its own, or for an aggregated role the rules of every
/// ClusterRole its selectors pick (what the aggregation controller would have written).
fn cluster_role_rules<'o>(objects: &'o RbacObjects, role: &'o ClusterRole) -> Vec<&'o PolicyRule> {
    let selectors = role
        .aggregation_rule
        .as_ref()
        .and_then(|rule| rule.cluster_role_selectors.as_deref())
        .unwrap_or_default();
    if selectors.is_empty() {
        return role.rules.iter().flatten().collect();
    }
    let mut rules: Vec<&PolicyRule> = role.rules.iter().flatten().collect();
    for other in &objects.cluster_roles {
        if other.metadata.name == role.metadata.name {
            continue;
        }
        let labels = other.metadata.labels.clone().unwrap_or_default();
        if selectors
            .iter()
            .any(|selector| label_selector_matches(selector, &labels).unwrap_or(false))
        {
            rules.extend(other.rules.iter().flatten());
        }
    }
    rules
}

/// kube-apiserver's `RuleAllows`.
pub fn rule_allows(attrs: &RequestAttributes<'_>, rule: &PolicyRule) -> bool {
    if !verb_matches(rule, attrs.verb) {
        return false;
    }
    if let Some(path) = attrs.non_resource_path {
        return non_resource_url_matches(rule, path);
    }
    let subresource = attrs.subresource.unwrap_or_default();
    let combined = if subresource.is_empty() {
        attrs.resource.to_owned()
    } else {
        format!("{}/{subresource}", attrs.resource)
    };
    api_group_matches(rule, attrs.api_group)
        && resource_matches(rule, &combined, subresource)
        && resource_name_matches(rule, attrs.name.unwrap_or_default())
}

fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == "*" || v == verb)
}

fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    rule.api_groups
        .iter()
        .flatten()
        .any(|g| g == "*" || g == group)
}

fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    rule.resources.iter().flatten().any(|resource| {
        resource == "*"
            || resource == combined
            || (!subresource.is_empty()
                && resource
                    .strip_prefix("*/")
                    .is_some_and(|sub| sub == subresource))
    })
}

/// An empty `resourceNames` allows every name; otherwise the request must name one of
/// them, so list/watch/create/deletecollection without a name never match.
fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => names.iter().any(|n| n == name),
    }
}

fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().flatten().any(|url| {
        url == "*"
            || url == path
            || url
                .strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
    })
}

// --- escalation prevention ------------------------------------------------------------
//
// kube-apiserver lets nobody create or update a Role or ClusterRole granting more than
// they hold, nor bind a role whose rules they do not hold (`escalate`/`bind` aside, which
// the API server decides with the authorizer). "Hold" is judged by coverage, not by asking
// the authorizer: every requested rule is broken into single group × resource × verb ×
// name tuples (and URL × verb), and each tuple must be covered by one held rule.

/// The rules of cluster-admin, which setting a ClusterRole's `aggregationRule` requires
/// (an aggregated role can gather anything).
pub fn full_authority() -> Vec<PolicyRule> {
    let all = || Some(vec!["*".to_owned()]);
    vec![
        PolicyRule {
            api_groups: all(),
            resources: all(),
            verbs: vec!["*".to_owned()],
            ..PolicyRule::default()
        },
        PolicyRule {
            non_resource_urls: all(),
            verbs: vec!["*".to_owned()],
            ..PolicyRule::default()
        },
    ]
}

/// One rule per group × resource × verb × resourceName, and per nonResourceURL × verb
/// (the order kube-apiserver's `BreakdownRule` produces them in).
pub fn breakdown_rule(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |value: &str| Some(vec![value.to_owned()]);
    let names: Vec<Option<&String>> = match rule.resource_names.as_deref() {
        Some(names) if !names.is_empty() => names.iter().map(Some).collect(),
        _ => vec![None],
    };
    let mut tuples = Vec::new();
    for group in rule.api_groups.iter().flatten() {
        for resource in rule.resources.iter().flatten() {
            for verb in &rule.verbs {
                for name in &names {
                    tuples.push(PolicyRule {
                        api_groups: one(group),
                        resources: one(resource),
                        verbs: vec![verb.clone()],
                        resource_names: name.map(|name| vec![name.clone()]),
                        non_resource_urls: None,
                    });
                }
            }
        }
    }
    for url in rule.non_resource_urls.iter().flatten() {
        for verb in &rule.verbs {
            tuples.push(PolicyRule {
                non_resource_urls: one(url),
                verbs: vec![verb.clone()],
                ..PolicyRule::default()
            });
        }
    }
    tuples
}

/// The broken-down tuples of `requested` that no rule of `held` covers, in order.
pub fn uncovered_rules(held: &[PolicyRule], requested: &[PolicyRule]) -> Vec<PolicyRule> {
    requested
        .iter()
        .flat_map(breakdown_rule)
        .filter(|tuple| !held.iter().any(|owner| rule_covers(owner, tuple)))
        .collect()
}

fn listed(values: Option<&[String]>, wanted: &str) -> bool {
    values
        .unwrap_or_default()
        .iter()
        .any(|value| value == wanted)
}

/// Whether `owner` covers `tuple`, one rule of [`breakdown_rule`]: every list of the
/// tuple must be matched, an empty one matching trivially, as kube-apiserver's
/// `ruleCovers` decides it.
fn rule_covers(owner: &PolicyRule, tuple: &PolicyRule) -> bool {
    let all_listed = |owned: Option<&[String]>, wanted: Option<&[String]>| {
        wanted
            .unwrap_or_default()
            .iter()
            .all(|value| listed(owned, value))
    };
    let verbs =
        listed(Some(&owner.verbs), "*") || all_listed(Some(&owner.verbs), Some(&tuple.verbs));
    let groups = listed(owner.api_groups.as_deref(), "*")
        || all_listed(owner.api_groups.as_deref(), tuple.api_groups.as_deref());
    let resources = resources_cover(
        owner.resources.as_deref().unwrap_or_default(),
        tuple.resources.as_deref().unwrap_or_default(),
    );
    let urls = tuple.non_resource_urls.iter().flatten().all(|path| {
        owner
            .non_resource_urls
            .iter()
            .flatten()
            .any(|owned| non_resource_url_covers(owned, path))
    });
    let owner_names = owner.resource_names.as_deref().unwrap_or_default();
    let names = match tuple.resource_names.as_deref().unwrap_or_default() {
        // A request for every name needs an owner restricted to none.
        [] => owner_names.is_empty(),
        wanted => owner_names.is_empty() || wanted.iter().all(|name| owner_names.contains(name)),
    };
    verbs && groups && resources && urls && names
}

/// `*`, the exact resource, or `*/SUB` for a `RES/SUB` subresource.
fn resources_cover(owned: &[String], wanted: &[String]) -> bool {
    if owned.iter().any(|resource| resource == "*") {
        return true;
    }
    wanted.iter().all(|resource| {
        owned.contains(resource)
            || resource.split_once('/').is_some_and(|(_, sub)| {
                owned
                    .iter()
                    .any(|held| held.strip_prefix("*/") == Some(sub))
            })
    })
}

/// Equal, or a `prefix*` owner whose prefix (without its trailing stars) starts the path.
fn non_resource_url_covers(owned: &str, path: &str) -> bool {
    owned == path || (owned.ends_with('*') && path.starts_with(owned.trim_end_matches('*')))
}

/// Merges tuples that differ only by verb (same single group, resource and at most one
/// name) into one rule listing the verbs in order, as kube-apiserver's `CompactRules`
/// does before it prints the missing rights.
pub fn compact_rules(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut compacted = Vec::new();
    let mut simple: Vec<PolicyRule> = Vec::new();
    for rule in rules {
        let key = simple_resource(&rule);
        match key {
            Some(key) => match simple
                .iter_mut()
                .find(|seen| simple_resource(seen) == Some(key))
            {
                Some(seen) => seen.verbs.extend(rule.verbs),
                None => simple.push(rule),
            },
            None => compacted.push(rule),
        }
    }
    compacted.extend(simple);
    compacted
}

/// (group, resource, name) of a rule with one group, one resource, at most one name and
/// no URL; `None` for any other rule.
fn simple_resource(rule: &PolicyRule) -> Option<(&str, &str, Option<&str>)> {
    let names = rule.resource_names.as_deref().unwrap_or_default();
    if names.len() > 1
        || !rule
            .non_resource_urls
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    {
        return None;
    }
    match (rule.api_groups.as_deref(), rule.resources.as_deref()) {
        (Some([group]), Some([resource])) => Some((
            group.as_str(),
            resource.as_str(),
            names.first().map(String::as_str),
        )),
        _ => None,
    }
}

/// A rule as kube-apiserver prints it in escalation errors (Go's `CompactString`):
/// `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`, empty lists left out.
pub fn compact_string(rule: &PolicyRule) -> String {
    let fields = [
        ("APIGroups", rule.api_groups.as_deref().unwrap_or_default()),
        ("Resources", rule.resources.as_deref().unwrap_or_default()),
        (
            "NonResourceURLs",
            rule.non_resource_urls.as_deref().unwrap_or_default(),
        ),
        (
            "ResourceNames",
            rule.resource_names.as_deref().unwrap_or_default(),
        ),
        ("Verbs", rule.verbs.as_slice()),
    ];
    let parts: Vec<String> = fields
        .iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(label, values)| format!("{label}:{}", go_quote_list(values)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// The rules a binding's roleRef grants (a ClusterRole's, or a Role of the binding's
/// namespace), for judging whether its creator holds them.
pub fn role_reference_rules(
    objects: &RbacObjects,
    role_ref: &RoleRef,
    binding_namespace: Option<&str>,
) -> Result<Vec<PolicyRule>, RoleRefError> {
    resolve_role_ref(objects, role_ref, binding_namespace)
        .map(|rules| rules.into_iter().cloned().collect())
}

/// Every rule `user` holds in `namespace` (ClusterRoleBindings, plus the RoleBindings of
/// the namespace when there is one), and the roleRefs that could not be resolved.
pub fn rules_for(
    objects: &RbacObjects,
    user: &str,
    groups: &[String],
    namespace: Option<&str>,
) -> (Vec<PolicyRule>, Vec<RoleRefError>) {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    let mut collect = |resolved: Result<Vec<&PolicyRule>, RoleRefError>| match resolved {
        Ok(found) => rules.extend(found.into_iter().cloned()),
        Err(error) => errors.push(error),
    };
    for binding in &objects.cluster_role_bindings {
        if subjects_apply(user, groups, binding.subjects.as_deref(), None) {
            collect(resolve_role_ref(objects, &binding.role_ref, None));
        }
    }
    if let Some(namespace) = namespace.filter(|ns| !ns.is_empty()) {
        for binding in &objects.role_bindings {
            if binding.metadata.namespace.as_deref() == Some(namespace)
                && subjects_apply(user, groups, binding.subjects.as_deref(), Some(namespace))
            {
                collect(resolve_role_ref(
                    objects,
                    &binding.role_ref,
                    Some(namespace),
                ));
            }
        }
    }
    (rules, errors)
}

/// Why a write would grant rights its author does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscalationError {
    /// The text after `is forbidden: ` in kube-apiserver's 403: one line per missing
    /// rule, sorted, and the unresolvable roleRefs of the author's own bindings.
    #[error(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}{}",
        go_quote(.user),
        go_quote_list(.groups),
        .missing.join("\n"),
        resolution_errors_suffix(.resolution_errors)
    )]
    NotHeld {
        user: String,
        groups: Vec<String>,
        /// [`compact_string`] of each missing (compacted) rule, sorted and unique.
        missing: Vec<String>,
        resolution_errors: Vec<RoleRefError>,
    },
}

/// `; resolution errors: [<aggregate>]`: Go prints a one-element slice holding the
/// aggregate of the resolver's errors (one message alone, several deduplicated in `[]`).
fn resolution_errors_suffix(errors: &[RoleRefError]) -> String {
    let mut messages: Vec<String> = Vec::new();
    for error in errors {
        push_unique(&mut messages, error.to_string());
    }
    match messages.as_slice() {
        [] => String::new(),
        [one] => format!("; resolution errors: [{one}]"),
        many => format!("; resolution errors: [[{}]]", many.join(", ")),
    }
}

/// kube-apiserver's `ConfirmNoEscalation`: whether `user` holds, in `namespace` (`None`
/// for cluster-wide objects), every rule of `requested`.
pub fn confirm_no_escalation(
    objects: &RbacObjects,
    user: &str,
    groups: &[String],
    namespace: Option<&str>,
    requested: &[PolicyRule],
) -> Result<(), EscalationError> {
    let (held, resolution_errors) = rules_for(objects, user, groups, namespace);
    let missing = uncovered_rules(&held, requested);
    if missing.is_empty() {
        return Ok(());
    }
    let described: std::collections::BTreeSet<String> =
        compact_rules(missing).iter().map(compact_string).collect();
    Err(EscalationError::NotHeld {
        user: user.to_owned(),
        groups: groups.to_vec(),
        missing: described.into_iter().collect(),
        resolution_errors,
    })
}

/// A string as Go's `%q` prints it (`strconv.Quote`).
pub fn go_quote(value: &str) -> String {
    use std::fmt::Write as _;
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(quoted, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04x}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A string slice as Go's `%q` prints it: `["a" "b"]`.
pub fn go_quote_list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|value| go_quote(value)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Why a label selector cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error(
        "label selector operator {operator:?} on key {key:?} is not one of In, NotIn, Exists, DoesNotExist"
    )]
    UnknownOperator { key: String, operator: String },
    #[error(
        "label selector requirement on key {key:?} with operator {operator} needs at least one value"
    )]
    MissingValues { key: String, operator: String },
    #[error(
        "label selector requirement on key {key:?} with operator {operator} must have no values"
    )]
    UnexpectedValues { key: String, operator: String },
}

/// Whether `labels` satisfy a structured `LabelSelector` (empty selector: everything).
///
/// Shared by RBAC aggregation, admission webhook selectors and the simulators.
pub fn label_selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let mut expressions_match = true;
    for requirement in selector.match_expressions.iter().flatten() {
        let key = &requirement.key;
        let values = requirement.values.as_deref().unwrap_or_default();
        let present = labels.get(key);
        let operator = requirement.operator.as_str();
        let matched = match operator {
            "In" | "NotIn" => {
                if values.is_empty() {
                    return Err(SelectorError::MissingValues {
                        key: key.clone(),
                        operator: operator.to_owned(),
                    });
                }
                let contained = present.is_some_and(|value| values.contains(value));
                if operator == "In" {
                    contained
                } else {
                    !contained
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    return Err(SelectorError::UnexpectedValues {
                        key: key.clone(),
                        operator: operator.to_owned(),
                    });
                }
                present.is_some() == (operator == "Exists")
            }
            other => {
                return Err(SelectorError::UnknownOperator {
                    key: key.clone(),
                    operator: other.to_owned(),
                });
            }
        };
        expressions_match &= matched;
    }
    Ok(labels_match && expressions_match)
}

/// What kube-apiserver's `RequestInfoFactory` derives from a request line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub is_resource_request: bool,
    /// The URL path, used for non-resource authorization.
    pub path: String,
    pub verb: String,
    /// `api` or `apis`.
    pub api_prefix: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

impl RequestInfo {
    /// Parses a request the way kube-apiserver does before authorization.
    ///
    /// `method` is the HTTP method (`GET`, `POST`...), `path` the URL path without query,
    /// `query` the raw query string (without `?`). Verbs: `get`, `list`, `watch`,
    /// `create`, `update`, `patch`, `delete`, `deletecollection` (plus `proxy` for the
    /// `/proxy/` form); non-resource requests get the lower-cased method.
    pub fn parse(method: &str, path: &str, query: Option<&str>) -> Self {
        let mut info = RequestInfo {
            path: path.to_owned(),
            verb: method.to_ascii_lowercase(),
            ..RequestInfo::default()
        };
        let mut parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
            return info;
        }
        info.api_prefix = parts[0].to_owned();
        parts.remove(0);
        if info.api_prefix == "apis" {
            if parts.len() < 3 {
                return info;
            }
            info.api_group = parts.remove(0).to_owned();
        }
        info.is_resource_request = true;
        info.api_version = parts.remove(0).to_owned();
        if matches!(parts.first(), Some(&("watch" | "proxy"))) && parts.len() >= 2 {
            info.verb = parts.remove(0).to_owned();
        } else {
            info.verb = verb_for_method(method).to_owned();
        }
        if parts.first() == Some(&"namespaces")
            && let Some(namespace) = parts.get(1)
        {
            info.namespace = (*namespace).to_owned();
            if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
                parts.drain(..2);
            }
        }
        if let Some(resource) = parts.first() {
            info.resource = (*resource).to_owned();
        }
        if let Some(name) = parts.get(1) {
            info.name = (*name).to_owned();
        }
        if info.verb != "proxy"
            && let Some(sub) = parts.get(2)
        {
            info.subresource = (*sub).to_owned();
        }
        if info.name.is_empty() && info.verb == "get" {
            let query = query.unwrap_or_default();
            info.verb = if query_flag(query, "watch") {
                "watch"
            } else {
                "list"
            }
            .to_owned();
            if let Some(name) = field_selector_name(query) {
                info.name = name;
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".to_owned();
        }
        info
    }

    /// The authorizer's view of this request for `user` in `groups`.
    pub fn attributes<'a>(&'a self, user: &'a str, groups: &'a [String]) -> RequestAttributes<'a> {
        let non_empty = |s: &'a String| Some(s.as_str()).filter(|s| !s.is_empty());
        RequestAttributes {
            user,
            groups,
            verb: &self.verb,
            api_group: &self.api_group,
            resource: &self.resource,
            subresource: non_empty(&self.subresource),
            namespace: non_empty(&self.namespace),
            name: non_empty(&self.name),
            non_resource_path: (!self.is_resource_request).then_some(self.path.as_str()),
        }
    }
}

/// The verb of a resource request before list/watch/deletecollection are told apart.
fn verb_for_method(method: &str) -> &'static str {
    match method.to_ascii_uppercase().as_str() {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
}

/// Query parameters, percent-decoded (`+` is a space, as Go's `url.ParseQuery` reads it).
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key), percent_decode(value))
    })
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex_value(*high).zip(hex_value(*low)),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some((high, low))) => {
                out.push(high << 4 | low);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (other, None) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Go's `strconv.ParseBool` truth values, as the watch parameter is decoded.
fn query_flag(query: &str, key: &str) -> bool {
    query_pairs(query)
        .any(|(k, v)| k == key && matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// The name a list/watch is restricted to by `fieldSelector=metadata.name=X`, which RBAC
/// then checks against `resourceNames`.
fn field_selector_name(query: &str) -> Option<String> {
    let selector = query_pairs(query).find(|(k, _)| k == "fieldSelector")?.1;
    selector.split(',').find_map(|term| {
        let term = term.trim();
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="))?;
        let valid = !value.is_empty()
            && value != "."
            && value != ".."
            && !value.contains('/')
            && !value.contains('%');
        valid.then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::AggregationRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};

    fn strings(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| (*s).to_owned()).collect())
    }

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        PolicyRule {
            api_groups: strings(groups),
            resources: strings(resources),
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            ..PolicyRule::default()
        }
    }

    fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            ..ObjectMeta::default()
        }
    }

    fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
        ClusterRole {
            metadata: meta(name, None),
            rules: Some(rules),
            ..ClusterRole::default()
        }
    }

    fn role(namespace: &str, name: &str, rules: Vec<PolicyRule>) -> Role {
        Role {
            metadata: meta(name, Some(namespace)),
            rules: Some(rules),
        }
    }

    fn subject(kind: &str, name: &str, namespace: Option<&str>) -> Subject {
        Subject {
            kind: kind.to_owned(),
            name: name.to_owned(),
            namespace: namespace.map(str::to_owned),
            api_group: None,
        }
    }

    fn role_ref(kind: &str, name: &str) -> RoleRef {
        RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
        }
    }

    fn cluster_binding(role: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
        ClusterRoleBinding {
            metadata: meta(&format!("{role}-binding"), None),
            role_ref: role_ref("ClusterRole", role),
            subjects: Some(subjects),
        }
    }

    fn binding(namespace: &str, kind: &str, role: &str, subjects: Vec<Subject>) -> RoleBinding {
        RoleBinding {
            metadata: meta(&format!("{role}-binding"), Some(namespace)),
            role_ref: role_ref(kind, role),
            subjects: Some(subjects),
        }
    }

    struct Ask<'a> {
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        subresource: Option<&'a str>,
        namespace: Option<&'a str>,
        name: Option<&'a str>,
    }

    fn ask<'a>(verb: &'a str, resource: &'a str) -> Ask<'a> {
        Ask {
            verb,
            group: "",
            resource,
            subresource: None,
            namespace: None,
            name: None,
        }
    }

    impl<'a> Ask<'a> {
        fn group(mut self, group: &'a str) -> Self {
            self.group = group;
            self
        }
        fn ns(mut self, namespace: &'a str) -> Self {
            self.namespace = Some(namespace);
            self
        }
        fn name(mut self, name: &'a str) -> Self {
            self.name = Some(name);
            self
        }
        fn sub(mut self, sub: &'a str) -> Self {
            self.subresource = Some(sub);
            self
        }
        fn by(&self, objects: &RbacObjects, user: &str, groups: &[&str]) -> Decision {
            let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
            authorize(
                objects,
                &RequestAttributes {
                    user,
                    groups: &groups,
                    verb: self.verb,
                    api_group: self.group,
                    resource: self.resource,
                    subresource: self.subresource,
                    namespace: self.namespace,
                    name: self.name,
                    non_resource_path: None,
                },
            )
        }
    }

    fn denied() -> Decision {
        Decision::Deny {
            reason: String::new(),
        }
    }

    #[test]
    fn system_masters_is_always_allowed() {
        let objects = RbacObjects::default();
        assert_eq!(
            ask("delete", "nodes")
                .name("n1")
                .by(&objects, "root", &["system:masters"]),
            Decision::Allow
        );
        assert_eq!(
            ask("delete", "nodes").name("n1").by(&objects, "root", &[]),
            denied()
        );
    }

    #[test]
    fn cluster_role_binding_grants_cluster_wide_to_user_and_group() {
        let objects = RbacObjects {
            cluster_roles: vec![cluster_role(
                "reader",
                vec![rule(&[""], &["pods"], &["get", "list"])],
            )],
            cluster_role_bindings: vec![cluster_binding(
                "reader",
                vec![
                    subject("User", "alice", None),
                    subject("Group", "readers", None),
                ],
            )],
            ..RbacObjects::default()
        };
        assert_eq!(
            ask("list", "pods").by(&objects, "alice", &[]),
            Decision::Allow
        );
        assert_eq!(
            ask("get", "pods")
                .ns("a")
                .name("p")
                .by(&objects, "alice", &[]),
            Decision::Allow
        );
        assert_eq!(
            ask("list", "pods")
                .ns("b")
                .by(&objects, "bob", &["readers"]),
            Decision::Allow
        );
        assert_eq!(
            ask("list", "pods").by(&objects, "bob", &["others"]),
            denied()
        );
        assert_eq!(
            ask("delete", "pods")
                .ns("a")
                .name("p")
                .by(&objects, "alice", &[]),
            denied()
        );
        assert_eq!(ask("list", "secrets").by(&objects, "alice", &[]), denied());
        // Wrong API group: pods in "apps" are not core pods.
        assert_eq!(
            ask("list", "pods").group("apps").by(&objects, "alice", &[]),
            denied()
        );
    }

    #[test]
    fn role_binding_is_scoped_to_its_namespace() {
        let objects = RbacObjects {
            roles: vec![role(
                "team-a",
                "editor",
                vec![rule(&["apps"], &["deployments"], &["*"])],
            )],
            cluster_roles: vec![cluster_role(
                "secret-reader",
                vec![rule(&[""], &["secrets"], &["get"])],
            )],
            role_bindings: vec![
                binding(
                    "team-a",
                    "Role",
                    "editor",
                    vec![subject("User", "alice", None)],
                ),
                binding(
                    "team-a",
                    "ClusterRole",
                    "secret-reader",
                    vec![subject("User", "alice", None)],
                ),
            ],
            ..RbacObjects::default()
        };
        let deploy = |ns| ask("update", "deployments").group("apps").ns(ns).name("d");
        assert_eq!(deploy("team-a").by(&objects, "alice", &[]), Decision::Allow);
        assert_eq!(deploy("team-b").by(&objects, "alice", &[]), denied());
        assert_eq!(
            ask("list", "deployments")
                .group("apps")
                .by(&objects, "alice", &[]),
            denied(),
            "a RoleBinding never grants cluster-wide access"
        );
        assert_eq!(
            ask("get", "secrets")
                .ns("team-a")
                .name("s")
                .by(&objects, "alice", &[]),
            Decision::Allow
        );
        assert_eq!(
            ask("get", "secrets")
                .ns("team-b")
                .name("s")
                .by(&objects, "alice", &[]),
            denied()
        );
    }

    #[test]
    fn role_in_another_namespace_is_not_used() {
        let objects = RbacObjects {
            roles: vec![role(
                "team-b",
                "editor",
                vec![rule(&[""], &["pods"], &["get"])],
            )],
            role_bindings: vec![binding(
                "team-a",
                "Role",
                "editor",
                vec![subject("User", "alice", None)],
            )],
            ..RbacObjects::default()
        };
        assert_eq!(
            ask("get", "pods")
                .ns("team-a")
                .name("p")
                .by(&objects, "alice", &[]),
            Decision::Deny {
                reason: "RBAC: role.rbac.authorization.k8s.io \"editor\" not found".to_owned()
            }
        );
    }

    #[test]
    fn service_account_subjects_match_their_username() {
        let objects = RbacObjects {
            cluster_roles: vec![cluster_role(
                "node-reader",
                vec![rule(&[""], &["nodes"], &["get"])],
            )],
            cluster_role_bindings: vec![cluster_binding(
                "node-reader",
                vec![subject("ServiceAccount", "ctrl", Some("kosmos-system"))],
            )],
            roles: vec![role(
                "team-a",
                "cm",
                vec![rule(&[""], &["configmaps"], &["get"])],
            )],
            // Unqualified ServiceAccount in a RoleBinding: the binding's namespace.
            role_bindings: vec![binding(
                "team-a",
                "Role",
                "cm",
                vec![subject("ServiceAccount", "app", None)],
            )],
        };
        let sa = service_account_username("kosmos-system", "ctrl");
        assert_eq!(sa, "system:serviceaccount:kosmos-system:ctrl");
        assert_eq!(
            ask("get", "nodes").name("n").by(&objects, &sa, &[]),
            Decision::Allow
        );
        assert_eq!(
            ask("get", "nodes")
                .name("n")
                .by(&objects, "system:serviceaccount:other:ctrl", &[]),
            denied()
        );
        let app = service_account_username("team-a", "app");
        assert_eq!(
            ask("get", "configmaps")
                .ns("team-a")
                .name("c")
                .by(&objects, &app, &[]),
            Decision::Allow
        );
        assert_eq!(
            ask("get", "configmaps").ns("team-a").name("c").by(
                &objects,
                "system:serviceaccount:team-b:app",
                &[]
            ),
            denied()
        );
    }

    #[test]
    fn unqualified_service_account_in_cluster_role_binding_matches_nobody() {
        let objects = RbacObjects {
            cluster_roles: vec![cluster_role("all", vec![rule(&["*"], &["*"], &["*"])])],
            cluster_role_bindings: vec![cluster_binding(
                "all",
                vec![subject("ServiceAccount", "ctrl", None)],
            )],
            ..RbacObjects::default()
        };
        assert_eq!(
            ask("get", "nodes")
                .name("n")
                .by(&objects, "system:serviceaccount:default:ctrl", &[]),
            denied()
        );
    }

    #[test]
    fn wildcards_match_groups_resources_and_verbs() {
        let objects = RbacObjects {
            cluster_roles: vec![cluster_role("admin", vec![rule(&["*"], &["*"], &["*"])])],
            cluster_role_bindings: vec![cluster_binding(
                "admin",
                vec![subject("User", "admin", None)],
            )],
            ..RbacObjects::default()
        };
        assert_eq!(
            ask("deletecollection", "virtualclusters")
                .group("kosmos.io")
                .ns("x")
                .by(&objects, "admin", &[]),
            Decision::Allow
        );
        assert_eq!(
            ask("patch", "virtualclusters")
                .group("kosmos.io")
                .sub("status")
                .ns("x")
                .name("v")
                .by(&objects, "admin", &[]),
            Decision::Allow
        );
    }

    #[test]
    fn subresources_need_their_own_rule_or_star_slash_form() {
        let objects = RbacObjects {
            cluster_roles: vec![
                cluster_role(
                    "vc",
                    vec![rule(&["kosmos.io"], &["virtualclusters"], &["*"])],
                ),
                cluster_role(
                    "status",
                    vec![rule(
                        &["kosmos.io"],
                        &["virtualclusters/status"],
                        &["patch"],
                    )],
                ),
                cluster_role("any-status", vec![rule(&["*"], &["*/status"], &["update"])]),
            ],
            cluster_role_bindings: vec![
                cluster_binding("vc", vec![subject("User", "main", None)]),
                cluster_binding("status", vec![subject("User", "status", None)]),
                cluster_binding("any-status", vec![subject("User", "any", None)]),
            ],
            ..RbacObjects::default()
        };
        let status = |verb| {
            ask(verb, "virtualclusters")
                .group("kosmos.io")
                .sub("status")
                .ns("d")
                .name("v")
        };
        assert_eq!(status("patch").by(&objects, "main", &[]), denied());
        assert_eq!(status("patch").by(&objects, "status", &[]), Decision::Allow);
        assert_eq!(
            ask("patch", "virtualclusters")
                .group("kosmos.io")
                .ns("d")
                .name("v")
                .by(&objects, "status", &[]),
            denied()
        );
        assert_eq!(status("update").by(&objects, "any", &[]), Decision::Allow);
        assert_eq!(
            ask("update", "deployments")
                .group("apps")
                .sub("scale")
                .ns("d")
                .name("x")
                .by(&objects, "any", &[]),
            denied()
        );
        assert_eq!(
            ask("update", "nodes").name("n").by(&objects, "any", &[]),
            denied(),
            "*/status never matches the main resource"
        );
    }

    #[test]
    fn resource_names_restrict_to_named_requests() {
        let objects = RbacObjects {
            cluster_roles: vec![cluster_role(
                "claimed",
                vec![PolicyRule {
                    resource_names: strings(&["node1", "node2"]),
                    ..rule(
                        &[""],
                        &["nodes"],
                        &[
                            "get",
                            "list",
                            "watch",
                            "create",
                            "delete",
                            "deletecollection",
                        ],
                    )
                }],
            )],
            cluster_role_bindings: vec![cluster_binding(
                "claimed",
                vec![subject("User", "tree", None)],
            )],
            ..RbacObjects::default()
        };
        assert_eq!(
            ask("get", "nodes").name("node1").by(&objects, "tree", &[]),
            Decision::Allow
        );
        assert_eq!(
            ask("get", "nodes").name("node3").by(&objects, "tree", &[]),
            denied()
        );
        for verb in ["list", "watch", "create", "deletecollection"] {
            assert_eq!(
                ask(verb, "nodes").by(&objects, "tree", &[]),
                denied(),
                "{verb} without a name"
            );
        }
        // list/watch restricted by fieldSelector metadata.name carry that name.
        let info = RequestInfo::parse(
            "GET",
            "/api/v1/nodes",
            Some("fieldSelector=metadata.name%3Dnode2&watch=true"),
        );
        let groups = Vec::new();
        assert_eq!(info.verb, "watch");
        assert_eq!(
            authorize(&objects, &info.attributes("tree", &groups)),
            Decision::Allow
        );
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_trailing_star() {
        let objects = RbacObjects {
            cluster_roles: vec![cluster_role(
                "probe",
                vec![PolicyRule {
                    non_resource_urls: strings(&["/healthz", "/apis/*"]),
                    verbs: vec!["get".to_owned()],
                    ..PolicyRule::default()
                }],
            )],
            cluster_role_bindings: vec![cluster_binding(
                "probe",
                vec![subject("Group", "system:authenticated", None)],
            )],
            ..RbacObjects::default()
        };
        let groups = vec!["system:authenticated".to_owned()];
        let decide = |method: &str, path: &str| {
            let info = RequestInfo::parse(method, path, None);
            authorize(&objects, &info.attributes("u", &groups))
        };
        assert_eq!(decide("GET", "/healthz"), Decision::Allow);
        assert_eq!(
            decide("GET", "/apis"),
            denied(),
            "`/apis/*` does not cover `/apis`"
        );
        assert_eq!(decide("GET", "/apis/kosmos.io"), Decision::Allow);
        assert_eq!(decide("POST", "/healthz"), denied());
        assert_eq!(decide("GET", "/version"), denied());
        // A resource path is never matched by nonResourceURLs.
        assert_eq!(
            decide("GET", "/apis/kosmos.io/v1alpha1/virtualclusters"),
            denied()
        );
    }

    #[test]
    fn missing_cluster_role_is_reported_once_in_the_reason() {
        let objects = RbacObjects {
            cluster_role_bindings: vec![
                cluster_binding("gone", vec![subject("User", "alice", None)]),
                ClusterRoleBinding {
                    metadata: meta("second", None),
                    ..cluster_binding("gone", vec![subject("User", "alice", None)])
                },
                cluster_binding("other-gone", vec![subject("User", "alice", None)]),
                cluster_binding("not-for-alice", vec![subject("User", "bob", None)]),
            ],
            ..RbacObjects::default()
        };
        assert_eq!(
            ask("get", "pods")
                .ns("a")
                .name("p")
                .by(&objects, "alice", &[]),
            Decision::Deny {
                reason: "RBAC: [clusterrole.rbac.authorization.k8s.io \"gone\" not found, \
                         clusterrole.rbac.authorization.k8s.io \"other-gone\" not found]"
                    .to_owned()
            }
        );
    }

    #[test]
    fn aggregated_cluster_roles_collect_selected_rules() {
        let mut labelled = cluster_role("pods-view", vec![rule(&[""], &["pods"], &["get"])]);
        labelled.metadata.labels = Some(BTreeMap::from([(
            "aggregate-to-view".to_owned(),
            "true".to_owned(),
        )]));
        let unlabelled = cluster_role("secrets", vec![rule(&[""], &["secrets"], &["get"])]);
        let view = ClusterRole {
            metadata: meta("view", None),
            aggregation_rule: Some(AggregationRule {
                cluster_role_selectors: Some(vec![LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "aggregate-to-view".to_owned(),
                        "true".to_owned(),
                    )])),
                    ..LabelSelector::default()
                }]),
            }),
            rules: None,
        };
        let objects = RbacObjects {
            cluster_roles: vec![labelled, unlabelled, view],
            cluster_role_bindings: vec![cluster_binding("view", vec![subject("User", "v", None)])],
            ..RbacObjects::default()
        };
        assert_eq!(
            ask("get", "pods").ns("a").name("p").by(&objects, "v", &[]),
            Decision::Allow
        );
        assert_eq!(
            ask("get", "secrets")
                .ns("a")
                .name("s")
                .by(&objects, "v", &[]),
            denied()
        );
    }

    #[test]
    fn label_selector_operators() {
        let labels = BTreeMap::from([
            ("env".to_owned(), "prod".to_owned()),
            ("tier".to_owned(), "web".to_owned()),
        ]);
        let expr = |key: &str, op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.to_owned(),
                operator: op.to_owned(),
                values: if values.is_empty() {
                    None
                } else {
                    strings(values)
                },
            }]),
            ..LabelSelector::default()
        };
        assert_eq!(
            label_selector_matches(&LabelSelector::default(), &labels),
            Ok(true)
        );
        assert_eq!(
            label_selector_matches(&expr("env", "In", &["prod", "dev"]), &labels),
            Ok(true)
        );
        assert_eq!(
            label_selector_matches(&expr("env", "NotIn", &["prod"]), &labels),
            Ok(false)
        );
        assert_eq!(
            label_selector_matches(&expr("zone", "NotIn", &["a"]), &labels),
            Ok(true)
        );
        assert_eq!(
            label_selector_matches(&expr("tier", "Exists", &[]), &labels),
            Ok(true)
        );
        assert_eq!(
            label_selector_matches(&expr("tier", "DoesNotExist", &[]), &labels),
            Ok(false)
        );
        assert!(matches!(
            label_selector_matches(&expr("tier", "Gt", &["1"]), &labels),
            Err(SelectorError::UnknownOperator { .. })
        ));
        assert!(matches!(
            label_selector_matches(&expr("tier", "In", &[]), &labels),
            Err(SelectorError::MissingValues { .. })
        ));
        let both = LabelSelector {
            match_labels: Some(BTreeMap::from([("env".to_owned(), "dev".to_owned())])),
            ..expr("tier", "Exists", &[])
        };
        assert_eq!(label_selector_matches(&both, &labels), Ok(false));
    }

    #[test]
    fn request_info_parses_like_kube_apiserver() {
        let parse = |method, path, query| {
            let i = RequestInfo::parse(method, path, query);
            (
                i.verb,
                i.api_group,
                i.namespace,
                i.resource,
                i.subresource,
                i.name,
            )
        };
        let s = |v: &str| v.to_owned();
        assert_eq!(
            parse(
                "GET",
                "/apis/kosmos.io/v1alpha1/namespaces/default/virtualclusters",
                None
            ),
            (
                s("list"),
                s("kosmos.io"),
                s("default"),
                s("virtualclusters"),
                s(""),
                s("")
            )
        );
        assert_eq!(
            parse(
                "GET",
                "/apis/kosmos.io/v1alpha1/virtualclusters",
                Some("watch=1&resourceVersion=5")
            ),
            (
                s("watch"),
                s("kosmos.io"),
                s(""),
                s("virtualclusters"),
                s(""),
                s("")
            )
        );
        assert_eq!(
            parse(
                "PATCH",
                "/apis/kosmos.io/v1alpha1/namespaces/d/virtualclusters/v/status",
                None
            ),
            (
                s("patch"),
                s("kosmos.io"),
                s("d"),
                s("virtualclusters"),
                s("status"),
                s("v")
            )
        );
        assert_eq!(
            parse("DELETE", "/api/v1/namespaces/d/pods", None),
            (
                s("deletecollection"),
                s(""),
                s("d"),
                s("pods"),
                s(""),
                s("")
            )
        );
        assert_eq!(
            parse("DELETE", "/api/v1/nodes/n1", None),
            (s("delete"), s(""), s(""), s("nodes"), s(""), s("n1"))
        );
        assert_eq!(
            parse("POST", "/api/v1/namespaces", None),
            (s("create"), s(""), s(""), s("namespaces"), s(""), s(""))
        );
        // A namespace object is its own namespace, and `finalize`/`status` are its subresources.
        assert_eq!(
            parse("PUT", "/api/v1/namespaces/team-a/finalize", None),
            (
                s("update"),
                s(""),
                s("team-a"),
                s("namespaces"),
                s("finalize"),
                s("team-a")
            )
        );
        assert_eq!(
            parse("GET", "/api/v1/watch/namespaces/d/pods", None),
            (s("watch"), s(""), s("d"), s("pods"), s(""), s(""))
        );
        assert_eq!(
            parse(
                "PUT",
                "/apis/apps/v1/namespaces/d/deployments/web/scale",
                None
            ),
            (
                s("update"),
                s("apps"),
                s("d"),
                s("deployments"),
                s("scale"),
                s("web")
            )
        );
        assert_eq!(
            parse(
                "GET",
                "/api/v1/nodes",
                Some("fieldSelector=metadata.name%3D%3Dn1,spec.unschedulable%3Dfalse")
            ),
            (s("list"), s(""), s(""), s("nodes"), s(""), s("n1"))
        );
        assert_eq!(
            parse(
                "GET",
                "/api/v1/nodes",
                Some("fieldSelector=metadata.name%3Da%2Fb")
            )
            .5,
            "",
            "an invalid path segment is not taken as the name"
        );
        let non_resource = RequestInfo::parse("GET", "/apis/kosmos.io", None);
        assert!(!non_resource.is_resource_request);
        assert_eq!(non_resource.verb, "get");
        assert!(!RequestInfo::parse("GET", "/api/v1", None).is_resource_request);
        assert!(!RequestInfo::parse("GET", "/healthz", None).is_resource_request);
    }

    #[test]
    fn forbidden_messages_match_the_fixtures() {
        let groups = Vec::new();
        let msg = |method, path, query, user| {
            let info = RequestInfo::parse(method, path, query);
            forbidden_message(&info.attributes(user, &groups), "")
        };
        // errors/403-forbidden-get-as-nobody.json
        assert_eq!(
            msg(
                "GET",
                "/apis/kosmos.io/v1alpha1/namespaces/default/virtualclusters/vc2",
                None,
                "nobody"
            ),
            "virtualclusters.kosmos.io \"vc2\" is forbidden: User \"nobody\" cannot get resource \
             \"virtualclusters\" in API group \"kosmos.io\" in the namespace \"default\""
        );
        // errors/403-forbidden-list-all-namespaces-as-nobody.json
        assert_eq!(
            msg(
                "GET",
                "/apis/kosmos.io/v1alpha1/virtualclusters",
                None,
                "nobody"
            ),
            "virtualclusters.kosmos.io is forbidden: User \"nobody\" cannot list resource \
             \"virtualclusters\" in API group \"kosmos.io\" at the cluster scope"
        );
        // errors/403-forbidden-patch-status-as-nobody.json
        assert_eq!(
            msg(
                "PATCH",
                "/apis/kosmos.io/v1alpha1/namespaces/default/virtualclusters/vc2/status",
                None,
                "nobody"
            ),
            "virtualclusters.kosmos.io \"vc2\" is forbidden: User \"nobody\" cannot patch resource \
             \"virtualclusters/status\" in API group \"kosmos.io\" in the namespace \"default\""
        );
        assert_eq!(
            msg("GET", "/api/v1/nodes/n1", None, "nobody"),
            "nodes \"n1\" is forbidden: User \"nobody\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"
        );
        assert_eq!(
            msg("GET", "/metrics", None, "nobody"),
            "forbidden: User \"nobody\" cannot get path \"/metrics\""
        );
        let info = RequestInfo::parse("GET", "/api/v1/nodes", None);
        assert_eq!(
            forbidden_message(
                &info.attributes("x", &groups),
                "RBAC: clusterrole.rbac.authorization.k8s.io \"a\" not found"
            ),
            "nodes is forbidden: User \"x\" cannot list resource \"nodes\" in API group \"\" at the cluster scope: \
             RBAC: clusterrole.rbac.authorization.k8s.io \"a\" not found"
        );
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let pairs: Vec<_> = query_pairs("a=x%3Dy&b=c+d&flag&bad=%zz%").collect();
        assert_eq!(
            pairs,
            vec![
                (s("a"), s("x=y")),
                (s("b"), s("c d")),
                (s("flag"), s("")),
                (s("bad"), s("%zz%")),
            ]
        );
        fn s(v: &str) -> String {
            v.to_owned()
        }
    }

    // --- escalation prevention -----------------------------------------------------------

    fn with_names(mut rule: PolicyRule, names: &[&str]) -> PolicyRule {
        rule.resource_names = strings(names);
        rule
    }

    fn urls(paths: &[&str], verbs: &[&str]) -> PolicyRule {
        PolicyRule {
            non_resource_urls: strings(paths),
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            ..PolicyRule::default()
        }
    }

    /// The uncovered tuples of `requested`, printed as kube-apiserver prints them.
    fn missing(held: &[PolicyRule], requested: &[PolicyRule]) -> Vec<String> {
        uncovered_rules(held, requested)
            .iter()
            .map(compact_string)
            .collect()
    }

    fn owned(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn breakdown_is_one_tuple_per_group_resource_verb_and_name_and_per_url_and_verb() {
        let both = PolicyRule {
            non_resource_urls: strings(&["/healthz"]),
            ..with_names(
                rule(&["", "apps"], &["pods"], &["get", "list"]),
                &["a", "b"],
            )
        };
        let tuples: Vec<String> = breakdown_rule(&both).iter().map(compact_string).collect();
        assert_eq!(tuples.len(), 2 * 2 * 2 + 2);
        assert_eq!(
            tuples[..3],
            [
                r#"{APIGroups:[""], Resources:["pods"], ResourceNames:["a"], Verbs:["get"]}"#,
                r#"{APIGroups:[""], Resources:["pods"], ResourceNames:["b"], Verbs:["get"]}"#,
                r#"{APIGroups:[""], Resources:["pods"], ResourceNames:["a"], Verbs:["list"]}"#,
            ]
        );
        assert_eq!(
            tuples[8..],
            [
                r#"{NonResourceURLs:["/healthz"], Verbs:["get"]}"#,
                r#"{NonResourceURLs:["/healthz"], Verbs:["list"]}"#,
            ]
        );
        assert!(
            breakdown_rule(&rule(&[], &["pods"], &["get"])).is_empty(),
            "a rule without groups grants nothing"
        );
    }

    #[test]
    fn verbs_are_covered_by_the_same_verb_or_a_star() {
        let requested = [rule(&[""], &["pods"], &["get", "delete"])];
        assert_eq!(
            missing(&[rule(&[""], &["pods"], &["get"])], &requested),
            [r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#]
        );
        assert!(missing(&[rule(&[""], &["pods"], &["*"])], &requested).is_empty());
        let every_verb = rule(
            &[""],
            &["pods"],
            &[
                "get",
                "list",
                "watch",
                "create",
                "update",
                "patch",
                "delete",
                "deletecollection",
            ],
        );
        assert_eq!(
            missing(&[every_verb], &[rule(&[""], &["pods"], &["*"])]),
            [r#"{APIGroups:[""], Resources:["pods"], Verbs:["*"]}"#],
            "granting `*` needs `*`, not every verb named"
        );
    }

    #[test]
    fn groups_are_covered_by_the_same_group_or_a_star() {
        let requested = [rule(&["apps"], &["deployments"], &["get"])];
        assert!(missing(&[rule(&["*"], &["deployments"], &["get"])], &requested).is_empty());
        assert!(
            missing(
                &[rule(&["batch", "apps"], &["deployments"], &["get"])],
                &requested
            )
            .is_empty()
        );
        assert_eq!(
            missing(&[rule(&[""], &["deployments"], &["get"])], &requested).len(),
            1,
            "the core group is not apps"
        );
        assert_eq!(
            missing(
                &[rule(&["apps"], &["deployments"], &["get"])],
                &[rule(&["*"], &["deployments"], &["get"])]
            )
            .len(),
            1,
            "granting every group needs `*`"
        );
    }

    #[test]
    fn resources_are_covered_exactly_by_a_star_or_by_star_slash_subresource() {
        let get = |resource: &str| [rule(&[""], &[resource], &["get"])];
        assert!(missing(&get("*"), &get("pods")).is_empty());
        assert!(missing(&get("*"), &get("pods/log")).is_empty());
        assert!(missing(&get("*/log"), &get("pods/log")).is_empty());
        assert!(missing(&get("pods/log"), &get("pods/log")).is_empty());
        assert!(missing(&get("*/status"), &get("*/status")).is_empty());
        for (held, requested, why) in [
            (
                "pods",
                "pods/log",
                "a resource does not cover its subresources",
            ),
            (
                "pods/log",
                "pods",
                "a subresource does not cover its resource",
            ),
            ("*/log", "pods", "*/SUB covers only that subresource"),
            ("*/status", "pods/log", "*/SUB covers only that subresource"),
            (
                "pods/status",
                "*/status",
                "one resource's subresource is not all of them",
            ),
            ("pods", "*", "granting every resource needs `*`"),
            ("services", "pods", "another resource"),
        ] {
            assert_eq!(missing(&get(held), &get(requested)).len(), 1, "{why}");
        }
    }

    #[test]
    fn resource_names_restrict_what_a_rule_covers() {
        let nodes = |names: &[&str]| with_names(rule(&[""], &["nodes"], &["get"]), names);
        assert!(
            missing(&[nodes(&[])], &[nodes(&["n1", "n2"])]).is_empty(),
            "an owner without names covers every name"
        );
        assert!(missing(&[nodes(&["n1", "n2", "n3"])], &[nodes(&["n1", "n2"])]).is_empty());
        assert_eq!(
            missing(&[nodes(&["n1"])], &[nodes(&["n1", "n2"])]),
            [r#"{APIGroups:[""], Resources:["nodes"], ResourceNames:["n2"], Verbs:["get"]}"#]
        );
        assert_eq!(
            missing(&[nodes(&["n1"])], &[nodes(&[])]),
            [r#"{APIGroups:[""], Resources:["nodes"], Verbs:["get"]}"#],
            "an owner with names never covers a grant of every name"
        );
    }

    #[test]
    fn non_resource_urls_are_covered_exactly_or_by_a_trailing_star() {
        let get = |path: &str| [urls(&[path], &["get"])];
        assert!(missing(&get("/healthz"), &get("/healthz")).is_empty());
        assert!(missing(&get("/apis/*"), &get("/apis/kosmos.io")).is_empty());
        assert!(missing(&get("/apis/**"), &get("/apis/kosmos.io")).is_empty());
        assert!(missing(&get("*"), &get("/metrics")).is_empty());
        assert!(missing(&get("/apis/*"), &get("/apis/*")).is_empty());
        assert_eq!(
            missing(&get("/apis/*"), &get("/apis")),
            [r#"{NonResourceURLs:["/apis"], Verbs:["get"]}"#]
        );
        assert_eq!(missing(&get("/healthz"), &get("/healthz/etcd")).len(), 1);
        assert_eq!(missing(&get("/apis/kosmos.io"), &get("/apis/*")).len(), 1);
        assert_eq!(
            missing(&get("/healthz"), &[urls(&["/healthz"], &["post"])]).len(),
            1,
            "the verb must match too"
        );
        assert_eq!(
            missing(&[rule(&["*"], &["*"], &["*"])], &get("/healthz")).len(),
            1,
            "resource rules never cover URLs"
        );
        assert_eq!(
            missing(&[urls(&["*"], &["*"])], &[rule(&[""], &["pods"], &["get"])]).len(),
            1,
            "URL rules never cover resources"
        );
        assert!(
            missing(
                &full_authority(),
                &[
                    urls(&["/healthz"], &["get"]),
                    rule(&["apps"], &["deployments/scale"], &["update"])
                ]
            )
            .is_empty()
        );
    }

    #[test]
    fn each_tuple_may_be_covered_by_a_different_held_rule() {
        let held = [
            rule(&[""], &["pods"], &["get"]),
            rule(&[""], &["pods"], &["list"]),
        ];
        assert!(missing(&held, &[rule(&[""], &["pods"], &["get", "list"])]).is_empty());
        assert!(uncovered_rules(&held, &[]).is_empty());
        assert!(uncovered_rules(&[], &[PolicyRule::default()]).is_empty());
    }

    #[test]
    fn compaction_merges_the_verbs_of_one_resource_and_name() {
        let tuples = uncovered_rules(
            &[],
            &[
                with_names(rule(&[""], &["nodes"], &["get", "list"]), &["n1"]),
                rule(&[""], &["pods"], &["get", "list"]),
                urls(&["/a"], &["get", "post"]),
            ],
        );
        let compacted: Vec<String> = compact_rules(tuples).iter().map(compact_string).collect();
        assert_eq!(
            compacted,
            [
                r#"{NonResourceURLs:["/a"], Verbs:["get"]}"#,
                r#"{NonResourceURLs:["/a"], Verbs:["post"]}"#,
                r#"{APIGroups:[""], Resources:["nodes"], ResourceNames:["n1"], Verbs:["get" "list"]}"#,
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}"#,
            ]
        );
    }

    #[test]
    fn escalation_message_lists_each_missing_rule_sorted_as_kube_apiserver_does() {
        let objects = RbacObjects {
            cluster_roles: vec![cluster_role(
                "pods-get",
                vec![rule(&[""], &["pods"], &["get"])],
            )],
            cluster_role_bindings: vec![cluster_binding(
                "pods-get",
                vec![subject("User", "alice", None)],
            )],
            ..RbacObjects::default()
        };
        let groups = owned(&["team", "system:authenticated"]);
        let requested = [
            rule(&["apps"], &["deployments"], &["get"]),
            rule(&[""], &["pods"], &["get", "list", "watch"]),
        ];
        let refused = confirm_no_escalation(&objects, "alice", &groups, None, &requested)
            .expect_err("list, watch and deployments are not held");
        assert_eq!(
            refused.to_string(),
            "user \"alice\" (groups=[\"team\" \"system:authenticated\"]) is attempting to grant \
             RBAC permissions not currently held:\n\
             {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"list\" \"watch\"]}\n\
             {APIGroups:[\"apps\"], Resources:[\"deployments\"], Verbs:[\"get\"]}"
        );
        assert_eq!(
            confirm_no_escalation(
                &objects,
                "alice",
                &groups,
                None,
                &[rule(&[""], &["pods"], &["get"])]
            ),
            Ok(())
        );
        assert_eq!(
            confirm_no_escalation(&objects, "alice", &groups, None, &[]),
            Ok(()),
            "granting nothing escalates nothing"
        );
    }

    #[test]
    fn held_rules_are_the_cluster_wide_ones_plus_those_of_the_namespace() {
        let objects = RbacObjects {
            roles: vec![role(
                "team-a",
                "editor",
                vec![rule(&[""], &["pods"], &["*"])],
            )],
            cluster_roles: vec![
                cluster_role("cm-reader", vec![rule(&[""], &["configmaps"], &["get"])]),
                cluster_role("nodes-get", vec![rule(&[""], &["nodes"], &["get"])]),
            ],
            role_bindings: vec![
                binding(
                    "team-a",
                    "Role",
                    "editor",
                    vec![subject("Group", "team", None)],
                ),
                binding(
                    "team-a",
                    "ClusterRole",
                    "cm-reader",
                    vec![subject("User", "alice", None)],
                ),
            ],
            cluster_role_bindings: vec![cluster_binding(
                "nodes-get",
                vec![subject("User", "alice", None)],
            )],
        };
        let groups = owned(&["team"]);
        let holds = |namespace: Option<&str>, requested: PolicyRule| {
            confirm_no_escalation(&objects, "alice", &groups, namespace, &[requested]).is_ok()
        };
        let pods = || rule(&[""], &["pods"], &["create"]);
        let configmaps = || rule(&[""], &["configmaps"], &["get"]);
        let nodes = || rule(&[""], &["nodes"], &["get"]);
        assert!(holds(Some("team-a"), pods()));
        assert!(!holds(Some("team-b"), pods()));
        assert!(
            !holds(None, pods()),
            "a RoleBinding holds nothing cluster-wide"
        );
        assert!(holds(Some("team-a"), configmaps()));
        assert!(!holds(Some("team-b"), configmaps()));
        assert!(holds(None, nodes()));
        assert!(holds(Some("team-b"), nodes()));
        assert!(
            confirm_no_escalation(&objects, "bob", &[], Some("team-a"), &[pods()]).is_err(),
            "bob is in no bound group"
        );
    }

    #[test]
    fn role_references_resolve_in_the_binding_namespace_and_name_what_is_missing() {
        let objects = RbacObjects {
            roles: vec![role(
                "team-a",
                "editor",
                vec![rule(&[""], &["pods"], &["get"])],
            )],
            cluster_roles: vec![cluster_role(
                "view",
                vec![rule(&[""], &["pods"], &["list"])],
            )],
            ..RbacObjects::default()
        };
        let resolve = |kind: &str, name: &str, namespace: Option<&str>| {
            role_reference_rules(&objects, &role_ref(kind, name), namespace)
        };
        assert_eq!(
            resolve("Role", "editor", Some("team-a")),
            Ok(vec![rule(&[""], &["pods"], &["get"])])
        );
        assert_eq!(
            resolve("ClusterRole", "view", Some("team-b")),
            Ok(vec![rule(&[""], &["pods"], &["list"])])
        );
        let not_found = |result: Result<Vec<PolicyRule>, RoleRefError>| {
            result.map_err(|error| error.to_string())
        };
        assert_eq!(
            not_found(resolve("Role", "editor", Some("team-b"))),
            Err("roles.rbac.authorization.k8s.io \"editor\" not found".to_owned())
        );
        assert_eq!(
            not_found(resolve("Role", "editor", None)),
            Err("roles.rbac.authorization.k8s.io \"editor\" not found".to_owned())
        );
        assert_eq!(
            not_found(resolve("ClusterRole", "gone", None)),
            Err("clusterroles.rbac.authorization.k8s.io \"gone\" not found".to_owned())
        );
        assert_eq!(
            not_found(resolve("Group", "x", None)),
            Err("unsupported role reference kind: \"Group\"".to_owned())
        );
    }

    #[test]
    fn unresolvable_bindings_of_the_writer_follow_the_missing_rules() {
        let pods = [rule(&[""], &["pods"], &["get"])];
        let one_gone = RbacObjects {
            cluster_role_bindings: vec![cluster_binding(
                "gone",
                vec![subject("User", "alice", None)],
            )],
            ..RbacObjects::default()
        };
        let refused = confirm_no_escalation(&one_gone, "alice", &[], None, &pods)
            .expect_err("nothing is held");
        assert!(
            refused.to_string().ends_with(
                "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"get\"]}; resolution errors: \
                 [clusterroles.rbac.authorization.k8s.io \"gone\" not found]"
            ),
            "{refused}"
        );
        let two_gone = RbacObjects {
            cluster_role_bindings: vec![
                cluster_binding("gone", vec![subject("User", "alice", None)]),
                ClusterRoleBinding {
                    metadata: meta("again", None),
                    ..cluster_binding("gone", vec![subject("User", "alice", None)])
                },
                cluster_binding("also-gone", vec![subject("User", "alice", None)]),
            ],
            ..RbacObjects::default()
        };
        let refused = confirm_no_escalation(&two_gone, "alice", &[], None, &pods)
            .expect_err("nothing is held");
        assert!(
            refused.to_string().ends_with(
                "; resolution errors: [[clusterroles.rbac.authorization.k8s.io \"gone\" not found, \
                 clusterroles.rbac.authorization.k8s.io \"also-gone\" not found]]"
            ),
            "{refused}"
        );
    }

    #[test]
    fn strings_are_quoted_as_go_quotes_them() {
        assert_eq!(go_quote("plain"), "\"plain\"");
        assert_eq!(
            go_quote("a\"b\\c\nd\te\u{1}\u{7f}"),
            "\"a\\\"b\\\\c\\nd\\te\\x01\\x7f\""
        );
        assert_eq!(go_quote("ü"), "\"ü\"");
        assert_eq!(go_quote_list(&[]), "[]");
        assert_eq!(go_quote_list(&owned(&["", "a"])), "[\"\" \"a\"]");
    }
}
