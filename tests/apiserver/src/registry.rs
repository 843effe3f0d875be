//! The set of served resource types: the built-in ones plus those registered by CRDs.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// Where objects of a resource are stored: one bucket per group + plural, shared by all versions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageKey {
    pub group: String,
    pub plural: String,
}

/// A column of `kubectl get` output (CRD `additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// One served group/version/resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// The `openAPIV3Schema` objects are validated against (CRDs only).
    pub schema: Option<Value>,
    /// Printer columns beyond NAME; empty means NAME + AGE.
    pub printer_columns: Vec<PrinterColumn>,
    /// The CRD that defines this type, if any.
    pub crd_name: Option<String>,
}

impl ResourceType {
    /// How stats name the resource: `configmaps`, `targetgroupbindings.elbv2.k8s.aws`.
    pub fn stats_label(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    pub fn storage_key(&self) -> StorageKey {
        // events.k8s.io/v1 Events are the core/v1 Events seen through another API (see events.rs).
        if self.is("events.k8s.io", "events") {
            return StorageKey { group: String::new(), plural: "events".to_string() };
        }
        StorageKey { group: self.group.clone(), plural: self.plural.clone() }
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    }

    /// Subresources served for this type (besides the main resource).
    pub fn subresources(&self) -> Vec<&'static str> {
        let mut subs = Vec::new();
        if self.status_subresource {
            subs.push("status");
        }
        if self.is("", "namespaces") {
            subs.push("finalize");
        }
        subs
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        status: true,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        status: true,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        status: true,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        status: true,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        status: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        status: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        status: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        status: false,
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        status: false,
    },
    Builtin {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        status: false,
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        status: true,
    },
    Builtin {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short_names: &["pdb"],
        status: true,
    },
    Builtin {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        status: false,
    },
    Builtin {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        status: false,
    },
    Builtin {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short_names: &["crd", "crds"],
        status: true,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        status: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        status: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        status: false,
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        status: false,
    },
];

fn builtin_types() -> Vec<Arc<ResourceType>> {
    BUILTINS
        .iter()
        .map(|b| {
            Arc::new(ResourceType {
                group: b.group.to_string(),
                version: b.version.to_string(),
                plural: b.plural.to_string(),
                singular: b.kind.to_lowercase(),
                kind: b.kind.to_string(),
                list_kind: format!("{}List", b.kind),
                namespaced: b.namespaced,
                short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
                categories: Vec::new(),
                status_subresource: b.status,
                schema: None,
                printer_columns: Vec::new(),
                crd_name: None,
            })
        })
        .collect()
}

/// A served API group with its versions, most preferred first.
#[derive(Debug, Clone)]
pub struct GroupVersions {
    pub name: String,
    pub versions: Vec<String>,
}

/// All served resource types.
#[derive(Debug)]
pub struct Registry {
    builtins: Vec<Arc<ResourceType>>,
    /// CRD name -> the types it serves (one per served version).
    crds: BTreeMap<String, Vec<Arc<ResourceType>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { builtins: builtin_types(), crds: BTreeMap::new() }
    }
}

impl Registry {
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.builtins.iter().chain(self.crds.values().flatten())
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.all().find(|rt| rt.group == group && rt.version == version && rt.plural == plural).cloned()
    }

    /// Any served version of a storage bucket (used to present stored objects).
    pub fn any_version(&self, key: &StorageKey) -> Option<Arc<ResourceType>> {
        self.all().find(|rt| rt.group == key.group && rt.plural == key.plural).cloned()
    }

    pub fn resources_in(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.all().filter(|rt| rt.group == group && rt.version == version).cloned().collect()
    }

    /// Served groups (core group excluded), versions sorted by Kubernetes version priority.
    pub fn groups(&self) -> Vec<GroupVersions> {
        let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut order: Vec<&str> = Vec::new();
        for rt in self.all().filter(|rt| !rt.group.is_empty()) {
            let versions = groups.entry(&rt.group).or_insert_with(|| {
                order.push(&rt.group);
                Vec::new()
            });
            if !versions.contains(&rt.version) {
                versions.push(rt.version.clone());
            }
        }
        order
            .into_iter()
            .map(|name| {
                let mut versions = groups.remove(name).unwrap_or_default();
                versions.sort_by(|a, b| compare_versions(b, a));
                GroupVersions { name: name.to_string(), versions }
            })
            .collect()
    }

    /// Replaces the types served by a CRD (an empty list unregisters it).
    pub fn set_crd(&mut self, crd_name: &str, types: Vec<ResourceType>) {
        if types.is_empty() {
            self.crds.remove(crd_name);
        } else {
            self.crds.insert(crd_name.to_string(), types.into_iter().map(Arc::new).collect());
        }
    }
}

/// Kubernetes version priority: GA > beta > alpha > anything else; higher numbers first within each.
/// Returns the ordering of `a` relative to `b` where Greater means "more preferred".
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((3, major, 0));
        }
        for (prefix, rank) in [("beta", 2u8), ("alpha", 1u8)] {
            if let Some(n) = tail.strip_prefix(prefix) {
                return Some((rank, major, n.parse().ok()?));
            }
        }
        None
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => b.cmp(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_priority() {
        let mut v = vec!["v1alpha1", "v1beta1", "v2", "v1", "v10beta3", "foo"];
        v.sort_by(|a, b| compare_versions(b, a));
        assert_eq!(v, vec!["v2", "v1", "v10beta3", "v1beta1", "v1alpha1", "foo"]);
    }
}
