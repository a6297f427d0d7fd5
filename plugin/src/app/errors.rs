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
            let kind = status
                .details
                .as_ref()
                .map(|details| details.kind.as_str())
                .unwrap_or_default();
            let names_object = status
                .details
                .as_ref()
                .is_some_and(|details| Some(details.name.as_str()) == name);
            match name {
                Some(name) if kind == PLURAL || (kind.is_empty() && names_object) => {
                    Reported(output::not_found(name, namespace)).into()
                }
                // No details at all: the URL itself is unknown, so the CRD is missing.
                _ if kind.is_empty() => Reported(output::resource_type_missing()).into(),
                // Something else is missing, such as the namespace: the server says which.
                _ => Reported(output::server_error(&status)).into(),
            }
        }
        kube::Error::Api(status) => Reported(output::server_error(&status)).into(),
        other => anyhow::Error::new(other).context("cannot reach the API server"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(body: serde_json::Value) -> kube::Error {
        kube::Error::Api(Box::new(serde_json::from_value(body).unwrap()))
    }

    fn text(error: anyhow::Error) -> String {
        error.downcast::<Reported>().unwrap().0
    }

    #[test]
    fn missing_object_names_cluster_namespace_and_next_step() {
        // Recorded from kube-apiserver v1.36 (errors/404-delete-missing.json).
        let error = failure(
            serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"virtualclusters.kosmos.io \"vc-ssa\" not found","reason":"NotFound","details":{"name":"vc-ssa","group":"kosmos.io","kind":"virtualclusters"},"code":404}),
        );
        assert_eq!(
            text(api(error, "team-a", Some("vc-ssa"))),
            output::not_found("vc-ssa", "team-a")
        );
    }

    #[test]
    fn unknown_resource_type_points_at_the_installation() {
        let error = failure(
            serde_json::json!({"message": "404 page not found", "reason": "NotFound", "code": 404}),
        );
        assert_eq!(
            text(api(error, "default", Some("x"))),
            output::resource_type_missing()
        );
    }

    #[test]
    fn missing_namespace_is_the_servers_message() {
        let error = failure(
            serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"namespaces \"nowhere\" not found","reason":"NotFound","details":{"name":"nowhere","kind":"namespaces"},"code":404}),
        );
        assert_eq!(
            text(api(error, "nowhere", None)),
            "Error from server (NotFound): namespaces \"nowhere\" not found"
        );
    }

    #[test]
    fn denial_is_verbatim() {
        let error = failure(
            serde_json::json!({"message":"admission webhook \"validate.kosmos.io\" denied the request: no","reason":"Forbidden","code":403}),
        );
        assert_eq!(
            text(api(error, "default", Some("x"))),
            "Error from server (Forbidden): admission webhook \"validate.kosmos.io\" denied the request: no"
        );
    }
}
