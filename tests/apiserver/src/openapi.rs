//! A minimal OpenAPI v3 surface: the index and one document per group/version with a
//! path per resource (operations carry `x-kubernetes-group-version-kind` and the query
//! parameters, which is what kubectl checks to learn that the server validates fields
//! itself) and, for CRDs, the structural schema as a component. Built-in kinds have no
//! schema here, so kubectl computes strategic merge patches from its compiled-in types.
//! `/openapi/v2` is not served (404), which kubectl tolerates.

use serde_json::{Map, Value, json};

use super::registry::{Registry, ResourceType};

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(rt: &ResourceType, action: &str, write: bool) -> Value {
    let mut params = Vec::new();
    if write {
        params.extend(["dryRun", "fieldManager", "fieldValidation"].map(param));
        if action == "patch" {
            params.push(param("force"));
        }
    }
    json!({
        "operationId": format!("{action}{}", rt.kind),
        "parameters": params,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
    })
}

fn schema_name(rt: &ResourceType) -> String {
    let reversed: Vec<&str> = rt.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), rt.version, rt.kind)
}

/// The index: `{"paths": {"api/v1": {"serverRelativeURL": ...}}}`.
pub fn index(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for group in registry.groups() {
        for (version, _) in &group.versions {
            let key = if group.group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{}/{version}", group.group)
            };
            let doc = document(registry, &group.group, version);
            let hash = {
                use sha2::Digest as _;
                hex::encode_upper(sha2::Sha512::digest(doc.to_string().as_bytes()))
            };
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// The document of one group/version.
pub fn document(registry: &Registry, group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    for rt in registry
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let collection = if rt.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{prefix}/{}", rt.plural)
        };
        paths.insert(collection.clone(), json!({"get": operation(&rt, "list", false), "post": operation(&rt, "post", true), "delete": operation(&rt, "deletecollection", false)}));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"get": operation(&rt, "get", false), "put": operation(&rt, "put", true), "patch": operation(&rt, "patch", true), "delete": operation(&rt, "delete", false)}),
        );
        if rt.status_subresource {
            paths.insert(
                format!("{collection}/{{name}}/status"),
                json!({"get": operation(&rt, "get", false), "put": operation(&rt, "put", true), "patch": operation(&rt, "patch", true)}),
            );
        }
        if let Some(schema) = rt.crd.as_ref().and_then(|c| c.schema.clone()) {
            let mut schema = schema;
            schema["x-kubernetes-group-version-kind"] =
                json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}]);
            schemas.insert(schema_name(&rt), schema);
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.4"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}
