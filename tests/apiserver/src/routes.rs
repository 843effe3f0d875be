//! URL path parsing: which endpoint a request addresses.

use std::sync::Arc;

use crate::error::ApiError;
use crate::registry::{Registry, ResourceType};

/// The endpoints the double serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`
    ResourceList {
        group: String,
        version: String,
    },
    /// Anything below a group/version.
    Resource {
        group: String,
        version: String,
        segments: Vec<String>,
    },
    OpenApiV3Root,
    /// `/openapi/v3/<api/v1 | apis/g/v>`
    OpenApiV3 {
        group: String,
        version: String,
    },
    OpenApiV2,
    /// `/_double/...` control endpoints.
    Control(String),
    Unknown,
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = segment.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse(path: &str) -> Route {
    let segments: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["_double", rest @ ..] => Route::Control(rest.join("/")),
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3Root,
        ["openapi", "v3", "api", version] => Route::OpenApiV3 { group: String::new(), version: version.to_string() },
        ["openapi", "v3", "apis", group, version] => {
            Route::OpenApiV3 { group: group.to_string(), version: version.to_string() }
        }
        ["api"] => Route::CoreVersions,
        ["api", version] => Route::ResourceList { group: String::new(), version: version.to_string() },
        ["api", version, rest @ ..] => Route::Resource {
            group: String::new(),
            version: version.to_string(),
            segments: rest.iter().map(|x| x.to_string()).collect(),
        },
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group(group.to_string()),
        ["apis", group, version] => Route::ResourceList { group: group.to_string(), version: version.to_string() },
        ["apis", group, version, rest @ ..] => Route::Resource {
            group: group.to_string(),
            version: version.to_string(),
            segments: rest.iter().map(|x| x.to_string()).collect(),
        },
        _ => Route::Unknown,
    }
}

/// A resource path resolved against the registry.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub rt: Arc<ResourceType>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Resolves `[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]` within a group/version.
pub fn resolve(registry: &Registry, group: &str, version: &str, segments: &[String]) -> Result<Resolved, ApiError> {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let lookup = |plural: &str| registry.lookup(group, version, plural).ok_or_else(ApiError::path_not_found);
    let namespaced_plural = match s.as_slice() {
        ["namespaces", _, plural, ..] => registry.lookup(group, version, plural).filter(|rt| rt.namespaced),
        _ => None,
    };
    let (rt, namespace, rest) = match (namespaced_plural, s.as_slice()) {
        (Some(rt), ["namespaces", ns, _, rest @ ..]) => (rt, Some(ns.to_string()), rest),
        (_, [plural, rest @ ..]) => {
            let rt = lookup(plural)?;
            // Namespaced resources are only reachable without a namespace as a collection.
            if rt.namespaced && !rest.is_empty() {
                return Err(ApiError::path_not_found());
            }
            (rt, None, rest)
        }
        _ => return Err(ApiError::path_not_found()),
    };
    let (name, subresource) = match rest {
        [] => (None, None),
        [name] => (Some(name.to_string()), None),
        [name, sub] => {
            if !rt.subresources().contains(sub) {
                return Err(ApiError::path_not_found());
            }
            (Some(name.to_string()), Some(sub.to_string()))
        }
        _ => return Err(ApiError::path_not_found()),
    };
    Ok(Resolved { rt, namespace, name, subresource })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        match parse(path) {
            Route::Resource { segments, .. } => segments,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resolves_paths() {
        let reg = Registry::default();
        let r = resolve(&reg, "", "v1", &segs("/api/v1/namespaces/default/configmaps/a")).unwrap();
        assert_eq!(
            (r.rt.plural.as_str(), r.namespace.as_deref(), r.name.as_deref()),
            ("configmaps", Some("default"), Some("a"))
        );
        let r = resolve(&reg, "", "v1", &segs("/api/v1/namespaces/kube-system/status")).unwrap();
        assert_eq!(
            (r.rt.plural.as_str(), r.name.as_deref(), r.subresource.as_deref()),
            ("namespaces", Some("kube-system"), Some("status"))
        );
        let r = resolve(&reg, "", "v1", &segs("/api/v1/pods")).unwrap();
        assert!(r.namespace.is_none() && r.name.is_none());
        assert!(resolve(&reg, "", "v1", &segs("/api/v1/pods/x")).is_err());
        assert!(resolve(&reg, "", "v1", &segs("/api/v1/namespaces/d/configmaps/a/status")).is_err());
        let r = resolve(
            &reg,
            "rbac.authorization.k8s.io",
            "v1",
            &segs("/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Aadmin"),
        )
        .unwrap();
        assert_eq!(r.name.as_deref(), Some("system:admin"));
    }
}
