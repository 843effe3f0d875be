//! Structural-schema processing of custom resources against a CRD version's `openAPIV3Schema`:
//! defaulting, pruning of unknown fields and validation, approximating the real API server.
//!
//! Supported keywords: `type`, `nullable`, `properties`, `additionalProperties`, `items`,
//! `required`, `enum`, `default`, `pattern`, `minLength`, `maxLength`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `minItems`, `maxItems`, `allOf`, `anyOf`, `oneOf`,
//! `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`,
//! `x-kubernetes-embedded-resource`. CEL rules (`x-kubernetes-validations`) run afterwards (cel.rs);
//! `format` is ignored.

use serde_json::{Map, Value, json};

use crate::validation::{FieldError, index, join, type_name};

/// What processing an object found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub errors: Vec<FieldError>,
    /// Paths of fields removed because the schema does not declare them.
    pub pruned: Vec<String>,
}

/// Defaults, prunes and validates a whole custom resource in place.
pub fn process(schema: &Value, object: &mut Value) -> Outcome {
    let mut outcome = Outcome::default();
    let mut walker = Walker { prune: true, outcome: &mut outcome };
    walker.node(schema, object, "", Root::Yes);
    outcome
}

/// Only validates (no defaulting or pruning), e.g. for `anyOf` branches.
fn validate_only(schema: &Value, value: &Value, path: &str) -> Vec<FieldError> {
    let mut outcome = Outcome::default();
    let mut copy = value.clone();
    let mut walker = Walker { prune: false, outcome: &mut outcome };
    walker.node(schema, &mut copy, path, Root::No);
    outcome.errors
}

#[derive(Clone, Copy, PartialEq)]
enum Root {
    Yes,
    No,
}

struct Walker<'o> {
    prune: bool,
    outcome: &'o mut Outcome,
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn type_matches(ty: &str, value: &Value) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        "number" => value.is_number(),
        _ => true,
    }
}

impl Walker<'_> {
    fn error(&mut self, e: FieldError) {
        self.outcome.errors.push(e);
    }

    fn node(&mut self, schema: &Value, value: &mut Value, path: &str, root: Root) {
        if value.is_null() {
            if !flag(schema, "nullable") && schema.get("type").is_some() {
                let ty = schema.get("type").and_then(Value::as_str).unwrap_or_default();
                self.error(FieldError::type_invalid(
                    path,
                    json!("null"),
                    format!("{path} in body must be of type {ty}: \"null\""),
                ));
            }
            return;
        }
        if flag(schema, "x-kubernetes-int-or-string") {
            if !(value.is_string() || type_matches("integer", value)) {
                let actual = type_name(value);
                self.error(FieldError::type_invalid(
                    path,
                    json!(actual),
                    format!("{path} in body must be of type integer,string: \"{actual}\""),
                ));
                return;
            }
        } else if let Some(ty) = schema.get("type").and_then(Value::as_str)
            && !type_matches(ty, value)
        {
            let actual = type_name(value);
            self.error(FieldError::type_invalid(
                path,
                json!(actual),
                format!("{path} in body must be of type {ty}: \"{actual}\""),
            ));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            self.error(FieldError::not_supported(path, value.clone(), allowed.clone()));
        }
        self.combinators(schema, value, path);
        match value {
            Value::String(s) => {
                let s = s.clone();
                self.string(schema, &s, path);
            }
            Value::Number(_) => self.number(schema, value, path),
            Value::Array(items) => self.array(schema, items, path),
            Value::Object(map) => self.object(schema, map, path, root),
            _ => {}
        }
    }

    fn combinators(&mut self, schema: &Value, value: &Value, path: &str) {
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.outcome.errors.extend(validate_only(sub, value, path));
            }
        }
        for (key, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            let Some(branches) = schema.get(key).and_then(Value::as_array) else {
                continue;
            };
            let passing = branches.iter().filter(|b| validate_only(b, value, path).is_empty()).count();
            let ok = if exactly_one { passing == 1 } else { passing >= 1 };
            if !ok {
                let which = if exactly_one { "exactly one of" } else { "any of" };
                self.error(FieldError::invalid(
                    path,
                    value.clone(),
                    format!("{path} in body must validate against {which} the schemas in {key}"),
                ));
            }
        }
    }

    fn string(&mut self, schema: &Value, s: &str, path: &str) {
        let len = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            self.error(FieldError::too_long(path, json!(s), max));
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            self.error(FieldError::invalid(
                path,
                json!(s),
                format!("{path} in body should be at least {min} chars long"),
            ));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match regex_lite::Regex::new(pattern) {
                Ok(re) if !re.is_match(s) => {
                    self.error(FieldError::invalid(path, json!(s), format!("{path} in body should match '{pattern}'")))
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%pattern, error = %e, "schema pattern not understood; not checked")
                }
            }
        }
    }

    fn number(&mut self, schema: &Value, value: &Value, path: &str) {
        let Some(n) = value.as_f64() else { return };
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            let exclusive = flag(schema, "exclusiveMinimum");
            if (exclusive && n <= min) || n < min {
                let op = if exclusive { "greater than" } else { "greater than or equal to" };
                self.error(FieldError::invalid(
                    path,
                    value.clone(),
                    format!("{path} in body should be {op} {}", schema["minimum"]),
                ));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            let exclusive = flag(schema, "exclusiveMaximum");
            if (exclusive && n >= max) || n > max {
                let op = if exclusive { "less than" } else { "less than or equal to" };
                self.error(FieldError::invalid(
                    path,
                    value.clone(),
                    format!("{path} in body should be {op} {}", schema["maximum"]),
                ));
            }
        }
    }

    fn array(&mut self, schema: &Value, items: &mut [Value], path: &str) {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            self.error(FieldError::too_many(path, items.len(), max));
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            self.error(FieldError::invalid(
                path,
                json!(items.len()),
                format!("{path} in body should have at least {min} items"),
            ));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter_mut().enumerate() {
                self.node(item_schema, item, &index(path, i), Root::No);
            }
        }
    }

    fn object(&mut self, schema: &Value, map: &mut Map<String, Value>, path: &str, root: Root) {
        let properties = schema.get("properties").and_then(Value::as_object);
        // Kubernetes keeps apiVersion/kind/metadata of the object itself and of embedded resources.
        let keeps_type_meta = root == Root::Yes || flag(schema, "x-kubernetes-embedded-resource");
        if self.prune
            && let Some(properties) = properties
        {
            for (name, prop) in properties {
                if !map.contains_key(name)
                    && let Some(default) = prop.get("default")
                {
                    map.insert(name.clone(), default.clone());
                }
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    self.error(FieldError::required(join(path, name)));
                }
            }
        }
        let additional = schema.get("additionalProperties");
        let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            let child_path = join(path, &key);
            if keeps_type_meta && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            let child_schema = properties.and_then(|p| p.get(&key)).or(match additional {
                Some(s @ Value::Object(_)) => Some(s),
                _ => None,
            });
            match child_schema {
                Some(child_schema) => {
                    if let Some(child) = map.get_mut(&key) {
                        self.node(child_schema, child, &child_path, Root::No);
                    }
                }
                None if preserve || additional == Some(&Value::Bool(true)) => {}
                None if properties.is_none() && additional.is_none() && schema.get("type").is_none() => {}
                None => {
                    if self.prune {
                        map.remove(&key);
                        self.outcome.pruned.push(child_path);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["serviceRef", "targetType"],
                    "properties": {
                        "serviceRef": {
                            "type": "object",
                            "required": ["name", "port"],
                            "properties": {
                                "name": {"type": "string"},
                                "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}
                            }
                        },
                        "targetType": {"type": "string", "enum": ["instance", "ip"]},
                        "weight": {"type": "integer", "minimum": 1, "default": 10},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }
            }
        })
    }

    #[test]
    fn valid_object_is_defaulted_and_pruned() {
        let mut obj = json!({
            "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "spec": {"serviceRef": {"name": "s", "port": "http"}, "targetType": "ip",
                     "labels": {"a": "b"}, "free": {"any": 1}, "bogus": true}
        });
        let out = process(&schema(), &mut obj);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.pruned, vec!["spec.bogus"]);
        assert_eq!(obj["spec"]["weight"], json!(10));
        assert_eq!(obj["spec"]["free"]["any"], json!(1));
        assert_eq!(obj["metadata"]["name"], json!("a"));
    }

    #[test]
    fn errors_name_fields() {
        let mut obj = json!({"spec": {"targetType": "foo", "weight": 0, "labels": {"a": 1}}});
        let out = process(&schema(), &mut obj);
        let rendered: Vec<String> = out.errors.iter().map(|e| e.to_string()).collect();
        assert!(rendered.contains(&"spec.serviceRef: Required value".to_string()), "{rendered:?}");
        assert!(
            rendered.contains(
                &r#"spec.targetType: Unsupported value: "foo": supported values: "instance", "ip""#.to_string()
            )
        );
        assert!(rendered.contains(
            &"spec.weight: Invalid value: 0: spec.weight in body should be greater than or equal to 1".to_string()
        ));
        assert!(
            rendered.contains(
                &r#"spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type string: "integer""#
                    .to_string()
            )
        );
    }

    #[test]
    fn int_or_string_rejects_bool() {
        let mut obj = json!({"spec": {"serviceRef": {"name": "s", "port": true}, "targetType": "ip"}});
        let out = process(&schema(), &mut obj);
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        assert_eq!(out.errors[0].field, "spec.serviceRef.port");
    }
}
