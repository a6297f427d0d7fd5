//! A real node: containerd, runc and the bridge CNI plugin from Debian, kubelet and
//! kube-proxy from `KUBEBUILDER_ASSETS`, joined to a real host control plane
//! ([`vc_test_apiserver::envtest::Envtest`]), running real containers from images built
//! here ([`image`]).
//!
//! Everything lives under one work directory, and [`RealNode::stop`] (also run on drop)
//! undoes what the programs did to the machine: processes, mounts, network namespaces,
//! the bridge, iptables rules (the tables are restored as they were), the sysctls the
//! kubelet, kube-proxy and the bridge plugin change, the node address on `lo`, and the
//! directories they create outside the work directory. [`MachineState`] records what a
//! test compares before and after.
//!
//! Several real nodes may share the machine (one network namespace): each has its own
//! containerd, bridge, pod range, address on `lo`, kubelet root and cgroup root, and only
//! the first runs kube-proxy, whose rules serve the whole machine. Tests that start real
//! nodes run in the nextest group `real-node`, one at a time (kubelet and kube-proxy own
//! machine-wide state: iptables chains, sysctls).

pub mod guard;
pub mod host;
pub mod image;
pub mod traffic;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use vc_test_apiserver::envtest::Envtest;
use vc_test_apiserver::pki::{self, KubeconfigCredential};

use image::ImageSpec;

/// The sandbox ("pause") image every pod's network namespace is held by.
pub const PAUSE_IMAGE: &str = "kosmos-vc.local/pause:1";

/// Sysctls the kubelet, kube-proxy or the bridge plugin write; restored on stop.
const SYSCTLS: [&str; 6] = [
    "kernel/panic",
    "kernel/panic_on_oops",
    "vm/overcommit_memory",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
];

/// Directories outside the work directory the node's programs create; removed on stop
/// when they did not exist before.
const OUTSIDE_DIRECTORIES: [&str; 6] = [
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/var/lib/cni",
    "/run/netns",
];

/// Bound of each readiness wait.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{program} is not installed ({hint})")]
    FindProgram { program: String, hint: &'static str },
    #[error("creating {path}: {source}")]
    CreateDirectory {
        path: String,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    WriteFile {
        path: String,
        source: std::io::Error,
    },
    #[error("issuing certificates: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("finding a free port: {0}")]
    FreePort(std::io::Error),
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} exited with {status} while starting (log: {log})")]
    Exited {
        program: String,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("{what} within {limit:?} (log: {log})")]
    NotReady {
        what: String,
        limit: Duration,
        log: String,
    },
    #[error("running {command}: {reason}")]
    Run { command: String, reason: String },
    #[error("building or loading an image: {0}")]
    Image(#[from] image::ImageError),
}

/// How the node is set up.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub name: String,
    /// The node's InternalIP, added to `lo` (the kubelet refuses a loopback one); the
    /// apiserver reaches the kubelet there.
    pub node_ip: Ipv4Addr,
    /// The pods' range on this node; the bridge's gateway is its first address.
    pub pod_cidr: String,
    /// All pods' range, for kube-proxy's `--cluster-cidr`.
    pub cluster_cidr: String,
    /// The bridge the CNI plugin creates.
    pub bridge: String,
    /// The cluster DNS Service's address the kubelet writes into `ClusterFirst` pods'
    /// `resolv.conf`; without it they get the machine's resolver.
    pub cluster_dns: Option<Ipv4Addr>,
    /// The kubelet's cgroup root (cgroup v1 path, created in every hierarchy), for a node
    /// beside another: each kubelet removes pod cgroups under its root that it does not
    /// know, so two must never share one. `None`: the machine's root (`/kubepods`).
    pub cgroup_root: Option<String>,
    /// Whether the node runs kube-proxy. Nodes sharing the machine share its network, so
    /// one kube-proxy serves them all; a second would fight the first over `KUBE-*` chains.
    pub kube_proxy: bool,
}

impl NodeOptions {
    /// Worker `node{index}` (2..=200) beside `node1` on this machine: address
    /// `10.244.255.{index}`, pods in `10.244.{index}.0/24` on bridge `kvc{index-1}`, cgroup
    /// root `/kvc-node{index}`, no kube-proxy of its own.
    pub fn worker(index: u8) -> Self {
        NodeOptions {
            name: format!("node{index}"),
            node_ip: Ipv4Addr::new(10, 244, 255, index),
            pod_cidr: format!("10.244.{index}.0/24"),
            bridge: format!("kvc{}", index.saturating_sub(1)),
            cgroup_root: Some(format!("/kvc-node{index}")),
            kube_proxy: false,
            ..NodeOptions::default()
        }
    }

    /// The top-level cgroup directory (in every hierarchy) of the node's pods.
    fn cgroup_directory(&self) -> String {
        self.cgroup_root
            .as_deref()
            .map(|root| root.trim_start_matches('/').to_owned())
            .unwrap_or_else(|| "kubepods".to_owned())
    }
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            name: "node1".to_owned(),
            node_ip: Ipv4Addr::new(10, 244, 255, 1),
            pod_cidr: "10.244.1.0/24".to_owned(),
            cluster_cidr: "10.244.0.0/16".to_owned(),
            bridge: "kvc0".to_owned(),
            cluster_dns: None,
            cgroup_root: None,
            kube_proxy: true,
        }
    }
}

/// Files and directories of the node under its work directory.
#[derive(Clone, Debug)]
pub struct NodePaths {
    pub dir: PathBuf,
    pub containerd_config: PathBuf,
    pub containerd_socket: PathBuf,
    pub cni_config_dir: PathBuf,
    pub kubelet_config: PathBuf,
    pub kubelet_kubeconfig: PathBuf,
    pub kubelet_root: PathBuf,
    pub kube_proxy_config: PathBuf,
    pub kube_proxy_kubeconfig: PathBuf,
    pub images: PathBuf,
}

impl NodePaths {
    pub fn under(dir: &Path) -> Self {
        NodePaths {
            dir: dir.to_owned(),
            containerd_config: dir.join("containerd/config.toml"),
            containerd_socket: dir.join("containerd/containerd.sock"),
            cni_config_dir: dir.join("cni/net.d"),
            kubelet_config: dir.join("kubelet/config.yaml"),
            kubelet_kubeconfig: dir.join("kubelet/kubeconfig"),
            kubelet_root: dir.join("kubelet/root"),
            kube_proxy_config: dir.join("kube-proxy/config.yaml"),
            kube_proxy_kubeconfig: dir.join("kube-proxy/kubeconfig"),
            images: dir.join("images"),
        }
    }

    pub fn log(&self, program: &str) -> PathBuf {
        self.dir.join(format!("{program}.log"))
    }
}

/// containerd's configuration: its own root, state and socket, the CRI plugin with the
/// settings this machine needs (cgroupfs; `restrict_oom_score_adj` because root here
/// lacks CAP_SYS_RESOURCE and every sandbox fails without it), CNI from Debian's plugins.
pub fn containerd_config(paths: &NodePaths) -> String {
    let dir = paths.dir.display();
    format!(
        r#"version = 2
root = "{dir}/containerd/root"
state = "{dir}/containerd/state"
[grpc]
  address = "{socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
        socket = paths.containerd_socket.display(),
        cni = paths.cni_config_dir.display(),
    )
}

/// The bridge network: pods get addresses of `pod_cidr` on the bridge, whose gateway the
/// host routes; no masquerading (nothing leaves the machine) and no port mapping, so the
/// plugin adds no iptables rules of its own.
pub fn cni_config(options: &NodeOptions, paths: &NodePaths) -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": format!("kosmos-vc-{}", options.name),
        "plugins": [{
            "type": "bridge",
            "bridge": options.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": options.pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": paths.dir.join("cni/ipam").display().to_string(),
            },
        }],
    })
    .to_string()
}

/// The kubelet's configuration: x509 clients of the cluster CA and webhook authn/authz
/// (the apiserver's kubelet client is accepted, anonymous is not), its own serving
/// certificate, cgroupfs on this cgroup v1 machine, logs and state in the work directory.
pub fn kubelet_config(
    paths: &NodePaths,
    ca: &Path,
    ports: &NodePorts,
    options: &NodeOptions,
) -> String {
    let dir = paths.dir.display();
    let node_ip = options.node_ip;
    let cluster_dns = options
        .cluster_dns
        .map(|address| format!("clusterDNS: [\"{address}\"]\n"))
        .unwrap_or_default();
    let cgroup_root = options
        .cgroup_root
        .as_ref()
        .map(|root| format!("cgroupRoot: \"{root}\"\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "{node_ip}"
port: {kubelet}
readOnlyPort: 0
healthzBindAddress: "127.0.0.1"
healthzPort: {healthz}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: "{ca}"
authorization:
  mode: Webhook
tlsCertFile: "{dir}/kubelet/serving.crt"
tlsPrivateKeyFile: "{dir}/kubelet/serving.key"
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
podLogsDir: "{dir}/pod-logs"
clusterDomain: cluster.local
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
registerNode: true
{cluster_dns}{cgroup_root}"#,
        ca = ca.display(),
        kubelet = ports.kubelet,
        healthz = ports.kubelet_healthz,
    )
}

/// kube-proxy in iptables mode, its health and metrics on 127.0.0.1, conntrack left as
/// the machine has it, no localhost node ports (which would set `route_localnet`).
pub fn kube_proxy_config(paths: &NodePaths, options: &NodeOptions, ports: &NodePorts) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: "{kubeconfig}"
hostnameOverride: "{name}"
mode: iptables
clusterCIDR: "{cluster}"
healthzBindAddress: "127.0.0.1:{healthz}"
metricsBindAddress: "127.0.0.1:{metrics}"
conntrack:
  maxPerCore: 0
  min: 0
iptables:
  localhostNodePorts: false
"#,
        kubeconfig = paths.kube_proxy_kubeconfig.display(),
        name = options.name,
        cluster = options.cluster_cidr,
        healthz = ports.kube_proxy_healthz,
        metrics = ports.kube_proxy_metrics,
    )
}

/// The node's ports.
#[derive(Clone, Copy, Debug)]
pub struct NodePorts {
    pub kubelet: u16,
    pub kubelet_healthz: u16,
    pub kube_proxy_healthz: u16,
    pub kube_proxy_metrics: u16,
}

impl NodePorts {
    fn free() -> Result<Self, NodeError> {
        Ok(NodePorts {
            kubelet: free_port()?,
            kubelet_healthz: free_port()?,
            kube_proxy_healthz: free_port()?,
            kube_proxy_metrics: free_port()?,
        })
    }
}

fn free_port() -> Result<u16, NodeError> {
    vc_test_apiserver::ports::free_port().map_err(NodeError::FreePort)
}

/// What a node may leave behind on the machine, read before it starts and after it
/// stops; the two must be equal.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MachineState {
    pub sysctls: BTreeMap<String, String>,
    pub iptables: String,
    pub interfaces: Vec<String>,
    pub loopback_addresses: Vec<String>,
    pub outside_directories: BTreeMap<String, bool>,
    pub netns: Vec<String>,
    /// The kubelets' top-level cgroups (`kubepods`, `kvc-*`) in each hierarchy.
    pub cgroups: Vec<String>,
}

impl MachineState {
    pub fn read() -> Self {
        let sysctls = SYSCTLS
            .iter()
            .map(|name| {
                let value = std::fs::read_to_string(Path::new("/proc/sys").join(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_else(|_| "absent".to_owned());
                ((*name).to_owned(), value)
            })
            .collect();
        let iptables = ["iptables-save", "ip6tables-save"]
            .iter()
            .map(|program| rules_without_counters(&output_of(program, &[])))
            .collect::<Vec<_>>()
            .join("\n");
        let interfaces = output_of("ip", &["-o", "link", "show"])
            .lines()
            .filter_map(|line| line.split(':').nth(1))
            .map(|name| name.trim().split('@').next().unwrap_or_default().to_owned())
            .collect();
        let loopback_addresses = output_of("ip", &["-o", "-4", "addr", "show", "dev", "lo"])
            .lines()
            .filter_map(|line| line.split_whitespace().nth(3).map(str::to_owned))
            .collect();
        let outside_directories = OUTSIDE_DIRECTORIES
            .iter()
            .map(|path| ((*path).to_owned(), Path::new(path).exists()))
            .collect();
        let netns = std::fs::read_dir("/run/netns")
            .map(|entries| {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect();
                names.sort();
                names
            })
            .unwrap_or_default();
        let mut cgroups: Vec<String> = cgroup_hierarchies()
            .iter()
            .flat_map(|hierarchy| {
                std::fs::read_dir(hierarchy)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|entry| entry.file_name().into_string().ok())
                    .filter(|name| name.starts_with("kubepods") || name.starts_with("kvc-"))
                    .map(|name| format!("{}/{name}", hierarchy.display()))
                    .collect::<Vec<_>>()
            })
            .collect();
        cgroups.sort();
        MachineState {
            sysctls,
            iptables,
            interfaces,
            loopback_addresses,
            outside_directories,
            netns,
            cgroups,
        }
    }
}

/// `iptables-save` output without its comments, its packet counters (which change with
/// traffic alone) and the tables that hold nothing (a table shows up once anything has
/// loaded it, even when it is empty again).
fn rules_without_counters(text: &str) -> String {
    let mut tables = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let line = if line.starts_with(':') {
            line.split(" [").next().unwrap_or(line).to_owned()
        } else {
            line.to_owned()
        };
        let ends = line == "COMMIT";
        current.push(line);
        if ends {
            tables.push(std::mem::take(&mut current));
        }
    }
    tables
        .into_iter()
        .filter(|table| {
            table.iter().any(|line| {
                line.starts_with("-A ") || (line.starts_with(':') && !line.ends_with(" ACCEPT"))
            })
        })
        .flatten()
        .collect::<Vec<_>>()
        .join("\n")
}

fn output_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn run(program: &str, args: &[&str]) -> Result<(), NodeError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| NodeError::Run {
            command: format!("{program} {}", args.join(" ")),
            reason: error.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NodeError::Run {
            command: format!("{program} {}", args.join(" ")),
            reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn create_dir(path: &Path) -> Result<(), NodeError> {
    std::fs::create_dir_all(path).map_err(|source| NodeError::CreateDirectory {
        path: path.display().to_string(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), NodeError> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    std::fs::write(path, text).map_err(|source| NodeError::WriteFile {
        path: path.display().to_string(),
        source,
    })
}

fn spawn(program: &Path, args: &[String], log: &Path) -> Result<Child, NodeError> {
    vc_test_apiserver::work_dir::spawn_logged(program, args, log).map_err(|source| {
        NodeError::Spawn {
            program: program.display().to_string(),
            source,
        }
    })
}

/// The programs a real node needs that `.ci/run` installs from Debian.
pub fn missing_programs() -> Vec<&'static str> {
    [
        "containerd",
        "runc",
        "ctr",
        "iptables-save",
        "iptables-restore",
        "ip",
    ]
    .into_iter()
    .filter(|program| crate::find_on_path(program).is_none())
    .chain((!Path::new("/usr/lib/cni/bridge").is_file()).then_some("/usr/lib/cni/bridge"))
    .chain((!Path::new(image::BUSYBOX).is_file()).then_some(image::BUSYBOX))
    .collect()
}

/// A running real node. Stopped on drop.
#[derive(Debug)]
pub struct RealNode {
    pub options: NodeOptions,
    pub paths: NodePaths,
    before: MachineState,
    iptables_before: (String, String),
    containerd: Option<Child>,
    kubelet: Option<Child>,
    kube_proxy: Option<Child>,
    kube_proxy_binary: PathBuf,
    host_kubeconfig: PathBuf,
    /// Held while the node lives: no other run's nodes meanwhile, and a record of what
    /// this one changes, for the next run to sweep should this one be killed.
    guard: std::sync::Arc<guard::MachineGuard>,
    programs_stopped: bool,
    stopped: bool,
}

impl RealNode {
    /// Starts containerd, loads the pause image, starts the kubelet and kube-proxy
    /// against `host`, and waits until the Node is Ready.
    pub async fn start(
        host: &Envtest,
        assets: &Path,
        dir: &Path,
        options: NodeOptions,
    ) -> Result<Self, NodeError> {
        if let Some(program) = missing_programs().first() {
            return Err(NodeError::FindProgram {
                program: (*program).to_owned(),
                hint: "apt-get install containerd runc containernetworking-plugins iptables conntrack busybox-static",
            });
        }
        let guard = guard::MachineGuard::acquire().await?;
        let paths = NodePaths::under(dir);
        let ports = NodePorts::free()?;
        let before = MachineState::read();
        let iptables_before = (
            output_of("iptables-save", &[]),
            output_of("ip6tables-save", &[]),
        );
        let mut node = RealNode {
            options,
            paths,
            before,
            iptables_before,
            containerd: None,
            kubelet: None,
            kube_proxy: None,
            kube_proxy_binary: assets.join("kube-proxy"),
            host_kubeconfig: host.kubeconfig_path().to_owned(),
            guard,
            programs_stopped: false,
            stopped: false,
        };
        node.guard.note(|record| {
            record.directories.push(node.paths.dir.clone());
            record
                .directories
                .extend(host.kubeconfig_path().parent().map(Path::to_owned));
            record.bridges.push(node.options.bridge.clone());
            record
                .loopback_addresses
                .push(format!("{}/32", node.options.node_ip));
            record.cgroups.push(node.options.cgroup_directory());
        })?;
        node.write_files(host, &ports)?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/32", node.options.node_ip),
                "dev",
                "lo",
            ],
        )?;
        node.containerd = Some(spawn(
            Path::new("/usr/bin/containerd"),
            &[
                "--config".to_owned(),
                node.paths.containerd_config.display().to_string(),
            ],
            &node.paths.log("containerd"),
        )?);
        node.wait_for_containerd().await?;
        ImageSpec::busybox(PAUSE_IMAGE, &["/bin/sleep", "2147483647"])
            .import(&node.paths.images, &node.paths.containerd_socket)?;
        if node.options.cgroup_root.is_some() {
            create_cgroup_root(&node.options.cgroup_directory())?;
        }
        node.kubelet = Some(spawn(
            &assets.join("kubelet"),
            &node.kubelet_args(),
            &node.paths.log("kubelet"),
        )?);
        if node.options.kube_proxy {
            node.kube_proxy = Some(spawn(
                &node.kube_proxy_binary,
                &[format!(
                    "--config={}",
                    node.paths.kube_proxy_config.display()
                )],
                &node.paths.log("kube-proxy"),
            )?);
        }
        node.wait_ready(host).await?;
        Ok(node)
    }

    fn kubelet_args(&self) -> Vec<String> {
        vec![
            format!("--config={}", self.paths.kubelet_config.display()),
            format!("--kubeconfig={}", self.paths.kubelet_kubeconfig.display()),
            format!(
                "--container-runtime-endpoint=unix://{}",
                self.paths.containerd_socket.display()
            ),
            format!("--hostname-override={}", self.options.name),
            format!("--node-ip={}", self.options.node_ip),
            format!("--root-dir={}", self.paths.kubelet_root.display()),
        ]
    }

    fn write_files(&self, host: &Envtest, ports: &NodePorts) -> Result<(), NodeError> {
        for directory in [
            &self.paths.dir.join("containerd"),
            &self.paths.cni_config_dir,
            &self.paths.kubelet_root,
            &self.paths.images,
            &self.paths.dir.join("pod-logs"),
        ] {
            create_dir(directory)?;
        }
        write(
            &self.paths.containerd_config,
            &containerd_config(&self.paths),
        )?;
        write(
            &self.paths.cni_config_dir.join("10-kosmos-vc.conflist"),
            &cni_config(&self.options, &self.paths),
        )?;
        let ca = host.ca();
        let ca_file = self.paths.dir.join("ca.crt");
        write(&ca_file, ca.cert_pem())?;
        let serving =
            ca.issue_server(&[self.options.node_ip.to_string(), self.options.name.clone()])?;
        write(
            &self.paths.dir.join("kubelet/serving.crt"),
            &serving.cert_pem,
        )?;
        pki::write_private_file(
            &self.paths.dir.join("kubelet/serving.key"),
            &serving.key_pem,
        )?;
        write(
            &self.paths.kubelet_config,
            &kubelet_config(&self.paths, &ca_file, ports, &self.options),
        )?;
        let kubelet_identity = ca.issue_client(
            &format!("system:node:{}", self.options.name),
            &["system:nodes".to_owned()],
        )?;
        pki::write_private_file(
            &self.paths.kubelet_kubeconfig,
            &pki::render_kubeconfig(
                host.url(),
                ca.cert_pem(),
                "host",
                &KubeconfigCredential::ClientCert(kubelet_identity),
            )?,
        )?;
        let proxy_identity = ca.issue_client("system:kube-proxy", &[])?;
        write(
            &self.paths.kube_proxy_config,
            &kube_proxy_config(&self.paths, &self.options, ports),
        )?;
        pki::write_private_file(
            &self.paths.kube_proxy_kubeconfig,
            &pki::render_kubeconfig(
                host.url(),
                ca.cert_pem(),
                "host",
                &KubeconfigCredential::ClientCert(proxy_identity),
            )?,
        )?;
        Ok(())
    }

    async fn wait_for_containerd(&mut self) -> Result<(), NodeError> {
        let started = Instant::now();
        let socket = self.paths.containerd_socket.display().to_string();
        while started.elapsed() < READY_WAIT {
            self.check_running()?;
            if run("ctr", &["--address", &socket, "version"]).is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(NodeError::NotReady {
            what: "containerd did not answer".to_owned(),
            limit: READY_WAIT,
            log: self.paths.log("containerd").display().to_string(),
        })
    }

    async fn wait_ready(&mut self, host: &Envtest) -> Result<(), NodeError> {
        let client = vc_test_apiserver::client_from_kubeconfig(host.kubeconfig_path())
            .await
            .map_err(|error| NodeError::Run {
                command: "connecting to the host".to_owned(),
                reason: error.to_string(),
            })?;
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
        let started = Instant::now();
        while started.elapsed() < READY_WAIT {
            self.check_running()?;
            if let Ok(Some(node)) = nodes.get_opt(&self.options.name).await
                && node
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(NodeError::NotReady {
            what: format!("Node {} did not turn Ready", self.options.name),
            limit: READY_WAIT,
            log: self.paths.log("kubelet").display().to_string(),
        })
    }

    /// Fails when one of the node's programs has exited.
    pub fn check_running(&mut self) -> Result<(), NodeError> {
        for (program, child) in [
            ("containerd", &mut self.containerd),
            ("kubelet", &mut self.kubelet),
            ("kube-proxy", &mut self.kube_proxy),
        ] {
            if let Some(child) = child
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(NodeError::Exited {
                    program: program.to_owned(),
                    status,
                    log: self.paths.log(program).display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// The IDs of the containers running on the node (pause containers included), as
    /// its containerd lists its tasks.
    pub fn running_tasks(&self) -> Result<Vec<String>, NodeError> {
        let socket = self.paths.containerd_socket.display().to_string();
        let args = ["--address", socket.as_str(), "-n", "k8s.io", "tasks", "ls"];
        let output = Command::new("ctr")
            .args(args)
            .output()
            .map_err(|error| NodeError::Run {
                command: format!("ctr {}", args.join(" ")),
                reason: error.to_string(),
            })?;
        if !output.status.success() {
            return Err(NodeError::Run {
                command: format!("ctr {}", args.join(" ")),
                reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        // TASK  PID  STATUS, after a header line.
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .skip(1)
            .filter(|line| line.split_whitespace().nth(2) == Some("RUNNING"))
            .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
            .collect())
    }

    /// Builds `spec` and loads it into the node's containerd.
    pub fn load_image(&self, spec: &ImageSpec) -> Result<(), NodeError> {
        Ok(spec.import(&self.paths.images, &self.paths.containerd_socket)?)
    }

    /// What the node found on the machine before it started.
    pub fn machine_before(&self) -> &MachineState {
        &self.before
    }

    /// Stops kube-proxy, the kubelet, every container and containerd, leaving the
    /// machine's state to [`RealNode::stop`]: nodes sharing the machine all stop their
    /// programs before any of them restores what the machine had.
    pub fn stop_programs(&mut self) -> Vec<String> {
        if self.programs_stopped {
            return Vec::new();
        }
        self.programs_stopped = true;
        if let Some(child) = self.kube_proxy.as_mut() {
            terminate(child);
        }
        if let Some(child) = self.kubelet.as_mut() {
            terminate(child);
        }
        let stopped = self.kill_containers();
        if let Some(child) = self.containerd.as_mut() {
            terminate(child);
        }
        stopped
            .err()
            .map(|error| format!("stopping containers: {error}"))
            .into_iter()
            .collect()
    }

    /// Stops everything and undoes what it did to the machine. Pods still on the node
    /// are stopped with their containers; errors of each step are collected, not fatal.
    pub fn stop(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let mut problems = self.stop_programs();
        let mut note = |what: &str, result: Result<(), NodeError>| {
            if let Err(error) = result {
                problems.push(format!("{what}: {error}"));
            }
        };
        if self.options.kube_proxy {
            note(
                "kube-proxy --cleanup",
                run(
                    &self.kube_proxy_binary.display().to_string(),
                    &["--cleanup"],
                ),
            );
        }
        note(
            "restoring iptables",
            restore_iptables(&self.iptables_before),
        );
        note(
            "unmounting",
            unmount_under(std::slice::from_ref(&self.paths.dir), &self.before.netns),
        );
        note(
            "removing network namespaces",
            remove_netns(&self.before.netns),
        );
        if self
            .before
            .interfaces
            .iter()
            .all(|i| i != &self.options.bridge)
        {
            note(
                "deleting the bridge",
                run("ip", &["link", "delete", &self.options.bridge]).or_else(|e| {
                    if output_of("ip", &["-o", "link", "show", &self.options.bridge]).is_empty() {
                        Ok(())
                    } else {
                        Err(e)
                    }
                }),
            );
        }
        note(
            "removing the node address",
            run(
                "ip",
                &[
                    "addr",
                    "del",
                    &format!("{}/32", self.options.node_ip),
                    "dev",
                    "lo",
                ],
            ),
        );
        note("restoring sysctls", restore_sysctls(&self.before.sysctls));
        note(
            "removing directories",
            remove_outside_directories(&self.before.outside_directories),
        );
        note(
            "removing cgroups",
            remove_cgroups(&self.options.cgroup_directory()),
        );
        if !problems.is_empty() {
            self.guard.keep_record();
        }
        problems
    }

    /// Kills every container task of the node's containerd (the shims outlive the
    /// kubelet) and removes them.
    fn kill_containers(&self) -> Result<(), NodeError> {
        let dir = self.paths.dir.display().to_string();
        let pids: Vec<String> = output_of("pgrep", &["-f", &format!("containerd-shim.*{dir}")])
            .lines()
            .map(str::to_owned)
            .collect();
        let socket = self.paths.containerd_socket.display().to_string();
        let tasks = output_of(
            "ctr",
            &["--address", &socket, "-n", "k8s.io", "tasks", "ls", "-q"],
        );
        for task in tasks.lines().filter(|t| !t.is_empty()) {
            let _killed = run(
                "ctr",
                &[
                    "--address",
                    &socket,
                    "-n",
                    "k8s.io",
                    "tasks",
                    "kill",
                    "-s",
                    "SIGKILL",
                    task,
                ],
            );
        }
        // The shims exit on their own once their tasks are gone; nothing reports when,
        // so they get a moment before they are killed.
        std::thread::sleep(Duration::from_millis(300));
        for pid in pids {
            let _killed = run("kill", &["-9", &pid]);
        }
        Ok(())
    }

    /// The host's admin kubeconfig, for diagnostics.
    pub fn host_kubeconfig(&self) -> &Path {
        &self.host_kubeconfig
    }
}

/// Empties every table loaded now, then loads what was saved (`iptables-save`,
/// `ip6tables-save`) before a start: the kubelets' and kube-proxy's chains go, and
/// whatever was there before stays.
fn restore_iptables(saved: &(String, String)) -> Result<(), NodeError> {
    for (program, saved) in [("iptables", &saved.0), ("ip6tables", &saved.1)] {
        let now = output_of(&format!("{program}-save"), &[]);
        for table in now.lines().filter_map(|line| line.strip_prefix('*')) {
            run(program, &["-t", table, "-F"])?;
            run(program, &["-t", table, "-X"])?;
        }
        if saved.trim().is_empty() {
            continue;
        }
        let program = format!("{program}-restore");
        let program = program.as_str();
        let mut child = Command::new(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| NodeError::Run {
                command: program.to_owned(),
                reason: error.to_string(),
            })?;
        if let Some(stdin) = child.stdin.as_mut() {
            use std::io::Write as _;
            let _written = stdin.write_all(saved.as_bytes());
        }
        drop(child.stdin.take());
        let output = child.wait_with_output().map_err(|error| NodeError::Run {
            command: program.to_owned(),
            reason: error.to_string(),
        })?;
        if !output.status.success() {
            return Err(NodeError::Run {
                command: program.to_owned(),
                reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
    }
    Ok(())
}

/// Unmounts, deepest first, everything mounted under `directories` or in a network
/// namespace file that is not one of `netns_before`.
fn unmount_under(directories: &[PathBuf], netns_before: &[String]) -> Result<(), NodeError> {
    let prefixes: Vec<String> = directories
        .iter()
        .map(|directory| directory.display().to_string())
        .collect();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4).map(str::to_owned))
        .filter(|point| {
            prefixes.iter().any(|prefix| point.starts_with(prefix))
                || (point.starts_with("/run/netns/")
                    && !netns_before
                        .iter()
                        .any(|n| point.ends_with(&format!("/{n}"))))
        })
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    let mut failures = Vec::new();
    for point in points {
        if let Err(error) = run("umount", &["-l", &point]) {
            failures.push(error.to_string());
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(NodeError::Run {
            command: "umount".to_owned(),
            reason: failures.join("; "),
        })
    }
}

/// Removes the network namespace files that are not one of `netns_before`.
fn remove_netns(netns_before: &[String]) -> Result<(), NodeError> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !netns_before.contains(&name) {
            let _removed = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Writes back every sysctl of `before` that differs now.
fn restore_sysctls(before: &BTreeMap<String, String>) -> Result<(), NodeError> {
    for (name, value) in before {
        if value == "absent" {
            continue;
        }
        let path = Path::new("/proc/sys").join(name);
        let now = std::fs::read_to_string(&path).unwrap_or_default();
        if now.trim() != value {
            std::fs::write(&path, value).map_err(|source| NodeError::WriteFile {
                path: path.display().to_string(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Removes each of [`OUTSIDE_DIRECTORIES`] that did not exist `before`.
fn remove_outside_directories(before: &BTreeMap<String, bool>) -> Result<(), NodeError> {
    for (path, existed) in before {
        if !existed && Path::new(path).exists() {
            std::fs::remove_dir_all(path).map_err(|source| NodeError::CreateDirectory {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// The cgroup v1 hierarchies mounted under `/sys/fs/cgroup`, each once (the joined ones,
/// `cpu,cpuacct`, also appear as symlinks `cpu` and `cpuacct`).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut hierarchies: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .filter(|path| path.join("cgroup.procs").is_file())
        .collect();
    hierarchies.sort();
    hierarchies
}

/// Creates `name` at the top of every hierarchy, as the kubelet requires of its cgroup
/// root; in `cpuset` a new cgroup holds no CPU or memory node until given its parent's.
fn create_cgroup_root(name: &str) -> Result<(), NodeError> {
    for hierarchy in cgroup_hierarchies() {
        let directory = hierarchy.join(name);
        create_dir(&directory)?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let inherited = hierarchy.join(file);
            if let Ok(value) = std::fs::read_to_string(&inherited) {
                let own = directory.join(file);
                if std::fs::read_to_string(&own)
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
                {
                    std::fs::write(&own, value.trim()).map_err(|source| NodeError::WriteFile {
                        path: own.display().to_string(),
                        source,
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// The node's pod cgroups (`name` at the top of every hierarchy), removed deepest first
/// once no process is left in them.
fn remove_cgroups(name: &str) -> Result<(), NodeError> {
    for hierarchy in cgroup_hierarchies() {
        let root = hierarchy.join(name);
        if !root.is_dir() {
            continue;
        }
        let mut directories = Vec::new();
        collect_directories(&root, &mut directories);
        directories.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for directory in directories {
            let _removed = std::fs::remove_dir(&directory);
        }
    }
    Ok(())
}

fn collect_directories(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_directories(&entry.path(), out);
            }
        }
    }
}

/// SIGTERM, then SIGKILL after 10 s.
fn terminate(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _sent = run("kill", &["-TERM", &pid.to_string()]);
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _killed = child.kill();
    let _reaped = child.wait();
}

impl Drop for RealNode {
    fn drop(&mut self) {
        for problem in self.stop() {
            eprintln!("[real node] {problem}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_tables_do_not_make_iptables_differ() {
        let a = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j X\nCOMMIT\n";
        let b = "*filter\n:INPUT ACCEPT [1:2]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [5:6]\n-A PREROUTING -j X\nCOMMIT\n";
        assert_eq!(rules_without_counters(a), rules_without_counters(b));
        let chain = "*filter\n:INPUT ACCEPT [1:2]\n:KUBE-FIREWALL - [0:0]\nCOMMIT\n";
        assert_ne!(
            rules_without_counters(chain),
            "",
            "a chain of its own counts"
        );
    }

    #[test]
    fn counters_do_not_make_iptables_differ() {
        let a =
            "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [3:180]\n-A X -j Y\nCOMMIT\n";
        let b = "# Generated later\n*nat\n:PREROUTING ACCEPT [9:540]\n-A X -j Y\nCOMMIT\n";
        assert_eq!(rules_without_counters(a), rules_without_counters(b));
    }

    #[test]
    fn the_cni_network_adds_no_iptables_rules_of_its_own() {
        let paths = NodePaths::under(Path::new("/work/node"));
        let config: serde_json::Value =
            serde_json::from_str(&cni_config(&NodeOptions::default(), &paths)).unwrap();
        let plugins = config["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 1, "no portmap or firewall plugin");
        assert_eq!(plugins[0]["ipMasq"], json!(false));
        assert_eq!(plugins[0]["ipam"]["dataDir"], json!("/work/node/cni/ipam"));
    }

    #[test]
    fn containerd_keeps_its_state_in_the_work_directory() {
        let paths = NodePaths::under(Path::new("/work/node"));
        let config = containerd_config(&paths);
        for wanted in [
            "root = \"/work/node/containerd/root\"",
            "state = \"/work/node/containerd/state\"",
            "address = \"/work/node/containerd/containerd.sock\"",
            "restrict_oom_score_adj = true",
            "SystemdCgroup = false",
        ] {
            assert!(config.contains(wanted), "{wanted} missing:\n{config}");
        }
    }
}
