//! PKI cost per tenant: issuing a fresh tenant's whole PKI (3 CAs, the service-account
//! key, 9 leaves), and re-planning a settled tenant from its Secrets (what every resync
//! pays). Goal: under 50 ms of PKI per tenant.
//!
//! Run with `cargo bench -p vc-controller --bench pki [-- TENANTS]` (default 50).

use std::time::{Duration, Instant};

use vc_api::VirtualCluster;
use vc_controller::pki::{ExistingPki, ensure_pki, plan_certificates};
use vc_controller::resources::{BuildContext, Observed, Tenant, secrets, tenant_identity};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn virtual_cluster(index: usize) -> BenchResult<VirtualCluster> {
    let manifest = format!(
        "apiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: tenant{index}\n  namespace: bench\n  uid: uid-{index}\nspec:\n  controlPlane:\n    etcd:\n      replicas: 3\n    apiServer:\n      externalHosts: [tenant{index}.example.com]\n"
    );
    Ok(serde_yaml::from_str(&manifest)?)
}

struct Summary {
    mean: Duration,
    median: Duration,
    max: Duration,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let total: Duration = samples.iter().sum();
    let count = u32::try_from(samples.len().max(1)).unwrap_or(u32::MAX);
    Summary {
        mean: total / count,
        median: samples.get(samples.len() / 2).copied().unwrap_or_default(),
        max: samples.last().copied().unwrap_or_default(),
    }
}

fn print(label: &str, summary: &Summary) {
    println!(
        "{label:<40} mean {:>9.3} ms   median {:>9.3} ms   max {:>9.3} ms",
        summary.mean.as_secs_f64() * 1e3,
        summary.median.as_secs_f64() * 1e3,
        summary.max.as_secs_f64() * 1e3,
    );
}

fn main() -> BenchResult<()> {
    let tenants: usize = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .map(|arg| arg.parse())
        .transpose()?
        .unwrap_or(50);
    let ctx = BuildContext::default();
    let observed = Observed {
        apiserver_cluster_ip: Some("127.100.0.9".parse()?),
        ..Observed::default()
    };
    let now = jiff::Timestamp::now();

    let mut fresh = Vec::with_capacity(tenants);
    let mut replan = Vec::with_capacity(tenants);
    for index in 0..tenants {
        let vc = virtual_cluster(index)?;
        let tenant = Tenant::resolve(&vc, &ctx)?;
        let identity = tenant_identity(&tenant, &ctx, &observed)?;

        let started = Instant::now();
        let (_, material) = ensure_pki(&identity, &ExistingPki::default(), now)?;
        fresh.push(started.elapsed());

        let mut stored = secrets::pki_secrets(&tenant, &material)?;
        stored.push(secrets::admin_kubeconfig_secret(
            &tenant, &observed, &material,
        )?);
        let started = Instant::now();
        let existing = ExistingPki::from_secrets(&tenant.name, &stored);
        let plan = plan_certificates(&identity, &existing, now);
        replan.push(started.elapsed());
        if plan.issues_anything() {
            return Err(format!("settled tenant {index} would reissue: {plan:?}").into());
        }
    }
    println!("PKI per tenant over {tenants} tenants (3 CAs + SA key + 9 leaves, ECDSA P-256):");
    print("fresh tenant (generate + sign all)", &summarize(fresh));
    print("settled tenant (parse Secrets + plan)", &summarize(replan));
    println!("goal: < 50 ms per tenant");
    Ok(())
}
