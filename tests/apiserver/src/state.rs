//! The server's shared state and the write semantics every entry point (HTTP handlers,
//! the garbage collector, `install_yaml`) goes through: metadata rules, status/spec
//! separation, generation, finalizers, CRD registration, admission, dry run.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Map, Value, json};

use super::builtin::{self, ServiceAllocator};
use super::escalation::{self, RbacWrite};
use super::hooks::{
    AdmissionAttributes, AdmissionHook, AdmissionOperation, AdmissionPhase, Authorizer, Faults,
    ServiceResolver, UserInfo, WebhookConfigs, WriteAccounting,
};
use super::managed;
use super::registry::{Registry, ResourceType, StorageKey, resource_types_of_crd};
use super::schema;
use super::status::{ApiError, Cause, field_forbidden, field_invalid};
use super::store::{CommitError, Expect, ObjectKey, Store, resource_version_of};

/// Namespaces that exist from the start, as in every cluster.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Shared server state.
#[derive(Debug)]
pub struct State {
    pub store: Store,
    pub registry: RwLock<Registry>,
    pub faults: Faults,
    pub accounting: WriteAccounting,
    pub tokens: RwLock<HashMap<String, UserInfo>>,
    pub enforce_rbac: bool,
    pub authorizer: RwLock<Option<Arc<dyn Authorizer>>>,
    pub admission: RwLock<Option<Arc<dyn AdmissionHook>>>,
    pub services: Mutex<ServiceAllocator>,
    pub gc_wake: tokio::sync::Notify,
    pub server_address: RwLock<String>,
}

/// How unknown fields are treated (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

/// Per-request write options.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    pub user: UserInfo,
    pub dry_run: bool,
    pub field_manager: String,
    pub field_validation: FieldValidation,
    /// `Warning` headers to send back.
    pub warnings: Arc<Mutex<Vec<String>>>,
    /// Skip admission and accounting (the garbage collector and namespace controller).
    pub internal: bool,
}

impl WriteCtx {
    pub fn internal(manager: &str) -> Self {
        Self {
            user: UserInfo {
                username: format!("system:serviceaccount:kube-system:{manager}"),
                groups: vec![
                    "system:serviceaccounts".into(),
                    "system:authenticated".into(),
                ],
                ..UserInfo::default()
            },
            dry_run: false,
            field_manager: manager.to_string(),
            field_validation: FieldValidation::Ignore,
            warnings: Arc::default(),
            internal: true,
        }
    }

    pub fn warn(&self, message: String) {
        self.warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(message);
    }
}

/// The answer of a write: HTTP code and body.
pub type WriteAnswer = (u16, Value);

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn new_uid() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        ["8", "9", "a", "b"][(n % 4) as usize],
        &h[17..20],
        &h[20..32]
    )
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The metadata map of an object, created when absent; None if `obj` is not an object.
pub fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let root = obj.as_object_mut()?;
    if !root.get("metadata").is_some_and(Value::is_object) {
        root.insert("metadata".into(), json!({}));
    }
    root.get_mut("metadata")?.as_object_mut()
}

fn not_an_object(rt: &ResourceType) -> ApiError {
    ApiError::bad_request(format!(
        "the object provided is unrecognized (must be of type {})",
        rt.kind
    ))
}

pub fn finalizers_of(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn is_terminating(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// Equal for the purpose of "did this write change anything": managedFields timestamps
/// and the resourceVersion are ignored.
fn same_content(a: &Value, b: &Value) -> bool {
    let norm = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            if let Some(Value::Array(entries)) = meta.get_mut("managedFields") {
                for e in entries.iter_mut() {
                    if let Some(e) = e.as_object_mut() {
                        e.remove("time");
                    }
                }
            }
        }
        v
    };
    norm(a) == norm(b)
}

fn object_key(rt: &ResourceType, ns: &str, name: &str) -> ObjectKey {
    (
        if rt.namespaced {
            ns.to_string()
        } else {
            String::new()
        },
        name.to_string(),
    )
}

/// Parsed `DeleteOptions`.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
    pub raw: Value,
}

impl DeleteOptions {
    pub fn from_value(v: &Value) -> Self {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        Self {
            propagation: s("/propagationPolicy").or_else(|| {
                v.get("orphanDependents")
                    .and_then(Value::as_bool)
                    .map(|o| if o { "Orphan" } else { "Background" }.to_string())
            }),
            precondition_uid: s("/preconditions/uid"),
            precondition_rv: s("/preconditions/resourceVersion"),
            dry_run: v
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All")),
            raw: v.clone(),
        }
    }
}

impl State {
    /// Whether `object` names an owner that is not stored: only such a dependent gives the
    /// garbage collector work at its creation.
    fn has_absent_owner(&self, object: &Value) -> bool {
        let Some(owners) = object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
        else {
            return false;
        };
        let store = self.store.lock();
        owners.iter().any(|owner| {
            owner
                .get("uid")
                .and_then(Value::as_str)
                .is_none_or(|uid| !store.contains_uid(uid))
        })
    }

    pub fn registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn admission_hook(&self) -> Option<Arc<dyn AdmissionHook>> {
        self.admission
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Webhook configurations as stored now.
    pub fn webhook_configs(&self) -> WebhookConfigs {
        let inner = self.store.lock();
        let list = |plural: &str| -> Vec<Value> {
            let key = StorageKey {
                group: "admissionregistration.k8s.io".into(),
                plural: plural.into(),
            };
            inner
                .range(&key, None, None)
                .map(|(_, v)| (**v).clone())
                .collect()
        };
        WebhookConfigs {
            mutating: list("mutatingwebhookconfigurations"),
            validating: list("validatingwebhookconfigurations"),
        }
    }

    /// Resolves a webhook `service` reference through the Service's EndpointSlices (or
    /// Endpoints) to `https://IP:PORT/PATH`.
    pub fn service_resolver(self: &Arc<Self>) -> ServiceResolver {
        let state = Arc::downgrade(self);
        Arc::new(move |ns: &str, name: &str, port: i32, path: &str| {
            let state = state.upgrade()?;
            let inner = state.store.lock();
            let svc_key = StorageKey {
                group: String::new(),
                plural: "services".into(),
            };
            let svc = inner.get(&svc_key, &(ns.to_string(), name.to_string()))?;
            let svc_port = svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .and_then(|ps| {
                    ps.iter()
                        .find(|p| p.get("port").and_then(Value::as_i64) == Some(i64::from(port)))
                        .cloned()
                });
            let target = svc_port
                .as_ref()
                .and_then(|p| p.get("targetPort"))
                .and_then(Value::as_i64)
                .unwrap_or(i64::from(port));
            let slices = StorageKey {
                group: "discovery.k8s.io".into(),
                plural: "endpointslices".into(),
            };
            for (_, slice) in inner.range(&slices, Some(ns), None) {
                if slice
                    .pointer("/metadata/labels/kubernetes.io~1service-name")
                    .and_then(Value::as_str)
                    != Some(name)
                {
                    continue;
                }
                let ip = slice
                    .pointer("/endpoints/0/addresses/0")
                    .and_then(Value::as_str);
                let slice_port = slice
                    .pointer("/ports/0/port")
                    .and_then(Value::as_i64)
                    .unwrap_or(target);
                if let Some(ip) = ip {
                    return Some(format!("https://{ip}:{slice_port}{path}"));
                }
            }
            let endpoints = StorageKey {
                group: String::new(),
                plural: "endpoints".into(),
            };
            let ep = inner.get(&endpoints, &(ns.to_string(), name.to_string()))?;
            let ip = ep
                .pointer("/subsets/0/addresses/0/ip")
                .and_then(Value::as_str)?;
            let ep_port = ep
                .pointer("/subsets/0/ports/0/port")
                .and_then(Value::as_i64)
                .unwrap_or(target);
            Some(format!("https://{ip}:{ep_port}{path}"))
        })
    }

    async fn run_admission(
        self: &Arc<Self>,
        ctx: &WriteCtx,
        phase: AdmissionPhase,
        attrs: &AdmissionAttributes,
    ) -> Result<Option<Value>, ApiError> {
        if ctx.internal {
            return Ok(None);
        }
        let Some(hook) = self.admission_hook() else {
            return Ok(None);
        };
        let configs = self.webhook_configs();
        if configs.mutating.is_empty() && configs.validating.is_empty() {
            return Ok(None);
        }
        let mut attrs = attrs.clone();
        attrs.namespace_labels = self.namespace_labels(&attrs);
        let result = hook
            .admit(phase, &attrs, &configs, self.service_resolver())
            .await?;
        for w in result.warnings {
            ctx.warn(w);
        }
        Ok(result.object)
    }

    fn namespace_labels(&self, attrs: &AdmissionAttributes) -> BTreeMap<String, String> {
        if attrs.group.is_empty()
            && attrs.resource == "namespaces"
            && let Some(obj) = attrs.object.as_ref().or(attrs.old_object.as_ref())
        {
            return super::selectors::labels_of(obj);
        }
        if attrs.namespace.is_empty() {
            return BTreeMap::new();
        }
        let key = StorageKey {
            group: String::new(),
            plural: "namespaces".into(),
        };
        let ns = self
            .store
            .lock()
            .get(&key, &(String::new(), attrs.namespace.clone()));
        ns.map(|n| super::selectors::labels_of(&n))
            .unwrap_or_default()
    }

    fn namespace_check(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        let key = StorageKey {
            group: String::new(),
            plural: "namespaces".into(),
        };
        let namespace = self
            .store
            .lock()
            .get(&key, &(String::new(), ns.to_string()));
        match namespace {
            None => Err(ApiError::namespace_not_found(ns)),
            Some(n) if is_terminating(&n) => {
                let mut e = ApiError::forbidden(
                    rt,
                    Some(name),
                    &format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    ),
                );
                if let super::status::DetailsShape::Filled(d) = &mut e.details {
                    d.causes.push(Cause {
                        reason: "NamespaceTerminating".into(),
                        message: format!("namespace {ns} is being terminated"),
                        field: "metadata.namespace".into(),
                    });
                }
                Err(e)
            }
            Some(_) => Ok(()),
        }
    }

    /// Prune, default and validate a custom resource; built-ins get their kind's rules.
    fn normalise(
        &self,
        ctx: &WriteCtx,
        rt: &ResourceType,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        let name = meta_str(obj, "name").unwrap_or_default().to_string();
        let Some(crd) = &rt.crd else {
            builtin::prepare_update(rt, obj);
            return Ok(());
        };
        let Some(schema) = &crd.schema else {
            return Ok(());
        };
        let mut pruned = Vec::new();
        schema::prune(obj, schema, "", &mut pruned);
        if !pruned.is_empty() {
            match ctx.field_validation {
                FieldValidation::Strict => {
                    let list: Vec<String> = pruned
                        .iter()
                        .map(|p| format!("unknown field \"{p}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        rt.kind,
                        rt.version,
                        rt.kind,
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    for p in pruned {
                        ctx.warn(format!("unknown field \"{p}\""));
                    }
                }
                FieldValidation::Ignore => {}
            }
        }
        schema::apply_defaults(obj, schema);
        let mut causes = Vec::new();
        schema::validate(obj, schema, "", &mut causes);
        schema::validate_list_types(obj, schema, "", &mut causes);
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(rt, &name, causes))
        }
    }

    /// Creates an object (POST, or an apply/update that creates).
    pub async fn create(
        self: &Arc<Self>,
        ctx: &WriteCtx,
        rt: &Arc<ResourceType>,
        ns: &str,
        mut obj: Value,
        apply_manager: Option<&managed::ApplyRequest<'_>>,
    ) -> Result<WriteAnswer, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {})",
                rt.kind
            )));
        }
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        let invalid_mounts = builtin::validate_pod_volume_mounts(rt, &obj);
        let Some(meta) = meta_mut(&mut obj) else {
            return Err(not_an_object(rt));
        };
        if rt.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty()
            && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        {
            let suffix: String = (0..5)
                .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rand::random_range(0..27)]))
                .collect();
            name = format!("{prefix}{suffix}");
            meta.insert("name".into(), json!(name));
        }
        if name.is_empty() {
            return Err(ApiError::invalid(
                rt,
                "",
                vec![super::status::field_required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        if let Some(cause) = builtin::validate_name(rt, &name) {
            return Err(ApiError::invalid(rt, &name, vec![cause]));
        }
        if !invalid_mounts.is_empty() {
            return Err(ApiError::invalid(rt, &name, invalid_mounts));
        }
        for server_field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(server_field);
        }
        if !ctx.internal || meta.get("uid").is_none() {
            meta.insert("uid".into(), json!(new_uid()));
        }
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        if builtin::tracks_generation(rt) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        self.namespace_check(rt, ns, &name)?;
        if rt.crd.is_some()
            && rt.status_subresource
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        builtin::prepare_create(rt, &mut obj);
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            default_crd(&mut obj);
            resource_types_of_crd(&obj).map_err(|m| {
                ApiError::invalid(rt, &name, vec![field_invalid("spec", &Value::Null, &m)])
            })?;
        }
        self.normalise(ctx, rt, &mut obj)?;
        let now = now_rfc3339();
        match apply_manager {
            Some(req) => {
                if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("managedFields");
                }
                let mut applied = obj.clone();
                if let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.retain(|k, _| {
                        matches!(
                            k.as_str(),
                            "name"
                                | "namespace"
                                | "labels"
                                | "annotations"
                                | "finalizers"
                                | "ownerReferences"
                        )
                    });
                }
                let fields = managed::field_tree(&applied, rt.status_subresource);
                let entry = managed::Entry {
                    manager: req.manager.to_string(),
                    operation: "Apply".into(),
                    api_version: rt.api_version(),
                    subresource: String::new(),
                    time: now.clone(),
                    fields,
                };
                managed::set_entries(&mut obj, &[entry]);
            }
            None => {
                if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("managedFields");
                }
                managed::record_update(
                    None,
                    &mut obj,
                    &ctx.field_manager,
                    &rt.api_version(),
                    "",
                    &now,
                    rt.status_subresource,
                );
            }
        }
        let mut attrs = self.admission_attrs(ctx, rt, AdmissionOperation::Create, "", ns, &name, Some(strip_for_mutation(&obj)), None, json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": ctx.field_manager}));
        if let Some(mutated) = self
            .run_admission(ctx, AdmissionPhase::Mutating, &attrs)
            .await?
        {
            merge_mutation(&mut obj, mutated);
            self.normalise(ctx, rt, &mut obj)?;
        }
        let write = RbacWrite {
            rt,
            namespace: ns,
            url_name: if apply_manager.is_some() { &name } else { "" },
            object: &obj,
            old: None,
        };
        escalation::confirm_no_escalation(self, ctx, &write)?;
        attrs.object = Some(obj.clone());
        self.run_admission(ctx, AdmissionPhase::Validating, &attrs)
            .await?;
        if rt.group.is_empty() && rt.plural == "services" {
            let mut alloc = self
                .services
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            alloc
                .prepare_service(&mut obj, None)
                .map_err(|causes| ApiError::invalid(rt, &name, causes))?;
            if ctx.dry_run {
                alloc.release(&obj);
            }
        }
        if ctx.dry_run {
            return Ok((201, obj));
        }
        let key = object_key(rt, ns, &name);
        let stored =
            match self
                .store
                .commit(&rt.storage_key(), &key, Expect::Absent, Some(obj.clone()))
            {
                Ok(stored) => stored,
                Err(_) => {
                    if rt.group.is_empty() && rt.plural == "services" {
                        self.services
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .release(&obj);
                    }
                    return Err(ApiError::already_exists(rt, &name));
                }
            };
        self.after_write(ctx, rt, "");
        if self.has_absent_owner(&obj) {
            // The garbage collector also deletes dependents created for absent owners;
            // waking it for every owned object would rescan the whole store per create.
            self.gc_wake.notify_one();
        }
        let stored = stored.map(|s| (*s).clone()).unwrap_or(obj);
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            self.establish_crd(&name);
        }
        Ok((201, stored))
    }

    fn after_write(&self, ctx: &WriteCtx, rt: &ResourceType, subresource: &str) {
        if !ctx.internal {
            let resource = if subresource.is_empty() {
                rt.plural.clone()
            } else {
                format!("{}/{subresource}", rt.plural)
            };
            self.accounting.write(&ctx.user.username, &resource);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn admission_attrs(
        &self,
        ctx: &WriteCtx,
        rt: &ResourceType,
        op: AdmissionOperation,
        subresource: &str,
        ns: &str,
        name: &str,
        object: Option<Value>,
        old_object: Option<Value>,
        options: Value,
    ) -> AdmissionAttributes {
        AdmissionAttributes {
            operation: op,
            group: rt.group.clone(),
            version: rt.version.clone(),
            kind: rt.kind.clone(),
            resource: rt.plural.clone(),
            subresource: subresource.to_string(),
            name: name.to_string(),
            namespace: if rt.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            user: ctx.user.clone(),
            object,
            old_object,
            dry_run: ctx.dry_run,
            options,
            namespace_labels: BTreeMap::new(),
        }
    }

    /// Read-modify-write of an existing object. `mutate` turns the current object into
    /// the desired one; `precondition` is the resourceVersion the client sent, if any.
    #[allow(clippy::too_many_arguments)]
    pub async fn update<F>(
        self: &Arc<Self>,
        ctx: &WriteCtx,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        subresource: &str,
        mutate: F,
        track_update: bool,
    ) -> Result<WriteAnswer, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
        let key = object_key(rt, ns, name);
        for _attempt in 0..8 {
            let Some(current) = self.store.lock().get(&rt.storage_key(), &key) else {
                return Err(ApiError::not_found(rt, name));
            };
            let current_rv = resource_version_of(&current);
            let mut desired = mutate(&current)?;
            if !desired.is_object() {
                return Err(ApiError::bad_request(format!(
                    "the object provided is unrecognized (must be of type {})",
                    rt.kind
                )));
            }
            let sent_rv = meta_str(&desired, "resourceVersion")
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            if let Some(sent) = &sent_rv
                && sent.parse::<u64>().ok() != Some(current_rv)
            {
                return Err(ApiError::conflict(rt, name));
            }
            let mut new = self.prepare_update(ctx, rt, &current, &mut desired, subresource)?;
            if track_update {
                managed::record_update(
                    Some(&current),
                    &mut new,
                    &ctx.field_manager,
                    &rt.api_version(),
                    subresource,
                    &now_rfc3339(),
                    rt.status_subresource,
                );
            }
            if same_content(&current, &new) {
                return Ok((200, (*current).clone()));
            }
            let attrs_options = json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": ctx.field_manager});
            let mut attrs = self.admission_attrs(
                ctx,
                rt,
                AdmissionOperation::Update,
                subresource,
                ns,
                name,
                Some(new.clone()),
                Some((*current).clone()),
                attrs_options,
            );
            if let Some(mutated) = self
                .run_admission(ctx, AdmissionPhase::Mutating, &attrs)
                .await?
            {
                merge_mutation(&mut new, mutated);
                self.normalise(ctx, rt, &mut new)?;
            }
            let write = RbacWrite {
                rt,
                namespace: ns,
                url_name: name,
                object: &new,
                old: Some(&current),
            };
            escalation::confirm_no_escalation(self, ctx, &write)?;
            attrs.object = Some(new.clone());
            self.run_admission(ctx, AdmissionPhase::Validating, &attrs)
                .await?;
            if ctx.dry_run {
                return Ok((200, new));
            }
            let final_delete = is_terminating(&new)
                && finalizers_of(&new).is_empty()
                && !namespace_holds(rt, &new);
            let commit = if final_delete {
                self.store
                    .commit(&rt.storage_key(), &key, Expect::Version(current_rv), None)
            } else {
                self.store.commit(
                    &rt.storage_key(),
                    &key,
                    Expect::Version(current_rv),
                    Some(new.clone()),
                )
            };
            match commit {
                Ok(stored) => {
                    self.after_write(ctx, rt, subresource);
                    if final_delete {
                        self.on_deleted(rt, &current);
                        self.gc_wake.notify_one();
                        return Ok((200, new));
                    }
                    if is_terminating(&new) {
                        self.gc_wake.notify_one();
                    }
                    if rt.group == "apiextensions.k8s.io"
                        && rt.plural == "customresourcedefinitions"
                        && subresource.is_empty()
                    {
                        self.establish_crd(name);
                    }
                    return Ok((200, stored.map(|s| (*s).clone()).unwrap_or(new)));
                }
                Err(CommitError::Missing) => return Err(ApiError::not_found(rt, name)),
                Err(_) if sent_rv.is_some() => return Err(ApiError::conflict(rt, name)),
                Err(_) => continue,
            }
        }
        Err(ApiError::conflict(rt, name))
    }

    /// The object an update stores: server-owned metadata kept, spec or status taken
    /// from the right place, generation bumped on spec changes, finalizer rules checked.
    fn prepare_update(
        &self,
        ctx: &WriteCtx,
        rt: &ResourceType,
        current: &Value,
        desired: &mut Value,
        subresource: &str,
    ) -> Result<Value, ApiError> {
        let name = meta_str(current, "name").unwrap_or_default().to_string();
        let mut new = if subresource == "status" {
            let mut n = current.clone();
            match desired.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(m) = n.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(mf) = desired.pointer("/metadata/managedFields")
                && let Some(meta) = meta_mut(&mut n)
            {
                meta.insert("managedFields".into(), mf.clone());
            }
            n
        } else {
            let mut n = desired.clone();
            if rt.status_subresource {
                match current.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            n
        };
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        let cur_meta = current
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        {
            let Some(meta) = meta_mut(&mut new) else {
                return Err(not_an_object(rt));
            };
            if meta
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n != name)
            {
                let given = meta
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match cur_meta.get(field) {
                    Some(v) => {
                        meta.insert(field.to_string(), v.clone());
                    }
                    None => {
                        meta.remove(field);
                    }
                }
            }
            if meta.get("generateName").is_none()
                && let Some(g) = cur_meta.get("generateName")
            {
                meta.insert("generateName".into(), g.clone());
            }
            for field in [
                "labels",
                "annotations",
                "finalizers",
                "ownerReferences",
                "managedFields",
            ] {
                if meta.get(field).is_some_and(|v| {
                    v.is_null()
                        || v.as_object().is_some_and(Map::is_empty)
                        || v.as_array().is_some_and(Vec::is_empty)
                }) {
                    meta.remove(field);
                }
            }
        }
        if is_terminating(current) {
            let old_f = finalizers_of(current);
            let added: Vec<String> = finalizers_of(&new)
                .into_iter()
                .filter(|f| !old_f.contains(f))
                .collect();
            if !added.is_empty() {
                let list = added
                    .iter()
                    .map(|f| format!("{f:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let cause = field_forbidden(
                    "metadata.finalizers",
                    &format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}"
                    ),
                );
                return Err(ApiError::invalid(rt, &name, vec![cause.clone(), cause]));
            }
        }
        if rt.group.is_empty() && rt.plural == "services" && subresource.is_empty() {
            let mut alloc = self
                .services
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            alloc
                .prepare_service(&mut new, Some(current))
                .map_err(|causes| ApiError::invalid(rt, &name, causes))?;
        }
        if rt.group.is_empty() && rt.plural == "namespaces" && subresource.is_empty() {
            // spec.finalizers are only changed through /finalize (or by us).
            if let Some(spec) = current.get("spec") {
                new["spec"] = spec.clone();
            }
        }
        self.normalise(ctx, rt, &mut new)?;
        if builtin::tracks_generation(rt) && builtin::spec_changed(current, &new) {
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            if let Some(meta) = meta_mut(&mut new) {
                meta.insert("generation".into(), json!(generation));
            }
        }
        Ok(new)
    }

    /// DELETE of one object.
    pub async fn delete(
        self: &Arc<Self>,
        ctx: &WriteCtx,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<WriteAnswer, ApiError> {
        let key = object_key(rt, ns, name);
        for _attempt in 0..8 {
            let Some(current) = self.store.lock().get(&rt.storage_key(), &key) else {
                return Err(ApiError::not_found(rt, name));
            };
            let current_rv = resource_version_of(&current);
            if let Some(uid) = &opts.precondition_uid
                && meta_str(&current, "uid") != Some(uid.as_str())
            {
                let msg = format!(
                    "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                    meta_str(&current, "uid").unwrap_or_default()
                );
                return Err(ApiError::precondition_conflict(rt, name, &msg));
            }
            if let Some(rv) = &opts.precondition_rv
                && rv.parse::<u64>().ok() != Some(current_rv)
            {
                let msg = format!(
                    "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({current_rv}). The object might have been modified"
                );
                return Err(ApiError::precondition_conflict(rt, name, &msg));
            }
            let options = {
                let mut o = opts.raw.clone();
                if !o.is_object() {
                    o = json!({});
                }
                o["kind"] = json!("DeleteOptions");
                o["apiVersion"] = json!("meta.k8s.io/v1");
                o
            };
            let attrs = self.admission_attrs(
                ctx,
                rt,
                AdmissionOperation::Delete,
                "",
                ns,
                name,
                None,
                Some((*current).clone()),
                options,
            );
            self.run_admission(ctx, AdmissionPhase::Mutating, &attrs)
                .await?;
            self.run_admission(ctx, AdmissionPhase::Validating, &attrs)
                .await?;
            if is_terminating(&current) {
                return Ok((200, (*current).clone()));
            }
            let mut finalizers = finalizers_of(&current);
            let policy = opts.propagation.as_deref().unwrap_or("Background");
            let has_dependents = self.has_dependents(meta_str(&current, "uid").unwrap_or_default());
            match policy {
                "Foreground" if has_dependents => finalizers.push("foregroundDeletion".into()),
                "Orphan" if has_dependents => finalizers.push("orphan".into()),
                _ => {}
            }
            let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
            if finalizers.is_empty() && !is_namespace {
                if ctx.dry_run {
                    return Ok((200, success_status(rt, name, meta_str(&current, "uid"))));
                }
                match self
                    .store
                    .commit(&rt.storage_key(), &key, Expect::Version(current_rv), None)
                {
                    Ok(_) => {
                        self.after_write(ctx, rt, "");
                        self.on_deleted(rt, &current);
                        self.gc_wake.notify_one();
                        return Ok((200, success_status(rt, name, meta_str(&current, "uid"))));
                    }
                    Err(CommitError::Missing) => return Err(ApiError::not_found(rt, name)),
                    Err(_) => continue,
                }
            }
            let mut marked = (*current).clone();
            if let Some(meta) = meta_mut(&mut marked) {
                meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                if !finalizers.is_empty() {
                    meta.insert("finalizers".into(), json!(finalizers));
                }
                if builtin::tracks_generation(rt) {
                    let g = meta.get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
                    meta.insert("generation".into(), json!(g));
                }
            }
            if is_namespace {
                marked["status"] = json!({"phase": "Terminating"});
            }
            if ctx.dry_run {
                return Ok((200, marked));
            }
            match self.store.commit(
                &rt.storage_key(),
                &key,
                Expect::Version(current_rv),
                Some(marked.clone()),
            ) {
                Ok(stored) => {
                    self.after_write(ctx, rt, "");
                    self.gc_wake.notify_one();
                    return Ok((200, stored.map(|s| (*s).clone()).unwrap_or(marked)));
                }
                Err(CommitError::Missing) => return Err(ApiError::not_found(rt, name)),
                Err(_) => continue,
            }
        }
        Err(ApiError::conflict(rt, name))
    }

    fn has_dependents(&self, uid: &str) -> bool {
        if uid.is_empty() {
            return false;
        }
        let inner = self.store.lock();
        inner.buckets().any(|(_, bucket)| {
            bucket.values().any(|obj| {
                obj.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                    })
            })
        })
    }

    /// Side effects of an object leaving the store.
    fn on_deleted(&self, rt: &ResourceType, obj: &Value) {
        if rt.group.is_empty() && rt.plural == "services" {
            self.services
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .release(obj);
        }
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            let name = meta_str(obj, "name").unwrap_or_default().to_string();
            let types = resource_types_of_crd(obj).unwrap_or_default();
            if let Some(first) = types.first() {
                self.remove_all(&first.storage_key());
            }
            self.registry
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .set_crd(&name, Vec::new());
        }
    }

    fn remove_all(&self, key: &StorageKey) {
        let keys: Vec<ObjectKey> = self
            .store
            .lock()
            .range(key, None, None)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let _gone = self
                .store
                .commit(key, &k, Expect::Version(0), None)
                .or_else(|_| {
                    let rv = self
                        .store
                        .lock()
                        .get(key, &k)
                        .map(|o| resource_version_of(&o))
                        .unwrap_or(0);
                    self.store.commit(key, &k, Expect::Version(rv), None)
                });
        }
    }

    /// Registers a CRD's resources and marks it Established, as the apiextensions
    /// controllers do right after the create.
    pub fn establish_crd(&self, name: &str) {
        let Some(crd_rt) =
            self.registry()
                .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        else {
            return;
        };
        let key = (String::new(), name.to_string());
        let Some(crd) = self.store.lock().get(&crd_rt.storage_key(), &key) else {
            return;
        };
        if is_terminating(&crd) {
            return;
        }
        let Ok(types) = resource_types_of_crd(&crd) else {
            return;
        };
        self.registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .set_crd(name, types);
        let mut updated = (*crd).clone();
        let now = now_rfc3339();
        let names = crd
            .pointer("/spec/names")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let condition = |t: &str, reason: &str, message: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
        let existing_conditions = crd.pointer("/status/conditions").cloned();
        let stored_versions: Vec<Value> = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .filter_map(|v| v.get("name").cloned())
            .collect();
        let conditions = match existing_conditions {
            Some(c @ Value::Array(_)) => c,
            _ => json!([
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition(
                    "Established",
                    "InitialNamesAccepted",
                    "the initial names have been accepted"
                ),
            ]),
        };
        updated["status"] = json!({"conditions": conditions, "acceptedNames": names, "storedVersions": stored_versions});
        if same_content(&crd, &updated) {
            return;
        }
        managed::record_update(
            Some(&crd),
            &mut updated,
            "kube-apiserver",
            "apiextensions.k8s.io/v1",
            "status",
            &now,
            true,
        );
        let _raced = self.store.commit(
            &crd_rt.storage_key(),
            &key,
            Expect::Version(resource_version_of(&crd)),
            Some(updated),
        );
    }
}

/// A namespace stays while its `spec.finalizers` (the namespace controller's) remain.
fn namespace_holds(rt: &ResourceType, obj: &Value) -> bool {
    rt.group.is_empty()
        && rt.plural == "namespaces"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

/// Mutating webhooks see a CREATE object without uid, creationTimestamp, generation.
fn strip_for_mutation(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in ["uid", "creationTimestamp", "generation"] {
            meta.remove(f);
        }
    }
    o
}

/// Takes a mutated object from admission, keeping server-owned metadata.
fn merge_mutation(obj: &mut Value, mutated: Value) {
    let keep: Vec<(String, Value)> = [
        "uid",
        "creationTimestamp",
        "generation",
        "resourceVersion",
        "deletionTimestamp",
    ]
    .iter()
    .filter_map(|f| {
        obj.pointer(&format!("/metadata/{f}"))
            .map(|v| ((*f).to_string(), v.clone()))
    })
    .collect();
    *obj = mutated;
    if let Some(meta) = meta_mut(obj) {
        for (k, v) in keep {
            meta.insert(k, v);
        }
    }
}

/// `Status{Success}` of a delete that removed the object right away.
pub fn success_status(rt: &ResourceType, name: &str, uid: Option<&str>) -> Value {
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !rt.group.is_empty() {
        details.insert("group".into(), json!(rt.group));
    }
    details.insert("kind".into(), json!(rt.plural));
    if let Some(uid) = uid {
        details.insert("uid".into(), json!(uid));
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

/// The defaults the apiserver fills in a new CRD.
fn default_crd(crd: &mut Value) {
    if crd.pointer("/spec/conversion").is_none() {
        crd["spec"]["conversion"] = json!({"strategy": "None"});
    }
    if let Some(names) = crd
        .pointer_mut("/spec/names")
        .and_then(Value::as_object_mut)
    {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        names
            .entry("listKind")
            .or_insert_with(|| json!(format!("{kind}List")));
        names
            .entry("singular")
            .or_insert_with(|| json!(kind.to_lowercase()));
    }
    crd["status"] = json!({"conditions": null, "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": []});
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    crd["status"]["storedVersions"] = json!(stored);
}
