//! Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902), an approximation of
//! strategic merge patch, and the deep merge used to approximate server-side apply.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    #[error("the patch is not a valid JSON patch document: {0}")]
    Malformed(String),
    #[error("doc is missing path: \"{0}\"")]
    MissingPath(String),
    #[error("testing value {0} failed: test failed")]
    TestFailed(String),
    #[error("invalid index {index} for {path}")]
    BadIndex { path: String, index: String },
}

impl PatchError {
    /// Whether the request was malformed (400) rather than inapplicable to this object (422).
    pub fn is_malformed(&self) -> bool {
        matches!(self, PatchError::Malformed(_))
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, everything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 6902

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path.strip_prefix('/').ok_or_else(|| PatchError::Malformed(format!("invalid path {path:?}")))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn array_index(arr: &[Value], token: &str, path: &str, allow_end: bool) -> Result<usize, PatchError> {
    let bad = || PatchError::BadIndex { path: path.to_string(), index: token.to_string() };
    if token == "-" && allow_end {
        return Ok(arr.len());
    }
    let i: usize = token.parse().map_err(|_| bad())?;
    let limit = if allow_end { arr.len() } else { arr.len().saturating_sub(1) };
    if i > limit || (!allow_end && arr.is_empty()) { Err(bad()) } else { Ok(i) }
}

fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String], path: &str) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for token in tokens {
        cur = match cur {
            Value::Object(map) => map.get_mut(token),
            Value::Array(arr) => {
                let i = array_index(arr, token, path, false)?;
                arr.get_mut(i)
            }
            _ => None,
        }
        .ok_or_else(|| PatchError::MissingPath(path.to_string()))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let tokens = split_pointer(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents, path)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(arr) => {
            let i = array_index(arr, last, path, true)?;
            arr.insert(i, value);
            Ok(())
        }
        _ => Err(PatchError::MissingPath(path.to_string())),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let tokens = split_pointer(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        return Err(PatchError::Malformed("cannot remove the whole document".to_string()));
    };
    match parent_mut(doc, parents, path)? {
        Value::Object(map) => map.remove(last).ok_or_else(|| PatchError::MissingPath(path.to_string())),
        Value::Array(arr) => {
            let i = array_index(arr, last, path, false)?;
            Ok(arr.remove(i))
        }
        _ => Err(PatchError::MissingPath(path.to_string())),
    }
}

fn get<'a>(doc: &'a Value, path: &str) -> Result<Option<&'a Value>, PatchError> {
    let mut cur = doc;
    for token in split_pointer(path)? {
        let next = match cur {
            Value::Object(map) => map.get(&token),
            Value::Array(arr) => token.parse::<usize>().ok().and_then(|i| arr.get(i)),
            _ => None,
        };
        match next {
            Some(v) => cur = v,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

fn field<'a>(op: &'a Value, name: &str) -> Result<&'a Value, PatchError> {
    op.get(name).ok_or_else(|| PatchError::Malformed(format!("operation missing {name:?}: {op}")))
}

fn str_field<'a>(op: &'a Value, name: &str) -> Result<&'a str, PatchError> {
    field(op, name)?.as_str().ok_or_else(|| PatchError::Malformed(format!("{name:?} must be a string: {op}")))
}

/// Applies an RFC 6902 patch. Like the Kubernetes API server, a `test` of a missing path against
/// `null` succeeds (kube-runtime's finalizer helper relies on that).
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch.as_array().ok_or_else(|| PatchError::Malformed("expected a JSON array".to_string()))?;
    for op in ops {
        let path = str_field(op, "path")?;
        match str_field(op, "op")? {
            "add" => add(doc, path, field(op, "value")?.clone())?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, field(op, "value")?.clone())?;
            }
            "move" => {
                let from = str_field(op, "from")?;
                let value = remove(doc, from)?;
                add(doc, path, value)?;
            }
            "copy" => {
                let from = str_field(op, "from")?;
                let value = get(doc, from)?.cloned().ok_or_else(|| PatchError::MissingPath(from.to_string()))?;
                add(doc, path, value)?;
            }
            "test" => {
                let expected = field(op, "value")?;
                let actual = get(doc, path)?.unwrap_or(&Value::Null);
                if actual != expected {
                    return Err(PatchError::TestFailed(path.to_string()));
                }
            }
            other => {
                return Err(PatchError::Malformed(format!("unknown operation {other:?}")));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch (approximation)

/// The merge key of a list field, as the built-in types declare with `patchMergeKey`.
/// Lists whose items are objects carrying the key merge item by item; others are replaced.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let key = match field {
        "conditions" => "type",
        "ownerReferences" => "uid",
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => "containerPort",
        "ports" if items.iter().all(|i| i.get("port").is_some()) => "port",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "imagePullSecrets" | "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" => "name",
        _ => "name",
    };
    let all_keyed = !items.is_empty() && items.iter().all(|i| i.get(key).is_some());
    all_keyed.then_some(key)
}

/// Primitive lists that merge (union) rather than replace.
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

/// Approximates a strategic merge patch: maps merge recursively (null deletes), lists of keyed
/// objects merge by key (honouring `$patch: delete`/`replace`), `finalizers` merge as a set,
/// `$deleteFromPrimitiveList/<f>` removes values; `$setElementOrder/*` and `$retainKeys` are ignored.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        strip_directives(&mut replacement);
        *target = replacement;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return;
    };
    for (key, value) in patch_map {
        if let Some(list_field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(existing)), Value::Array(remove)) = (target_map.get_mut(list_field), value) {
                existing.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(_) => strategic_merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value),
            Value::Array(items) => {
                let merged = match target_map.get(key) {
                    Some(Value::Array(existing)) => merge_list(key, existing, items),
                    _ => {
                        let mut fresh = Value::Array(items.clone());
                        strip_directives(&mut fresh);
                        if let Value::Array(items) = &mut fresh {
                            items.retain(|i| !i.is_null());
                        }
                        fresh
                    }
                };
                target_map.insert(key.clone(), merged);
            }
            other => {
                target_map.insert(key.clone(), other.clone());
            }
        }
    }
}

fn merge_list(field: &str, existing: &[Value], patch: &[Value]) -> Value {
    if patch.iter().all(|p| !p.is_object()) {
        if merges_primitives(field) {
            let mut merged = existing.to_vec();
            for p in patch {
                if !merged.contains(p) {
                    merged.push(p.clone());
                }
            }
            return Value::Array(merged);
        }
        return Value::Array(patch.to_vec());
    }
    let Some(key) = merge_key(field, patch).or_else(|| merge_key(field, existing)) else {
        let mut replaced = Value::Array(patch.to_vec());
        strip_directives(&mut replaced);
        return replaced;
    };
    let mut merged = existing.to_vec();
    for item in patch {
        let Some(id) = item.get(key) else { continue };
        let directive = item.get("$patch").and_then(Value::as_str);
        let position = merged.iter().position(|m| m.get(key) == Some(id));
        match (directive, position) {
            (Some("delete"), Some(i)) => {
                merged.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => strategic_merge_patch(&mut merged[i], item),
            (_, None) => {
                let mut fresh = item.clone();
                strip_directives(&mut fresh);
                merged.push(fresh);
            }
        }
    }
    Value::Array(merged)
}

/// Removes `$...` directive keys (recursively) from a value that is inserted verbatim.
fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Server-side apply (approximation)

/// Approximates server-side apply for one field manager: fields the manager applied last time but
/// no longer applies are removed, then the new configuration is deep-merged (maps merge, lists
/// and scalars replace). Ownership conflicts between managers are not detected.
pub fn apply(target: &mut Value, previous_config: Option<&Value>, config: &Value) {
    if let Some(previous) = previous_config {
        remove_dropped_fields(target, previous, config);
    }
    deep_merge(target, config);
}

fn remove_dropped_fields(target: &mut Value, previous: &Value, config: &Value) {
    let (Value::Object(target_map), Value::Object(previous_map)) = (target, previous) else {
        return;
    };
    for (key, previous_value) in previous_map {
        match config.get(key) {
            None => {
                target_map.remove(key);
            }
            Some(config_value) => {
                if let Some(target_value) = target_map.get_mut(key) {
                    remove_dropped_fields(target_value, previous_value, config_value);
                }
            }
        }
    }
}

fn deep_merge(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(target_map), Value::Object(config_map)) => {
            for (key, value) in config_map {
                match target_map.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => deep_merge(existing, value),
                    _ => {
                        target_map.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, config) => *target = config.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_with_null() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut doc, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(doc, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn json_patch_finalizer_flow() {
        let mut doc = json!({"metadata": {"name": "x"}});
        let add = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}
        ]);
        json_patch(&mut doc, &add).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["f"]));
        let append = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": ["f"]},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "g"}
        ]);
        json_patch(&mut doc, &append).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["f", "g"]));
        let remove = json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "f"},
            {"op": "remove", "path": "/metadata/finalizers/0"}
        ]);
        json_patch(&mut doc, &remove).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["g"]));
        let stale = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "f"}]);
        assert_eq!(json_patch(&mut doc, &stale), Err(PatchError::TestFailed("/metadata/finalizers/0".into())));
    }

    #[test]
    fn json_patch_ops() {
        let mut doc = json!({"a": [1, 2], "b": {"c": "x"}});
        let patch = json!([
            {"op": "replace", "path": "/a/0", "value": 9},
            {"op": "move", "from": "/b/c", "path": "/d"},
            {"op": "copy", "from": "/d", "path": "/b/e"},
            {"op": "remove", "path": "/a/1"}
        ]);
        json_patch(&mut doc, &patch).unwrap();
        assert_eq!(doc, json!({"a": [9], "b": {"e": "x"}, "d": "x"}));
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }

    #[test]
    fn strategic_merges_named_lists() {
        let mut doc = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]},
                             "metadata": {"finalizers": ["x"]}});
        let patch = json!({
            "spec": {"$setElementOrder/containers": [{"name": "a"}],
                     "containers": [{"name": "a", "image": "2"}, {"name": "b", "$patch": "delete"}]},
            "metadata": {"finalizers": ["y"]}
        });
        strategic_merge_patch(&mut doc, &patch);
        assert_eq!(doc["spec"]["containers"], json!([{"name": "a", "image": "2"}]));
        assert_eq!(doc["metadata"]["finalizers"], json!(["x", "y"]));
    }

    #[test]
    fn apply_removes_fields_dropped_by_the_manager() {
        let mut live = json!({"spec": {"a": 1, "b": 2, "other": 3}});
        let prev = json!({"spec": {"a": 1, "b": 2}});
        apply(&mut live, Some(&prev), &json!({"spec": {"a": 5}}));
        assert_eq!(live, json!({"spec": {"a": 5, "other": 3}}));
    }
}
