//! CustomResourceDefinition handling: validating a CRD, turning it into served resource types,
//! and the status a real API server reports for an accepted CRD.

use serde_json::{Value, json};

use crate::cel;
use crate::registry::{PrinterColumn, ResourceType};
use crate::time;
use crate::validation::FieldError;

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn strings_at(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Checks the parts of a CRD the double relies on; returns the field errors of an invalid CRD.
pub fn validate(crd: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let group = str_at(crd, "/spec/group");
    let plural = str_at(crd, "/spec/names/plural");
    if group.is_none() {
        errors.push(FieldError::required("spec.group"));
    }
    if plural.is_none() {
        errors.push(FieldError::required("spec.names.plural"));
    }
    if str_at(crd, "/spec/names/kind").is_none() {
        errors.push(FieldError::required("spec.names.kind"));
    }
    match str_at(crd, "/spec/scope") {
        Some("Namespaced" | "Cluster") => {}
        Some(other) => errors.push(FieldError::not_supported(
            "spec.scope",
            json!(other),
            vec![json!("Cluster"), json!("Namespaced")],
        )),
        None => errors.push(FieldError::required("spec.scope")),
    }
    if let (Some(group), Some(plural)) = (group, plural) {
        let name = str_at(crd, "/metadata/name").unwrap_or_default();
        if name != format!("{plural}.{group}") {
            errors.push(FieldError::invalid(
                "metadata.name",
                json!(name),
                "must be spec.names.plural+\".\"+spec.group",
            ));
        }
    }
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array);
    match versions {
        None => errors.push(FieldError::required("spec.versions")),
        Some(versions) => {
            let storage = versions.iter().filter(|v| v.get("storage") == Some(&json!(true))).count();
            if storage != 1 {
                errors.push(FieldError::invalid(
                    "spec.versions",
                    Value::Array(versions.clone()),
                    "must have exactly one version marked as storage version",
                ));
            }
            for (i, v) in versions.iter().enumerate() {
                if str_at(v, "/name").is_none() {
                    errors.push(FieldError::required(format!("spec.versions[{i}].name")));
                }
                if v.get("served").and_then(Value::as_bool).is_none() {
                    errors.push(FieldError::required(format!("spec.versions[{i}].served")));
                }
                match v.pointer("/schema/openAPIV3Schema") {
                    None => errors.push(FieldError::required(format!("spec.versions[{i}].schema.openAPIV3Schema"))),
                    Some(schema) => errors
                        .extend(cel::compile_errors(schema, &format!("spec.versions[{i}].schema.openAPIV3Schema"))),
                }
            }
        }
    }
    errors
}

fn printer_columns(version: &Value) -> Vec<PrinterColumn> {
    let Some(columns) = version.get("additionalPrinterColumns").and_then(Value::as_array) else {
        return vec![PrinterColumn {
            name: "Age".to_string(),
            type_: "date".to_string(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".to_string(),
        }];
    };
    columns
        .iter()
        .map(|c| PrinterColumn {
            name: str_at(c, "/name").unwrap_or_default().to_string(),
            type_: str_at(c, "/type").unwrap_or("string").to_string(),
            format: str_at(c, "/format").unwrap_or_default().to_string(),
            description: str_at(c, "/description").unwrap_or_default().to_string(),
            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: str_at(c, "/jsonPath").unwrap_or_default().to_string(),
        })
        .collect()
}

/// The resource types a (valid) CRD serves: one per version with `served: true`.
pub fn resource_types(crd: &Value) -> Vec<ResourceType> {
    let crd_name = str_at(crd, "/metadata/name").unwrap_or_default().to_string();
    let group = str_at(crd, "/spec/group").unwrap_or_default().to_string();
    let kind = str_at(crd, "/spec/names/kind").unwrap_or_default().to_string();
    let plural = str_at(crd, "/spec/names/plural").unwrap_or_default().to_string();
    let singular = str_at(crd, "/spec/names/singular").map(str::to_string).unwrap_or_else(|| kind.to_lowercase());
    let list_kind = str_at(crd, "/spec/names/listKind").map(str::to_string).unwrap_or_else(|| format!("{kind}List"));
    let namespaced = str_at(crd, "/spec/scope") == Some("Namespaced");
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
        .map(|v| ResourceType {
            group: group.clone(),
            version: str_at(v, "/name").unwrap_or_default().to_string(),
            plural: plural.clone(),
            singular: singular.clone(),
            kind: kind.clone(),
            list_kind: list_kind.clone(),
            namespaced,
            short_names: strings_at(crd, "/spec/names/shortNames"),
            categories: strings_at(crd, "/spec/names/categories"),
            status_subresource: v.pointer("/subresources/status").is_some(),
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            printer_columns: printer_columns(v),
            crd_name: Some(crd_name.clone()),
        })
        .collect()
}

/// The status of an accepted, established CRD.
pub fn accepted_status(crd: &Value, previous: Option<&Value>) -> Value {
    let now = time::now_rfc3339();
    let since = |ty: &str| {
        previous
            .and_then(|p| p.pointer("/status/conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c.get("type") == Some(&json!(ty))))
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now))
    };
    let names = crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
    let kind = str_at(crd, "/spec/names/kind").unwrap_or_default();
    let mut accepted = json!({
        "plural": names.get("plural").cloned().unwrap_or(Value::Null),
        "singular": names.get("singular").cloned().unwrap_or_else(|| json!(kind.to_lowercase())),
        "kind": kind,
        "listKind": names.get("listKind").cloned().unwrap_or_else(|| json!(format!("{kind}List"))),
    });
    for optional in ["shortNames", "categories"] {
        if let Some(v) = names.get(optional) {
            accepted[optional] = v.clone();
        }
    }
    // The object's own list: the stored one on writes of the CRD, the written one on writes of its
    // status (how storage-version migrations remove a version), empty at creation.
    let mut stored: Vec<Value> =
        crd.pointer("/status/storedVersions").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(storage) = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v.get("storage") == Some(&json!(true))))
        .and_then(|v| v.get("name"))
        && !stored.contains(storage)
    {
        stored.push(storage.clone());
    }
    json!({
        "acceptedNames": accepted,
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": since("NamesAccepted"),
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": since("Established"),
            }
        ],
        "storedVersions": stored,
    })
}

/// A CRD may not drop a version that objects may still be stored in: every entry of
/// `status.storedVersions` must stay in `spec.versions`, and the storage version must be listed.
pub fn stored_version_errors(crd: &Value) -> Vec<FieldError> {
    let stored = strings_at(crd, "/status/storedVersions");
    if stored.is_empty() {
        return vec![FieldError::invalid("status.storedVersions", json!([]), "must have at least one stored version")];
    }
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    let declared: Vec<&str> = versions.iter().filter_map(|v| v.get("name").and_then(Value::as_str)).collect();
    let mut errors = Vec::new();
    for v in &versions {
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if v.get("storage") == Some(&json!(true)) && !stored.iter().any(|s| s == name) {
            errors.push(FieldError::invalid(
                "status.storedVersions",
                json!(name),
                format!("must have the storage version {name}"),
            ));
        }
    }
    for (i, version) in stored.iter().enumerate() {
        if !declared.contains(&version.as_str()) {
            errors.push(FieldError::invalid(
                format!("status.storedVersions[{i}]"),
                json!(version),
                "must appear in spec.versions",
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(versions: &[(&str, bool)], stored: &[&str]) -> Value {
        let versions: Vec<Value> =
            versions.iter().map(|(name, storage)| json!({"name": name, "served": true, "storage": storage})).collect();
        json!({"spec": {"versions": versions}, "status": {"storedVersions": stored}})
    }

    #[test]
    fn a_stored_version_may_not_be_dropped() {
        assert!(
            stored_version_errors(&crd(&[("v1alpha1", false), ("v1beta1", true)], &["v1alpha1", "v1beta1"])).is_empty()
        );
        let errors = stored_version_errors(&crd(&[("v1beta1", true)], &["v1alpha1", "v1beta1"]));
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            vec![r#"status.storedVersions[0]: Invalid value: "v1alpha1": must appear in spec.versions"#]
        );
    }

    #[test]
    fn the_storage_version_joins_the_stored_versions() {
        let mut object = crd(&[("v1alpha1", false), ("v1beta1", true)], &["v1alpha1"]);
        let status = accepted_status(&object, None);
        assert_eq!(status["storedVersions"], json!(["v1alpha1", "v1beta1"]));
        object["status"] = status;
        assert!(stored_version_errors(&object).is_empty());
    }
}
