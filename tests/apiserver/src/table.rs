//! Server-side printing: `meta.k8s.io` `Table` and `PartialObjectMetadata` representations.

use serde_json::{Value, json};

use crate::events;
use crate::jsonpath::JsonPath;
use crate::negotiate::IncludeObject;
use crate::registry::{PrinterColumn, ResourceType};
use crate::time;

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.";

fn column(name: &str, type_: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({ "name": name, "type": type_, "format": format, "description": description, "priority": priority })
}

/// The columns after NAME for a resource type.
fn columns(rt: &ResourceType) -> Vec<PrinterColumn> {
    let age = PrinterColumn {
        name: "Age".into(),
        type_: "date".into(),
        format: String::new(),
        description: AGE_DESCRIPTION.into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    };
    if rt.crd_name.is_some() {
        return rt.printer_columns.clone();
    }
    let mut cols = Vec::new();
    if rt.is("", "namespaces") || rt.is("", "pods") {
        cols.push(PrinterColumn {
            name: "Status".into(),
            type_: "string".into(),
            format: String::new(),
            description: "The phase of the object".into(),
            priority: 0,
            json_path: ".status.phase".into(),
        });
    }
    cols.push(age);
    cols
}

fn cell(col: &PrinterColumn, object: &Value) -> Value {
    let found = match JsonPath::parse(&col.json_path) {
        Ok(path) => path.find(object),
        Err(e) => {
            tracing::debug!(error = %e, "printer column path not understood");
            Vec::new()
        }
    };
    let value = match found.as_slice() {
        [] => return Value::Null,
        [one] => (*one).clone(),
        many => json!(many.iter().map(|v| render(v)).collect::<Vec<_>>().join(",")),
    };
    match col.type_.as_str() {
        "date" => match value.as_str() {
            Some(ts) => json!(time::age(ts)),
            None => Value::Null,
        },
        "integer" | "number" | "boolean" => value,
        _ => json!(render(&value)),
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The columns a real server prints Events with (both APIs); those with priority 1 show with `-o wide`.
fn event_columns() -> Vec<Value> {
    [
        ("Last Seen", 0),
        ("Type", 0),
        ("Reason", 0),
        ("Object", 0),
        ("Subobject", 1),
        ("Source", 1),
        ("Message", 0),
        ("First Seen", 1),
        ("Count", 1),
        ("Name", 1),
    ]
    .into_iter()
    .map(|(name, priority)| column(name, if name == "Count" { "integer" } else { "string" }, "", "", priority))
    .collect()
}

/// One Event row, computed from the core/v1 form as the real printer does: times fall back from
/// firstTimestamp to eventTime and from lastTimestamp to the first time or the series' last one.
fn event_cells(rt: &ResourceType, object: &Value) -> Vec<Value> {
    let mut event = object.clone();
    if events::is_events_v1(rt) {
        events::events_v1_to_core(&mut event);
    }
    let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    let since = |pointer: &str| event.pointer(pointer).and_then(Value::as_str).map(time::age);
    let first = since("/firstTimestamp").or_else(|| since("/eventTime")).unwrap_or_else(|| "<unknown>".into());
    let mut last = since("/lastTimestamp").unwrap_or_else(|| first.clone());
    let mut count = event.get("count").and_then(Value::as_i64).filter(|c| *c > 0).unwrap_or(1);
    if let Some(series) = event.get("series").filter(|s| s.is_object()) {
        last = series.get("lastObservedTime").and_then(Value::as_str).map(time::age).unwrap_or(last);
        count = series.get("count").and_then(Value::as_i64).unwrap_or(count);
    }
    let kind = text("/involvedObject/kind").to_lowercase();
    let name = text("/involvedObject/name");
    let target = if name.is_empty() { kind } else { format!("{kind}/{name}") };
    let component = text("/source/component");
    let source = match (component.is_empty(), text("/source/host")) {
        (false, host) if !host.is_empty() => format!("{component}, {host}"),
        (false, _) => component,
        (true, _) => text("/reportingComponent"),
    };
    vec![
        json!(last),
        json!(text("/type")),
        json!(text("/reason")),
        json!(target),
        json!(text("/involvedObject/fieldPath")),
        json!(source),
        json!(text("/message").trim()),
        json!(first),
        json!(count),
        json!(text("/metadata/name")),
    ]
}

/// `PartialObjectMetadata` for an object.
pub fn partial_metadata(object: &Value, api_version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": api_version,
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

pub fn partial_metadata_list(objects: &[Value], api_version: &str, resource_version: u64) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": api_version,
        "metadata": { "resourceVersion": resource_version.to_string() },
        "items": objects.iter().map(|o| partial_metadata(o, api_version)).collect::<Vec<_>>(),
    })
}

/// A `Table` of `objects`; `resource_version` is set for lists, `with_columns` false omits the
/// column definitions (used after the first event of a watch).
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    api_version: &str,
    include: IncludeObject,
    resource_version: Option<u64>,
    with_columns: bool,
) -> Value {
    let is_event = rt.is("", "events") || events::is_events_v1(rt);
    let cols = columns(rt);
    let definitions = if is_event {
        event_columns()
    } else {
        let mut definitions = vec![column("Name", "string", "name", NAME_DESCRIPTION, 0)];
        definitions.extend(cols.iter().map(|c| column(&c.name, &c.type_, &c.format, &c.description, c.priority)));
        definitions
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let cells = if is_event {
                event_cells(rt, object)
            } else {
                let mut cells = vec![object.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
                cells.extend(cols.iter().map(|c| cell(c, object)));
                cells
            };
            let mut row = json!({ "cells": cells });
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(object, api_version),
                IncludeObject::Object => row["object"] = object.clone(),
            }
            row
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv.to_string());
    }
    let mut table = json!({ "kind": "Table", "apiVersion": api_version, "metadata": metadata, "rows": rows });
    if with_columns {
        table["columnDefinitions"] = Value::Array(definitions);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_columns() {
        let rt = ResourceType {
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
            printer_columns: vec![PrinterColumn {
                name: "Port".into(),
                type_: "integer".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".spec.port".into(),
            }],
            crd_name: Some("things.x.io".into()),
        };
        let obj = json!({"metadata": {"name": "a"}, "spec": {"port": 80}});
        let t = table(&rt, &[obj], "meta.k8s.io/v1", IncludeObject::Metadata, Some(7), true);
        assert_eq!(t["rows"][0]["cells"], json!(["a", 80]));
        assert_eq!(t["columnDefinitions"][1]["name"], json!("Port"));
        assert_eq!(t["metadata"]["resourceVersion"], json!("7"));
        assert_eq!(t["rows"][0]["object"]["kind"], json!("PartialObjectMetadata"));
    }
}
