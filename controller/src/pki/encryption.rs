//! The tenant apiserver's encryption at rest: an `EncryptionConfiguration` that seals
//! Secrets with `secretbox` (XSalsa20-Poly1305) before they reach the tenant's etcd.
//!
//! The key is drawn once from the OS CSPRNG and kept in a Secret of the tenant, read back
//! on every pass like the CAs: a key minted again would leave every Secret sealed with
//! the first one unreadable, so a stored configuration that does not parse is an error to
//! fix, never a reason to generate. Every secretbox key of the stored configuration is
//! kept in its order (the first one seals, all of them open), so an operator rotates by
//! putting a new key first, rewriting the tenant's Secrets, then dropping the old key.
//! `identity` comes last so that Secrets written before encryption was on still read.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Secret key of the configuration file, and its file name in the apiserver pod.
pub const ENCRYPTION_CONFIG_KEY: &str = "encryption-config.yaml";
/// Length of a secretbox key.
pub const KEY_BYTES: usize = 32;
/// The resources sealed: Secrets hold the tenant's credentials. ConfigMaps are by
/// contract not secret, and sealing them would cost a decryption on every read of the
/// objects the tenant's controllers read most.
pub const ENCRYPTED_RESOURCES: [&str; 1] = ["secrets"];

/// One secretbox key: its name, and the key base64-encoded as the configuration holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey {
    name: String,
    secret: String,
}

/// Names the key, never shows it.
impl fmt::Debug for EncryptionKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("EncryptionKey")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl EncryptionKey {
    /// The key's name in the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The secretbox keys of a tenant, the first one sealing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptionConfig {
    keys: Vec<EncryptionKey>,
}

/// Why a stored configuration cannot be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// The OS random source failed.
    #[error("failed to draw an encryption key from the OS random source")]
    DrawKey,
    /// The stored configuration does not parse or is not the shape this controller writes.
    #[error("{reason}")]
    ParseConfig {
        /// What is wrong, naming the field.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigurationFile {
    api_version: String,
    kind: String,
    resources: Vec<ResourceEntry>,
}

#[derive(Serialize, Deserialize)]
struct ResourceEntry {
    resources: Vec<String>,
    providers: Vec<Provider>,
}

#[derive(Serialize, Deserialize)]
struct Provider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secretbox: Option<KeyList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<Empty>,
}

#[derive(Serialize, Deserialize)]
struct KeyList {
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    name: String,
    secret: String,
}

#[derive(Serialize, Deserialize)]
struct Empty {}

const API_VERSION: &str = "apiserver.config.k8s.io/v1";
const KIND: &str = "EncryptionConfiguration";

impl EncryptionConfig {
    /// A configuration with one new key drawn from the OS CSPRNG, named after `now` so
    /// that a key an operator adds later has a name of its own.
    pub fn generate(now: jiff::Timestamp) -> Result<Self, EncryptionError> {
        let mut key = [0u8; KEY_BYTES];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut key)
            .map_err(|_| EncryptionError::DrawKey)?;
        Ok(Self {
            keys: vec![EncryptionKey {
                name: format!("key-{}", now.as_second()),
                secret: STANDARD.encode(key),
            }],
        })
    }

    /// Reads a configuration this controller (or an operator rotating keys) wrote: one
    /// entry for `secrets` whose providers are secretbox, then identity.
    pub fn parse(bytes: &[u8]) -> Result<Self, EncryptionError> {
        let invalid = |reason: String| EncryptionError::ParseConfig { reason };
        // serde's message can quote the value it choked on, which may be a key: only
        // the place is shown.
        let file: ConfigurationFile = serde_yaml::from_slice(bytes).map_err(|error| {
            let at = error
                .location()
                .map(|at| format!(" (line {}, column {})", at.line(), at.column()))
                .unwrap_or_default();
            invalid(format!("it is not an EncryptionConfiguration{at}"))
        })?;
        if file.api_version != API_VERSION || file.kind != KIND {
            return Err(invalid(format!(
                "apiVersion/kind is {}/{}, not {API_VERSION}/{KIND}",
                file.api_version, file.kind
            )));
        }
        let [entry] = file.resources.as_slice() else {
            return Err(invalid(format!(
                "resources has {} entries, not exactly one",
                file.resources.len()
            )));
        };
        if entry.resources != ENCRYPTED_RESOURCES {
            return Err(invalid(format!(
                "resources[0].resources is {:?}, not {ENCRYPTED_RESOURCES:?}",
                entry.resources
            )));
        }
        let (Some(first), Some(last)) = (entry.providers.first(), entry.providers.last()) else {
            return Err(invalid("resources[0].providers is empty".to_owned()));
        };
        let (Some(list), true) = (
            first.secretbox.as_ref(),
            entry.providers.len() == 2 && last.identity.is_some() && first.identity.is_none(),
        ) else {
            return Err(invalid(
                "resources[0].providers must be secretbox, then identity".to_owned(),
            ));
        };
        if list.keys.is_empty() {
            return Err(invalid(
                "resources[0].providers[0].secretbox.keys is empty".to_owned(),
            ));
        }
        let mut keys: Vec<EncryptionKey> = Vec::with_capacity(list.keys.len());
        for (index, key) in list.keys.iter().enumerate() {
            let field = format!("resources[0].providers[0].secretbox.keys[{index}]");
            if key.name.is_empty() || keys.iter().any(|other| other.name == key.name) {
                return Err(invalid(format!("{field}.name is empty or repeated")));
            }
            let decoded = STANDARD.decode(&key.secret).ok();
            if decoded.as_ref().map(Vec::len) != Some(KEY_BYTES) {
                return Err(invalid(format!(
                    "{field}.secret is not {KEY_BYTES} bytes in base64"
                )));
            }
            keys.push(EncryptionKey {
                name: key.name.clone(),
                secret: key.secret.clone(),
            });
        }
        Ok(Self { keys })
    }

    /// The configuration file for `--encryption-provider-config`.
    pub fn render(&self) -> Result<String, EncryptionError> {
        let file = ConfigurationFile {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            resources: vec![ResourceEntry {
                resources: ENCRYPTED_RESOURCES.map(str::to_owned).to_vec(),
                providers: vec![
                    Provider {
                        secretbox: Some(KeyList {
                            keys: self
                                .keys
                                .iter()
                                .map(|key| KeyEntry {
                                    name: key.name.clone(),
                                    secret: key.secret.clone(),
                                })
                                .collect(),
                        }),
                        identity: None,
                    },
                    Provider {
                        secretbox: None,
                        identity: Some(Empty {}),
                    },
                ],
            }],
        };
        serde_yaml::to_string(&file).map_err(|error| EncryptionError::ParseConfig {
            reason: format!("failed to render the EncryptionConfiguration: {error}"),
        })
    }

    /// The keys, the sealing one first.
    pub fn keys(&self) -> &[EncryptionKey] {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn a_generated_key_is_32_random_bytes_and_round_trips() {
        let first = EncryptionConfig::generate(now()).unwrap();
        let second = EncryptionConfig::generate(now()).unwrap();
        assert_ne!(first, second, "two draws gave the same key");
        let key = &first.keys()[0];
        assert_eq!(key.name(), "key-1800000000");
        assert_eq!(STANDARD.decode(&key.secret).unwrap().len(), KEY_BYTES);
        let yaml = first.render().unwrap();
        assert_eq!(EncryptionConfig::parse(yaml.as_bytes()).unwrap(), first);
        let document: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(document["kind"], "EncryptionConfiguration");
        assert_eq!(document["resources"][0]["resources"][0], "secrets");
        let providers = &document["resources"][0]["providers"];
        assert_eq!(
            providers[0]["secretbox"]["keys"][0]["secret"].as_str(),
            Some(key.secret.as_str())
        );
        assert!(providers[1]["identity"].is_mapping(), "{yaml}");
        assert!(providers[2].is_null(), "identity is last: {yaml}");
    }

    #[test]
    fn debug_never_shows_a_key() {
        let config = EncryptionConfig::generate(now()).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains(&config.keys()[0].secret), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn an_operators_second_key_is_kept_in_its_place() {
        let yaml = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - secretbox:\n      keys:\n      - {{name: new, secret: {new}}}\n      - {{name: old, secret: {old}}}\n  - identity: {{}}\n",
            new = STANDARD.encode([1u8; 32]),
            old = STANDARD.encode([2u8; 32]),
        );
        let config = EncryptionConfig::parse(yaml.as_bytes()).unwrap();
        let names: Vec<&str> = config.keys().iter().map(EncryptionKey::name).collect();
        assert_eq!(names, ["new", "old"]);
        assert_eq!(
            EncryptionConfig::parse(config.render().unwrap().as_bytes()).unwrap(),
            config
        );
    }

    #[test]
    fn a_broken_configuration_names_what_is_wrong_without_the_key() {
        let short = STANDARD.encode([7u8; 16]);
        for (yaml, expected) in [
            ("{not yaml".to_owned(), "not an EncryptionConfiguration"),
            (
                format!(
                    "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - secretbox: {{keys: [{{name: a, secret: {short}}}]}}\n  - identity: {{}}\n"
                ),
                "secretbox.keys[0].secret is not 32 bytes",
            ),
            (
                format!(
                    "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - identity: {{}}\n  - secretbox: {{keys: [{{name: a, secret: {}}}]}}\n",
                    STANDARD.encode([7u8; 32])
                ),
                "must be secretbox, then identity",
            ),
        ] {
            let error = EncryptionConfig::parse(yaml.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains(&short), "{error}");
        }
    }
}
