//! Merging a tenant's admin kubeconfig into the user's kubeconfig, and taking it out again.
//!
//! Three promises:
//! - entries of the same name are replaced where they stand, nothing is duplicated, and every
//!   other entry, field and extension is kept as it was;
//! - each entry written carries a named extension identifying the VirtualCluster, so removal
//!   takes out exactly what was added and never an entry someone wrote by hand;
//! - the entry names come from the VirtualCluster's namespace and name (or the caller's
//!   choice), never from whatever the tenant kubeconfig happens to call itself.

use serde_yaml::{Mapping, Value};

use super::document::{self, CURRENT_CONTEXT, DocumentError, NamedList};

/// kubectl keeps `extensions` on clusters, users and contexts through its own edits, so
/// this marker survives them.
pub use vc_api::constants::KUBECONFIG_MARKER_EXTENSION as MARKER_EXTENSION_NAME;

/// The VirtualCluster an entry belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VirtualClusterRef {
    /// Namespace of the VirtualCluster on the host.
    pub namespace: String,
    /// Name of the VirtualCluster.
    pub name: String,
}

impl VirtualClusterRef {
    /// A reference from namespace and name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// `vc-NAME` in the `default` namespace and `vc-NAMESPACE-NAME` elsewhere, so two
    /// tenants of the same name in different namespaces never overwrite each other.
    pub fn default_entry_name(&self) -> String {
        if self.namespace == "default" {
            format!("vc-{}", self.name)
        } else {
            format!("vc-{}-{}", self.namespace, self.name)
        }
    }

    fn marker(&self, origin: Option<&Origin>) -> Value {
        let mut extension = Mapping::new();
        extension.insert("namespace".into(), self.namespace.clone().into());
        extension.insert("name".into(), self.name.clone().into());
        if let Some(origin) = origin {
            for (key, value) in [
                (HOST_CONTEXT_KEY, &origin.host_context),
                (PREVIOUS_CONTEXT_KEY, &origin.previous_context),
            ] {
                if let Some(value) = value {
                    extension.insert(key.into(), value.clone().into());
                }
            }
        }
        let mut named = Mapping::new();
        named.insert("name".into(), MARKER_EXTENSION_NAME.into());
        named.insert("extension".into(), Value::Mapping(extension));
        Value::Mapping(named)
    }

    fn is_marked_on(&self, entry: &Value, list: NamedList) -> bool {
        marker_of(entry, list).is_some_and(|marked| &marked == self)
    }
}

/// Key of the tenant context's marker naming the context its VirtualCluster was read through.
const HOST_CONTEXT_KEY: &str = "hostContext";
/// Key of the tenant context's marker naming `current-context` before the switch.
const PREVIOUS_CONTEXT_KEY: &str = "previousContext";

/// Where a tenant context came from, kept in its marker: `kubectl vc` commands run in a
/// tenant context talk to the host through `host_context`, and `use-context --host` goes
/// back to `previous_context`. Without it an operator who switched into a tenant has no
/// way back short of remembering the old context's name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The context the VirtualCluster was read through.
    pub host_context: Option<String>,
    /// `current-context` before `use-context` switched away from it; never a tenant
    /// context, so going back always leaves the tenants.
    pub previous_context: Option<String>,
}

fn marker_extension(entry: &Value, list: NamedList) -> Option<&Value> {
    let extensions = entry
        .get(list.body_key())?
        .get("extensions")?
        .as_sequence()?;
    extensions
        .iter()
        .find(|named| named.get("name").and_then(Value::as_str) == Some(MARKER_EXTENSION_NAME))?
        .get("extension")
}

/// The VirtualCluster named by an entry's marker extension, if it carries one.
pub fn marker_of(entry: &Value, list: NamedList) -> Option<VirtualClusterRef> {
    let extension = marker_extension(entry, list)?;
    Some(VirtualClusterRef::new(
        document::string_field(extension, "namespace")?,
        document::string_field(extension, "name")?,
    ))
}

/// The VirtualCluster and origin of the context called `context`, when `use-context`
/// wrote it.
pub fn tenant_context(document: &Mapping, context: &str) -> Option<(VirtualClusterRef, Origin)> {
    let entry = document::find_entry(document, NamedList::Contexts, context)?;
    let owner = marker_of(entry, NamedList::Contexts)?;
    let extension = marker_extension(entry, NamedList::Contexts)?;
    let field = |key| document::string_field(extension, key).map(str::to_owned);
    let origin = Origin {
        host_context: field(HOST_CONTEXT_KEY),
        previous_context: field(PREVIOUS_CONTEXT_KEY),
    };
    Some((owner, origin))
}

/// The context to remember as the one switched away from: `current` itself, or, when
/// `current` is a tenant context, the context that one was switched to from, so going
/// back from a second tenant does not land in the first.
pub fn context_before_tenants(document: &Mapping, current: &str) -> String {
    let mut context = current.to_owned();
    let mut seen = std::collections::HashSet::new();
    while seen.insert(context.clone()) {
        let Some((_, origin)) = tenant_context(document, &context) else {
            break;
        };
        match origin.previous_context.or(origin.host_context) {
            Some(before) => context = before,
            None => break,
        }
    }
    context
}

/// Why `use-context --host` cannot go back.
#[derive(Debug, thiserror::Error)]
pub enum ReturnError {
    /// `current-context` is not set.
    #[error(
        "current-context is not set, so there is no VirtualCluster context to leave; pick one with `kubectl config use-context NAME`"
    )]
    FindCurrentContext,
    /// The current context is not one `use-context` wrote.
    #[error(
        "current context \"{current}\" was not written by `kubectl vc use-context`, so kubectl-vc does not know where it came from; switch with `kubectl config use-context NAME`"
    )]
    FindTenantMarker {
        /// The current context.
        current: String,
    },
    /// The context was written before contexts recorded where they came from.
    #[error(
        "current context \"{current}\" does not record which context it came from (an older kubectl vc wrote it); switch with `kubectl config use-context NAME`, or run `kubectl vc use-context` again to record it"
    )]
    FindOrigin {
        /// The current context.
        current: String,
    },
    /// Neither remembered context exists any more.
    #[error(
        "current context \"{current}\" remembers {remembered}, missing from the kubeconfig now; switch with `kubectl config use-context NAME`"
    )]
    FindRememberedContext {
        /// The current context.
        current: String,
        /// The remembered names, for the message.
        remembered: String,
    },
}

/// The context `use-context --host` switches to from the current tenant context: the one
/// switched away from, else the host context, whichever still exists in `merged`.
pub fn way_back(merged: &Mapping) -> Result<(String, String), ReturnError> {
    let current = document::current_context(merged).ok_or(ReturnError::FindCurrentContext)?;
    let (_, origin) =
        tenant_context(merged, current).ok_or_else(|| ReturnError::FindTenantMarker {
            current: current.to_owned(),
        })?;
    let mut remembered: Vec<String> = [origin.previous_context, origin.host_context]
        .into_iter()
        .flatten()
        .collect();
    remembered.dedup();
    if remembered.is_empty() {
        return Err(ReturnError::FindOrigin {
            current: current.to_owned(),
        });
    }
    remembered
        .iter()
        .find(|name| document::find_entry(merged, NamedList::Contexts, name).is_some())
        .map(|name| (current.to_owned(), name.clone()))
        .ok_or_else(|| ReturnError::FindRememberedContext {
            current: current.to_owned(),
            remembered: remembered
                .iter()
                .map(|name| format!("context \"{name}\""))
                .collect::<Vec<_>>()
                .join(" and "),
        })
}

/// The cluster and user bodies of a tenant's admin kubeconfig. Debug output never shows
/// them: they hold the tenant's credentials.
#[derive(Clone, PartialEq)]
pub struct TenantCredentials {
    cluster: Mapping,
    user: Mapping,
    namespace: Option<String>,
}

impl std::fmt::Debug for TenantCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TenantCredentials")
            .field("server", &self.server())
            .field("user", &"<redacted>")
            .finish()
    }
}

/// Why a tenant kubeconfig cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The kubeconfig text is broken.
    #[error("the tenant kubeconfig is unusable: {0}")]
    ParseTenantKubeconfig(#[source] DocumentError),
    /// It has no context to take the cluster and user from.
    #[error("the tenant kubeconfig has no context; its current-context names none")]
    FindTenantContext,
    /// Its context names a cluster or user that it does not contain.
    #[error(
        "the tenant kubeconfig's context refers to {list} \"{name}\", which it does not contain"
    )]
    FindTenantEntry {
        /// `cluster` or `user`.
        list: &'static str,
        /// The missing name.
        name: String,
    },
    /// Its cluster has no server URL.
    #[error("the tenant kubeconfig's cluster has no server; pass --server URL")]
    FindTenantServer,
    /// It carries a field that would act on the operator's machine or weaken TLS once
    /// merged. Whoever can write the Secret or `spec.kubeconfig` chooses these fields, and
    /// that is more people than the operator trusts with their workstation.
    #[error(
        "the tenant kubeconfig's {list} sets `{field}`, which kubectl-vc never copies into your kubeconfig: {why}. A kubeconfig read from the cluster may only carry {allowed}; check who can write it, or pass --print and review the entries yourself"
    )]
    RefuseTenantField {
        /// `cluster` or `user`.
        list: &'static str,
        /// The refused field.
        field: String,
        /// What the field would do.
        why: &'static str,
        /// The fields that are accepted.
        allowed: &'static str,
    },
    /// Its server URL is not `https://`, so the credentials would cross the network in clear text.
    #[error(
        "the tenant kubeconfig's cluster server {server:?} is not an https:// URL; pass --server https://HOST:PORT"
    )]
    CheckTenantServer {
        /// The server URL as given.
        server: String,
    },
}

/// Fields of a tenant's cluster entry that are plain data: where to connect and whom to
/// trust. `extensions` is inert without an exec plugin, which users may not carry.
const ALLOWED_CLUSTER_FIELDS: &[&str] = &[
    "server",
    "certificate-authority-data",
    "tls-server-name",
    "extensions",
];
/// Fields of a tenant's user entry that are plain credentials, nothing that runs, reads a
/// local file or names another identity.
const ALLOWED_USER_FIELDS: &[&str] = &["client-certificate-data", "client-key-data", "token"];

/// What a refused field would do once in the operator's kubeconfig.
fn refusal_reason(field: &str) -> &'static str {
    match field {
        "exec" | "auth-provider" => {
            "it runs a program on your machine whenever kubectl uses the context"
        }
        "insecure-skip-tls-verify" => "it turns off verification of the server's certificate",
        "proxy-url" => "it sends your requests through a proxy the kubeconfig's writer chooses",
        "certificate-authority" | "client-certificate" | "client-key" | "tokenFile" => {
            "it makes kubectl read a file from your machine"
        }
        "as" | "as-uid" | "as-groups" | "as-user-extra" => {
            "it makes kubectl impersonate another identity"
        }
        "username" | "password" => "it sends a password over basic authentication",
        _ => "the controller never writes it",
    }
}

/// Refuses every field of `body` outside `allowed`. A `null` field is as good as absent.
fn check_fields(
    body: &Mapping,
    list: NamedList,
    allowed: &'static [&'static str],
    allowed_text: &'static str,
) -> Result<(), TenantError> {
    for (key, value) in body {
        let field = key
            .as_str()
            .map_or_else(|| format!("{key:?}"), str::to_owned);
        if value.is_null() || allowed.contains(&field.as_str()) {
            continue;
        }
        return Err(TenantError::RefuseTenantField {
            list: list.body_key(),
            why: refusal_reason(&field),
            field,
            allowed: allowed_text,
        });
    }
    Ok(())
}

impl TenantCredentials {
    /// Takes the cluster and user of the tenant kubeconfig's current context (or of its only
    /// context), optionally pointing the cluster at another server URL, such as a
    /// port-forward's `https://127.0.0.1:PORT`.
    pub fn from_kubeconfig(text: &str, server_override: Option<&str>) -> Result<Self, TenantError> {
        let tenant = document::parse(text).map_err(TenantError::ParseTenantKubeconfig)?;
        let contexts = document::entries(&tenant, NamedList::Contexts);
        let context = document::current_context(&tenant)
            .and_then(|name| document::find_body(&tenant, NamedList::Contexts, name))
            .or_else(|| contexts.first().and_then(|entry| entry.get("context")))
            .ok_or(TenantError::FindTenantContext)?;
        let body = |list: NamedList| -> Result<Mapping, TenantError> {
            let name = document::string_field(context, list.body_key()).unwrap_or_default();
            document::find_body(&tenant, list, name)
                .and_then(Value::as_mapping)
                .cloned()
                .ok_or_else(|| TenantError::FindTenantEntry {
                    list: list.body_key(),
                    name: name.to_owned(),
                })
        };
        let mut cluster = body(NamedList::Clusters)?;
        let mut user = body(NamedList::Users)?;
        let allowed = "a server URL, certificate-authority-data, tls-server-name and extensions in the cluster, and client-certificate-data, client-key-data or token in the user";
        check_fields(
            &cluster,
            NamedList::Clusters,
            ALLOWED_CLUSTER_FIELDS,
            allowed,
        )?;
        check_fields(&user, NamedList::Users, ALLOWED_USER_FIELDS, allowed)?;
        cluster.retain(|_, value| !value.is_null());
        user.retain(|_, value| !value.is_null());
        match server_override {
            Some(server) => {
                cluster.insert("server".into(), server.into());
            }
            None => {
                if let Some(server) = cluster.get("server").and_then(Value::as_str)
                    && !server.is_empty()
                    && !server.starts_with("https://")
                {
                    return Err(TenantError::CheckTenantServer {
                        server: server.to_owned(),
                    });
                }
            }
        }
        if cluster
            .get("server")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(TenantError::FindTenantServer);
        }
        let namespace = document::string_field(context, "namespace").map(str::to_owned);
        Ok(Self {
            cluster,
            user,
            namespace,
        })
    }

    /// The API server URL the entries point at.
    pub fn server(&self) -> &str {
        self.cluster
            .get("server")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The three entries, named `entry_name` and marked as belonging to `owner`; the
    /// context's marker also records `origin`.
    fn entries(
        &self,
        entry_name: &str,
        owner: &VirtualClusterRef,
        origin: Option<&Origin>,
    ) -> [(NamedList, Value); 3] {
        let mut context = Mapping::new();
        context.insert("cluster".into(), entry_name.into());
        context.insert("user".into(), entry_name.into());
        if let Some(namespace) = &self.namespace {
            context.insert("namespace".into(), namespace.clone().into());
        }
        [
            (NamedList::Clusters, self.cluster.clone()),
            (NamedList::Users, self.user.clone()),
            (NamedList::Contexts, context),
        ]
        .map(|(list, body)| {
            let origin = origin.filter(|_| list == NamedList::Contexts);
            (
                list,
                named_entry(list, entry_name, with_marker(body, owner, origin)),
            )
        })
    }
}

fn with_marker(mut body: Mapping, owner: &VirtualClusterRef, origin: Option<&Origin>) -> Mapping {
    let extensions = body
        .entry("extensions".into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !extensions.is_sequence() {
        *extensions = Value::Sequence(Vec::new());
    }
    if let Some(extensions) = extensions.as_sequence_mut() {
        extensions.retain(|named| {
            named.get("name").and_then(Value::as_str) != Some(MARKER_EXTENSION_NAME)
        });
        extensions.push(owner.marker(origin));
    }
    body
}

fn named_entry(list: NamedList, name: &str, body: Mapping) -> Value {
    let mut entry = Mapping::new();
    entry.insert("name".into(), name.into());
    entry.insert(list.body_key().into(), Value::Mapping(body));
    Value::Mapping(entry)
}

/// A kubeconfig holding only the tenant's entries, with the same names `use-context` would
/// give them, for `--print`.
pub fn standalone_kubeconfig(
    credentials: &TenantCredentials,
    entry_name: &str,
    owner: &VirtualClusterRef,
) -> Mapping {
    let mut document = document::empty_kubeconfig();
    for (list, entry) in credentials.entries(entry_name, owner, None) {
        document.insert(list.key().into(), Value::Sequence(vec![entry]));
    }
    document.insert(CURRENT_CONTEXT.into(), entry_name.into());
    document
}

/// What a merge changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Entries that existed under the same name and were replaced in place, as
    /// `cluster "vc-x"`, and whether kubectl-vc had written them.
    pub replaced: Vec<(String, bool)>,
    /// Whether `current-context` now names the new context.
    pub switched: bool,
}

impl MergeOutcome {
    /// Replaced entries that someone else wrote, worth a warning.
    pub fn replaced_foreign(&self) -> impl Iterator<Item = &str> {
        self.replaced
            .iter()
            .filter(|(_, ours)| !ours)
            .map(|(description, _)| description.as_str())
    }
}

/// Adds or replaces the tenant's cluster, user and context called `entry_name`, and points
/// `current-context` at it when `switch` is set. Every other part of `document` is kept.
/// The context records `origin`; its `previous_context` only when switching, since nothing
/// was switched away from otherwise.
pub fn merge_tenant(
    document: &mut Mapping,
    credentials: &TenantCredentials,
    entry_name: &str,
    owner: &VirtualClusterRef,
    switch: bool,
    origin: &Origin,
) -> Result<MergeOutcome, DocumentError> {
    let mut outcome = MergeOutcome::default();
    if document.is_empty() {
        *document = document::empty_kubeconfig();
    }
    let origin = Origin {
        host_context: origin.host_context.clone(),
        previous_context: origin
            .previous_context
            .clone()
            .filter(|previous| switch && previous != entry_name),
    };
    for (list, entry) in credentials.entries(entry_name, owner, Some(&origin)) {
        let entries = document::entries_mut(document, list)?;
        let existing = entries
            .iter_mut()
            .find(|candidate| document::entry_name(candidate) == Some(entry_name));
        match existing {
            Some(slot) => {
                let ours = marker_of(slot, list).is_some();
                outcome
                    .replaced
                    .push((format!("{} \"{entry_name}\"", list.body_key()), ours));
                *slot = entry;
            }
            None => entries.push(entry),
        }
    }
    if switch {
        document.insert(CURRENT_CONTEXT.into(), entry_name.into());
        outcome.switched = true;
    }
    Ok(outcome)
}

/// What a removal took out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemovalOutcome {
    /// Names of removed contexts.
    pub contexts: Vec<String>,
    /// Names of removed clusters.
    pub clusters: Vec<String>,
    /// Names of removed users.
    pub users: Vec<String>,
    /// Whether `current-context` named a removed context and was cleared.
    pub cleared_current_context: bool,
}

impl RemovalOutcome {
    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty() && self.clusters.is_empty() && self.users.is_empty()
    }
}

/// Removes every cluster, user and context marked as belonging to `owner`, whatever its name,
/// and clears `current-context` when it named one of them (as `kind delete cluster` does).
/// Entries without the marker are never touched, even when their name matches.
pub fn remove_tenant(document: &mut Mapping, owner: &VirtualClusterRef) -> RemovalOutcome {
    let mut outcome = RemovalOutcome::default();
    for list in NamedList::ALL {
        let Some(Value::Sequence(entries)) = document.get_mut(list.key()) else {
            continue;
        };
        let removed = match list {
            NamedList::Clusters => &mut outcome.clusters,
            NamedList::Users => &mut outcome.users,
            NamedList::Contexts => &mut outcome.contexts,
        };
        entries.retain(|entry| {
            let marked = owner.is_marked_on(entry, list);
            if marked {
                removed.push(document::entry_name(entry).unwrap_or_default().to_owned());
            }
            !marked
        });
    }
    if let Some(current) = document::current_context(document)
        && outcome.contexts.iter().any(|name| name == current)
    {
        document.insert(CURRENT_CONTEXT.into(), "".into());
        outcome.cleared_current_context = true;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const TENANT: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: tenant1
  cluster:
    server: https://127.100.0.7:6443
    certificate-authority-data: Q0EK
users:
- name: tenant1-admin
  user:
    client-certificate-data: Q0VSVAo=
    client-key-data: S0VZCg==
contexts:
- name: tenant1-admin@tenant1
  context: {cluster: tenant1, user: tenant1-admin}
current-context: tenant1-admin@tenant1
"#;

    fn prod() -> VirtualClusterRef {
        VirtualClusterRef::new("default", "prod")
    }

    #[test]
    fn entry_names_carry_the_namespace_outside_default() {
        assert_eq!(prod().default_entry_name(), "vc-prod");
        assert_eq!(
            VirtualClusterRef::new("team-a", "prod").default_entry_name(),
            "vc-team-a-prod"
        );
    }

    #[test]
    fn tenant_credentials_come_from_the_current_context() {
        let credentials = TenantCredentials::from_kubeconfig(TENANT, None).unwrap();
        assert_eq!(credentials.server(), "https://127.100.0.7:6443");
        assert_eq!(credentials.user["client-key-data"], "S0VZCg==");
    }

    #[test]
    fn server_override_replaces_the_endpoint() {
        let credentials =
            TenantCredentials::from_kubeconfig(TENANT, Some("https://127.0.0.1:7443")).unwrap();
        assert_eq!(credentials.server(), "https://127.0.0.1:7443");
        assert_eq!(credentials.cluster["certificate-authority-data"], "Q0EK");
    }

    #[test]
    fn debug_output_hides_credentials() {
        let credentials = TenantCredentials::from_kubeconfig(TENANT, None).unwrap();
        let debug = format!("{credentials:?}");
        assert!(!debug.contains("S0VZCg=="), "{debug}");
        assert!(debug.contains("127.100.0.7"), "{debug}");
    }

    #[test]
    fn tenant_without_server_asks_for_one() {
        let error = TenantCredentials::from_kubeconfig(
            "clusters: [{name: c, cluster: {}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n",
            None,
        )
        .unwrap_err();
        assert!(error.to_string().contains("--server URL"), "{error}");
    }

    #[test]
    fn tenant_context_naming_a_missing_user_is_refused() {
        let error = TenantCredentials::from_kubeconfig(
            "clusters: [{name: c, cluster: {server: https://x}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n",
            None,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the tenant kubeconfig's context refers to user \"u\", which it does not contain"
        );
    }

    #[test]
    fn standalone_uses_the_chosen_name_everywhere() {
        let credentials = TenantCredentials::from_kubeconfig(TENANT, None).unwrap();
        let document = standalone_kubeconfig(&credentials, "my-name", &prod());
        for list in NamedList::ALL {
            assert_eq!(document::entry_names(&document, list), ["my-name"]);
        }
        assert_eq!(document::current_context(&document), Some("my-name"));
        let context = document::find_body(&document, NamedList::Contexts, "my-name").unwrap();
        assert_eq!(context["cluster"], "my-name");
        assert_eq!(context["user"], "my-name");
    }

    #[test]
    fn merge_into_an_empty_document_writes_a_full_kubeconfig() {
        let credentials = TenantCredentials::from_kubeconfig(TENANT, None).unwrap();
        let mut document = Mapping::new();
        let outcome = merge_tenant(
            &mut document,
            &credentials,
            "vc-prod",
            &prod(),
            true,
            &Origin::default(),
        )
        .unwrap();
        assert!(outcome.switched && outcome.replaced.is_empty());
        assert_eq!(document["apiVersion"], "v1");
        assert_eq!(document["kind"], "Config");
        assert_eq!(document::current_context(&document), Some("vc-prod"));
        let cluster = document::find_entry(&document, NamedList::Clusters, "vc-prod").unwrap();
        assert_eq!(marker_of(cluster, NamedList::Clusters), Some(prod()));
    }

    #[test]
    fn merge_replaces_same_named_entries_in_place() {
        let credentials = TenantCredentials::from_kubeconfig(TENANT, None).unwrap();
        let mut document = document::parse(
            "clusters: [{name: a, cluster: {server: https://a}}, {name: vc-prod, cluster: {server: https://old}}, {name: z, cluster: {server: https://z}}]\n",
        )
        .unwrap();
        let outcome = merge_tenant(
            &mut document,
            &credentials,
            "vc-prod",
            &prod(),
            false,
            &Origin::default(),
        )
        .unwrap();
        assert_eq!(
            document::entry_names(&document, NamedList::Clusters),
            ["a", "vc-prod", "z"]
        );
        assert_eq!(
            document::find_body(&document, NamedList::Clusters, "vc-prod").unwrap()["server"],
            "https://127.100.0.7:6443"
        );
        assert_eq!(
            outcome.replaced_foreign().collect::<Vec<_>>(),
            ["cluster \"vc-prod\""]
        );
        assert!(!outcome.switched);
        assert_eq!(document::current_context(&document), None);
    }

    #[test]
    fn marker_keeps_other_extensions_of_the_tenant_cluster() {
        let tenant = TENANT.replace(
            "certificate-authority-data: Q0EK",
            "certificate-authority-data: Q0EK\n    extensions: [{name: other, extension: {a: 1}}]",
        );
        let credentials = TenantCredentials::from_kubeconfig(&tenant, None).unwrap();
        let document = standalone_kubeconfig(&credentials, "vc-prod", &prod());
        let cluster = document::find_body(&document, NamedList::Clusters, "vc-prod").unwrap();
        let names: Vec<_> = cluster["extensions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|named| named["name"].clone())
            .collect();
        assert_eq!(
            names,
            [Value::from("other"), Value::from(MARKER_EXTENSION_NAME)]
        );
    }

    #[test]
    fn removal_takes_only_marked_entries_of_this_cluster() {
        let credentials = TenantCredentials::from_kubeconfig(TENANT, None).unwrap();
        let mut document =
            document::parse("contexts: [{name: vc-other, context: {cluster: x, user: y}}]\n")
                .unwrap();
        merge_tenant(
            &mut document,
            &credentials,
            "vc-prod",
            &prod(),
            true,
            &Origin::default(),
        )
        .unwrap();
        let other = VirtualClusterRef::new("team-b", "prod");
        merge_tenant(
            &mut document,
            &credentials,
            "vc-team-b-prod",
            &other,
            false,
            &Origin::default(),
        )
        .unwrap();

        let outcome = remove_tenant(&mut document, &prod());
        assert_eq!(outcome.contexts, ["vc-prod"]);
        assert_eq!(outcome.clusters, ["vc-prod"]);
        assert_eq!(outcome.users, ["vc-prod"]);
        assert!(outcome.cleared_current_context);
        assert_eq!(document[CURRENT_CONTEXT], "");
        assert_eq!(
            document::entry_names(&document, NamedList::Contexts),
            ["vc-other", "vc-team-b-prod"]
        );
    }

    #[test]
    fn fields_that_act_on_the_operators_machine_are_refused_by_name() {
        for (list, line, field) in [
            (
                "user",
                "exec: {apiVersion: client.authentication.k8s.io/v1, command: sh}",
                "exec",
            ),
            (
                "user",
                "auth-provider: {name: oidc, config: {}}",
                "auth-provider",
            ),
            ("user", "tokenFile: /home/me/.ssh/id_ed25519", "tokenFile"),
            ("user", "client-key: /home/me/.ssh/id_ed25519", "client-key"),
            ("user", "as: system:admin", "as"),
            (
                "cluster",
                "insecure-skip-tls-verify: true",
                "insecure-skip-tls-verify",
            ),
            (
                "cluster",
                "proxy-url: http://evil.example:3128",
                "proxy-url",
            ),
            (
                "cluster",
                "certificate-authority: /etc/passwd",
                "certificate-authority",
            ),
        ] {
            let anchor = if list == "user" {
                "client-key-data: S0VZCg=="
            } else {
                "certificate-authority-data: Q0EK"
            };
            let tenant = TENANT.replace(anchor, &format!("{anchor}\n    {line}"));
            let error = TenantCredentials::from_kubeconfig(&tenant, None).unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with(&format!(
                    "the tenant kubeconfig's {list} sets `{field}`, which kubectl-vc never copies"
                )),
                "{message}"
            );
            assert!(message.contains("check who can write it"), "{message}");
        }
    }

    #[test]
    fn null_fields_are_as_good_as_absent() {
        let tenant = TENANT.replace(
            "client-key-data: S0VZCg==",
            "client-key-data: S0VZCg==\n    exec: null",
        );
        let credentials = TenantCredentials::from_kubeconfig(&tenant, None).unwrap();
        assert_eq!(credentials.user.get("exec"), None);
    }

    #[test]
    fn a_plain_http_server_is_refused_unless_overridden() {
        let tenant = TENANT.replace("https://127.100.0.7", "http://127.100.0.7");
        let error = TenantCredentials::from_kubeconfig(&tenant, None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the tenant kubeconfig's cluster server \"http://127.100.0.7:6443\" is not an https:// URL; pass --server https://HOST:PORT"
        );
        assert!(
            TenantCredentials::from_kubeconfig(&tenant, Some("https://127.0.0.1:7443")).is_ok()
        );
    }

    /// [`host_document`] after `use-context prod`, switching to it when `switch`.
    fn host_with_prod(switch: bool, origin: &Origin) -> Mapping {
        let credentials = TenantCredentials::from_kubeconfig(TENANT, None).unwrap();
        let mut document = host_document();
        merge_tenant(
            &mut document,
            &credentials,
            "vc-prod",
            &prod(),
            switch,
            origin,
        )
        .unwrap();
        document
    }

    fn host_document() -> Mapping {
        document::parse(
            "current-context: kind-host\ncontexts:\n- {name: kind-host, context: {cluster: h, user: h}}\n- {name: other, context: {cluster: h, user: h}}\nclusters: [{name: h, cluster: {server: https://h}}]\nusers: [{name: h, user: {token: t}}]\n",
        )
        .unwrap()
    }

    fn origin(host: &str, previous: &str) -> Origin {
        Origin {
            host_context: Some(host.into()),
            previous_context: Some(previous.into()),
        }
    }

    #[test]
    fn the_tenant_context_remembers_where_it_came_from_and_the_way_back() {
        let document = host_with_prod(true, &origin("kind-host", "other"));
        let (owner, remembered) = tenant_context(&document, "vc-prod").unwrap();
        assert_eq!(owner, prod());
        assert_eq!(remembered, origin("kind-host", "other"));
        // Only the context records it; cluster and user carry the plain marker.
        let cluster = document::find_body(&document, NamedList::Clusters, "vc-prod").unwrap();
        assert_eq!(
            cluster["extensions"][0]["extension"]
                .as_mapping()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            way_back(&document).unwrap(),
            ("vc-prod".into(), "other".into())
        );
    }

    #[test]
    fn from_a_second_tenant_the_way_back_skips_the_first() {
        let credentials = TenantCredentials::from_kubeconfig(TENANT, None).unwrap();
        let mut document = host_with_prod(true, &origin("kind-host", "kind-host"));
        let before = context_before_tenants(&document, "vc-prod");
        assert_eq!(before, "kind-host");
        let other = VirtualClusterRef::new("team-b", "dev");
        merge_tenant(
            &mut document,
            &credentials,
            "vc-team-b-dev",
            &other,
            true,
            &origin("kind-host", &before),
        )
        .unwrap();
        assert_eq!(way_back(&document).unwrap().1, "kind-host");
    }

    #[test]
    fn without_a_switch_nothing_was_switched_away_from() {
        let document = host_with_prod(false, &origin("kind-host", "other"));
        let (_, remembered) = tenant_context(&document, "vc-prod").unwrap();
        assert_eq!(remembered.previous_context, None);
        assert_eq!(remembered.host_context.as_deref(), Some("kind-host"));
    }

    #[test]
    fn the_way_back_falls_back_to_the_host_and_names_what_is_gone() {
        let credentials = TenantCredentials::from_kubeconfig(TENANT, None).unwrap();
        let mut document = host_with_prod(true, &origin("kind-host", "gone"));
        assert_eq!(way_back(&document).unwrap().1, "kind-host");
        merge_tenant(
            &mut document,
            &credentials,
            "vc-prod",
            &prod(),
            true,
            &origin("also-gone", "gone"),
        )
        .unwrap();
        assert_eq!(
            way_back(&document).unwrap_err().to_string(),
            "current context \"vc-prod\" remembers context \"gone\" and context \"also-gone\", missing from the kubeconfig now; switch with `kubectl config use-context NAME`"
        );
        merge_tenant(
            &mut document,
            &credentials,
            "vc-prod",
            &prod(),
            true,
            &Origin::default(),
        )
        .unwrap();
        assert!(matches!(
            way_back(&document),
            Err(ReturnError::FindOrigin { .. })
        ));
        document.insert(CURRENT_CONTEXT.into(), "other".into());
        assert!(matches!(
            way_back(&document),
            Err(ReturnError::FindTenantMarker { .. })
        ));
    }

    #[test]
    fn removal_never_touches_a_hand_written_entry_of_the_same_name() {
        let mut document =
            document::parse("current-context: vc-prod\ncontexts: [{name: vc-prod, context: {cluster: c, user: u}}]\n").unwrap();
        let before = document.clone();
        let outcome = remove_tenant(&mut document, &prod());
        assert!(outcome.is_empty());
        assert_eq!(document, before);
    }
}
