//! Reaches the tenant apiserver with the admin credential once it is rolled out, then
//! publishes the admin kubeconfig (Secret and `spec.kubeconfig`).

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use vc_api::VirtualCluster;
use vc_api::constants::KUBECONFIG_SECRET_KEY;

use super::control_plane::ControlPlaneReport;
use super::events::Changes;
use super::objects::{ObjectError, apply_object, cached, in_place};
use crate::context::Context;
use crate::error::Step;
use crate::pki::{CaKind, LeafKind, PkiMaterial};
use crate::resources::{self, DesiredState, Observed, Tenant};
use crate::tenant;

/// Why the tenant could not be reached or its admin kubeconfig not published.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The controller's own admin kubeconfig could not be rendered.
    #[error("failed to render the admin kubeconfig")]
    Render {
        /// What the YAML writer refused.
        #[source]
        source: serde_yaml::Error,
    },

    /// No client of the tenant apiserver could be built.
    #[error("failed to reach the tenant apiserver")]
    Reach {
        /// What failed.
        #[source]
        source: crate::tenant::Error,
    },

    /// The admin kubeconfig Secret could not be applied.
    #[error(transparent)]
    Secret(#[from] ObjectError),

    /// `spec.kubeconfig` could not be written.
    #[error("failed to write spec.kubeconfig")]
    WriteSpec {
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The object that was not applied, when this is about one.
    pub(crate) fn object(&self) -> Option<&ObjectError> {
        match self {
            Error::Secret(object) => Some(object),
            _ => None,
        }
    }
}

/// How far the tenant apiserver could be reached.
pub(super) enum Reach {
    /// Its Service has no cluster IP yet.
    NoClusterIp,
    /// Its Deployment is not rolled out.
    Rolling,
    /// It did not answer `/readyz`: why.
    NotReady(String),
    /// It answers; the client holds the admin credential.
    Ready {
        /// A client of the tenant apiserver.
        client: kube::Client,
        /// The endpoint it answered at.
        endpoint: String,
    },
}

impl Reach {
    /// A client of the tenant apiserver, once it answers.
    pub(super) fn client(&self) -> Option<&kube::Client> {
        match self {
            Reach::Ready { client, .. } => Some(client),
            _ => None,
        }
    }
}

/// Once the apiserver is rolled out, asks its `/readyz` with the admin credential.
pub(super) async fn reach_tenant(
    tenant: &Tenant,
    observed: &Observed,
    material: &PkiMaterial,
    control_plane: &ControlPlaneReport,
    ctx: &Context,
) -> Result<Reach, Error> {
    let Some(cluster_ip) = observed.apiserver_cluster_ip else {
        return Ok(Reach::NoClusterIp);
    };
    if !control_plane.apiserver_rolled_out {
        return Ok(Reach::Rolling);
    }
    let (endpoint, yaml) = probe_kubeconfig(tenant, cluster_ip, material)?;
    let client = ctx
        .tenants
        .get(&tenant.uid, &yaml, ctx.timing.tenant_timeout)
        .await
        .map_err(|source| Error::Reach { source })?;
    Ok(match tenant::probe_ready(&client, &endpoint).await {
        Ok(()) => Reach::Ready { client, endpoint },
        Err(error) => Reach::NotReady(crate::error::report(&error)),
    })
}

/// The admin kubeconfig the controller itself uses: the cluster IP endpoint.
fn probe_kubeconfig(
    tenant: &Tenant,
    cluster_ip: IpAddr,
    material: &PkiMaterial,
) -> Result<(String, String), Error> {
    let endpoint = resources::secrets::https_url(&cluster_ip.to_string());
    let admin = material.leaf(LeafKind::Admin);
    let yaml = crate::pki::kubeconfig::render_client_certificate_kubeconfig(
        &tenant.name,
        &endpoint,
        &material.ca(CaKind::Cluster).cert_pem,
        "kubernetes-admin",
        &admin.cert_pem,
        &admin.key_pem,
    )
    .map_err(|source| Error::Render { source })?;
    Ok((endpoint, yaml))
}

/// What the kubeconfig step found.
#[derive(Debug)]
pub(super) struct KubeconfigReport {
    /// The admin kubeconfig Secret and `spec.kubeconfig` are current.
    pub(super) published: bool,
    /// What the tenant waits for, when it waits here.
    pub(super) waiting: Option<String>,
    /// The rotation request whose admin kubeconfig is served.
    pub(super) admin_rotation: Option<String>,
}

/// Stores the admin kubeconfig Secret and `spec.kubeconfig` once the tenant apiserver
/// answers with the admin credential.
pub(super) async fn publish_kubeconfig(
    vc: &VirtualCluster,
    tenant: &Tenant,
    material: &PkiMaterial,
    desired: &DesiredState,
    reach: &Reach,
    ctx: &Context,
    changes: &mut Changes,
) -> Result<KubeconfigReport, Error> {
    let mut report = publish(vc, tenant, desired, reach, ctx, changes).await?;
    let previous_rotation = vc
        .status
        .as_ref()
        .and_then(|status| status.admin_kubeconfig_rotation.clone());
    report.admin_rotation = if report.published {
        material.admin_rotation().map(str::to_owned)
    } else {
        previous_rotation.clone()
    };
    // A tenant created with the annotation gets its first kubeconfig, not a rotation.
    if report.admin_rotation.is_some()
        && report.admin_rotation != previous_rotation
        && vc.spec.kubeconfig.is_some()
    {
        changes.record(
            "AdminKubeconfigRotated",
            Step::Kubeconfig,
            "the admin client CA was replaced: the new admin kubeconfig is served and every one issued before is refused",
        );
    }
    Ok(report)
}

/// Whether the admin kubeconfig is published, writing it when the tenant answers and
/// it is not; the report's `admin_rotation` is left to the caller.
async fn publish(
    vc: &VirtualCluster,
    tenant: &Tenant,
    desired: &DesiredState,
    reach: &Reach,
    ctx: &Context,
    changes: &mut Changes,
) -> Result<KubeconfigReport, Error> {
    let secret = &desired.admin_kubeconfig;
    let external_kubeconfig = secret
        .data
        .as_ref()
        .and_then(|data| data.get(KUBECONFIG_SECRET_KEY))
        .map(|bytes| STANDARD.encode(&bytes.0));
    let stored = cached(
        &ctx.stores.secrets,
        Some(&tenant.namespace),
        &secret.name_any(),
    );
    let owner = &tenant.owner();
    let secret_current = in_place(ctx, owner, secret, stored.as_deref(), "Secret").await?;
    let spec_current = external_kubeconfig.is_some() && vc.spec.kubeconfig == external_kubeconfig;
    let published = secret_current && spec_current;
    let report = |waiting: Option<String>| KubeconfigReport {
        published,
        waiting,
        admin_rotation: None,
    };
    let endpoint = match reach {
        Reach::NoClusterIp => {
            let waiting = "waiting for the apiserver Service's cluster IP";
            return Ok(report(Some(waiting.to_owned())));
        }
        Reach::Rolling if published => {
            return Ok(report(Some("waiting for the tenant apiserver".to_owned())));
        }
        Reach::Rolling => {
            let waiting = "waiting for kube-apiserver to become ready";
            return Ok(report(Some(waiting.to_owned())));
        }
        Reach::NotReady(error) => {
            let waiting = format!("waiting for the tenant apiserver: {error}");
            return Ok(report(Some(waiting)));
        }
        Reach::Ready { .. } if published => return Ok(report(None)),
        Reach::Ready { endpoint, .. } => endpoint,
    };
    let applied = apply_object(ctx, owner, &ctx.stores.secrets, secret, "Secret").await?;
    if applied.written
        && let Some(version) =
            (applied.object.as_ref()).and_then(|object| object.resource_version())
    {
        ctx.pki_secret_written(&tenant.uid, &secret.name_any(), version);
    }
    if !spec_current {
        let api: Api<VirtualCluster> = Api::namespaced(ctx.client.clone(), &tenant.namespace);
        let patch = json!({ "spec": { "kubeconfig": external_kubeconfig } });
        api.patch(&tenant.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::WriteSpec { source })?;
    }
    if applied.written || !spec_current {
        changes.record(
            "KubeconfigPublished",
            Step::Kubeconfig,
            format!(
                "tenant apiserver answers at {endpoint}; admin kubeconfig stored in Secret {}",
                secret.name_any()
            ),
        );
    }
    Ok(KubeconfigReport {
        published: true,
        waiting: None,
        admin_rotation: None,
    })
}
