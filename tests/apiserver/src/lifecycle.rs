//! Object lifecycle rules of the API server: create/update/patch/delete with metadata management,
//! optimistic concurrency, status subresources, generation, finalizers, schema validation and the
//! side effects of CRDs and namespaces.

use serde_json::{Value, json};

use crate::cel;
use crate::crd;
use crate::error::{ApiError, Target, success_status};
use crate::events;
use crate::meta;
use crate::patch::{self, PatchError};
use crate::registry::{ResourceType, StorageKey};
use crate::schema;
use crate::store::Store;
use crate::time;
use crate::validation::FieldError;

/// How unknown fields in custom resources are reported (`fieldValidation` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "Ignore" => Ok(Self::Ignore),
            "Warn" | "" => Ok(Self::Warn),
            "Strict" => Ok(Self::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    pub field_manager: Option<String>,
}

/// The part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// A successful write.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

/// Where an object lives.
#[derive(Debug, Clone, Copy)]
pub struct Location<'a> {
    pub rt: &'a ResourceType,
    /// "" for cluster-scoped resources.
    pub namespace: &'a str,
}

impl Location<'_> {
    fn key(&self) -> StorageKey {
        self.rt.storage_key()
    }

    fn target<'n>(&'n self, name: &'n str) -> Target<'n> {
        Target::new(self.rt, name)
    }
}

/// Returns a stored object as the requested version shows it.
pub fn present(rt: &ResourceType, object: &Value) -> Value {
    let mut shown = object.clone();
    if events::is_events_v1(rt) {
        events::core_to_events_v1(&mut shown);
    }
    stamp(rt, shown)
}

/// Sets the apiVersion and kind of the request's version on an object in that version's form.
fn stamp(rt: &ResourceType, mut object: Value) -> Value {
    if let Value::Object(map) = &mut object {
        map.insert("apiVersion".to_string(), json!(rt.api_version()));
        map.insert("kind".to_string(), json!(rt.kind));
    }
    object
}

/// The form an object written through `rt` is stored in.
fn storage_form(rt: &ResourceType, mut object: Value) -> Value {
    if events::is_events_v1(rt) {
        events::events_v1_to_core(&mut object);
    }
    object
}

pub fn get(store: &Store, loc: Location<'_>, name: &str) -> Result<Value, ApiError> {
    store
        .get(&loc.key(), loc.namespace, name)
        .map(|o| present(loc.rt, o))
        .ok_or_else(|| ApiError::not_found(loc.target(name)))
}

fn is_namespaces(rt: &ResourceType) -> bool {
    rt.is("", "namespaces")
}

fn is_crds(rt: &ResourceType) -> bool {
    rt.is("apiextensions.k8s.io", "customresourcedefinitions")
}

fn namespaces_key() -> StorageKey {
    StorageKey { group: String::new(), plural: "namespaces".to_string() }
}

fn check_namespace_writable(store: &Store, loc: Location<'_>, name: &str) -> Result<(), ApiError> {
    if !loc.rt.namespaced {
        return Ok(());
    }
    match store.get(&namespaces_key(), "", loc.namespace) {
        None => Err(ApiError::namespace_not_found(loc.namespace)),
        Some(ns) if meta::is_deleting(ns) => Err(ApiError::forbidden(
            format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                loc.rt.plural, loc.namespace
            ),
            json!({ "kind": loc.rt.plural, "group": loc.rt.group }),
        )),
        Some(_) => Ok(()),
    }
}

/// Everything except metadata, and except status where status is a separate subresource.
fn spec_view(rt: &ResourceType, object: &Value) -> Value {
    let mut view = object.clone();
    if let Value::Object(map) = &mut view {
        for field in ["metadata", "apiVersion", "kind"] {
            map.remove(field);
        }
        if rt.status_subresource {
            map.remove("status");
        }
    }
    view
}

/// Applies type-specific defaulting and validation; returns warnings.
fn admit(
    loc: Location<'_>,
    name: &str,
    object: &mut Value,
    previous: Option<&Value>,
    opts: &WriteOptions,
) -> Result<Vec<String>, ApiError> {
    let rt = loc.rt;
    if is_crds(rt) {
        let mut errors = crd::validate(object);
        if errors.is_empty() {
            let status = crd::accepted_status(object, previous);
            meta::set_top(object, "status", status);
            errors = crd::stored_version_errors(object);
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(&rt.kind, &rt.group, name, &errors));
        }
        return Ok(Vec::new());
    }
    if is_namespaces(rt) && object.pointer("/status/phase").is_none() {
        meta::set_top(object, "status", json!({ "phase": "Active" }));
    }
    let Some(schema) = &rt.schema else {
        return Ok(Vec::new());
    };
    let outcome = schema::process(schema, object);
    let unknown: Vec<String> = outcome.pruned.iter().map(|p| format!("unknown field \"{p}\"")).collect();
    // Like the real decoder, strict unknown-field errors come before schema validation.
    if opts.field_validation == FieldValidation::Strict && !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            unknown.join(", "),
            kind = rt.kind,
            version = rt.version
        )));
    }
    // As in a real server, validation rules run on the defaulted, pruned object unless the schema
    // found it too broken for them; their failures join the schema's.
    let mut errors = outcome.errors;
    if cel::has_rules(schema) {
        if errors.iter().any(FieldError::blocks_validation_rules) {
            errors.push(FieldError::invalid(
                "<nil>",
                json!("null"),
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ));
        } else {
            errors.extend(cel::validate(rt, schema, object, previous));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(&rt.kind, &rt.group, name, &errors));
    }
    Ok(if opts.field_validation == FieldValidation::Warn { unknown } else { Vec::new() })
}

/// Side effects of committing an object: CRDs register their types.
fn after_put(store: &mut Store, loc: Location<'_>, object: &Value) {
    if is_crds(loc.rt)
        && let Some(name) = meta::name(object)
    {
        let name = name.to_string();
        store.registry.set_crd(&name, crd::resource_types(object));
    }
}

fn body_object(body: Value) -> Result<Value, ApiError> {
    if body.is_object() { Ok(body) } else { Err(ApiError::bad_request("the request body must be a JSON object")) }
}

fn check_body_namespace(loc: Location<'_>, object: &mut Value) -> Result<(), ApiError> {
    if !loc.rt.namespaced {
        meta::metadata_mut(object).remove("namespace");
        return Ok(());
    }
    match meta::namespace(object) {
        Some(ns) if ns != loc.namespace => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta::set(object, "namespace", json!(loc.namespace));
            Ok(())
        }
    }
}

/// POST: creates a new object (`generateName` supported).
pub fn create(store: &mut Store, loc: Location<'_>, body: Value, opts: &WriteOptions) -> Result<Written, ApiError> {
    let mut object = body_object(body)?;
    check_body_namespace(loc, &mut object)?;
    let name = match (meta::name(&object), meta::str_field(&object, "generateName")) {
        (Some(name), _) => name.to_string(),
        (None, Some(prefix)) if !prefix.is_empty() => {
            format!("{prefix}{}", meta::generate_name_suffix())
        }
        _ => {
            return Err(ApiError::invalid(
                &loc.rt.kind,
                &loc.rt.group,
                "",
                &[FieldError::required_because("metadata.name", "name or generateName is required")],
            ));
        }
    };
    meta::set(&mut object, "name", json!(name));
    check_namespace_writable(store, loc, &name)?;
    if store.get(&loc.key(), loc.namespace, &name).is_some() {
        return Err(ApiError::already_exists(loc.target(&name)));
    }
    object = stamp(loc.rt, object);
    // Status is written through its subresource; nodes are registered with theirs.
    if loc.rt.status_subresource
        && !loc.rt.is("", "nodes")
        && let Value::Object(map) = &mut object
    {
        map.remove("status");
    }
    let warnings = admit(loc, &name, &mut object, None, opts)?;
    {
        let m = meta::metadata_mut(&mut object);
        m.insert("uid".into(), json!(meta::new_uid()));
        m.insert("creationTimestamp".into(), json!(time::now_rfc3339()));
        m.insert("generation".into(), json!(1));
        for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"] {
            m.remove(field);
        }
    }
    meta::normalize(&mut object);
    if opts.dry_run {
        return Ok(Written { object, created: true, warnings });
    }
    let stored = store.put(&loc.key(), storage_form(loc.rt, object));
    after_put(store, loc, &stored);
    Ok(Written { object: present(loc.rt, &stored), created: true, warnings })
}

/// PUT (of the object or its status).
pub fn update(
    store: &mut Store,
    loc: Location<'_>,
    name: &str,
    part: Part,
    body: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let mut candidate = body_object(body)?;
    match meta::name(&candidate) {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => meta::set(&mut candidate, "name", json!(name)),
    }
    check_body_namespace(loc, &mut candidate)?;
    let current =
        store.get(&loc.key(), loc.namespace, name).cloned().ok_or_else(|| ApiError::not_found(loc.target(name)))?;
    commit_update(store, loc, name, part, &current, candidate, opts)
}

/// Turns a desired object into the stored one and commits it (or deletes a finalized object).
fn commit_update(
    store: &mut Store,
    loc: Location<'_>,
    name: &str,
    part: Part,
    current: &Value,
    candidate: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let rt = loc.rt;
    if let Some(rv) = meta::resource_version(&candidate)
        && Some(rv) != meta::resource_version(current)
    {
        return Err(ApiError::stale_resource_version(loc.target(name)));
    }
    // As a real API server's store does: a UID in the new object is a precondition.
    if let Some(uid) = meta::uid(&candidate)
        && Some(uid) != meta::uid(current)
    {
        return Err(ApiError::conflict(
            loc.target(name),
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta::uid(current).unwrap_or_default()
            ),
        ));
    }
    let mut object = match part {
        Part::Status => {
            let mut object = present(rt, current);
            meta::copy_top(&mut object, &candidate, "status");
            object
        }
        Part::Main => {
            let mut object = stamp(rt, candidate);
            if rt.status_subresource {
                meta::copy_top(&mut object, current, "status");
            }
            for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
                meta::copy_field(&mut object, current, field);
            }
            object
        }
    };
    meta::normalize(&mut object);
    if meta::is_deleting(current) {
        let before = meta::finalizers(current);
        if meta::finalizers(&object).iter().any(|f| !before.contains(f)) {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                name,
                &[FieldError::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                )],
            ));
        }
    }
    let warnings = admit(loc, name, &mut object, Some(current), opts)?;
    if spec_view(rt, &object) != spec_view(rt, current) {
        let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        meta::set(&mut object, "generation", json!(generation + 1));
    }
    meta::copy_field(&mut object, current, "resourceVersion");
    if object == present(rt, current) {
        return Ok(Written { object, created: false, warnings });
    }
    if opts.dry_run {
        return Ok(Written { object, created: false, warnings });
    }
    if meta::is_deleting(&object) && meta::finalizers(&object).is_empty() {
        let last_state = storage_form(rt, object);
        let removed = finish_removal(store, loc, name, Some(last_state.clone())).unwrap_or(last_state);
        return Ok(Written { object: present(rt, &removed), created: false, warnings });
    }
    let stored = store.put(&loc.key(), storage_form(rt, object));
    after_put(store, loc, &stored);
    Ok(Written { object: present(rt, &stored), created: false, warnings })
}

fn patch_error(rt: &ResourceType, name: &str, err: PatchError) -> ApiError {
    if err.is_malformed() {
        ApiError::bad_request(err.to_string())
    } else {
        ApiError::invalid(&rt.kind, &rt.group, name, &[FieldError::invalid("", Value::Null, err.to_string())])
    }
}

/// PATCH (of the object or its status). Server-side apply creates the object when absent.
pub fn patch(
    store: &mut Store,
    loc: Location<'_>,
    name: &str,
    part: Part,
    patch_type: PatchType,
    body: &Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let key = loc.key();
    let manager = opts.field_manager.clone().unwrap_or_default();
    if patch_type == PatchType::Apply {
        if manager.is_empty() {
            return Err(ApiError::bad_request("PATCH, application/apply-patch+yaml requires fieldManager to be set"));
        }
        if !body.is_object() {
            return Err(ApiError::bad_request("the apply configuration must be an object"));
        }
    }
    let Some(current) = store.get(&key, loc.namespace, name).cloned() else {
        if patch_type != PatchType::Apply || part == Part::Status {
            return Err(ApiError::not_found(loc.target(name)));
        }
        let mut config = body.clone();
        meta::set(&mut config, "name", json!(name));
        let written = create(store, loc, config, opts)?;
        if !opts.dry_run {
            store.set_applied_config(&key, loc.namespace, name, &manager, body.clone());
        }
        return Ok(written);
    };
    let mut patched = present(loc.rt, &current);
    match patch_type {
        PatchType::Merge => patch::merge_patch(&mut patched, body),
        PatchType::Strategic => patch::strategic_merge_patch(&mut patched, body),
        PatchType::Json => patch::json_patch(&mut patched, body).map_err(|e| patch_error(loc.rt, name, e))?,
        PatchType::Apply => {
            let previous = store.applied_config(&key, loc.namespace, name, &manager).cloned();
            let mut config = body.clone();
            // The apply configuration's resourceVersion, if any, is a precondition like any other.
            if meta::resource_version(&config).is_none() {
                meta::copy_field(&mut config, &current, "resourceVersion");
            }
            patch::apply(&mut patched, previous.as_ref(), &config);
        }
    }
    if !patched.is_object() {
        return Err(ApiError::bad_request("the patch turned the object into a non-object"));
    }
    if meta::name(&patched) != Some(name) {
        return Err(ApiError::bad_request("the patch may not change metadata.name"));
    }
    check_body_namespace(loc, &mut patched)?;
    let written = commit_update(store, loc, name, part, &current, patched, opts)?;
    if patch_type == PatchType::Apply && !opts.dry_run {
        store.set_applied_config(&key, loc.namespace, name, &manager, body.clone());
    }
    Ok(written)
}

/// Preconditions of a DeleteOptions body.
#[derive(Debug, Clone, Default)]
pub struct DeletePreconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// The result of a DELETE: the object still exists (finalizers pending) or is gone.
#[derive(Debug)]
pub enum Deleted {
    Pending(Value),
    Gone(Value),
}

/// DELETE: marks the object as deleting while finalizers remain, otherwise removes it.
pub fn delete(
    store: &mut Store,
    loc: Location<'_>,
    name: &str,
    pre: &DeletePreconditions,
    dry_run: bool,
) -> Result<Deleted, ApiError> {
    let current =
        store.get(&loc.key(), loc.namespace, name).cloned().ok_or_else(|| ApiError::not_found(loc.target(name)))?;
    if let Some(uid) = &pre.uid
        && Some(uid.as_str()) != meta::uid(&current)
    {
        return Err(ApiError::conflict(
            loc.target(name),
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta::uid(&current).unwrap_or_default()
            ),
        ));
    }
    if let Some(rv) = &pre.resource_version
        && Some(rv.as_str()) != meta::resource_version(&current)
    {
        return Err(ApiError::conflict(
            loc.target(name),
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                meta::resource_version(&current).unwrap_or_default()
            ),
        ));
    }
    if dry_run {
        return Ok(Deleted::Pending(present(loc.rt, &current)));
    }
    if is_namespaces(loc.rt) {
        return Ok(delete_namespace(store, loc, name, current));
    }
    if !meta::finalizers(&current).is_empty() {
        if meta::is_deleting(&current) {
            return Ok(Deleted::Pending(present(loc.rt, &current)));
        }
        let mut marked = current;
        meta::set(&mut marked, "deletionTimestamp", json!(time::now_rfc3339()));
        meta::set(&mut marked, "deletionGracePeriodSeconds", json!(0));
        let stored = store.put(&loc.key(), marked);
        return Ok(Deleted::Pending(present(loc.rt, &stored)));
    }
    let removed = finish_removal(store, loc, name, None).unwrap_or(current);
    Ok(Deleted::Gone(present(loc.rt, &removed)))
}

/// Deleting a namespace deletes everything in it; the namespace goes away once it is empty.
fn delete_namespace(store: &mut Store, loc: Location<'_>, name: &str, current: Value) -> Deleted {
    let mut marked = current;
    if !meta::is_deleting(&marked) {
        meta::set(&mut marked, "deletionTimestamp", json!(time::now_rfc3339()));
        meta::set(&mut marked, "deletionGracePeriodSeconds", json!(0));
        meta::set_top(&mut marked, "status", json!({ "phase": "Terminating" }));
        marked = store.put(&loc.key(), marked);
    }
    for (key, object_name) in store.keys_in_namespace(name) {
        let Some(rt) = store.registry.any_version(&key) else {
            store.remove(&key, name, &object_name, None);
            continue;
        };
        let inner = Location { rt: &rt, namespace: name };
        if let Err(e) = delete(store, inner, &object_name, &DeletePreconditions::default(), false) {
            tracing::warn!(namespace = name, object = object_name, error = %e, "deleting namespace content failed");
        }
    }
    finish_namespace(store, name);
    match store.get(&loc.key(), "", name) {
        Some(still_there) => Deleted::Pending(present(loc.rt, still_there)),
        None => Deleted::Gone(present(loc.rt, &marked)),
    }
}

/// Removes a terminating namespace once nothing is left in it.
fn finish_namespace(store: &mut Store, namespace: &str) -> Option<Value> {
    let ns = store.get(&namespaces_key(), "", namespace)?;
    if meta::is_deleting(ns) && store.namespace_is_empty(namespace) {
        store.remove(&namespaces_key(), "", namespace, None)
    } else {
        None
    }
}

/// Removes an object for good, with the side effects of CRD and namespace removal.
fn finish_removal(store: &mut Store, loc: Location<'_>, name: &str, last_state: Option<Value>) -> Option<Value> {
    let removed = store.remove(&loc.key(), loc.namespace, name, last_state)?;
    if is_crds(loc.rt) {
        remove_custom_resources(store, &removed);
        store.registry.set_crd(name, Vec::new());
    }
    if loc.rt.namespaced {
        finish_namespace(store, loc.namespace);
    }
    Some(removed)
}

/// Deleting a CRD deletes all its objects (finalizers of those objects are not waited for).
fn remove_custom_resources(store: &mut Store, crd_object: &Value) {
    let (Some(group), Some(plural)) = (
        crd_object.pointer("/spec/group").and_then(Value::as_str),
        crd_object.pointer("/spec/names/plural").and_then(Value::as_str),
    ) else {
        return;
    };
    let key = StorageKey { group: group.to_string(), plural: plural.to_string() };
    let names: Vec<(String, String)> = store
        .list(&key, None)
        .map(|o| (meta::namespace(o).unwrap_or_default().to_string(), meta::name(o).unwrap_or_default().to_string()))
        .collect();
    for (ns, name) in names {
        store.remove(&key, &ns, &name, None);
    }
}

/// The response body of a DELETE that removed the object at once.
pub fn deleted_status(rt: &ResourceType, object: &Value) -> Value {
    let name = meta::name(object).unwrap_or_default();
    success_status(Target::new(rt, name), meta::uid(object))
}

/// Creates a namespace at startup.
pub fn ensure_namespace(store: &mut Store, name: &str) -> Result<(), ApiError> {
    let Some(rt) = store.registry.lookup("", "v1", "namespaces") else {
        return Err(ApiError::internal("namespaces are not registered"));
    };
    if store.get(&namespaces_key(), "", name).is_some() {
        return Ok(());
    }
    let loc = Location { rt: &rt, namespace: "" };
    create(store, loc, json!({ "metadata": { "name": name } }), &WriteOptions::default()).map(|_| ())
}
