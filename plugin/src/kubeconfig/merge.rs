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

    fn marker(&self) -> Value {
        let mut extension = Mapping::new();
        extension.insert("namespace".into(), self.namespace.clone().into());
        extension.insert("name".into(), self.name.clone().into());
        let mut named = Mapping::new();
        named.insert("name".into(), MARKER_EXTENSION_NAME.into());
        named.insert("extension".into(), Value::Mapping(extension));
        Value::Mapping(named)
    }

    fn is_marked_on(&self, entry: &Value, list: NamedList) -> bool {
        marker_of(entry, list).is_some_and(|marked| &marked == self)
    }
}

/// The VirtualCluster named by an entry's marker extension, if it carries one.
pub fn marker_of(entry: &Value, list: NamedList) -> Option<VirtualClusterRef> {
    let extensions = entry
        .get(list.body_key())?
        .get("extensions")?
        .as_sequence()?;
    let extension = extensions
        .iter()
        .find(|named| named.get("name").and_then(Value::as_str) == Some(MARKER_EXTENSION_NAME))?
        .get("extension")?;
    Some(VirtualClusterRef::new(
        document::string_field(extension, "namespace")?,
        document::string_field(extension, "name")?,
    ))
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
        let user = body(NamedList::Users)?;
        if let Some(server) = server_override {
            cluster.insert("server".into(), server.into());
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

    /// The three entries, named `entry_name` and marked as belonging to `owner`.
    fn entries(&self, entry_name: &str, owner: &VirtualClusterRef) -> [(NamedList, Value); 3] {
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
            (
                list,
                named_entry(list, entry_name, with_marker(body, owner)),
            )
        })
    }
}

fn with_marker(mut body: Mapping, owner: &VirtualClusterRef) -> Mapping {
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
        extensions.push(owner.marker());
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
    for (list, entry) in credentials.entries(entry_name, owner) {
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
pub fn merge_tenant(
    document: &mut Mapping,
    credentials: &TenantCredentials,
    entry_name: &str,
    owner: &VirtualClusterRef,
    switch: bool,
) -> Result<MergeOutcome, DocumentError> {
    let mut outcome = MergeOutcome::default();
    if document.is_empty() {
        *document = document::empty_kubeconfig();
    }
    for (list, entry) in credentials.entries(entry_name, owner) {
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
        let outcome = merge_tenant(&mut document, &credentials, "vc-prod", &prod(), true).unwrap();
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
        let outcome = merge_tenant(&mut document, &credentials, "vc-prod", &prod(), false).unwrap();
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
        merge_tenant(&mut document, &credentials, "vc-prod", &prod(), true).unwrap();
        let other = VirtualClusterRef::new("team-b", "prod");
        merge_tenant(&mut document, &credentials, "vc-team-b-prod", &other, false).unwrap();

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
    fn removal_never_touches_a_hand_written_entry_of_the_same_name() {
        let mut document =
            document::parse("current-context: vc-prod\ncontexts: [{name: vc-prod, context: {cluster: c, user: u}}]\n").unwrap();
        let before = document.clone();
        let outcome = remove_tenant(&mut document, &prod());
        assert!(outcome.is_empty());
        assert_eq!(document, before);
    }
}
