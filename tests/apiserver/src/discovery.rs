//! Legacy (unaggregated) discovery documents: `/version`, `/api`, `/apis`, `/apis/<g>`, resource lists.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::registry::{GroupVersions, Registry, ResourceType};

/// The Kubernetes version the double claims to be.
pub const MAJOR: &str = "1";
pub const MINOR: &str = "32";
pub const GIT_VERSION: &str = "v1.32.0";

pub fn version() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.3",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

fn group_json(group: &GroupVersions) -> Value {
    let versions: Vec<Value> =
        group.versions.iter().map(|v| json!({ "groupVersion": format!("{}/{v}", group.name), "version": v })).collect();
    json!({
        "name": group.name,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

pub fn groups(registry: &Registry) -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": registry.groups().iter().map(group_json).collect::<Vec<_>>(),
    })
}

pub fn group(registry: &Registry, name: &str) -> Result<Value, ApiError> {
    let group = registry.groups().into_iter().find(|g| g.name == name).ok_or_else(ApiError::path_not_found)?;
    let mut doc = group_json(&group);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Ok(doc)
}

fn resource_json(rt: &ResourceType) -> Vec<Value> {
    let mut main = json!({
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": rt.verbs(),
    });
    if !rt.short_names.is_empty() {
        main["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        main["categories"] = json!(rt.categories);
    }
    let mut out = vec![main];
    for sub in rt.subresources() {
        let verbs: &[&str] = if sub == "finalize" { &["update"] } else { &["get", "patch", "update"] };
        out.push(json!({
            "name": format!("{}/{sub}", rt.plural),
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": verbs,
        }));
    }
    out
}

pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Result<Value, ApiError> {
    let types = registry.resources_in(group, version);
    if types.is_empty() {
        return Err(ApiError::path_not_found());
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Ok(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": types.iter().flat_map(|rt| resource_json(rt)).collect::<Vec<_>>(),
    }))
}
