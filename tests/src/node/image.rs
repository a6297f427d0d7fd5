//! Container images built here, without a registry: a rootfs of files taken from this
//! machine (busybox, our binaries and the shared libraries they load) written as one
//! layer of a docker-archive tarball, which `ctr images import` loads into containerd
//! under the exact name a pod asks for.
//!
//! The archive is the format `docker save` writes: `manifest.json`, the image config
//! named by its digest, and the layer tarball. [`ImageSpec::archive`] is pure apart
//! from reading the files it copies, so tests check what it writes.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::{Digest as _, Sha256};

/// Where Debian's busybox-static lives; every test image carries it as its shell and
/// coreutils.
pub const BUSYBOX: &str = "/bin/busybox";

/// The busybox applets linked into every image (a shell for `kubectl exec`, and what
/// probes and tests run).
const APPLETS: [&str; 14] = [
    "sh", "cat", "echo", "ls", "sleep", "wget", "nc", "env", "hostname", "ps", "kill", "mkdir",
    "true", "nslookup",
];

/// Why an image could not be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("reading {path} for image {image}: {source}")]
    ReadFile {
        image: String,
        path: String,
        source: std::io::Error,
    },
    #[error("writing {path} for image {image}: {source}")]
    WriteFile {
        image: String,
        path: String,
        source: std::io::Error,
    },
    #[error("writing the archive of image {image}: {source}")]
    WriteArchive {
        image: String,
        source: std::io::Error,
    },
    #[error("listing the shared libraries of {binary} with ldd: {reason}")]
    ListLibraries { binary: String, reason: String },
    #[error("importing image {image} into containerd: {reason}")]
    Import { image: String, reason: String },
}

/// One file of the image's rootfs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// Copied from this machine, with this mode.
    File { source: PathBuf, mode: u32 },
    /// A symbolic link to this target.
    Link { target: String },
}

/// An image to build: name, entrypoint and rootfs.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// The exact reference pods ask for, e.g. `registry.k8s.io/etcd:3.5.21-0`.
    pub name: String,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    entries: BTreeMap<String, Entry>,
}

impl ImageSpec {
    /// An image with busybox and its applets at `/bin`, and `entrypoint`.
    pub fn busybox(name: &str, entrypoint: &[&str]) -> Self {
        let mut spec = ImageSpec {
            name: name.to_owned(),
            entrypoint: entrypoint.iter().map(|word| (*word).to_owned()).collect(),
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_owned()],
            entries: BTreeMap::new(),
        };
        spec.entries.insert(
            "bin/busybox".to_owned(),
            Entry::File {
                source: PathBuf::from(BUSYBOX),
                mode: 0o755,
            },
        );
        for applet in APPLETS {
            spec.entries.insert(
                format!("bin/{applet}"),
                Entry::Link {
                    target: "busybox".to_owned(),
                },
            );
        }
        spec
    }

    /// Adds `source` at `path` (absolute in the image).
    pub fn file(mut self, path: &str, source: &Path, mode: u32) -> Self {
        self.entries.insert(
            path.trim_start_matches('/').to_owned(),
            Entry::File {
                source: source.to_owned(),
                mode,
            },
        );
        self
    }

    /// Adds a symbolic link at `path` pointing at `target`.
    pub fn link(mut self, path: &str, target: &str) -> Self {
        self.entries.insert(
            path.trim_start_matches('/').to_owned(),
            Entry::Link {
                target: target.to_owned(),
            },
        );
        self
    }

    /// Adds the binary at `path` and every shared library `ldd` says it loads, at the
    /// same paths as here (a static binary adds nothing more).
    pub fn binary(mut self, path: &str, source: &Path) -> Result<Self, ImageError> {
        for library in shared_libraries(source)? {
            let inside = library.display().to_string();
            self = self.file(&inside, &library, 0o755);
        }
        Ok(self.file(path, source, 0o755))
    }

    /// The paths of the rootfs, in the order they are written.
    pub fn paths(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// Writes the docker-archive tarball to `out`.
    pub fn archive(&self, out: &Path) -> Result<(), ImageError> {
        let layer = self.layer()?;
        let layer_digest = hex::encode(Sha256::digest(&layer));
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": self.entrypoint, "Env": self.env, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        })
        .to_string();
        let config_name = format!("{}.json", hex::encode(Sha256::digest(config.as_bytes())));
        let layer_name = format!("{layer_digest}/layer.tar");
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": [self.name],
            "Layers": [layer_name],
        }])
        .to_string();
        let write_error = |source| ImageError::WriteArchive {
            image: self.name.clone(),
            source,
        };
        let file = std::fs::File::create(out).map_err(write_error)?;
        let mut archive = tar::Builder::new(file);
        for (name, bytes) in [
            ("manifest.json", manifest.as_bytes()),
            (config_name.as_str(), config.as_bytes()),
            (layer_name.as_str(), layer.as_slice()),
        ] {
            append_bytes(&mut archive, name, bytes, 0o644).map_err(write_error)?;
        }
        archive
            .into_inner()
            .and_then(|mut file| file.flush())
            .map_err(write_error)
    }

    /// The rootfs as one uncompressed layer tarball, parent directories first.
    fn layer(&self) -> Result<Vec<u8>, ImageError> {
        let write_error = |source| ImageError::WriteArchive {
            image: self.name.clone(),
            source,
        };
        let mut layer = tar::Builder::new(Vec::new());
        let mut directories = std::collections::BTreeSet::new();
        for path in self.entries.keys() {
            let mut parent = Path::new(path).parent();
            while let Some(directory) = parent.filter(|p| !p.as_os_str().is_empty()) {
                directories.insert(directory.to_owned());
                parent = directory.parent();
            }
        }
        for directory in ["tmp", "proc", "sys", "dev", "etc", "var/run"] {
            directories.insert(PathBuf::from(directory));
        }
        for directory in &directories {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(if directory == Path::new("tmp") {
                0o1777
            } else {
                0o755
            });
            header.set_size(0);
            layer
                .append_data(&mut header, directory, std::io::empty())
                .map_err(write_error)?;
        }
        for (path, entry) in &self.entries {
            match entry {
                Entry::File { source, mode } => {
                    let bytes =
                        std::fs::read(source).map_err(|source_error| ImageError::ReadFile {
                            image: self.name.clone(),
                            path: source.display().to_string(),
                            source: source_error,
                        })?;
                    append_bytes(&mut layer, path, &bytes, *mode).map_err(write_error)?;
                }
                Entry::Link { target } => {
                    let mut header = tar::Header::new_gnu();
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    layer
                        .append_link(&mut header, path, target)
                        .map_err(write_error)?;
                }
            }
        }
        layer.into_inner().map_err(write_error)
    }

    /// Builds the archive under `dir` and imports it into the containerd at `socket`
    /// (namespace `k8s.io`, where the kubelet's CRI looks), unpacked for its snapshotter.
    pub fn import(&self, dir: &Path, socket: &Path) -> Result<(), ImageError> {
        let file_name: String = self
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let archive = dir.join(format!("{file_name}.tar"));
        self.archive(&archive)?;
        let output = Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args([
                "--namespace",
                "k8s.io",
                "images",
                "import",
                "--no-unpack=false",
            ])
            .arg(&archive)
            .output()
            .map_err(|error| ImageError::Import {
                image: self.name.clone(),
                reason: format!("running ctr: {error}"),
            })?;
        let _removed = std::fs::remove_file(&archive);
        if output.status.success() {
            Ok(())
        } else {
            Err(ImageError::Import {
                image: self.name.clone(),
                reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}

/// The echo server's image: an HTTP server on port 8080 answering every request for
/// [`ECHO_PATH`] with the pod's hostname (busybox `httpd` running a CGI script).
pub const ECHO_IMAGE: &str = "kosmos-vc.local/echo:1";
/// The path the echo server answers on.
pub const ECHO_PATH: &str = "/cgi-bin/index.cgi";
/// The echo server's port.
pub const ECHO_PORT: u16 = 8080;

/// The [`ECHO_IMAGE`], its script written into `dir`.
pub fn echo_image(dir: &Path) -> Result<ImageSpec, ImageError> {
    let script = dir.join("index.cgi");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nhostname\n",
    )
    .map_err(|source| ImageError::WriteFile {
        image: ECHO_IMAGE.to_owned(),
        path: script.display().to_string(),
        source,
    })?;
    Ok(ImageSpec::busybox(
        ECHO_IMAGE,
        &[
            "/bin/sh",
            "-c",
            &format!(
                "echo serving on {ECHO_PORT}; exec /bin/busybox httpd -f -v -p {ECHO_PORT} -h /www"
            ),
        ],
    )
    .file(&format!("/www{ECHO_PATH}"), &script, 0o755)
    .link("/bin/httpd", "busybox"))
}

/// The programs of the Kubernetes images the controller renders, by the last path
/// segment of the image's repository (`registry.k8s.io/kube-apiserver:v1.33.4` ->
/// `kube-apiserver`): the control-plane programs of `KUBEBUILDER_ASSETS` answer to these
/// names whatever tag or registry the controller was told to use.
pub const CONTROL_PLANE_PROGRAMS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The repository's last path segment of an image reference, without tag or digest.
pub fn program_of(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

/// An image named `reference` that runs the control-plane program its name says, from
/// `assets` (a `KUBEBUILDER_ASSETS` directory), at `/usr/local/bin/PROGRAM` as the pods'
/// `command` expects; `None` for an image that is not one of [`CONTROL_PLANE_PROGRAMS`].
/// The kube programs are one multi-call binary that picks the program from the name it
/// is run by, so each is a link to it.
pub fn control_plane_image(
    reference: &str,
    assets: &Path,
) -> Result<Option<ImageSpec>, ImageError> {
    let program = program_of(reference);
    if !CONTROL_PLANE_PROGRAMS.contains(&program) {
        return Ok(None);
    }
    let spec = ImageSpec::busybox(reference, &[&format!("/usr/local/bin/{program}")]);
    let spec = if program == "etcd" {
        spec.binary("/usr/local/bin/etcd", &assets.join("etcd"))?
    } else {
        spec.binary("/usr/local/bin/kube-multi", &assets.join("kube-multi"))?
            .link(&format!("/usr/local/bin/{program}"), "kube-multi")
    };
    Ok(Some(spec))
}

fn append_bytes<W: std::io::Write>(
    archive: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(mode);
    header.set_size(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
    archive.append_data(&mut header, path, bytes)
}

/// The shared libraries `binary` loads, as absolute paths (`ldd`'s `=> /path` and the
/// loader's own line); none for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let output =
        Command::new("ldd")
            .arg(binary)
            .output()
            .map_err(|error| ImageError::ListLibraries {
                binary: binary.display().to_string(),
                reason: error.to_string(),
            })?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&text))
}

/// Absolute library paths of `ldd` output.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_chosen_by_the_last_segment_of_their_repository() {
        assert_eq!(
            program_of("registry.k8s.io/kube-apiserver:v1.33.4"),
            "kube-apiserver"
        );
        assert_eq!(program_of("mirror.example:5000/k8s/etcd:3.5.21-0"), "etcd");
        assert_eq!(program_of("kube-scheduler@sha256:abcd"), "kube-scheduler");
        let assets = tempfile::tempdir().unwrap();
        assert!(
            control_plane_image("nginx:1.27", assets.path())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_kube_image_links_its_program_to_the_multi_call_binary() {
        let assets = tempfile::tempdir().unwrap();
        // A script stands in for the binary: ldd calls it not a dynamic executable.
        std::fs::write(assets.path().join("kube-multi"), "#!/bin/sh\n").unwrap();
        let spec = control_plane_image(
            "registry.k8s.io/kube-controller-manager:v1.33.4",
            assets.path(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(spec.entrypoint, ["/usr/local/bin/kube-controller-manager"]);
        assert_eq!(
            spec.entries["usr/local/bin/kube-controller-manager"],
            Entry::Link {
                target: "kube-multi".to_owned()
            }
        );
        assert!(spec.paths().contains(&"usr/local/bin/kube-multi"));
    }

    #[test]
    fn ldd_output_gives_the_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn the_archive_names_the_image_and_its_one_layer_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let payload = dir.path().join("payload");
        std::fs::write(&payload, b"hello").unwrap();
        let spec = ImageSpec {
            name: "registry.example/test:1".to_owned(),
            entrypoint: vec!["/app".to_owned()],
            env: Vec::new(),
            entries: BTreeMap::new(),
        }
        .file("/app", &payload, 0o755)
        .link("/bin/app", "/app");
        let out = dir.path().join("image.tar");
        spec.archive(&out).unwrap();
        let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
        let mut files = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            files.insert(name, bytes);
        }
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(manifest[0]["RepoTags"], json!(["registry.example/test:1"]));
        let layer_name = manifest[0]["Layers"][0].as_str().unwrap();
        let layer = &files[layer_name];
        assert_eq!(
            layer_name,
            format!("{}/layer.tar", hex::encode(Sha256::digest(layer)))
        );
        let config: serde_json::Value =
            serde_json::from_slice(&files[manifest[0]["Config"].as_str().unwrap()]).unwrap();
        assert_eq!(config["config"]["Entrypoint"], json!(["/app"]));
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            json!(format!("sha256:{}", hex::encode(Sha256::digest(layer))))
        );
        let mut inner = tar::Archive::new(layer.as_slice());
        let names: Vec<String> = inner
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        for wanted in ["app", "bin/app", "tmp"] {
            assert!(
                names.iter().any(|n| n.trim_end_matches('/') == wanted),
                "{names:?}"
            );
        }
    }
}
