//! Events are one resource with two APIs, as in a real API server: `events.k8s.io/v1` is another
//! view of the core/v1 Events, so `kubectl get events` and `kubectl describe` see Events that
//! controllers write through `events.k8s.io/v1`, and the other way round. The double stores the
//! core/v1 form and converts field by field (the conversion Kubernetes applies).

use serde_json::{Map, Value};

use crate::registry::ResourceType;

/// (core/v1 field, events.k8s.io/v1 field) pairs; metadata, reason, type, action, related,
/// reportingInstance, eventTime and series have the same name in both.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

pub fn is_events_v1(rt: &ResourceType) -> bool {
    rt.is("events.k8s.io", "events")
}

fn rename(object: &mut Value, pairs: impl Iterator<Item = (&'static str, &'static str)>) {
    let Value::Object(map) = object else {
        return;
    };
    let mut renamed = Map::new();
    for (from, to) in pairs {
        if let Some(value) = map.remove(from) {
            renamed.insert(to.to_string(), value);
        }
    }
    map.extend(renamed);
}

/// A core/v1 Event as `events.k8s.io/v1` shows it.
pub fn core_to_events_v1(object: &mut Value) {
    rename(object, RENAMED.iter().copied());
}

/// An `events.k8s.io/v1` Event in the stored (core/v1) form.
pub fn events_v1_to_core(object: &mut Value) {
    rename(object, RENAMED.iter().map(|&(core, events)| (events, core)));
    if let Value::Object(map) = object {
        map.insert("apiVersion".to_string(), Value::String("v1".to_string()));
        map.insert("kind".to_string(), Value::String("Event".to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_events_v1_event_round_trips_through_the_core_form() {
        let written = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"},
            "regarding": {"kind": "TargetGroupBinding", "name": "tgb", "namespace": "default"},
            "note": "registered 3 targets",
            "reason": "Registered",
            "type": "Normal",
            "action": "RegisterTargets",
            "reportingController": "tgb-agent",
            "reportingInstance": "tgb-agent-0",
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
            "deprecatedCount": 2,
        });
        let mut core = written.clone();
        events_v1_to_core(&mut core);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "tgb");
        assert_eq!(core["message"], "registered 3 targets");
        assert_eq!(core["reportingComponent"], "tgb-agent");
        assert_eq!(core["count"], 2);
        assert_eq!(core["series"], written["series"]);
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
        let mut shown = core;
        core_to_events_v1(&mut shown);
        shown["apiVersion"] = json!("events.k8s.io/v1");
        assert_eq!(shown, written);
    }
}
