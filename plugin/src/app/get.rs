//! `list` and `get`.

use anyhow::Result;
use kube::Api;
use kube::api::ListParams;
use kubectl_vc::cli::{GetArgs, ListArgs, ListOutput};
use kubectl_vc::output::{self, TableOptions};
use vc_api::VirtualCluster;

use super::errors::{self, AlreadyReported};
use super::session::Session;

/// `list`: one LIST call, however many VirtualClusters there are.
pub async fn list(session: &Session, args: &ListArgs) -> Result<()> {
    let api: Api<VirtualCluster> = if args.all_namespaces {
        Api::all(session.client.clone())
    } else {
        Api::namespaced(session.client.clone(), &session.namespace)
    };
    let mut params = ListParams::default();
    if let Some(selector) = &args.selector {
        params = params.labels(selector);
    }
    let mut clusters = api
        .list(&params)
        .await
        .map_err(|error| errors::api(error, &session.namespace, None))?
        .items;
    clusters.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    if clusters.is_empty() && !matches!(args.output, Some(ListOutput::Yaml | ListOutput::Json)) {
        if args.all_namespaces {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {} namespace.", session.namespace);
        }
        return Ok(());
    }
    print!("{}", render(&clusters, args, true));
    Ok(())
}

/// `get NAME...`: one GET per name, every failure printed, exit 1 if any failed.
pub async fn get(session: &Session, args: &GetArgs) -> Result<()> {
    if args.names.is_empty() {
        return list(session, &args.list).await;
    }
    let api: Api<VirtualCluster> = Api::namespaced(session.client.clone(), &session.namespace);
    let mut found = Vec::new();
    let mut failed = false;
    for name in &args.names {
        match api.get(name).await {
            Ok(cluster) => found.push(cluster),
            Err(error) => {
                failed = true;
                eprintln!("{}", errors::api(error, &session.namespace, Some(name)));
            }
        }
    }
    if !found.is_empty() {
        print!("{}", render(&found, &args.list, args.names.len() > 1));
    }
    if failed {
        Err(AlreadyReported.into())
    } else {
        Ok(())
    }
}

fn render(clusters: &[VirtualCluster], args: &ListArgs, as_list: bool) -> String {
    match args.output {
        Some(ListOutput::Name) => clusters
            .iter()
            .map(|cluster| output::resource_name(cluster) + "\n")
            .collect(),
        Some(ListOutput::Yaml) => output::to_yaml(&printable(clusters, as_list)),
        Some(ListOutput::Json) => output::to_json(&printable(clusters, as_list)),
        Some(ListOutput::Wide) | None => output::table(
            clusters,
            TableOptions {
                all_namespaces: args.all_namespaces,
                wide: args.output == Some(ListOutput::Wide),
                headers: !args.no_headers,
            },
            jiff::Timestamp::now(),
        ),
    }
}

fn printable(clusters: &[VirtualCluster], as_list: bool) -> serde_json::Value {
    match clusters {
        [single] if !as_list => output::printable(single),
        _ => output::printable_list(clusters),
    }
}
