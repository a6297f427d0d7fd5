//! Command line of `kubectl vc`, shaped like kubectl's own commands and flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};

/// Create, inspect, connect to and delete VirtualClusters (kosmos.io/v1alpha1).
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-vc",
    bin_name = "kubectl vc",
    version,
    propagate_version = true,
    disable_help_subcommand = true,
    after_help = "Kubeconfig rules are kubectl's: --kubeconfig, else every file of KUBECONFIG (first wins), else ~/.kube/config."
)]
pub struct Cli {
    /// Flags every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's connection flags.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Path to the kubeconfig file to use instead of KUBECONFIG or ~/.kube/config
    #[arg(long, global = true, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub kubeconfig: Option<PathBuf>,

    /// Name of the kubeconfig context to use
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// Namespace of the VirtualCluster (default: the context's namespace, else "default")
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// The commands of `kubectl vc`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a VirtualCluster from flags or from a manifest
    Create(CreateArgs),
    /// List VirtualClusters
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one or more VirtualClusters, or all of them
    Get(GetArgs),
    /// Show a VirtualCluster in detail: spec, status, conditions, promoted nodes and events
    Describe(DescribeArgs),
    /// Delete VirtualClusters and the kubeconfig entries `use-context` added for them
    Delete(DeleteArgs),
    /// Merge a VirtualCluster's admin kubeconfig into your kubeconfig and switch to it;
    /// --host switches back
    UseContext(UseContextArgs),
    /// Switch back from a VirtualCluster's context to the one use-context switched away from
    Disconnect,
    /// Print a VirtualCluster's admin kubeconfig (it contains credentials)
    Kubeconfig(KubeconfigArgs),
    /// Replace a VirtualCluster's admin kubeconfig: every one handed out before stops working
    RotateKubeconfig(RotateKubeconfigArgs),
    /// Promote host nodes into a VirtualCluster or return them to the host
    Nodes(NodesArgs),
    /// Print a shell completion script
    Completion(CompletionArgs),
    /// Print the plugin version
    Version,
}

/// `create`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kubectl vc create prod --nodes node1,node2 --cpu 10 --memory 100Gi --wait\n  kubectl vc create -f prod.yaml --dry-run=server -o yaml"
)]
pub struct CreateArgs {
    /// Name of the VirtualCluster (optional with -f when the manifest names it)
    #[arg(value_name = "NAME", required_unless_present = "filename")]
    pub name: Option<String>,

    /// Host nodes to promote exclusively into the tenant, comma separated
    #[arg(
        long,
        value_name = "NODE,...",
        value_delimiter = ',',
        conflicts_with = "filename"
    )]
    pub nodes: Vec<String>,

    /// CPU to take from the shared pool, such as 10 or 2500m
    #[arg(long, value_name = "QUANTITY", conflicts_with = "filename")]
    pub cpu: Option<String>,

    /// Memory to take from the shared pool, such as 100Gi
    #[arg(long, value_name = "QUANTITY", conflicts_with = "filename")]
    pub memory: Option<String>,

    /// Any other pooled resource, such as nvidia.com/gpu=2 (repeatable)
    #[arg(long = "resource", value_name = "NAME=QUANTITY", value_parser = parse_resource, conflicts_with = "filename")]
    pub resources: Vec<(String, String)>,

    /// Kubernetes version of the tenant control plane, such as v1.33.4 (default: the webhook's)
    #[arg(long, value_name = "VERSION", conflicts_with = "filename")]
    pub kubernetes_version: Option<String>,

    /// Read the VirtualCluster from a YAML or JSON manifest ("-" reads standard input)
    #[arg(short = 'f', long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub filename: Option<PathBuf>,

    /// client: print the object without sending it; server: let the API server and its
    /// webhooks check it without storing anything
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "client")]
    pub dry_run: Option<DryRun>,

    /// Print the created object instead of a one-line message
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<ObjectOutput>,

    /// Wait for the phase Initialized (or Completed), printing each phase change
    #[arg(long, value_enum, value_name = "PHASE", num_args = 0..=1, require_equals = true, default_missing_value = "initialized")]
    pub wait: Option<WaitFor>,

    /// How long --wait and --use-context wait, such as 90s or 10m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub timeout: Duration,

    /// Once the control plane is ready, merge its kubeconfig and switch to it (implies --wait)
    #[arg(long)]
    pub use_context: bool,

    /// Context, cluster and user name for --use-context (default: vc-NAME, or vc-NAMESPACE-NAME outside default)
    #[arg(long, value_name = "NAME", requires = "use_context")]
    pub context_name: Option<String>,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// List VirtualClusters of every namespace
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Only VirtualClusters matching this label selector, such as team=a,tier!=dev
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Output format; wide adds conditions and the API server endpoint
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<ListOutput>,

    /// Leave out the header line of the table
    #[arg(long)]
    pub no_headers: bool,
}

/// `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Names of the VirtualClusters to show (all when none is given)
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Common listing flags.
    #[command(flatten)]
    pub list: ListArgs,
}

/// `describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Name of the VirtualCluster
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Names of the VirtualClusters to delete
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,

    /// Wait until each VirtualCluster is gone (its finalizer has released every node)
    #[arg(long)]
    pub wait: bool,

    /// How long --wait waits, such as 90s or 10m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub timeout: Duration,

    /// Succeed when a VirtualCluster does not exist
    #[arg(long)]
    pub ignore_not_found: bool,

    /// Keep the context, cluster and user entries `use-context` added to the kubeconfig
    #[arg(long)]
    pub keep_kubeconfig: bool,
}

/// `use-context`.
#[derive(Debug, Args)]
#[command(
    after_help = "The kubeconfig file written is the one `kubectl config set-context` writes: --kubeconfig, else the\nfirst existing KUBECONFIG file, else ~/.kube/config. Entries of the same name are replaced in place, every\nother entry is kept, the file is replaced atomically under <file>.lock with mode 0600. YAML comments in\nthat file are not kept. The new context remembers the current one; while it is current, kubectl vc\ncommands talk to the host context it was read through, and --host (or disconnect) switches back."
)]
pub struct UseContextArgs {
    /// Name of the VirtualCluster
    #[arg(value_name = "NAME", required_unless_present = "host")]
    pub name: Option<String>,

    /// Switch back to the context use-context switched away from (same as `kubectl vc disconnect`)
    #[arg(long, conflicts_with_all = ["name", "context_name", "server", "print", "no_switch", "internal"])]
    pub host: bool,

    /// Context, cluster and user name (default: vc-NAME, or vc-NAMESPACE-NAME outside default)
    #[arg(long, value_name = "NAME")]
    pub context_name: Option<String>,

    /// API server URL to use instead of the kubeconfig's, such as a port-forward's https://127.0.0.1:6443
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,

    /// Print the kubeconfig entries to standard output and change no file (prints credentials)
    #[arg(long)]
    pub print: bool,

    /// Merge the entries without changing current-context
    #[arg(long)]
    pub no_switch: bool,

    /// Use the in-cluster endpoint (https://NAME-apiserver.NAMESPACE.svc:6443), for use inside the host
    #[arg(long)]
    pub internal: bool,
}

/// `kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Name of the VirtualCluster
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Print the kubeconfig with the in-cluster endpoint, for use inside the host
    #[arg(long)]
    pub internal: bool,
}

/// `rotate-kubeconfig`.
#[derive(Debug, Args)]
#[command(
    after_help = "The controller replaces the tenant's admin client CA, so every admin kubeconfig issued before is refused; the tenant's components keep theirs. Take the new one with `kubectl vc use-context NAME` or `kubectl vc kubeconfig NAME`.\n\nExamples:\n  kubectl vc rotate-kubeconfig prod --wait"
)]
pub struct RotateKubeconfigArgs {
    /// Name of the VirtualCluster
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Wait until the new admin kubeconfig is served
    #[arg(long)]
    pub wait: bool,

    /// How long --wait waits, such as 90s or 10m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub timeout: Duration,
}

/// `nodes`.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Add or remove.
    #[command(subcommand)]
    pub action: NodesAction,
}

/// `nodes add|remove`.
#[derive(Debug, Subcommand)]
pub enum NodesAction {
    /// Promote host nodes into the VirtualCluster, exclusively
    Add(NodesChange),
    /// Return nodes from the VirtualCluster to the host
    Remove(NodesChange),
}

/// The VirtualCluster and the nodes of `nodes add|remove`.
#[derive(Debug, Args)]
pub struct NodesChange {
    /// Name of the VirtualCluster
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Host node names
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,

    /// server: let the API server and its webhooks check the change without storing it
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "server")]
    pub dry_run: Option<ServerDryRun>,
}

/// `completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell to complete for
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `--dry-run` of `create`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Send the object (the default)
    None,
    /// Print the object without sending it
    Client,
    /// Send it with dryRun=All: validated and defaulted by the webhook, not stored
    Server,
}

/// `--dry-run` of `nodes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServerDryRun {
    /// Send the change (the default)
    None,
    /// Send it with dryRun=All: checked by the webhook, not stored
    Server,
}

/// `-o` for one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ObjectOutput {
    /// The object as YAML
    Yaml,
    /// The object as JSON
    Json,
    /// virtualcluster.kosmos.io/NAME
    Name,
}

/// `-o` for listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListOutput {
    /// The table with conditions and endpoint
    Wide,
    /// A List as YAML
    Yaml,
    /// A List as JSON
    Json,
    /// virtualcluster.kosmos.io/NAME per line
    Name,
}

/// Phase `--wait` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WaitFor {
    /// Control plane up and kubeconfig written
    Initialized,
    /// Clustertree running and promoted capacity visible in the tenant
    Completed,
}

/// Parses `NAME=QUANTITY`.
pub fn parse_resource(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, quantity)) if !name.trim().is_empty() && !quantity.trim().is_empty() => {
            Ok((name.trim().to_owned(), quantity.trim().to_owned()))
        }
        _ => Err(format!(
            "\"{text}\" is not NAME=QUANTITY, such as nvidia.com/gpu=2"
        )),
    }
}

/// Parses a Go-style duration as kubectl's `--timeout` does: `90s`, `5m`, `1h30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("\"{text}\" is not a duration such as 90s, 5m or 1h30m");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_length = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_length] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => return Err(invalid()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_length..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_like_kubectl() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn resources_need_a_name_and_a_quantity() {
        assert_eq!(
            parse_resource("nvidia.com/gpu=2"),
            Ok(("nvidia.com/gpu".into(), "2".into()))
        );
        assert!(parse_resource("gpu").unwrap_err().contains("NAME=QUANTITY"));
        assert!(parse_resource("=2").is_err());
    }

    #[test]
    fn wait_without_value_means_initialized_and_dry_run_means_client() {
        let cli =
            Cli::try_parse_from(["kubectl-vc", "create", "x", "--wait", "--dry-run"]).unwrap();
        let Command::Create(create) = cli.command else {
            panic!("not create")
        };
        assert_eq!(create.wait, Some(WaitFor::Initialized));
        assert_eq!(create.dry_run, Some(DryRun::Client));
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["kubectl-vc", "list", "-n", "team-a", "--context", "c"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("team-a"));
        assert_eq!(cli.global.context.as_deref(), Some("c"));
    }

    #[test]
    fn nodes_split_on_commas() {
        let cli = Cli::try_parse_from([
            "kubectl-vc",
            "create",
            "x",
            "--nodes",
            "a,b",
            "--nodes",
            "c",
        ])
        .unwrap();
        let Command::Create(create) = cli.command else {
            panic!("not create")
        };
        assert_eq!(create.nodes, ["a", "b", "c"]);
    }

    #[test]
    fn manifest_and_build_flags_are_exclusive() {
        let error = Cli::try_parse_from(["kubectl-vc", "create", "-f", "x.yaml", "--cpu", "2"])
            .unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
