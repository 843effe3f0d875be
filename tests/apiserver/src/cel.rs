//! CRD validation rules (`x-kubernetes-validations`) evaluated with a real CEL implementation:
//! the kube-cel crate (on the `cel` crate), which also brings the Kubernetes CEL libraries
//! (`isCIDR`, `quantity`, `url`, regex, lists, sets, ...) and binds `self`/`oldSelf` per schema node.
//! Transition rules (those using `oldSelf`) run only on updates where the old value exists.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;

use kube_cel::{CompilationError, CompiledSchema, RootContext, ValidationError, Validator};
use serde_json::{Value, json};

use crate::registry::ResourceType;
use crate::validation::{FieldError, index, join};

thread_local! {
    // Registering the Kubernetes libraries once per thread, not per request.
    static VALIDATOR: Validator = Validator::new();
    // Compiled rules per schema (by a hash of its JSON): parsing every rule on every write of a
    // custom resource would cost more than the write itself.
    static COMPILED: RefCell<HashMap<u64, Rc<CompiledSchema>>> = RefCell::new(HashMap::new());
}

/// Schemas kept compiled per thread; a handful of CRD versions in practice.
const CACHE_LIMIT: usize = 64;

fn compiled(schema: &Value) -> Rc<CompiledSchema> {
    let key = {
        let mut hasher = DefaultHasher::new();
        schema.to_string().hash(&mut hasher);
        hasher.finish()
    };
    COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= CACHE_LIMIT && !cache.contains_key(&key) {
            cache.clear();
        }
        cache.entry(key).or_insert_with(|| Rc::new(kube_cel::compile_schema(schema))).clone()
    })
}

/// Evaluates every rule of `schema` on `object` (and `old`, on updates); returns the failures as
/// field errors worded like a real API server's.
pub fn validate(rt: &ResourceType, schema: &Value, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    if !has_rules(schema) {
        return Vec::new();
    }
    let root = RootContext { api_version: rt.api_version(), api_group: rt.group.clone(), kind: rt.kind.clone() };
    let compiled = compiled(schema);
    let outcome = VALIDATOR.with(|v| v.validate_compiled_with_context(&compiled, object, old, Some(&root)));
    match outcome {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| field_error(schema, e)).collect(),
    }
}

/// Rules that do not compile, by schema path, as a CRD create/update reports them.
pub fn compile_errors(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if has_rules(schema) {
        collect_compile_errors(&kube_cel::compile_schema(schema), path, &mut errors);
    }
    errors
}

fn collect_compile_errors(node: &CompiledSchema, path: &str, errors: &mut Vec<FieldError>) {
    for (i, result) in node.validations.iter().enumerate() {
        if let Err(e) = result {
            let rule = match e {
                CompilationError::Parse { rule, .. } | CompilationError::MessageExpressionParse { rule, .. } => {
                    json!(rule)
                }
                _ => Value::Null,
            };
            let field = index(&join(path, "x-kubernetes-validations"), i);
            errors.push(FieldError::invalid(join(&field, "rule"), rule, format!("compilation failed: {e}")));
        }
    }
    for (name, child) in &node.properties {
        collect_compile_errors(child, &format!("{}[{name}]", join(path, "properties")), errors);
    }
    if let Some(items) = &node.items {
        collect_compile_errors(items, &join(path, "items"), errors);
    }
    if let Some(additional) = &node.additional_properties {
        collect_compile_errors(additional, &join(path, "additionalProperties"), errors);
    }
}

/// Whether a schema declares any validation rule.
pub fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map.contains_key("x-kubernetes-validations") || map.values().any(has_rules),
        Value::Array(items) => items.iter().any(has_rules),
        _ => false,
    }
}

/// The `type` of the schema node that declares `rule`: a real server shows it as the invalid value
/// (`spec.targetGroupARN: Invalid value: "object": <message>`).
fn declaring_type<'s>(schema: &'s Value, rule: &str) -> Option<&'s str> {
    let here = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .is_some_and(|rules| rules.iter().any(|r| r.get("rule").and_then(Value::as_str) == Some(rule)));
    if here {
        return schema.get("type").and_then(Value::as_str);
    }
    match schema {
        Value::Object(map) => map.values().find_map(|child| declaring_type(child, rule)),
        Value::Array(items) => items.iter().find_map(|child| declaring_type(child, rule)),
        _ => None,
    }
}

fn field_error(schema: &Value, e: &ValidationError) -> FieldError {
    match e.reason.as_deref() {
        Some("FieldValueForbidden") => FieldError::forbidden(&e.field_path, &e.message),
        Some("FieldValueRequired") => FieldError::required_because(&e.field_path, &e.message),
        _ => {
            let ty = declaring_type(schema, &e.rule).unwrap_or("object");
            FieldError::invalid(&e.field_path, json!(ty), &e.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> ResourceType {
        ResourceType {
            group: "x.io".into(),
            version: "v1".into(),
            plural: "things".into(),
            singular: "thing".into(),
            kind: "Thing".into(),
            list_kind: "ThingList".into(),
            namespaced: true,
            short_names: vec![],
            categories: vec![],
            status_subresource: true,
            schema: None,
            printer_columns: vec![],
            crd_name: Some("things.x.io".into()),
        }
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "arn": {"type": "string"},
                        "cidr": {"type": "string", "x-kubernetes-validations": [
                            {"rule": "isCIDR(self)", "message": "must be a CIDR"}
                        ]}
                    },
                    "x-kubernetes-validations": [{
                        "rule": "!has(oldSelf.arn) || (has(self.arn) && self.arn == oldSelf.arn)",
                        "fieldPath": ".arn",
                        "message": "arn is immutable"
                    }]
                }
            }
        })
    }

    #[test]
    fn transition_rules_run_only_on_updates() {
        let created = json!({"spec": {"arn": "a"}});
        assert!(validate(&rt(), &schema(), &created, None).is_empty());
        let changed = json!({"spec": {"arn": "b"}});
        let errors = validate(&rt(), &schema(), &changed, Some(&created));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].to_string(), r#"spec.arn: Invalid value: "object": arn is immutable"#);
        let removed = json!({"spec": {}});
        assert_eq!(validate(&rt(), &schema(), &removed, Some(&created)).len(), 1);
        assert!(validate(&rt(), &schema(), &created, Some(&json!({"spec": {}}))).is_empty(), "unset -> set");
    }

    #[test]
    fn the_kubernetes_cidr_library_is_available() {
        let good = json!({"spec": {"cidr": "10.0.0.0/16"}});
        assert!(validate(&rt(), &schema(), &good, None).is_empty());
        let bad = json!({"spec": {"cidr": "10.0.0.0/33"}});
        let errors = validate(&rt(), &schema(), &bad, None);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].to_string(), r#"spec.cidr: Invalid value: "string": must be a CIDR"#);
    }

    #[test]
    fn rules_that_do_not_compile_are_reported_with_their_schema_path() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.a ==", "message": "m"}]}}});
        let errors = compile_errors(&schema, "spec.versions[0].schema.openAPIV3Schema");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let field = "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule";
        assert_eq!(errors[0].field, field, "{errors:?}");
    }
}
