//! Optional RBAC enforcement. A bearer token of the form `system:serviceaccount:<ns>:<name>`
//! identifies that service account; any other token (or none) is a cluster admin.
//! Requests of service accounts are authorized against the stored ClusterRoles,
//! ClusterRoleBindings, Roles and RoleBindings, like the real RBAC authorizer.

use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::registry::StorageKey;
use crate::store::Store;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    Admin,
    ServiceAccount { namespace: String, name: String },
}

impl User {
    pub fn from_headers(headers: &HeaderMap) -> User {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match token.and_then(|t| t.strip_prefix("system:serviceaccount:")).and_then(|rest| rest.split_once(':')) {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                User::ServiceAccount { namespace: namespace.to_string(), name: name.to_string() }
            }
            _ => User::Admin,
        }
    }

    fn username(&self) -> String {
        match self {
            User::Admin => "admin".to_string(),
            User::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
        }
    }

    fn groups(&self) -> Vec<String> {
        match self {
            User::Admin => vec!["system:masters".into(), "system:authenticated".into()],
            User::ServiceAccount { namespace, .. } => vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }
}

/// What a resource request wants to do.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn rule_allows(rule: &Value, attrs: &Attributes<'_>) -> bool {
    let verbs = strings(rule, "verbs");
    let groups = strings(rule, "apiGroups");
    let resources = strings(rule, "resources");
    let names = strings(rule, "resourceNames");
    let combined = match attrs.subresource {
        Some(sub) => format!("{}/{sub}", attrs.resource),
        None => attrs.resource.to_string(),
    };
    let verb_ok = verbs.iter().any(|v| v == "*" || v == attrs.verb);
    let group_ok = groups.iter().any(|g| g == "*" || g == attrs.group);
    let resource_ok = resources
        .iter()
        .any(|r| r == "*" || *r == combined || attrs.subresource.is_some_and(|sub| *r == format!("*/{sub}")));
    let name_ok = names.is_empty() || attrs.name.is_some_and(|n| names.iter().any(|x| x == n));
    verb_ok && group_ok && resource_ok && name_ok
}

fn subject_matches(subject: &Value, user: &User, binding_namespace: &str) -> bool {
    let kind = subject.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = subject.get("name").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "ServiceAccount" => {
            let ns =
                subject.get("namespace").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or(binding_namespace);
            matches!(user, User::ServiceAccount { namespace, name: n } if namespace == ns && n == name)
        }
        "User" => user.username() == name,
        "Group" => user.groups().iter().any(|g| g == name),
        _ => false,
    }
}

fn rbac_key(plural: &str) -> StorageKey {
    StorageKey { group: RBAC_GROUP.to_string(), plural: plural.to_string() }
}

fn role_rules(store: &Store, role_ref: &Value, binding_namespace: &str) -> Vec<Value> {
    let kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = role_ref.get("name").and_then(Value::as_str).unwrap_or_default();
    let role = match kind {
        "ClusterRole" => store.get(&rbac_key("clusterroles"), "", name),
        "Role" => store.get(&rbac_key("roles"), binding_namespace, name),
        _ => None,
    };
    role.and_then(|r| r.get("rules")).and_then(Value::as_array).cloned().unwrap_or_default()
}

/// Whether `user` may do `attrs`.
pub fn allowed(store: &Store, user: &User, attrs: &Attributes<'_>) -> bool {
    if *user == User::Admin {
        return true;
    }
    let bound = |binding: &Value, ns: &str| {
        binding
            .get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|subjects| subjects.iter().any(|s| subject_matches(s, user, ns)))
    };
    let grants = |binding: &Value, ns: &str| {
        bound(binding, ns)
            && binding
                .get("roleRef")
                .is_some_and(|role_ref| role_rules(store, role_ref, ns).iter().any(|rule| rule_allows(rule, attrs)))
    };
    if store.list(&rbac_key("clusterrolebindings"), None).any(|b| grants(b, "")) {
        return true;
    }
    match attrs.namespace {
        Some(ns) => store.list(&rbac_key("rolebindings"), Some(ns)).any(|b| grants(b, ns)),
        None => false,
    }
}

/// Checks a request; the error is worded like the real API server's Forbidden.
pub fn authorize(store: &Store, user: &User, attrs: &Attributes<'_>) -> Result<(), ApiError> {
    if allowed(store, user, attrs) {
        return Ok(());
    }
    let resource = match attrs.subresource {
        Some(sub) => format!("{}/{sub}", attrs.resource),
        None => attrs.resource.to_string(),
    };
    let qualified =
        if attrs.group.is_empty() { attrs.resource.to_string() } else { format!("{}.{}", attrs.resource, attrs.group) };
    let subject = match attrs.name {
        Some(name) => format!("{qualified} \"{name}\" is forbidden"),
        None => format!("{qualified} is forbidden"),
    };
    let scope = match attrs.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let message = format!(
        "{subject}: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.username(),
        attrs.verb,
        attrs.group
    );
    let mut details = json!({ "kind": attrs.resource });
    if let Some(name) = attrs.name {
        details["name"] = json!(name);
    }
    if !attrs.group.is_empty() {
        details["group"] = json!(attrs.group);
    }
    Err(ApiError::forbidden(message, details))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_subresources_and_names() {
        let rule = json!({"verbs": ["get", "update"], "apiGroups": ["x.io"], "resources": ["things/status"], "resourceNames": ["a"]});
        let mut attrs = Attributes {
            verb: "update",
            group: "x.io",
            resource: "things",
            subresource: Some("status"),
            namespace: Some("d"),
            name: Some("a"),
        };
        assert!(rule_allows(&rule, &attrs));
        attrs.name = Some("b");
        assert!(!rule_allows(&rule, &attrs));
        attrs.name = Some("a");
        attrs.subresource = None;
        assert!(!rule_allows(&rule, &attrs));
        let wildcard = json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]});
        assert!(rule_allows(&wildcard, &attrs));
    }

    #[test]
    fn token_parsing() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer system:serviceaccount:ns:sa".parse().unwrap());
        assert_eq!(User::from_headers(&headers), User::ServiceAccount { namespace: "ns".into(), name: "sa".into() });
        headers.insert("authorization", "Bearer dummy".parse().unwrap());
        assert_eq!(User::from_headers(&headers), User::Admin);
    }
}
