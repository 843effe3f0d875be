//! A minimal OpenAPI v3 surface. kubectl reads it to learn that the server validates fields itself
//! (the PATCH operation of each kind lists the `fieldValidation` parameter), so it sends
//! `fieldValidation=Strict` instead of validating client-side against a full schema. The PATCH
//! operations do not advertise strategic merge patch, so `kubectl apply` builds its patches from
//! its compiled-in types (built-ins) or as JSON merge patches (custom resources), as it would do
//! with a real server whose OpenAPI lacks patch metadata. Full schemas are not served
//! (`kubectl explain` does not work).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use crate::discovery::GIT_VERSION;
use crate::error::ApiError;
use crate::registry::{Registry, ResourceType};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

fn gv_hash(types: &[std::sync::Arc<ResourceType>]) -> String {
    let mut hasher = DefaultHasher::new();
    for rt in types {
        rt.plural.hash(&mut hasher);
        rt.kind.hash(&mut hasher);
        rt.namespaced.hash(&mut hasher);
        rt.schema.as_ref().map(Value::to_string).hash(&mut hasher);
    }
    format!("{:016X}", hasher.finish())
}

/// `/openapi/v3`: one entry per served group/version.
pub fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<(String, String)> = vec![(String::new(), "v1".to_string())];
    for group in registry.groups() {
        gvs.extend(group.versions.iter().map(|v| (group.name.clone(), v.clone())));
    }
    for (group, version) in gvs {
        let path = gv_path(&group, &version);
        let url = format!("/openapi/v3/{path}?hash={}", gv_hash(&registry.resources_in(&group, &version)));
        paths.insert(path, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

fn query_param(name: &str) -> Value {
    json!({ "name": name, "in": "query", "schema": { "type": "string", "uniqueItems": true } })
}

fn patch_operation(rt: &ResourceType) -> Value {
    let content: Map<String, Value> =
        ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
            .iter()
            .map(|ct| (ct.to_string(), json!({ "schema": { "type": "object" } })))
            .collect();
    json!({
        "operationId": format!("patch{}", rt.kind),
        "description": format!("partially update the specified {}", rt.kind),
        "parameters": [
            query_param("dryRun"),
            query_param("fieldManager"),
            query_param("fieldValidation"),
            query_param("force"),
        ],
        "requestBody": { "content": content, "required": true },
        "responses": { "200": { "description": "OK" } },
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": { "group": rt.group, "version": rt.version, "kind": rt.kind },
    })
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/<group>/<version>`.
pub fn group_version(registry: &Registry, group: &str, version: &str) -> Result<Value, ApiError> {
    let types = registry.resources_in(group, version);
    if types.is_empty() {
        return Err(ApiError::path_not_found());
    }
    let prefix = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
    let mut paths = Map::new();
    for rt in &types {
        let object_path = if rt.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", rt.plural)
        } else {
            format!("{prefix}/{}/{{name}}", rt.plural)
        };
        paths.insert(object_path, json!({ "patch": patch_operation(rt) }));
    }
    Ok(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": GIT_VERSION },
        "paths": paths,
        "components": { "schemas": {} },
    }))
}
