//! Turning API errors into what kubectl users expect to read.

use kubectl_vc::output;
use vc_api::constants::PLURAL;

/// An error whose text is complete as it is (kubectl's `Error from server (...)` form);
/// `main` prints it without an `error:` prefix.
#[derive(Debug)]
pub struct Reported(pub String);

impl std::fmt::Display for Reported {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

/// Errors were already printed one by one (as kubectl does for several names); exit 1.
#[derive(Debug)]
pub struct AlreadyReported;

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("one or more operations failed")
    }
}

impl std::error::Error for AlreadyReported {}

/// Whether an error is the apiserver saying the object does not exist.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404 && status.reason == "NotFound")
}

/// Whether an error is an optimistic-concurrency conflict.
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Converts a failed request about VirtualCluster `namespace/name` (or about the collection
/// when `name` is `None`) into a message: a missing object says which one and what to try,
/// a missing resource type says the CRD is missing, anything else is the server's message
/// verbatim.
pub fn api(error: kube::Error, namespace: &str, name: Option<&str>) -> anyhow::Error {
    match error {
        kube::Error::Api(status) if status.code == 404 => {
            let about_object = status.details.as_ref().is_some_and(|details| {
                details.kind == PLURAL || Some(details.name.as_str()) == name
            });
            match name {
                Some(name) if about_object => Reported(output::not_found(name, namespace)).into(),
                _ => Reported(output::resource_type_missing()).into(),
            }
        }
        kube::Error::Api(status) => Reported(output::server_error(&status)).into(),
        other => anyhow::Error::new(other).context("cannot reach the API server"),
    }
}
