//! One container of a host pod template, run as a local process.
//!
//! The control plane the controller renders is meant to run in pods; on a machine without
//! a kubelet the only faithful test of those flags is to run the same binaries with the
//! same flags. So this translates exactly what a kubelet would have made concrete and
//! nothing else: volumes become directories under a root (Secret, ConfigMap and projected
//! keys written as files, emptyDir and claims as directories), `$(VAR)` references expand
//! from the container's env, paths under a mount point to the laid-out files, listen and
//! advertise addresses become a loopback address with local ports, and URLs naming an
//! in-cluster Service point at the local process serving it ([`ServiceMap`]). Kubeconfig
//! files get the same treatment for their `server:`. Every other flag stays as rendered,
//! so a wrong flag fails here as it would in a pod.
//!
//! [`plan`] is pure (tests assert on its result); [`LocalPodPlan::materialise`] writes the
//! files and [`LocalPodPlan::command`] builds the process.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Component as PathComponent, Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, PodSpec, Secret, Volume};
use kube::Api;
use kube::api::ListParams;

/// Why a container could not be turned into a local process. Never carries Secret data.
#[derive(Debug, thiserror::Error)]
pub enum LocalPodError {
    #[error("the pod has no container {container:?} (containers: {available})")]
    FindContainer {
        container: String,
        available: String,
    },
    #[error(
        "container {container} has no command; the image's entrypoint is unknown outside a container runtime"
    )]
    ReadCommand { container: String },
    #[error(
        "container {container} mounts volume {volume}, which is neither a pod volume nor a volume claim template"
    )]
    ResolveVolume { container: String, volume: String },
    #[error("volume {volume} is a {kind} volume, which a local process cannot be given")]
    SupportVolume { volume: String, kind: &'static str },
    #[error("volume {volume} needs Secret {secret}, which does not exist")]
    ReadSecret { volume: String, secret: String },
    #[error("volume {volume} needs key {key} of Secret {secret}, which it does not have")]
    ReadSecretKey {
        volume: String,
        secret: String,
        key: String,
    },
    #[error("volume {volume} needs ConfigMap {config_map}, which does not exist")]
    ReadConfigMap { volume: String, config_map: String },
    #[error("volume {volume} needs key {key} of ConfigMap {config_map}, which it does not have")]
    ReadConfigMapKey {
        volume: String,
        config_map: String,
        key: String,
    },
    #[error("volume {volume} item path {path:?} is not a relative path inside the volume")]
    CheckItemPath { volume: String, path: String },
    #[error("environment variable {variable}: {reason}")]
    ResolveEnv { variable: String, reason: String },
    #[error("{flag} uses port {port}, which has no local port (known: {known})")]
    MapPort {
        flag: String,
        port: u16,
        known: String,
    },
    #[error("no {program} binary in {searched}")]
    FindBinary { program: String, searched: String },
    #[error("creating directory {path}: {source}")]
    CreateDirectory {
        path: String,
        source: std::io::Error,
    },
    #[error("removing the previous contents of {path}: {source}")]
    RemoveDirectory {
        path: String,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    WriteFile {
        path: String,
        source: std::io::Error,
    },
}

/// Where in-cluster Service names are served on this machine.
///
/// Keys are what cluster DNS resolves: a Service `NAME` of a namespace, or a pod of a
/// headless Service as `POD.SERVICE`; each port separately, since on this machine every
/// port of one pod may be a different local port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceMap {
    cluster_domain: String,
    entries: BTreeMap<(String, String, u16), SocketAddr>,
}

impl ServiceMap {
    pub fn new(cluster_domain: &str) -> Self {
        ServiceMap {
            cluster_domain: cluster_domain.trim_matches('.').to_owned(),
            entries: BTreeMap::new(),
        }
    }

    /// `name` is `SERVICE` or, for a pod of a headless Service, `POD.SERVICE`.
    pub fn insert(&mut self, namespace: &str, name: &str, port: u16, local: SocketAddr) {
        self.entries
            .insert((namespace.to_owned(), name.to_owned(), port), local);
    }

    /// The local address of `host:port` as a pod in `from_namespace` would resolve it:
    /// `X`, `X.NS`, `X.NS.svc`, `X.NS.svc.DOMAIN`, and the same with `POD.` in front.
    pub fn resolve(&self, host: &str, port: u16, from_namespace: &str) -> Option<SocketAddr> {
        let host = host.trim_end_matches('.');
        let domain_suffix = format!(".svc.{}", self.cluster_domain);
        let (relative, qualified) = match host
            .strip_suffix(&domain_suffix)
            .or_else(|| host.strip_suffix(".svc"))
        {
            Some(relative) => (relative, true),
            None => (host, false),
        };
        let lookup = |namespace: &str, name: &str| {
            self.entries
                .get(&(namespace.to_owned(), name.to_owned(), port))
                .copied()
        };
        let parts: Vec<&str> = relative.split('.').collect();
        // The DNS search path tries the pod's own namespace first.
        let in_own_namespace = (!qualified).then(|| lookup(from_namespace, relative));
        let with_namespace = match parts.as_slice() {
            [service, namespace] => lookup(namespace, service),
            [pod, service, namespace] => lookup(namespace, &format!("{pod}.{service}")),
            _ => None,
        };
        in_own_namespace.flatten().or(with_namespace)
    }

    /// `url` with its host and port replaced by the local address serving them, when the
    /// host names a known Service; `None` otherwise.
    pub fn rewrite_url(&self, url: &str, from_namespace: &str) -> Option<String> {
        let parsed = ParsedUrl::parse(url)?;
        let local = self.resolve(&parsed.host, parsed.port, from_namespace)?;
        Some(parsed.with_authority(&local.to_string()))
    }
}

/// `scheme://[userinfo@]host[:port]rest`, split just enough to swap the authority.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ParsedUrl {
    scheme: String,
    host: String,
    port: u16,
    rest: String,
}

impl ParsedUrl {
    fn parse(url: &str) -> Option<Self> {
        let (scheme, after) = url.split_once("://")?;
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let (host, port) = split_host_port(authority);
        let port = match port {
            Some(port) => port.parse().ok()?,
            None => match scheme {
                "https" => 443,
                "http" => 80,
                _ => return None,
            },
        };
        if host.is_empty() {
            return None;
        }
        Some(ParsedUrl {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            port,
            rest: rest.to_owned(),
        })
    }

    fn with_authority(&self, authority: &str) -> String {
        format!("{}://{authority}{}", self.scheme, self.rest)
    }
}

/// `host:port`, `[v6]:port`, `host` or `[v6]`.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(bracketed) = authority.strip_prefix('[') {
        return match bracketed.split_once(']') {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

fn join_host_port(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// The Secrets and ConfigMaps of the pod's namespace, by name.
#[derive(Clone, Debug, Default)]
pub struct VolumeSources {
    pub secrets: BTreeMap<String, Secret>,
    pub config_maps: BTreeMap<String, ConfigMap>,
}

/// The Secrets and ConfigMaps of `namespace` on the host, which a pod there could mount.
pub async fn read_volume_sources(
    host: &kube::Client,
    namespace: &str,
) -> Result<VolumeSources, String> {
    let secrets = Api::<Secret>::namespaced(host.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Secrets in {namespace}: {e}"))?;
    let config_maps = Api::<ConfigMap>::namespaced(host.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing ConfigMaps in {namespace}: {e}"))?;
    Ok(VolumeSources {
        secrets: secrets
            .items
            .into_iter()
            .filter_map(|s| Some((s.metadata.name.clone()?, s)))
            .collect(),
        config_maps: config_maps
            .items
            .into_iter()
            .filter_map(|c| Some((c.metadata.name.clone()?, c)))
            .collect(),
    })
}

/// What the kubelet and the cluster would decide for this pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlacement {
    pub pod_name: String,
    pub namespace: String,
    /// Address the process listens and advertises on (`status.podIP`).
    pub pod_ip: IpAddr,
    /// Rendered port -> local port, for every port of [`required_ports`].
    pub ports: BTreeMap<u16, u16>,
    /// Where the pod's volumes are laid out and its relative paths start.
    pub root: PathBuf,
    /// Names of the StatefulSet's volume claim templates: mounts of these are directories
    /// kept across restarts, as a PersistentVolumeClaim outlives its pods.
    pub claim_templates: Vec<String>,
    /// `--flag=value` pairs set after translation (added when the rendered args lack
    /// them), for what a pod gets from its network namespace but a process must be told,
    /// such as kube-apiserver's `--bind-address`.
    pub set_flags: Vec<(String, String)>,
}

/// A file to write, with the mode the volume asks for. Its contents may be Secret data,
/// so `Debug` shows only their length.
#[derive(Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub mode: u32,
    contents: Vec<u8>,
}

impl PlannedFile {
    pub fn contents(&self) -> &[u8] {
        &self.contents
    }
}

impl std::fmt::Debug for PlannedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("bytes", &self.contents.len())
            .finish()
    }
}

/// A directory the pod sees and where it is on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMount {
    pub mount_path: String,
    pub local: PathBuf,
}

/// How one volume's directory is prepared before the process starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedVolume {
    pub name: String,
    pub local: PathBuf,
    /// Emptied first (Secrets, ConfigMaps and emptyDir are new with every pod); a claim
    /// keeps its data.
    pub fresh: bool,
}

/// One container as a local process: what to run, and the files it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPodPlan {
    pub pod_name: String,
    pub container: String,
    /// Basename of `command[0]`, looked up by [`LocalPodPlan::find_binary`].
    pub program: String,
    /// `command[1..]` then `args`, translated.
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub root: PathBuf,
    pub working_dir: PathBuf,
    pub volumes: Vec<PlannedVolume>,
    pub mounts: Vec<PlannedMount>,
    pub files: Vec<PlannedFile>,
}

impl LocalPodPlan {
    /// The translated value of `--name` (the last one, as Go's flag package takes).
    pub fn flag(&self, name: &str) -> Option<&str> {
        flag_in(&self.args, name)
    }

    /// Where `container_path` (an absolute path inside the container) is on this machine,
    /// when a volume holds it.
    pub fn local_path(&self, container_path: &str) -> Option<PathBuf> {
        local_path_in(&self.mounts, container_path)
    }

    /// The planned file at `local` (as [`LocalPodPlan::local_path`] or a flag names it).
    pub fn file(&self, local: &Path) -> Option<&PlannedFile> {
        self.files.iter().find(|f| f.path == local)
    }

    /// `program` in the first of `dirs` that has it.
    pub fn find_binary(&self, dirs: &[PathBuf]) -> Result<PathBuf, LocalPodError> {
        find_binary(&self.program, dirs)
    }

    /// Creates the volume directories and writes every file.
    pub fn materialise(&self) -> Result<(), LocalPodError> {
        for volume in &self.volumes {
            if volume.fresh && volume.local.exists() {
                std::fs::remove_dir_all(&volume.local).map_err(|source| {
                    LocalPodError::RemoveDirectory {
                        path: volume.local.display().to_string(),
                        source,
                    }
                })?;
            }
            create_dir(&volume.local)?;
        }
        for mount in &self.mounts {
            if !mount.local.exists() {
                create_dir(&mount.local)?;
            }
        }
        create_dir(&self.working_dir)?;
        for file in &self.files {
            if let Some(parent) = file.path.parent() {
                create_dir(parent)?;
            }
            write_file(file)?;
        }
        Ok(())
    }

    /// The process, with the container's env only (plus `PATH`), started in its working
    /// directory; the caller sets stdout/stderr.
    pub fn command(&self, binary: &Path) -> std::process::Command {
        let mut command = std::process::Command::new(binary);
        command
            .args(&self.args)
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.working_dir)
            .stdin(std::process::Stdio::null());
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command
    }
}

fn create_dir(path: &Path) -> Result<(), LocalPodError> {
    std::fs::create_dir_all(path).map_err(|source| LocalPodError::CreateDirectory {
        path: path.display().to_string(),
        source,
    })
}

fn write_file(file: &PlannedFile) -> Result<(), LocalPodError> {
    use std::os::unix::fs::PermissionsExt as _;
    let error = |source| LocalPodError::WriteFile {
        path: file.path.display().to_string(),
        source,
    };
    // A read-only file from an earlier layout cannot be opened for writing.
    if file.path.exists() {
        std::fs::remove_file(&file.path).map_err(error)?;
    }
    std::fs::write(&file.path, &file.contents).map_err(error)?;
    // Owner-readable at least: the process runs as this user, not as the pod's.
    std::fs::set_permissions(
        &file.path,
        std::fs::Permissions::from_mode(file.mode | 0o400),
    )
    .map_err(error)
}

/// `program` (a basename) in the first of `dirs` holding it as a file.
pub fn find_binary(program: &str, dirs: &[PathBuf]) -> Result<PathBuf, LocalPodError> {
    dirs.iter()
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or_else(|| LocalPodError::FindBinary {
            program: program.to_owned(),
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn flag_in<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let long = format!("--{name}");
    let mut found = None;
    let mut words = args.iter().peekable();
    while let Some(word) = words.next() {
        if let Some(value) = word.strip_prefix(&long) {
            if let Some(value) = value.strip_prefix('=') {
                found = Some(value);
            } else if value.is_empty() {
                found = words
                    .peek()
                    .filter(|next| !next.starts_with('-'))
                    .map(|next| next.as_str());
            }
        }
    }
    found
}

fn local_path_in(mounts: &[PlannedMount], container_path: &str) -> Option<PathBuf> {
    mounts
        .iter()
        .filter_map(|mount| {
            let base = mount.mount_path.trim_end_matches('/');
            let rest = container_path.strip_prefix(base)?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            let rest = rest.trim_start_matches('/');
            let local = if rest.is_empty() {
                mount.local.clone()
            } else {
                mount.local.join(rest)
            };
            Some((base.len(), local))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, path)| path)
}

/// The container named `name`, or the only one when `name` is `None`.
fn find_container<'a>(
    spec: &'a PodSpec,
    name: Option<&str>,
) -> Result<&'a Container, LocalPodError> {
    let found = match name {
        Some(name) => spec.containers.iter().find(|c| c.name == name),
        None if spec.containers.len() == 1 => spec.containers.first(),
        None => None,
    };
    found.ok_or_else(|| LocalPodError::FindContainer {
        container: name.unwrap_or("<the only one>").to_owned(),
        available: spec
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Every port the container's processes would bind or announce: declared container ports,
/// numeric `--*port` flags, and the ports of listen and advertise addresses. The caller
/// maps each to a local port in [`PodPlacement::ports`].
pub fn required_ports(
    spec: &PodSpec,
    container: Option<&str>,
) -> Result<BTreeSet<u16>, LocalPodError> {
    let container = find_container(spec, container)?;
    let mut ports: BTreeSet<u16> = container
        .ports
        .iter()
        .flatten()
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    for (flag, value) in flag_words(&container_words(container)) {
        let Some(flag) = flag else { continue };
        if is_port_flag(flag) {
            ports.extend(value.parse::<u16>().ok().filter(|p| *p != 0));
        } else if is_listen_flag(flag) || is_advertise_flag(flag) {
            for entry in value.split(',') {
                let url = entry.split_once('=').map_or(entry, |(_, url)| url);
                if let Some(parsed) = ParsedUrl::parse(url) {
                    ports.insert(parsed.port);
                } else if let (_, Some(port)) = split_host_port(url) {
                    ports.extend(port.parse::<u16>().ok().filter(|p| *p != 0));
                }
            }
        }
    }
    Ok(ports)
}

/// What the binary parses: `command[1..]` then `args`. Flags may sit in either (the
/// controller renders them in `command`, users add them in `args`), so every check of a
/// container's flags reads both in this order, as the kubelet joins them.
pub fn container_words(container: &Container) -> Vec<String> {
    container
        .command
        .iter()
        .flatten()
        .skip(1)
        .chain(container.args.iter().flatten())
        .cloned()
        .collect()
}

/// Each word with the flag it belongs to: `--a=b` is (a, b); in `--a b` the `b` is a
/// value of `a`; a flag word without `=` stands alone with an empty value.
fn flag_words(words: &[String]) -> Vec<(Option<&str>, &str)> {
    let mut out = Vec::with_capacity(words.len());
    let mut pending: Option<&str> = None;
    for word in words {
        if let Some(flag) = word.strip_prefix("--").or_else(|| word.strip_prefix('-')) {
            match flag.split_once('=') {
                Some((name, value)) => {
                    out.push((Some(name), value));
                    pending = None;
                }
                None => {
                    out.push((Some(flag), ""));
                    pending = Some(flag);
                }
            }
        } else {
            out.push((pending.take(), word.as_str()));
        }
    }
    out
}

fn is_port_flag(flag: &str) -> bool {
    flag == "port" || flag.ends_with("-port")
}

fn is_listen_flag(flag: &str) -> bool {
    flag == "bind-address" || flag == "address" || flag.starts_with("listen")
}

fn is_advertise_flag(flag: &str) -> bool {
    flag.starts_with("advertise") || flag.starts_with("initial-advertise")
}

/// Translates one container of `spec` (the named one, or the only one).
pub fn plan(
    spec: &PodSpec,
    container: Option<&str>,
    placement: &PodPlacement,
    services: &ServiceMap,
    sources: &VolumeSources,
) -> Result<LocalPodPlan, LocalPodError> {
    let container = find_container(spec, container)?;
    let program = container
        .command
        .as_ref()
        .and_then(|command| command.first())
        .and_then(|first| Path::new(first).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| LocalPodError::ReadCommand {
            container: container.name.clone(),
        })?;
    let env = resolve_env(container, placement, sources)?;
    let (volumes, mounts, files) = lay_out(spec, container, placement, sources)?;
    let translator = Translator {
        placement,
        services,
        mounts: &mounts,
    };
    let files = files
        .into_iter()
        .map(|file| translator.rewrite_kubeconfig(file))
        .collect();
    let expanded: Vec<String> = container_words(container)
        .iter()
        .map(|word| expand(word, &env))
        .collect();
    let mut args = translator.translate_args(&expanded)?;
    for (flag, value) in &placement.set_flags {
        set_flag(&mut args, flag, value);
    }
    let working_dir = container
        .working_dir
        .as_deref()
        .and_then(|dir| local_path_in(&mounts, dir))
        .unwrap_or_else(|| placement.root.clone());
    Ok(LocalPodPlan {
        pod_name: placement.pod_name.clone(),
        container: container.name.clone(),
        program,
        args,
        env,
        root: placement.root.clone(),
        working_dir,
        volumes,
        mounts,
        files,
    })
}

/// Replaces every `--flag=...` (and `--flag VALUE`) with `--flag=value`, or appends it.
fn set_flag(args: &mut Vec<String>, flag: &str, value: &str) {
    let long = format!("--{flag}");
    let with_value = format!("{long}=");
    let mut replaced = false;
    let mut index = 0;
    while index < args.len() {
        let is_separate = args[index] == long;
        if is_separate || args[index].starts_with(&with_value) {
            args[index] = format!("{long}={value}");
            replaced = true;
            if is_separate
                && args
                    .get(index + 1)
                    .is_some_and(|next| !next.starts_with('-'))
            {
                args.remove(index + 1);
            }
        }
        index += 1;
    }
    if !replaced {
        args.push(format!("{long}={value}"));
    }
}

/// `$(NAME)` from `vars`, `$$` as `$`; unknown names stay as written, as the kubelet does.
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(reference) = after.strip_prefix('(')
            && let Some(close) = reference.find(')')
        {
            let name = &reference[..close];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &reference[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn resolve_env(
    container: &Container,
    placement: &PodPlacement,
    sources: &VolumeSources,
) -> Result<BTreeMap<String, String>, LocalPodError> {
    let mut env = BTreeMap::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(reference) = &from.secret_ref {
            match sources.secrets.get(&reference.name) {
                Some(secret) => {
                    for (key, value) in secret.data.iter().flatten() {
                        env.insert(
                            format!("{prefix}{key}"),
                            String::from_utf8_lossy(&value.0).into_owned(),
                        );
                    }
                }
                None if reference.optional == Some(true) => {}
                None => {
                    return Err(LocalPodError::ResolveEnv {
                        variable: format!("{prefix}*"),
                        reason: format!("envFrom Secret {} does not exist", reference.name),
                    });
                }
            }
        }
        if let Some(reference) = &from.config_map_ref {
            match sources.config_maps.get(&reference.name) {
                Some(config_map) => {
                    for (key, value) in config_map.data.iter().flatten() {
                        env.insert(format!("{prefix}{key}"), value.clone());
                    }
                }
                None if reference.optional == Some(true) => {}
                None => {
                    return Err(LocalPodError::ResolveEnv {
                        variable: format!("{prefix}*"),
                        reason: format!("envFrom ConfigMap {} does not exist", reference.name),
                    });
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        let error = |reason: String| LocalPodError::ResolveEnv {
            variable: var.name.clone(),
            reason,
        };
        let value = if let Some(value) = &var.value {
            // Earlier variables may be referenced, as the kubelet allows.
            expand(value, &env)
        } else if let Some(source) = &var.value_from {
            if let Some(field) = &source.field_ref {
                match field.field_path.as_str() {
                    "metadata.name" => placement.pod_name.clone(),
                    "metadata.namespace" => placement.namespace.clone(),
                    "status.podIP" | "status.podIPs" | "status.hostIP" | "status.hostIPs" => {
                        placement.pod_ip.to_string()
                    }
                    other => return Err(error(format!("fieldRef {other} is not simulated"))),
                }
            } else if let Some((object, key, optional)) = source
                .secret_key_ref
                .as_ref()
                .map(|k| (KeyedObject::Secret(&k.name), &k.key, k.optional))
                .or_else(|| {
                    let k = source.config_map_key_ref.as_ref()?;
                    Some((KeyedObject::ConfigMap(&k.name), &k.key, k.optional))
                })
            {
                match object.env_value(sources, key) {
                    Some(value) => value,
                    None if optional == Some(true) => continue,
                    None => {
                        return Err(error(format!(
                            "{object} has no key {key} (or does not exist)"
                        )));
                    }
                }
            } else {
                return Err(error(
                    "only fieldRef, secretKeyRef and configMapKeyRef are simulated".to_owned(),
                ));
            }
        } else {
            String::new()
        };
        env.insert(var.name.clone(), value);
    }
    Ok(env)
}

/// A volume's files relative to its root, before any mount's subPath picks from them.
struct VolumeFiles {
    fresh: bool,
    files: Vec<(PathBuf, u32, Vec<u8>)>,
}

type Layout = (Vec<PlannedVolume>, Vec<PlannedMount>, Vec<PlannedFile>);

fn lay_out(
    spec: &PodSpec,
    container: &Container,
    placement: &PodPlacement,
    sources: &VolumeSources,
) -> Result<Layout, LocalPodError> {
    let volumes_root = placement.root.join("volumes");
    let mut volumes: BTreeMap<String, PlannedVolume> = BTreeMap::new();
    let mut files: BTreeMap<PathBuf, PlannedFile> = BTreeMap::new();
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let local_volume = volumes_root.join(&mount.name);
        if !volumes.contains_key(&mount.name) {
            let contents = match spec.volumes.iter().flatten().find(|v| v.name == mount.name) {
                Some(volume) => volume_files(volume, sources)?,
                None if placement.claim_templates.contains(&mount.name) => VolumeFiles {
                    fresh: false,
                    files: Vec::new(),
                },
                None => {
                    return Err(LocalPodError::ResolveVolume {
                        container: container.name.clone(),
                        volume: mount.name.clone(),
                    });
                }
            };
            for (relative, mode, bytes) in contents.files {
                let path = local_volume.join(&relative);
                files.insert(
                    path.clone(),
                    PlannedFile {
                        path,
                        mode,
                        contents: bytes,
                    },
                );
            }
            volumes.insert(
                mount.name.clone(),
                PlannedVolume {
                    name: mount.name.clone(),
                    local: local_volume.clone(),
                    fresh: contents.fresh,
                },
            );
        }
        let sub_path = mount.sub_path.as_deref().unwrap_or_default();
        let local = if sub_path.is_empty() {
            local_volume
        } else {
            local_volume.join(checked_relative(&mount.name, sub_path)?)
        };
        mounts.push(PlannedMount {
            mount_path: mount.mount_path.clone(),
            local,
        });
    }
    Ok((
        volumes.into_values().collect(),
        mounts,
        files.into_values().collect(),
    ))
}

fn checked_relative(volume: &str, path: &str) -> Result<PathBuf, LocalPodError> {
    let relative = Path::new(path);
    let normal = relative
        .components()
        .all(|c| matches!(c, PathComponent::Normal(_)));
    if path.is_empty() || !normal {
        return Err(LocalPodError::CheckItemPath {
            volume: volume.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(relative.to_path_buf())
}

/// The kubelet's default file mode of Secret, ConfigMap and projected volumes.
const DEFAULT_MODE: i32 = 0o644;

fn mode_bits(mode: i32) -> u32 {
    u32::try_from(mode).unwrap_or(0o644) & 0o777
}

fn volume_files(volume: &Volume, sources: &VolumeSources) -> Result<VolumeFiles, LocalPodError> {
    let name = &volume.name;
    let keyed = |object, items, optional: Option<bool>, default_mode| {
        keyed_files(
            name,
            object,
            items,
            optional == Some(true),
            default_mode,
            sources,
        )
    };
    let mut files = Vec::new();
    if let Some(secret) = &volume.secret {
        let secret_name = secret.secret_name.clone().unwrap_or_default();
        let default_mode = secret.default_mode.unwrap_or(DEFAULT_MODE);
        files.extend(keyed(
            KeyedObject::Secret(&secret_name),
            secret.items.as_deref(),
            secret.optional,
            default_mode,
        )?);
    } else if let Some(config_map) = &volume.config_map {
        let default_mode = config_map.default_mode.unwrap_or(DEFAULT_MODE);
        files.extend(keyed(
            KeyedObject::ConfigMap(&config_map.name),
            config_map.items.as_deref(),
            config_map.optional,
            default_mode,
        )?);
    } else if let Some(projected) = &volume.projected {
        let default_mode = projected.default_mode.unwrap_or(DEFAULT_MODE);
        for source in projected.sources.iter().flatten() {
            if let Some(secret) = &source.secret {
                files.extend(keyed(
                    KeyedObject::Secret(&secret.name),
                    secret.items.as_deref(),
                    secret.optional,
                    default_mode,
                )?);
            } else if let Some(config_map) = &source.config_map {
                files.extend(keyed(
                    KeyedObject::ConfigMap(&config_map.name),
                    config_map.items.as_deref(),
                    config_map.optional,
                    default_mode,
                )?);
            } else {
                return Err(LocalPodError::SupportVolume {
                    volume: name.clone(),
                    kind: "projected downwardAPI, serviceAccountToken or clusterTrustBundle",
                });
            }
        }
    } else if volume.empty_dir.is_some() {
        return Ok(VolumeFiles { fresh: true, files });
    } else if volume.persistent_volume_claim.is_some() {
        return Ok(VolumeFiles {
            fresh: false,
            files,
        });
    } else {
        let kind = if volume.host_path.is_some() {
            "hostPath"
        } else if volume.downward_api.is_some() {
            "downwardAPI"
        } else {
            "non-Secret, non-ConfigMap"
        };
        return Err(LocalPodError::SupportVolume {
            volume: name.clone(),
            kind,
        });
    }
    Ok(VolumeFiles { fresh: true, files })
}

/// `(path, key)` pairs: the items, or every key under its own name.
fn selected_items(
    volume: &str,
    keys: Vec<String>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
) -> Result<Vec<(PathBuf, u32, String)>, LocalPodError> {
    match items {
        Some(items) => items
            .iter()
            .map(|item| {
                Ok((
                    checked_relative(volume, &item.path)?,
                    mode_bits(item.mode.unwrap_or(default_mode)),
                    item.key.clone(),
                ))
            })
            .collect(),
        None => keys
            .into_iter()
            .map(|key| {
                Ok((
                    checked_relative(volume, &key)?,
                    mode_bits(default_mode),
                    key,
                ))
            })
            .collect(),
    }
}

/// The object a Secret or ConfigMap volume (or projected source) takes its keys from.
#[derive(Clone, Copy)]
enum KeyedObject<'a> {
    Secret(&'a str),
    ConfigMap(&'a str),
}

impl std::fmt::Display for KeyedObject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyedObject::Secret(name) => write!(f, "Secret {name}"),
            KeyedObject::ConfigMap(name) => write!(f, "ConfigMap {name}"),
        }
    }
}

impl KeyedObject<'_> {
    /// The object's keys with their bytes (a ConfigMap's `data` and `binaryData` both),
    /// or `None` when `sources` lacks it.
    fn data(self, sources: &VolumeSources) -> Option<BTreeMap<String, Vec<u8>>> {
        match self {
            KeyedObject::Secret(name) => sources.secrets.get(name).map(|secret| {
                secret
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect()
            }),
            KeyedObject::ConfigMap(name) => sources.config_maps.get(name).map(|config_map| {
                let text = config_map
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone().into_bytes()));
                let binary = config_map
                    .binary_data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()));
                text.chain(binary).collect()
            }),
        }
    }

    /// An environment variable's value from `key`: a ConfigMap's `data` only, as the
    /// kubelet reads it (its `binaryData` is for volumes).
    fn env_value(self, sources: &VolumeSources, key: &str) -> Option<String> {
        match self {
            KeyedObject::Secret(name) => sources
                .secrets
                .get(name)
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get(key))
                .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned()),
            KeyedObject::ConfigMap(name) => sources
                .config_maps
                .get(name)
                .and_then(|c| c.data.as_ref())
                .and_then(|d| d.get(key))
                .cloned(),
        }
    }

    fn missing(self, volume: &str) -> LocalPodError {
        match self {
            KeyedObject::Secret(secret) => LocalPodError::ReadSecret {
                volume: volume.to_owned(),
                secret: secret.to_owned(),
            },
            KeyedObject::ConfigMap(config_map) => LocalPodError::ReadConfigMap {
                volume: volume.to_owned(),
                config_map: config_map.to_owned(),
            },
        }
    }

    fn missing_key(self, volume: &str, key: String) -> LocalPodError {
        match self {
            KeyedObject::Secret(secret) => LocalPodError::ReadSecretKey {
                volume: volume.to_owned(),
                secret: secret.to_owned(),
                key,
            },
            KeyedObject::ConfigMap(config_map) => LocalPodError::ReadConfigMapKey {
                volume: volume.to_owned(),
                config_map: config_map.to_owned(),
                key,
            },
        }
    }
}

/// The files of a Secret or ConfigMap volume: every key of `object`, or the listed
/// `items`. An absent object or listed key fails the pod, as the kubelet does, unless the
/// volume is optional.
fn keyed_files(
    volume: &str,
    object: KeyedObject<'_>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: i32,
    sources: &VolumeSources,
) -> Result<Vec<(PathBuf, u32, Vec<u8>)>, LocalPodError> {
    let Some(data) = object.data(sources) else {
        if optional {
            return Ok(Vec::new());
        }
        return Err(object.missing(volume));
    };
    let keys = data.keys().cloned().collect();
    selected_items(volume, keys, items, default_mode)?
        .into_iter()
        .filter_map(|(path, mode, key)| match data.get(&key) {
            Some(bytes) => Some(Ok((path, mode, bytes.clone()))),
            None if optional => None,
            None => Some(Err(object.missing_key(volume, key))),
        })
        .collect()
}

struct Translator<'a> {
    placement: &'a PodPlacement,
    services: &'a ServiceMap,
    mounts: &'a [PlannedMount],
}

impl Translator<'_> {
    fn translate_args(&self, words: &[String]) -> Result<Vec<String>, LocalPodError> {
        flag_words(words)
            .into_iter()
            .zip(words)
            .map(|((flag, value), word)| {
                let Some(name) = flag else {
                    return self.value("", value);
                };
                if value.is_empty() {
                    return Ok(word.clone());
                }
                let translated = self.value(name, value)?;
                // A value given as a separate word stays a separate word.
                Ok(if word.starts_with('-') {
                    let dashes = if word.starts_with("--") { "--" } else { "-" };
                    format!("{dashes}{name}={translated}")
                } else {
                    translated
                })
            })
            .collect()
    }

    fn map_port(&self, flag: &str, port: u16) -> Result<u16, LocalPodError> {
        self.placement
            .ports
            .get(&port)
            .copied()
            .ok_or_else(|| LocalPodError::MapPort {
                flag: format!("--{flag}"),
                port,
                known: self
                    .placement
                    .ports
                    .keys()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn value(&self, flag: &str, value: &str) -> Result<String, LocalPodError> {
        let pod_ip = self.placement.pod_ip;
        if is_port_flag(flag)
            && let Ok(port) = value.parse::<u16>()
        {
            return if port == 0 {
                Ok(value.to_owned())
            } else {
                Ok(self.map_port(flag, port)?.to_string())
            };
        }
        if value.contains("://") {
            let entries: Result<Vec<String>, LocalPodError> = value
                .split(',')
                .map(|entry| {
                    let (prefix, url) = match entry.split_once('=') {
                        Some((name, url)) if !name.contains("://") => (format!("{name}="), url),
                        _ => (String::new(), entry),
                    };
                    Ok(format!("{prefix}{}", self.url(flag, url)?))
                })
                .collect();
            return Ok(entries?.join(","));
        }
        if is_listen_flag(flag) || is_advertise_flag(flag) {
            return match split_host_port(value) {
                (_, Some(port)) => match port.parse::<u16>() {
                    Ok(port) => Ok(join_host_port(pod_ip, self.map_port(flag, port)?)),
                    Err(_) => Ok(value.to_owned()),
                },
                (_, None) => Ok(pod_ip.to_string()),
            };
        }
        if value.starts_with('/') {
            let parts: Vec<&str> = value.split(',').collect();
            if parts.iter().all(|p| p.starts_with('/')) {
                let local: Vec<String> = parts
                    .iter()
                    .map(|part| {
                        local_path_in(self.mounts, part)
                            .map_or_else(|| (*part).to_owned(), |p| p.display().to_string())
                    })
                    .collect();
                return Ok(local.join(","));
            }
        }
        Ok(value.to_owned())
    }

    fn url(&self, flag: &str, url: &str) -> Result<String, LocalPodError> {
        let Some(parsed) = ParsedUrl::parse(url) else {
            return Ok(url.to_owned());
        };
        if is_listen_flag(flag) {
            let port = self.map_port(flag, parsed.port)?;
            return Ok(parsed.with_authority(&join_host_port(self.placement.pod_ip, port)));
        }
        if let Some(local) =
            self.services
                .resolve(&parsed.host, parsed.port, &self.placement.namespace)
        {
            return Ok(parsed.with_authority(&local.to_string()));
        }
        if is_advertise_flag(flag) {
            let port = self.map_port(flag, parsed.port)?;
            return Ok(parsed.with_authority(&join_host_port(self.placement.pod_ip, port)));
        }
        Ok(url.to_owned())
    }

    /// A kubeconfig among the files gets its servers and file paths made local.
    fn rewrite_kubeconfig(&self, mut file: PlannedFile) -> PlannedFile {
        if let Some(contents) = rewrite_kubeconfig(
            &file.contents,
            self.services,
            &self.placement.namespace,
            self.mounts,
        ) {
            file.contents = contents;
        }
        file
    }
}

/// `contents` with every `clusters[].cluster.server` naming a known Service pointed at its
/// local address, and file paths under `mounts` made local; `None` when it is not a
/// kubeconfig or nothing changes (an admission configuration's `kubeConfigFile` paths
/// too). Parsed as YAML, so anything else in it is kept.
pub fn rewrite_kubeconfig(
    contents: &[u8],
    services: &ServiceMap,
    namespace: &str,
    mounts: &[PlannedMount],
) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(contents).ok()?;
    if !text.contains("clusters") && !text.contains("users") && !text.contains("plugins") {
        return None;
    }
    let mut document = serde_yaml::from_str::<serde_yaml::Value>(text).ok()?;
    let mut changed = false;
    let local_file = |value: &mut serde_yaml::Value| -> bool {
        if let Some(path) = value.as_str()
            && let Some(local) = local_path_in(mounts, path)
        {
            *value = serde_yaml::Value::String(local.display().to_string());
            return true;
        }
        false
    };
    // An apiserver's admission configuration names the kubeconfig its webhook plugins
    // authenticate with.
    if document.get("kind").and_then(serde_yaml::Value::as_str) == Some("AdmissionConfiguration") {
        for plugin in document
            .get_mut("plugins")
            .and_then(serde_yaml::Value::as_sequence_mut)
            .into_iter()
            .flatten()
        {
            if let Some(path) = plugin
                .get_mut("configuration")
                .and_then(|configuration| configuration.get_mut("kubeConfigFile"))
            {
                changed |= local_file(path);
            }
        }
        return changed
            .then(|| {
                serde_yaml::to_string(&document)
                    .ok()
                    .map(String::into_bytes)
            })
            .flatten();
    }
    if document.get("kind").and_then(serde_yaml::Value::as_str) != Some("Config") {
        return None;
    }
    if let Some(clusters) = document
        .get_mut("clusters")
        .and_then(serde_yaml::Value::as_sequence_mut)
    {
        for entry in clusters.iter_mut() {
            let Some(cluster) = entry.get_mut("cluster") else {
                continue;
            };
            if let Some(server) = cluster.get_mut("server") {
                let local = server
                    .as_str()
                    .and_then(|url| services.rewrite_url(url, namespace));
                if let Some(local) = local {
                    *server = serde_yaml::Value::String(local);
                    changed = true;
                }
            }
            if let Some(path) = cluster.get_mut("certificate-authority") {
                changed |= local_file(path);
            }
        }
    }
    if let Some(users) = document
        .get_mut("users")
        .and_then(serde_yaml::Value::as_sequence_mut)
    {
        for entry in users.iter_mut() {
            let Some(user) = entry.get_mut("user") else {
                continue;
            };
            for field in ["client-certificate", "client-key", "tokenFile"] {
                if let Some(path) = user.get_mut(field) {
                    changed |= local_file(path);
                }
            }
        }
    }
    if !changed {
        return None;
    }
    serde_yaml::to_string(&document)
        .ok()
        .map(String::into_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> (String, Secret) {
        let data: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(k, v)| {
                use base64::Engine as _;
                (
                    (*k).to_owned(),
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        (
            name.to_owned(),
            serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap(),
        )
    }

    fn placement(ports: &[(u16, u16)]) -> PodPlacement {
        PodPlacement {
            pod_name: "t-etcd-0".into(),
            namespace: "team".into(),
            pod_ip: "127.0.0.1".parse().unwrap(),
            ports: ports.iter().copied().collect(),
            root: PathBuf::from("/work/t-etcd-0"),
            claim_templates: vec!["data".into()],
            set_flags: Vec::new(),
        }
    }

    fn services() -> ServiceMap {
        let mut map = ServiceMap::new("cluster.local");
        map.insert("team", "t-etcd", 2379, "127.0.0.1:40001".parse().unwrap());
        map.insert(
            "team",
            "t-etcd-0.t-etcd-peer",
            2379,
            "127.0.0.1:40001".parse().unwrap(),
        );
        map.insert(
            "team",
            "t-etcd-0.t-etcd-peer",
            2380,
            "127.0.0.1:40002".parse().unwrap(),
        );
        map.insert(
            "team",
            "t-apiserver",
            6443,
            "127.100.0.7:6443".parse().unwrap(),
        );
        map
    }

    fn etcd_pod() -> PodSpec {
        pod(json!({
            "containers": [{
                "name": "etcd",
                "command": ["/usr/local/bin/etcd"],
                "args": [
                    "--name=$(POD_NAME)",
                    "--advertise-client-urls=https://$(POD_NAME).t-etcd-peer.team.svc:2379",
                    "--initial-advertise-peer-urls=https://$(POD_NAME).t-etcd-peer.team.svc:2380",
                    "--initial-cluster=t-etcd-0=https://t-etcd-0.t-etcd-peer.team.svc:2380",
                    "--listen-client-urls=https://0.0.0.0:2379",
                    "--listen-peer-urls=https://0.0.0.0:2380",
                    "--listen-metrics-urls=http://0.0.0.0:2381",
                    "--data-dir=/var/lib/etcd/data",
                    "--cert-file=/etc/kubernetes/pki/etcd/server.crt",
                    "--trusted-ca-file", "/etc/kubernetes/pki/etcd/ca.crt",
                    "--client-cert-auth=true"
                ],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"containerPort": 2379}, {"containerPort": 2380}, {"containerPort": 2381}],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/var/lib/etcd"},
                    {"name": "etcd-pki", "mountPath": "/etc/kubernetes/pki/etcd", "readOnly": true}
                ]
            }],
            "volumes": [{"name": "etcd-pki", "projected": {"defaultMode": 0o400, "sources": [
                {"secret": {"name": "t-etcd-server", "items": [
                    {"key": "ca.crt", "path": "ca.crt"},
                    {"key": "tls.crt", "path": "server.crt"},
                    {"key": "tls.key", "path": "server.key", "mode": 0o600}
                ]}}
            ]}}]
        }))
    }

    fn etcd_sources() -> VolumeSources {
        VolumeSources {
            secrets: BTreeMap::from([secret(
                "t-etcd-server",
                &[("ca.crt", "CA"), ("tls.crt", "CERT"), ("tls.key", "KEY")],
            )]),
            config_maps: BTreeMap::new(),
        }
    }

    #[test]
    fn service_names_resolve_in_every_dns_form() {
        let map = services();
        let local: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        for host in [
            "t-etcd",
            "t-etcd.team",
            "t-etcd.team.svc",
            "t-etcd.team.svc.cluster.local",
            "t-etcd.team.svc.cluster.local.",
            "t-etcd-0.t-etcd-peer",
            "t-etcd-0.t-etcd-peer.team.svc",
            "t-etcd-0.t-etcd-peer.team.svc.cluster.local",
        ] {
            assert_eq!(map.resolve(host, 2379, "team"), Some(local), "{host}");
        }
        assert_eq!(map.resolve("t-etcd", 2379, "other"), None);
        assert_eq!(map.resolve("t-etcd.team", 2380, "other"), None);
        assert_eq!(
            map.resolve("t-etcd.team.svc.other.domain", 2379, "team"),
            None
        );
        assert_eq!(
            map.rewrite_url("https://t-apiserver.team.svc:6443/api?x=1", "team"),
            Some("https://127.100.0.7:6443/api?x=1".to_owned())
        );
        assert_eq!(
            map.rewrite_url("https://kubernetes.default.svc.cluster.local", "team"),
            None
        );
    }

    #[test]
    fn urls_split_hosts_ports_and_defaults() {
        let url = ParsedUrl::parse("https://user@[::1]:6443/x").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 6443));
        assert_eq!(ParsedUrl::parse("https://h").unwrap().port, 443);
        assert_eq!(ParsedUrl::parse("unix:///var/run/x.sock"), None);
        assert_eq!(split_host_port("0.0.0.0:8443"), ("0.0.0.0", Some("8443")));
        assert_eq!(split_host_port("::"), ("::", None));
    }

    #[test]
    fn variables_expand_like_the_kubelet() {
        let vars = BTreeMap::from([("POD_NAME".to_owned(), "p-0".to_owned())]);
        assert_eq!(expand("--name=$(POD_NAME)", &vars), "--name=p-0");
        assert_eq!(
            expand("$(POD_NAME).x.$(UNKNOWN)", &vars),
            "p-0.x.$(UNKNOWN)"
        );
        assert_eq!(expand("$$(POD_NAME) $5 $(", &vars), "$(POD_NAME) $5 $(");
    }

    #[test]
    fn an_etcd_member_becomes_a_local_process() {
        let spec = etcd_pod();
        assert_eq!(
            required_ports(&spec, None).unwrap(),
            BTreeSet::from([2379, 2380, 2381])
        );
        let plan = plan(
            &spec,
            Some("etcd"),
            &placement(&[(2379, 40001), (2380, 40002), (2381, 40003)]),
            &services(),
            &etcd_sources(),
        )
        .unwrap();
        assert_eq!(plan.program, "etcd");
        assert_eq!(plan.env["POD_NAME"], "t-etcd-0");
        let flag = |name: &str| plan.flag(name).unwrap().to_owned();
        assert_eq!(flag("name"), "t-etcd-0");
        assert_eq!(flag("advertise-client-urls"), "https://127.0.0.1:40001");
        assert_eq!(
            flag("initial-advertise-peer-urls"),
            "https://127.0.0.1:40002"
        );
        assert_eq!(flag("initial-cluster"), "t-etcd-0=https://127.0.0.1:40002");
        assert_eq!(flag("listen-client-urls"), "https://127.0.0.1:40001");
        assert_eq!(flag("listen-metrics-urls"), "http://127.0.0.1:40003");
        assert_eq!(flag("data-dir"), "/work/t-etcd-0/volumes/data/data");
        assert_eq!(
            flag("cert-file"),
            "/work/t-etcd-0/volumes/etcd-pki/server.crt"
        );
        assert_eq!(
            flag("trusted-ca-file"),
            "/work/t-etcd-0/volumes/etcd-pki/ca.crt"
        );
        assert_eq!(flag("client-cert-auth"), "true");
        let key = plan
            .file(Path::new("/work/t-etcd-0/volumes/etcd-pki/server.key"))
            .unwrap();
        assert_eq!((key.contents(), key.mode), (&b"KEY"[..], 0o600));
        let cert = plan
            .file(Path::new("/work/t-etcd-0/volumes/etcd-pki/server.crt"))
            .unwrap();
        assert_eq!(cert.mode, 0o400);
        assert!(!format!("{plan:?}").contains("KEY\""), "{plan:?}");
        let data = plan.volumes.iter().find(|v| v.name == "data").unwrap();
        assert!(!data.fresh, "a claim keeps its data across restarts");
    }

    #[test]
    fn unmapped_ports_and_missing_secrets_are_named() {
        let error = plan(
            &etcd_pod(),
            None,
            &placement(&[(2379, 1)]),
            &services(),
            &etcd_sources(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "--listen-peer-urls uses port 2380, which has no local port (known: 2379)"
        );
        let mut sources = etcd_sources();
        sources.secrets.insert(
            secret("t-etcd-server", &[("ca.crt", "CA"), ("tls.crt", "CERT")]).0,
            secret("t-etcd-server", &[("ca.crt", "CA"), ("tls.crt", "CERT")]).1,
        );
        let all_ports = placement(&[(2379, 1), (2380, 2), (2381, 3)]);
        let error = plan(&etcd_pod(), None, &all_ports, &services(), &sources).unwrap_err();
        assert_eq!(
            error.to_string(),
            "volume etcd-pki needs key tls.key of Secret t-etcd-server, which it does not have"
        );
        let error = plan(
            &etcd_pod(),
            None,
            &all_ports,
            &services(),
            &VolumeSources::default(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "volume etcd-pki needs Secret t-etcd-server, which does not exist"
        );
        let mut no_claims = all_ports.clone();
        no_claims.claim_templates.clear();
        let error = plan(&etcd_pod(), None, &no_claims, &services(), &etcd_sources()).unwrap_err();
        assert!(
            matches!(error, LocalPodError::ResolveVolume { .. }),
            "{error}"
        );
    }

    /// Secret and ConfigMap keys reach the process the same way through a volume and an
    /// environment variable: a ConfigMap volume holds `data` and `binaryData`, an absent
    /// optional key is left out, an absent required one names its object.
    #[test]
    fn keys_of_secrets_and_config_maps_reach_volumes_and_env() {
        let spec = |optional: bool| {
            pod(json!({
                "containers": [{
                    "name": "c",
                    "command": ["/bin/c"],
                    "env": [
                        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
                        {"name": "FROM_MAP", "valueFrom": {"configMapKeyRef": {"name": "m", "key": "mode"}}},
                        {"name": "ABSENT", "valueFrom": {"configMapKeyRef": {"name": "m", "key": "absent", "optional": optional}}}
                    ],
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/config"}]
                }],
                "volumes": [{"name": "config", "configMap": {"name": "m", "optional": optional, "items": [
                    {"key": "mode", "path": "mode"},
                    {"key": "blob", "path": "blob.bin"},
                    {"key": "absent", "path": "absent"}
                ]}}]
            }))
        };
        let sources = VolumeSources {
            secrets: BTreeMap::from([secret("s", &[("token", "t0ken")])]),
            config_maps: BTreeMap::from([(
                "m".to_owned(),
                serde_json::from_value(json!({
                    "metadata": {"name": "m"},
                    "data": {"mode": "fast"},
                    "binaryData": {"blob": "AAE="}
                }))
                .unwrap(),
            )]),
        };
        let placement = placement(&[]);
        let planned = plan(&spec(true), None, &placement, &services(), &sources).unwrap();
        assert_eq!(
            planned.env.get("FROM_SECRET").map(String::as_str),
            Some("t0ken")
        );
        assert_eq!(
            planned.env.get("FROM_MAP").map(String::as_str),
            Some("fast")
        );
        assert!(!planned.env.contains_key("ABSENT"));
        let files: BTreeMap<String, Vec<u8>> = planned
            .files
            .iter()
            .map(|f| {
                let name = f.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, f.contents().to_vec())
            })
            .collect();
        assert_eq!(
            files,
            BTreeMap::from([
                ("blob.bin".to_owned(), vec![0, 1]),
                ("mode".to_owned(), b"fast".to_vec()),
            ])
        );
        let error = plan(&spec(false), None, &placement, &services(), &sources).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable ABSENT: ConfigMap m has no key absent (or does not exist)"
        );
    }

    #[test]
    fn kubeconfigs_are_pointed_at_the_local_server() {
        let kubeconfig = "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: https://t-apiserver.team.svc:6443\n    certificate-authority-data: Q0E=\ncontexts:\n- name: t\n  context: {cluster: t, user: u}\ncurrent-context: t\nusers:\n- name: u\n  user:\n    client-certificate: /etc/kubernetes/pki/u.crt\n    client-key-data: S0VZ\n";
        let spec = pod(json!({
            "containers": [{
                "name": "kube-scheduler",
                "command": ["kube-scheduler"],
                "args": [
                    "--bind-address=0.0.0.0",
                    "--secure-port=10259",
                    "--kubeconfig=/etc/kubernetes/kubeconfig/scheduler.conf",
                    "--leader-elect=false"
                ],
                "volumeMounts": [
                    {"name": "kubeconfig", "mountPath": "/etc/kubernetes/kubeconfig"},
                    {"name": "certs", "mountPath": "/etc/kubernetes/pki/u.crt", "subPath": "tls.crt"},
                    {"name": "tmp", "mountPath": "/tmp"}
                ]
            }],
            "volumes": [
                {"name": "kubeconfig", "secret": {"secretName": "t-scheduler-kubeconfig", "defaultMode": 0o400,
                    "items": [{"key": "kubeconfig", "path": "scheduler.conf"}]}},
                {"name": "certs", "secret": {"secretName": "t-cert"}},
                {"name": "tmp", "emptyDir": {}}
            ]
        }));
        let sources = VolumeSources {
            secrets: BTreeMap::from([
                secret("t-scheduler-kubeconfig", &[("kubeconfig", kubeconfig)]),
                secret("t-cert", &[("tls.crt", "CERT")]),
            ]),
            config_maps: BTreeMap::new(),
        };
        assert_eq!(
            required_ports(&spec, None).unwrap(),
            BTreeSet::from([10259])
        );
        let mut placement = placement(&[(10259, 41000)]);
        placement.root = PathBuf::from("/w/s");
        placement.set_flags = vec![("leader-elect".into(), "true".into())];
        let plan = plan(&spec, None, &placement, &services(), &sources).unwrap();
        assert_eq!(plan.flag("bind-address"), Some("127.0.0.1"));
        assert_eq!(plan.flag("secure-port"), Some("41000"));
        assert_eq!(plan.flag("leader-elect"), Some("true"));
        let path = plan.flag("kubeconfig").unwrap();
        assert_eq!(path, "/w/s/volumes/kubeconfig/scheduler.conf");
        let file = plan.file(Path::new(path)).unwrap();
        assert_eq!(file.mode, 0o400);
        let written: serde_yaml::Value = serde_yaml::from_slice(file.contents()).unwrap();
        assert_eq!(
            written["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://127.100.0.7:6443")
        );
        assert_eq!(
            written["clusters"][0]["cluster"]["certificate-authority-data"].as_str(),
            Some("Q0E=")
        );
        assert_eq!(
            written["users"][0]["user"]["client-certificate"].as_str(),
            Some("/w/s/volumes/certs/tls.crt")
        );
        assert_eq!(
            plan.local_path("/etc/kubernetes/pki/u.crt"),
            Some(PathBuf::from("/w/s/volumes/certs/tls.crt"))
        );
        let tmp = plan.volumes.iter().find(|v| v.name == "tmp").unwrap();
        assert!(tmp.fresh);
    }

    #[test]
    fn set_flags_replace_or_append() {
        let mut args = vec!["--a=1".to_owned(), "--b".to_owned(), "2".to_owned()];
        set_flag(&mut args, "b", "3");
        set_flag(&mut args, "c", "4");
        assert_eq!(args, ["--a=1", "--b=3", "--c=4"]);
        assert_eq!(flag_in(&args, "b"), Some("3"));
        assert_eq!(flag_in(&args, "a"), Some("1"));
        assert_eq!(flag_in(&args, "d"), None);
    }

    #[test]
    fn unsupported_volumes_and_bad_paths_are_refused() {
        let spec = pod(json!({
            "containers": [{"name": "c", "command": ["x"], "volumeMounts": [{"name": "h", "mountPath": "/h"}]}],
            "volumes": [{"name": "h", "hostPath": {"path": "/etc"}}]
        }));
        let error = plan(
            &spec,
            None,
            &placement(&[]),
            &services(),
            &VolumeSources::default(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "volume h is a hostPath volume, which a local process cannot be given"
        );
        let spec = pod(json!({
            "containers": [{"name": "c", "command": ["x"], "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
            "volumes": [{"name": "s", "secret": {"secretName": "t-cert", "items": [{"key": "tls.crt", "path": "../escape"}]}}]
        }));
        let sources = VolumeSources {
            secrets: BTreeMap::from([secret("t-cert", &[("tls.crt", "CERT")])]),
            config_maps: BTreeMap::new(),
        };
        let error = plan(&spec, None, &placement(&[]), &services(), &sources).unwrap_err();
        assert!(
            matches!(error, LocalPodError::CheckItemPath { .. }),
            "{error}"
        );
        let no_command = pod(json!({"containers": [{"name": "c"}]}));
        let error = plan(&no_command, None, &placement(&[]), &services(), &sources).unwrap_err();
        assert!(
            matches!(error, LocalPodError::ReadCommand { .. }),
            "{error}"
        );
    }

    #[test]
    fn materialised_files_are_written_with_their_modes() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut placement = placement(&[(2379, 1), (2380, 2), (2381, 3)]);
        placement.root = dir.path().join("pod");
        let plan = plan(&etcd_pod(), None, &placement, &services(), &etcd_sources()).unwrap();
        plan.materialise().unwrap();
        // Twice: files of the first layout are read-only and must still be replaced.
        plan.materialise().unwrap();
        let key = plan
            .local_path("/etc/kubernetes/pki/etcd/server.key")
            .unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"KEY");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(plan.local_path("/var/lib/etcd").unwrap().is_dir());
        let error = plan.find_binary(&[dir.path().to_owned()]).unwrap_err();
        assert!(
            error.to_string().starts_with("no etcd binary in "),
            "{error}"
        );
    }
}
