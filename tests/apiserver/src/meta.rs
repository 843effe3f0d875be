//! Accessors for `metadata` of objects held as JSON values.

use serde_json::{Map, Value, json};

pub fn str_field<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

pub fn name(object: &Value) -> Option<&str> {
    str_field(object, "name").filter(|s| !s.is_empty())
}

pub fn namespace(object: &Value) -> Option<&str> {
    str_field(object, "namespace").filter(|s| !s.is_empty())
}

pub fn resource_version(object: &Value) -> Option<&str> {
    str_field(object, "resourceVersion").filter(|s| !s.is_empty())
}

pub fn uid(object: &Value) -> Option<&str> {
    str_field(object, "uid").filter(|s| !s.is_empty())
}

pub fn is_deleting(object: &Value) -> bool {
    str_field(object, "deletionTimestamp").is_some()
}

pub fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// `metadata` as a mutable map, created if missing or not an object.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let map = match object {
        Value::Object(map) => map,
        _ => unreachable!("object was just made a map"),
    };
    let metadata = map.entry("metadata").or_insert_with(|| json!({}));
    if !metadata.is_object() {
        *metadata = json!({});
    }
    match metadata {
        Value::Object(m) => m,
        _ => unreachable!("metadata was just made a map"),
    }
}

pub fn set(object: &mut Value, field: &str, value: Value) {
    metadata_mut(object).insert(field.to_string(), value);
}

/// Copies a metadata field from `from` (or removes it when `from` lacks it).
pub fn copy_field(object: &mut Value, from: &Value, field: &str) {
    match from.get("metadata").and_then(|m| m.get(field)) {
        Some(v) => set(object, field, v.clone()),
        None => {
            metadata_mut(object).remove(field);
        }
    }
}

/// Sets a top-level field of an object (no-op on non-objects).
pub fn set_top(object: &mut Value, field: &str, value: Value) {
    if let Value::Object(map) = object {
        map.insert(field.to_string(), value);
    }
}

/// Copies a top-level field from `from` (or removes it when `from` lacks it).
pub fn copy_top(object: &mut Value, from: &Value, field: &str) {
    if let Value::Object(map) = object {
        match from.get(field) {
            Some(v) => map.insert(field.to_string(), v.clone()),
            None => map.remove(field),
        };
    }
}

/// Drops null and empty collection fields from metadata, as Go's `omitempty` serialization does.
pub fn normalize(object: &mut Value) {
    let metadata = metadata_mut(object);
    metadata.retain(|_, v| match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    });
    metadata.remove("selfLink");
    metadata.remove("managedFields");
}

/// A random RFC 4122 version-4 style UID.
pub fn new_uid() -> String {
    let hi = fastrand::u64(..);
    let lo = fastrand::u64(..);
    let hex = format!("{hi:016x}{lo:016x}");
    format!("{}-{}-4{}-{:x}{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], 8 + (lo >> 62), &hex[17..20], &hex[20..32])
}

/// Five characters from the alphabet Kubernetes uses for `generateName` suffixes.
pub fn generate_name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_shape() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.matches('-').count(), 4);
        assert_eq!(&uid[14..15], "4");
    }

    #[test]
    fn normalize_drops_empty() {
        let mut obj = json!({"metadata": {"name": "a", "labels": {}, "finalizers": [], "annotations": null}});
        normalize(&mut obj);
        assert_eq!(obj, json!({"metadata": {"name": "a"}}));
    }
}
