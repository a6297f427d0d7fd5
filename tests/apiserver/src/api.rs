//! Routing and the REST handlers: discovery, health, and the verbs on resources.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::request::Parts;
use serde_json::{Value, json};

use super::hooks::{AuthzAttributes, AuthzDecision, RbacSnapshot, UserInfo};
use super::managed;
use super::openapi;
use super::patch::{self, PatchType};
use super::registry::{Registry, ResourceType, StorageKey};
use super::selectors::{FieldSelector, LabelSelector};
use super::server::{Body, error_response, full};
use super::state::{DeleteOptions, FieldValidation, State, WriteCtx, meta_str};
use super::status::ApiError;
use super::table::{self, IncludeObject};
use super::watch;

/// A request, parsed.
#[derive(Debug)]
pub struct Req {
    pub method: http::Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub user: UserInfo,
}

impl Req {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    fn header(&self, key: &str) -> &str {
        self.headers
            .get(key)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn accept(&self) -> &str {
        self.header("accept")
    }

    pub fn wants_table(&self) -> bool {
        self.accept().contains("as=Table")
    }

    pub fn wants_metadata(&self) -> bool {
        self.accept().contains("as=PartialObjectMetadata")
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.param(key), Some("true" | "1"))
    }
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = (b == b'%' && i + 2 < bytes.len())
            .then(|| {
                std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        match (b, hex) {
            (b'+', _) => out.push(b' '),
            (_, Some(decoded)) => {
                out.push(decoded);
                i += 2;
            }
            (other, None) => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a path addresses.
#[derive(Debug, Clone)]
struct Target {
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: String,
}

fn json_response(code: u16, value: &Value, warnings: &[String]) -> hyper::Response<Body> {
    bytes_response(
        code,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
        warnings,
    )
}

fn bytes_response(
    code: u16,
    content_type: &str,
    body: Vec<u8>,
    warnings: &[String],
) -> hyper::Response<Body> {
    let mut builder = hyper::Response::builder()
        .status(code)
        .header("Content-Type", content_type)
        .header("Cache-Control", "no-cache, private");
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        builder = builder.header("Warning", format!("299 - \"{escaped}\""));
    }
    builder
        .body(full(body))
        .unwrap_or_else(|_| hyper::Response::new(full("internal error")))
}

/// Entry point from the transport.
pub async fn handle(
    state: Arc<State>,
    user: UserInfo,
    parts: Parts,
    body: Bytes,
) -> hyper::Response<Body> {
    let mut req = Req {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parse_query(parts.uri.query()),
        headers: parts.headers,
        body,
        user,
    };
    match impersonate(&state, &req) {
        Ok(Some(user)) => req.user = user,
        Ok(None) => {}
        Err(e) => return error_response(&e),
    }
    match route(&state, &req).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

/// `Impersonate-User` / `Impersonate-Group` (kubectl `--as`, `--as-group`): allowed when
/// the caller may `impersonate` users and groups.
fn impersonate(state: &State, req: &Req) -> Result<Option<UserInfo>, ApiError> {
    let Some(user) = req
        .headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let mut groups: Vec<String> = req
        .headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let mut checks = vec![("users", String::new(), user.to_string())];
    if let Some(rest) = user.strip_prefix("system:serviceaccount:") {
        let (ns, name) = rest.split_once(':').unwrap_or(("", rest));
        checks = vec![("serviceaccounts", ns.to_string(), name.to_string())];
        groups.extend([
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
        ]);
    }
    checks.extend(groups.iter().map(|g| ("groups", String::new(), g.clone())));
    for (resource, namespace, name) in checks {
        let attrs = AuthzAttributes {
            user: req.user.username.clone(),
            groups: req.user.groups.clone(),
            verb: "impersonate".into(),
            resource: resource.into(),
            namespace,
            name,
            ..AuthzAttributes::default()
        };
        if let AuthzDecision::Deny(_) = decide(state, &attrs, &req.user) {
            let message = super::wiring::forbidden_message(&attrs, "");
            return Err(ApiError::with_code(403, Some("Forbidden"), message));
        }
    }
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(Some(UserInfo {
        username: user.to_string(),
        groups,
        ..UserInfo::default()
    }))
}

/// SelfSubjectAccessReview and SubjectAccessReview: what `kubectl auth can-i` asks.
fn access_review(
    state: &State,
    req: &Req,
    self_review: bool,
) -> Result<hyper::Response<Body>, ApiError> {
    if req.method != http::Method::POST {
        return Err(ApiError::page_not_found());
    }
    let protobuf = req
        .header("content-type")
        .starts_with("application/vnd.kubernetes.protobuf");
    let mut review: Value = if protobuf {
        super::protobuf::decode(&req.body).map_err(ApiError::bad_request)?
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding the access review: {e}")))?
    };
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let text = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (user, groups) = if self_review {
        (req.user.clone(), req.user.groups.clone())
    } else {
        let groups: Vec<String> = spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        (
            UserInfo {
                username: text(&spec, "user"),
                groups: groups.clone(),
                ..UserInfo::default()
            },
            groups,
        )
    };
    let attrs = match (
        spec.get("resourceAttributes"),
        spec.get("nonResourceAttributes"),
    ) {
        (Some(r), _) => AuthzAttributes {
            user: user.username.clone(),
            groups,
            verb: text(r, "verb"),
            api_group: text(r, "group"),
            resource: text(r, "resource"),
            subresource: text(r, "subresource"),
            namespace: text(r, "namespace"),
            name: text(r, "name"),
            non_resource_path: None,
        },
        (None, Some(n)) => AuthzAttributes {
            user: user.username.clone(),
            groups,
            verb: text(n, "verb"),
            non_resource_path: Some(text(n, "path")),
            ..AuthzAttributes::default()
        },
        (None, None) => {
            return Err(ApiError::bad_request(
                "spec.resourceAttributes or spec.nonResourceAttributes is required",
            ));
        }
    };
    let status = match decide(state, &attrs, &user) {
        AuthzDecision::Allow => json!({"allowed": true}),
        AuthzDecision::Deny(reason) if reason.is_empty() => json!({"allowed": false}),
        AuthzDecision::Deny(reason) => json!({"allowed": false, "reason": reason}),
    };
    review["status"] = status;
    if review.get("metadata").is_none() {
        review["metadata"] = json!({});
    }
    Ok(json_response(201, &review, &[]))
}

const PUBLIC_PATHS: &[&str] = &["/version", "/healthz", "/livez", "/readyz", "/version/"];

async fn route(state: &Arc<State>, req: &Req) -> Result<hyper::Response<Body>, ApiError> {
    let path = req.path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let resource_request = matches!(
        segments.as_slice(),
        ["api", "v1", _, ..] | ["apis", _, _, _, ..]
    );
    if !resource_request {
        return non_resource(state, req, path, &segments).await;
    }
    let accept = req.accept();
    let acceptable = accept.is_empty()
        || ["json", "*/*", "yaml", "protobuf"]
            .iter()
            .any(|t| accept.contains(t));
    if !acceptable {
        return Err(ApiError::not_acceptable(
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ));
    }
    match segments.as_slice() {
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
        ] => return access_review(state, req, true),
        ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] => {
            return access_review(state, req, false);
        }
        _ => {}
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::page_not_found()),
    };
    let target =
        resolve(&state.registry(), group, version, rest).ok_or_else(ApiError::page_not_found)?;
    let verb = verb_of(req, &target);
    let resource_label = if target.subresource.is_empty() {
        target.rt.plural.clone()
    } else {
        format!("{}/{}", target.rt.plural, target.subresource)
    };
    state
        .accounting
        .any_request(&req.user.username, &verb, &resource_label);
    let fault = state
        .faults
        .check(&verb, &target.rt.plural, &req.user.username);
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(err) = fault.error {
        return Err(err);
    }
    authorize(state, req, &verb, &target)?;
    if matches!(
        verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    ) {
        state
            .accounting
            .request(&req.user.username, &resource_label);
    }
    if !(target.subresource.is_empty()
        || target.subresource == "status" && target.rt.status_subresource)
    {
        return Err(ApiError::page_not_found());
    }
    match verb.as_str() {
        "get" => get(state, req, &target),
        "list" => list(state, req, &target),
        "watch" => watch::watch(
            state,
            req,
            &target.rt,
            target.namespace.as_deref(),
            target.name.as_deref(),
        ),
        "create" => create(state, req, &target).await,
        "update" => update(state, req, &target).await,
        "patch" => patch_object(state, req, &target).await,
        "delete" => delete(state, req, &target).await,
        "deletecollection" => delete_collection(state, req, &target).await,
        _ => Err(ApiError::method_not_allowed(
            &target.rt,
            req.method.as_str(),
        )),
    }
}

fn resolve(registry: &Registry, group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..]
            if !tail.is_empty() && !matches!(tail[0], "status" | "finalize") =>
        {
            (Some(ns.to_string()), tail)
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, ""),
        [p, n] => (*p, Some(n.to_string()), ""),
        [p, n, s] => (*p, Some(n.to_string()), *s),
        _ => return None,
    };
    let rt = registry.lookup(group, version, plural)?;
    if rt.namespaced != namespace.is_some()
        && !(rt.namespaced && namespace.is_none() && name.is_none())
    {
        return None;
    }
    Some(Target {
        rt,
        namespace,
        name,
        subresource: sub.to_string(),
    })
}

fn verb_of(req: &Req, target: &Target) -> String {
    let named = target.name.is_some();
    match (req.method.as_str(), named) {
        ("GET" | "HEAD", false) if req.flag("watch") => "watch",
        ("GET" | "HEAD", false) => "list",
        ("GET" | "HEAD", true) if req.flag("watch") => "watch",
        ("GET" | "HEAD", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => return other.to_lowercase(),
    }
    .to_string()
}

pub(super) fn rbac_snapshot(state: &State) -> RbacSnapshot {
    let inner = state.store.lock();
    let list = |plural: &str| -> Vec<Value> {
        let key = StorageKey {
            group: "rbac.authorization.k8s.io".into(),
            plural: plural.into(),
        };
        inner
            .range(&key, None, None)
            .map(|(_, v)| (**v).clone())
            .collect()
    };
    RbacSnapshot {
        roles: list("roles"),
        cluster_roles: list("clusterroles"),
        role_bindings: list("rolebindings"),
        cluster_role_bindings: list("clusterrolebindings"),
    }
}

pub(super) fn decide(state: &State, attrs: &AuthzAttributes, user: &UserInfo) -> AuthzDecision {
    if user.is_master() {
        return AuthzDecision::Allow;
    }
    if user.is_anonymous() {
        return AuthzDecision::Deny("anonymous".into());
    }
    if !state.enforce_rbac {
        return AuthzDecision::Allow;
    }
    let authorizer = state
        .authorizer
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match authorizer {
        Some(a) => a.authorize(&rbac_snapshot(state), attrs),
        None => AuthzDecision::Deny("RBAC enforcement is on but no authorizer is installed".into()),
    }
}

fn authorize(state: &State, req: &Req, verb: &str, target: &Target) -> Result<(), ApiError> {
    let attrs = AuthzAttributes {
        user: req.user.username.clone(),
        groups: req.user.groups.clone(),
        verb: verb.to_string(),
        api_group: target.rt.group.clone(),
        resource: target.rt.plural.clone(),
        subresource: target.subresource.clone(),
        namespace: target.namespace.clone().unwrap_or_default(),
        name: target.name.clone().unwrap_or_default(),
        non_resource_path: None,
    };
    if let AuthzDecision::Deny(reason) = decide(state, &attrs, &req.user) {
        let mut shown = attrs.clone();
        if verb == "create" {
            shown.name.clear();
        }
        let reason = if req.user.is_anonymous() || !state.enforce_rbac {
            String::new()
        } else {
            reason
        };
        let message = super::wiring::forbidden_message(&shown, &reason);
        return Err(ApiError::forbidden_message(
            &target.rt,
            Some(&shown.name),
            message,
        ));
    }
    Ok(())
}

fn authorize_path(state: &State, req: &Req, path: &str) -> Result<(), ApiError> {
    if PUBLIC_PATHS.iter().any(|p| {
        path == p.trim_end_matches('/')
            || path.starts_with(&format!("{}/", p.trim_end_matches('/')))
    }) {
        return Ok(());
    }
    let verb = req.method.as_str().to_lowercase();
    let attrs = AuthzAttributes {
        user: req.user.username.clone(),
        groups: req.user.groups.clone(),
        verb: verb.clone(),
        non_resource_path: Some(path.to_string()),
        ..AuthzAttributes::default()
    };
    let discovery = path == "/api"
        || path == "/apis"
        || path.starts_with("/api/")
        || path.starts_with("/apis/")
        || path.starts_with("/openapi");
    let decision = if discovery && !req.user.is_anonymous() {
        AuthzDecision::Allow
    } else {
        decide(state, &attrs, &req.user)
    };
    match decision {
        AuthzDecision::Allow => Ok(()),
        AuthzDecision::Deny(_) => Err(ApiError::forbidden_path(&req.user.username, &verb, path)),
    }
}

async fn non_resource(
    state: &Arc<State>,
    req: &Req,
    path: &str,
    segments: &[&str],
) -> Result<hyper::Response<Body>, ApiError> {
    let path = if path.is_empty() { "/" } else { path };
    authorize_path(state, req, path)?;
    match segments {
        ["version"] => Ok(bytes_response(200, "application/json", version_body(), &[])),
        ["healthz" | "livez" | "readyz", ..] => Ok(bytes_response(
            200,
            "text/plain; charset=utf-8",
            b"ok".to_vec(),
            &[],
        )),
        ["api"] => discovery_root(state, req, true),
        ["apis"] => discovery_root(state, req, false),
        ["api", "v1"] => resource_list(state, "", "v1"),
        ["apis", group] => api_group(state, group),
        ["apis", group, version] => resource_list(state, group, version),
        ["openapi", "v3"] => {
            let body = serde_json::to_vec(&openapi::index(&state.registry())).unwrap_or_default();
            Ok(bytes_response(200, "text/plain; charset=utf-8", body, &[]))
        }
        ["openapi", "v3", "api", version] => openapi_doc(state, "", version),
        ["openapi", "v3", "apis", group, version] => openapi_doc(state, group, version),
        _ => Err(ApiError::page_not_found()),
    }
}

fn openapi_doc(
    state: &State,
    group: &str,
    version: &str,
) -> Result<hyper::Response<Body>, ApiError> {
    let registry = state.registry();
    if !registry.has_group_version(group, version) {
        return Err(ApiError::page_not_found());
    }
    Ok(json_response(
        200,
        &openapi::document(&registry, group, version),
        &[],
    ))
}

fn version_body() -> Vec<u8> {
    let v = json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.4-vc-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    });
    serde_json::to_vec_pretty(&v).unwrap_or_default()
}

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn discovery_root(state: &State, req: &Req, core: bool) -> Result<hyper::Response<Body>, ApiError> {
    let accept = req.accept().replace(' ', "");
    let wants_v2 = accept.contains("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList");
    let only_aggregated = !accept.is_empty()
        && accept
            .split(',')
            .all(|a| a.contains("as=APIGroupDiscoveryList"));
    let registry = state.registry();
    if !wants_v2 && only_aggregated {
        return Err(ApiError::not_acceptable(
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ));
    }
    if wants_v2 {
        let groups = registry.groups();
        let items: Vec<Value> = groups
            .iter()
            .filter(|g| (g.group.is_empty()) == core)
            .map(|g| {
                let versions: Vec<Value> = g
                    .versions
                    .iter()
                    .map(|(v, rs)| json!({"version": v, "resources": rs.iter().map(|r| r.aggregated_entry()).collect::<Vec<_>>(), "freshness": "Current"}))
                    .collect();
                let metadata = if core { json!({}) } else { json!({"name": g.group}) };
                json!({"metadata": metadata, "versions": versions})
            })
            .collect();
        let body = serde_json::to_vec(&json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})).unwrap_or_default();
        let etag = {
            use sha2::Digest as _;
            format!("\"{}\"", hex::encode_upper(sha2::Sha512::digest(&body)))
        };
        if req.header("if-none-match") == etag {
            return hyper::Response::builder()
                .status(304)
                .header("Etag", etag)
                .body(full(Vec::new()))
                .map_err(|e| ApiError::internal(e.to_string()));
        }
        return hyper::Response::builder()
            .status(200)
            .header("Content-Type", AGGREGATED_V2)
            .header("Cache-Control", "public")
            .header("Etag", etag)
            .header("Vary", "Accept")
            .body(full(body))
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    let address = state
        .server_address
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if core {
        return Ok(json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}),
            &[],
        ));
    }
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .filter(|g| !g.group.is_empty())
        .map(|g| {
            group_json(
                &g.group,
                &g.versions
                    .iter()
                    .map(|(v, _)| v.clone())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    Ok(json_response(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        &[],
    ))
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = gvs.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": gvs, "preferredVersion": preferred})
}

fn api_group(state: &State, group: &str) -> Result<hyper::Response<Body>, ApiError> {
    let registry = state.registry();
    let g = registry
        .groups()
        .into_iter()
        .find(|g| g.group == group)
        .ok_or_else(ApiError::page_not_found)?;
    let mut body = group_json(
        group,
        &g.versions
            .iter()
            .map(|(v, _)| v.clone())
            .collect::<Vec<_>>(),
    );
    if let Some(m) = body.as_object_mut() {
        let mut ordered = serde_json::Map::new();
        ordered.insert("kind".into(), json!("APIGroup"));
        ordered.insert("apiVersion".into(), json!("v1"));
        ordered.append(m);
        body = Value::Object(ordered);
    }
    Ok(json_response(200, &body, &[]))
}

fn resource_list(
    state: &State,
    group: &str,
    version: &str,
) -> Result<hyper::Response<Body>, ApiError> {
    let registry = state.registry();
    if !registry.has_group_version(group, version) {
        return Err(ApiError::page_not_found());
    }
    let resources: Vec<Value> = registry
        .groups()
        .into_iter()
        .filter(|g| g.group == group)
        .flat_map(|g| g.versions)
        .filter(|(v, _)| v == version)
        .flat_map(|(_, rs)| rs)
        .flat_map(|r| r.legacy_entries())
        .collect();
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut body = json!({"kind": "APIResourceList", "groupVersion": gv, "resources": resources});
    if !group.is_empty() {
        body["apiVersion"] = json!("v1");
    }
    Ok(json_response(200, &body, &[]))
}

/// An object as served through `rt`'s version (no conversion: same schema).
pub fn served(rt: &ResourceType, obj: &Value) -> Value {
    let mut o = obj.clone();
    if o.get("apiVersion").and_then(Value::as_str) != Some(rt.api_version().as_str()) {
        o["apiVersion"] = json!(rt.api_version());
    }
    o
}

fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({}))})
}

fn get(state: &State, req: &Req, target: &Target) -> Result<hyper::Response<Body>, ApiError> {
    let name = target.name.clone().unwrap_or_default();
    let ns = target.namespace.clone().unwrap_or_default();
    let key = (
        if target.rt.namespaced {
            ns
        } else {
            String::new()
        },
        name.clone(),
    );
    let obj = state
        .store
        .lock()
        .get(&target.rt.storage_key(), &key)
        .ok_or_else(|| ApiError::not_found(&target.rt, &name))?;
    let obj = served(&target.rt, &obj);
    if req.wants_table() {
        let rv = meta_str(&obj, "resourceVersion")
            .unwrap_or_default()
            .to_string();
        let t = table::table(
            &target.rt,
            &[&obj],
            json!({"resourceVersion": rv}),
            IncludeObject::parse(req.param("includeObject")),
            true,
        );
        return Ok(json_response(200, &t, &[]));
    }
    if req.wants_metadata() {
        return Ok(json_response(200, &partial_metadata(&obj), &[]));
    }
    Ok(json_response(200, &obj, &[]))
}

/// `{"v":"meta.k8s.io/v1","rv":N,"start":"<ns>/<name>\u0000"}`, base64url.
fn continue_token(rv: u64, last: &(String, String)) -> String {
    let start = if last.0.is_empty() {
        format!("{}\u{0}", last.1)
    } else {
        format!("{}/{}\u{0}", last.0, last.1)
    };
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn parse_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .trim_end_matches('\u{0}');
    let key = match start.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), start.to_string()),
    };
    Ok((rv, key))
}

/// Selectors of a list or watch.
pub fn selectors(req: &Req, rt: &ResourceType) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(req.param("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(
        req.param("fieldSelector").unwrap_or_default(),
        &rt.group,
        &rt.plural,
    )
    .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn list(state: &State, req: &Req, target: &Target) -> Result<hyper::Response<Body>, ApiError> {
    let rt = &target.rt;
    let (labels, fields) = selectors(req, rt)?;
    let limit: usize = req
        .param("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let ns = target.namespace.as_deref();
    let inner = state.store.lock();
    let (snapshot_rv, after) = match req.param("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, key) = parse_continue(token)?;
            if rv < inner.compacted_rv() {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            (rv, Some(key))
        }
        None => {
            if req.param("resourceVersionMatch") == Some("Exact") {
                let rv: u64 = req
                    .param("resourceVersion")
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                if rv < inner.compacted_rv() {
                    return Err(ApiError::gone(
                        "The resourceVersion for the provided list is too old.",
                    ));
                }
            }
            (inner.current_rv(), None)
        }
    };
    // Shared references: a list of 50,000 objects must not copy them.
    let mut items: Vec<std::sync::Arc<Value>> = Vec::new();
    let mut last_key = None;
    let mut more = false;
    let pinned = fields.pinned_name().map(str::to_string);
    for (key, obj) in inner.range(&rt.storage_key(), ns, after.as_ref()) {
        if pinned.as_deref().is_some_and(|n| n != key.1) {
            continue;
        }
        if !labels.matches_object(obj) || !fields.matches_object(obj) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(obj.clone());
        last_key = Some(key.clone());
    }
    drop(inner);
    let mut metadata = json!({"resourceVersion": snapshot_rv.to_string()});
    match (more, last_key) {
        (true, Some(last)) => metadata["continue"] = json!(continue_token(snapshot_rv, &last)),
        _ if rt.crd.is_some() => metadata["continue"] = json!(""),
        _ => {}
    }
    if req.wants_table() {
        let owned: Vec<Value> = items.iter().map(|o| served(rt, o)).collect();
        let refs: Vec<&Value> = owned.iter().collect();
        let t = table::table(
            rt,
            &refs,
            metadata,
            IncludeObject::parse(req.param("includeObject")),
            true,
        );
        return Ok(json_response(200, &t, &[]));
    }
    if req.wants_metadata() {
        let list = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "items": items.iter().map(|o| partial_metadata(o)).collect::<Vec<_>>()});
        return Ok(json_response(200, &list, &[]));
    }
    Ok(bytes_response(
        200,
        "application/json",
        list_body(rt, &items, &metadata),
        &[],
    ))
}

/// Writes `{"apiVersion":..,"items":[..],"kind":..,"metadata":..}` straight from the
/// stored objects (keys in the order a Value would sort them).
fn list_body(rt: &ResourceType, items: &[std::sync::Arc<Value>], metadata: &Value) -> Vec<u8> {
    let api_version = rt.api_version();
    let mut out = Vec::with_capacity(64 + items.len() * 1024);
    out.extend_from_slice(b"{\"apiVersion\":");
    let _ = serde_json::to_writer(&mut out, &api_version);
    out.extend_from_slice(b",\"items\":[");
    for (i, obj) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let same_version =
            obj.get("apiVersion").and_then(Value::as_str) == Some(api_version.as_str());
        let _ = if same_version {
            serde_json::to_writer(&mut out, obj.as_ref())
        } else {
            serde_json::to_writer(&mut out, &served(rt, obj))
        };
    }
    out.extend_from_slice(b"],\"kind\":");
    let _ = serde_json::to_writer(&mut out, &rt.list_kind);
    out.extend_from_slice(b",\"metadata\":");
    let _ = serde_json::to_writer(&mut out, metadata);
    out.push(b'}');
    out
}

fn write_ctx(req: &Req) -> Result<WriteCtx, ApiError> {
    let dry_run = match req.param("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other}; supported values: [All]"
            )));
        }
    };
    let ua = req.header("user-agent");
    let from_ua = ua.split('/').next().unwrap_or_default().to_string();
    let field_manager = req
        .param("fieldManager")
        .map(str::to_string)
        .unwrap_or(from_ua);
    let field_validation = match req.param("fieldValidation") {
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        _ => FieldValidation::Warn,
    };
    Ok(WriteCtx {
        user: req.user.clone(),
        dry_run,
        field_manager,
        field_validation,
        warnings: Arc::default(),
        internal: false,
    })
}

fn warnings(ctx: &WriteCtx) -> Vec<String> {
    ctx.warnings
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Parses a JSON or YAML request body.
fn decode_body(req: &Req, rt: &ResourceType) -> Result<Value, ApiError> {
    let ct = req
        .header("content-type")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    match ct.as_str() {
        "" | "application/json" => serde_json::from_slice(&req.body).map_err(|e| {
            let snippet: String = String::from_utf8_lossy(&req.body).chars().take(30).collect();
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: {} ({snippet} ...)",
                rt.kind,
                patch::go_json_error(&e)
            ))
        }),
        "application/vnd.kubernetes.protobuf" => super::protobuf::decode(&req.body).map_err(|m| {
            ApiError::with_code(415, Some("UnsupportedMediaType"), m)
        }),
        "application/yaml" => serde_yaml::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("the object provided is unrecognized (must be of type {}): {e}", rt.kind))),
        _ => Err(ApiError::with_code(
            415,
            Some("UnsupportedMediaType"),
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        )),
    }
}

async fn create(
    state: &Arc<State>,
    req: &Req,
    target: &Target,
) -> Result<hyper::Response<Body>, ApiError> {
    if !target.subresource.is_empty() {
        return Err(ApiError::method_not_allowed(&target.rt, "create"));
    }
    let body = decode_body(req, &target.rt)?;
    let ctx = write_ctx(req)?;
    let ns = target.namespace.clone().unwrap_or_default();
    let (code, obj) = state.create(&ctx, &target.rt, &ns, body, None).await?;
    Ok(json_response(
        code,
        &served(&target.rt, &without_rv_if_dry(&ctx, obj)),
        &warnings(&ctx),
    ))
}

fn without_rv_if_dry(ctx: &WriteCtx, mut obj: Value) -> Value {
    if ctx.dry_run
        && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.remove("resourceVersion");
    }
    obj
}

async fn update(
    state: &Arc<State>,
    req: &Req,
    target: &Target,
) -> Result<hyper::Response<Body>, ApiError> {
    let rt = &target.rt;
    let Some(name) = target.name.clone() else {
        return Err(ApiError::bad_request("name must be provided"));
    };
    let body = decode_body(req, rt)?;
    let ctx = write_ctx(req)?;
    if let Some(body_name) = meta_str(&body, "name")
        && body_name != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let ns = target.namespace.clone().unwrap_or_default();
    if rt.namespaced
        && let Some(body_ns) = meta_str(&body, "namespace").filter(|n| !n.is_empty())
        && body_ns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let has_rv = meta_str(&body, "resourceVersion").is_some_and(|s| !s.is_empty());
    if rt.crd.is_some() && !has_rv {
        let cause = super::status::Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: 0: must be specified for an update".into(),
            field: "metadata.resourceVersion".into(),
        };
        return Err(ApiError::invalid_resource(rt, &name, vec![cause]));
    }
    let (code, obj) = state
        .update(
            &ctx,
            rt,
            &ns,
            &name,
            &target.subresource,
            |_| Ok(body.clone()),
            true,
        )
        .await?;
    Ok(json_response(code, &served(rt, &obj), &warnings(&ctx)))
}

async fn patch_object(
    state: &Arc<State>,
    req: &Req,
    target: &Target,
) -> Result<hyper::Response<Body>, ApiError> {
    let rt = &target.rt;
    let Some(name) = target.name.clone() else {
        return Err(ApiError::method_not_allowed(rt, "patch"));
    };
    let ct = req.header("content-type").to_string();
    let accepted = if rt.crd.is_some() {
        patch::CR_PATCH_TYPES
    } else {
        patch::BUILTIN_PATCH_TYPES
    };
    let unsupported = || {
        ApiError::with_code(
            415,
            Some("UnsupportedMediaType"),
            format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted}"
            ),
        )
    };
    let patch_type = PatchType::from_content_type(&ct).ok_or_else(unsupported)?;
    if patch_type == PatchType::StrategicMerge && rt.crd.is_some() {
        return Err(unsupported());
    }
    let mut ctx = write_ctx(req)?;
    let ns = target.namespace.clone().unwrap_or_default();
    let body = req.body.clone();
    let result = match patch_type {
        PatchType::Apply => {
            let Some(manager) = req.param("fieldManager").map(str::to_string) else {
                return Err(ApiError::invalid_plain(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            };
            ctx.field_manager = manager.clone();
            let applied: Value = serde_yaml::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            if !applied.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding YAML: the body is not an object",
                ));
            }
            if let Some(n) = meta_str(&applied, "name")
                && n != name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            let api_version = rt.api_version();
            let now = super::state::now_rfc3339();
            let force = req.flag("force");
            let apply_req = managed::ApplyRequest {
                manager: &manager,
                api_version: &api_version,
                subresource: &target.subresource,
                force,
                now: &now,
            };
            let key = (
                if rt.namespaced {
                    ns.clone()
                } else {
                    String::new()
                },
                name.clone(),
            );
            let exists = state.store.lock().get(&rt.storage_key(), &key).is_some();
            if !exists && target.subresource.is_empty() {
                let mut obj = applied.clone();
                if let Some(meta) = super::state::meta_mut(&mut obj) {
                    meta.insert("name".into(), json!(name));
                }
                match state.create(&ctx, rt, &ns, obj, Some(&apply_req)).await {
                    Err(e) if e.reason.as_deref() == Some("AlreadyExists") => {}
                    other => {
                        let (code, obj) = other?;
                        return Ok(json_response(
                            code,
                            &served(rt, &without_rv_if_dry(&ctx, obj)),
                            &warnings(&ctx),
                        ));
                    }
                }
            }
            let sets_rv = meta_str(&applied, "resourceVersion").is_some();
            state
                .update(
                    &ctx,
                    rt,
                    &ns,
                    &name,
                    &target.subresource,
                    |cur| {
                        let mut out =
                            managed::apply(Some(cur), &applied, &apply_req, rt.status_subresource)
                                .map_err(|c| ApiError::apply_conflict(&api_version, &c))?;
                        if !sets_rv {
                            strip_rv(&mut out);
                        }
                        Ok(out)
                    },
                    false,
                )
                .await
        }
        other => {
            let sets_rv = patch_sets_rv(other, &body);
            if other == PatchType::Json {
                patch::apply_json_patch(&json!({}), &body)
                    .map(|_| ())
                    .or_else(|e| if e.code == 400 { Err(e) } else { Ok(()) })?;
            } else {
                serde_json::from_slice::<Value>(&body).map_err(|e| {
                    ApiError::bad_request(format!(
                        "error decoding patch: {}",
                        patch::go_json_error(&e)
                    ))
                })?;
            }
            state
                .update(
                    &ctx,
                    rt,
                    &ns,
                    &name,
                    &target.subresource,
                    |cur| {
                        let mut out = match other {
                            PatchType::Json => patch::apply_json_patch(cur, &body)?,
                            PatchType::Merge => patch::apply_merge_patch(cur, &body)?,
                            _ => patch::apply_strategic_merge_patch(cur, &body)?,
                        };
                        if !sets_rv {
                            strip_rv(&mut out);
                        }
                        Ok(out)
                    },
                    true,
                )
                .await
        }
    };
    let (code, obj) = result?;
    Ok(json_response(code, &served(rt, &obj), &warnings(&ctx)))
}

fn strip_rv(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
}

/// Whether a patch carries a resourceVersion (then it is a precondition).
fn patch_sets_rv(pt: PatchType, body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    match pt {
        PatchType::Json => v.as_array().is_some_and(|ops| {
            ops.iter().any(|op| {
                op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")
            })
        }),
        _ => v
            .pointer("/metadata/resourceVersion")
            .is_some_and(|r| r.is_string()),
    }
}

fn delete_options(req: &Req) -> Result<DeleteOptions, ApiError> {
    let mut raw: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    if let Some(p) = req.param("propagationPolicy") {
        raw["propagationPolicy"] = json!(p);
    }
    if let Some(g) = req
        .param("gracePeriodSeconds")
        .and_then(|g| g.parse::<i64>().ok())
    {
        raw["gracePeriodSeconds"] = json!(g);
    }
    if req.param("dryRun") == Some("All") {
        raw["dryRun"] = json!(["All"]);
    }
    Ok(DeleteOptions::from_value(&raw))
}

async fn delete(
    state: &Arc<State>,
    req: &Req,
    target: &Target,
) -> Result<hyper::Response<Body>, ApiError> {
    if !target.subresource.is_empty() {
        return Err(ApiError::method_not_allowed(&target.rt, "delete"));
    }
    let opts = delete_options(req)?;
    let mut ctx = write_ctx(req)?;
    ctx.dry_run |= opts.dry_run;
    let ns = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    let (code, obj) = state.delete(&ctx, &target.rt, &ns, &name, &opts).await?;
    let body = if obj.get("kind").and_then(Value::as_str) == Some("Status") {
        obj
    } else {
        served(&target.rt, &obj)
    };
    Ok(json_response(code, &body, &warnings(&ctx)))
}

async fn delete_collection(
    state: &Arc<State>,
    req: &Req,
    target: &Target,
) -> Result<hyper::Response<Body>, ApiError> {
    let rt = &target.rt;
    let (labels, fields) = selectors(req, rt)?;
    let opts = delete_options(req)?;
    let mut ctx = write_ctx(req)?;
    ctx.dry_run |= opts.dry_run;
    let ns = target.namespace.as_deref();
    let names: Vec<(String, String)> = {
        let inner = state.store.lock();
        inner
            .range(&rt.storage_key(), ns, None)
            .filter(|(_, obj)| labels.matches_object(obj) && fields.matches_object(obj))
            .map(|(k, _)| k.clone())
            .collect()
    };
    let mut deleted = Vec::new();
    for (obj_ns, name) in names {
        match state.delete(&ctx, rt, &obj_ns, &name, &opts).await {
            Ok((_, obj)) if obj.get("kind").and_then(Value::as_str) != Some("Status") => {
                deleted.push(served(rt, &obj))
            }
            Ok(_) | Err(_) => {}
        }
    }
    let rv = state.store.lock().current_rv();
    let body = json!({"apiVersion": rt.api_version(), "items": deleted, "kind": rt.list_kind, "metadata": {"resourceVersion": rv.to_string()}});
    Ok(json_response(200, &body, &warnings(&ctx)))
}

/// Time a watch lasts when the client does not say (the apiserver picks 30–60 min).
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = continue_token(42, &("ns".into(), "a".into()));
        assert_eq!(parse_continue(&t).unwrap(), (42, ("ns".into(), "a".into())));
        let t = continue_token(7, &(String::new(), "node1".into()));
        assert_eq!(
            parse_continue(&t).unwrap(),
            (7, (String::new(), "node1".into()))
        );
    }

    #[test]
    fn query_strings_are_percent_decoded() {
        let q = parse_query(Some(
            "fieldSelector=metadata.name%3Dx&labelSelector=a+in+%28b%29&watch=1",
        ));
        assert_eq!(q["fieldSelector"], "metadata.name=x");
        assert_eq!(q["labelSelector"], "a in (b)");
        assert_eq!(q["watch"], "1");
    }
}
