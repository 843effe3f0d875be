//! Object storage with a global, monotonic resourceVersion and a bounded history of change events
//! that watches replay and follow.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::meta;
use crate::registry::{Registry, StorageKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Event {
    pub resource_version: u64,
    pub key: StorageKey,
    pub event_type: EventType,
    /// The object after the change (for DELETED: the last state, at the deletion's resourceVersion).
    pub object: Arc<Value>,
    /// The object before the change, if it existed (used to compute selector transitions).
    pub previous: Option<Arc<Value>>,
}

/// Returned when a watch asks for history that is no longer retained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too old resource version: {requested} ({oldest})")]
pub struct TooOld {
    pub requested: u64,
    pub oldest: u64,
}

type ObjectKey = (String, String);

/// Retained events to replay, plus a receiver for the ones that follow.
pub type Replay = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// All objects, keyed by storage bucket, then (namespace, name); cluster-scoped objects use "".
pub struct Store {
    pub registry: Registry,
    objects: BTreeMap<StorageKey, BTreeMap<ObjectKey, Value>>,
    /// Last server-side-apply configuration per (bucket, namespace, name, field manager).
    applied: HashMap<(StorageKey, String, String, String), Value>,
    resource_version: u64,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    events: broadcast::Sender<Arc<Event>>,
}

/// How many events a slow watcher may fall behind before it is sent 410 Gone.
const BROADCAST_CAPACITY: usize = 8192;

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        Store {
            registry: Registry::default(),
            objects: BTreeMap::new(),
            applied: HashMap::new(),
            resource_version: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            events,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn get(&self, key: &StorageKey, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(key)?.get(&(namespace.to_string(), name.to_string()))
    }

    /// Objects of a bucket, sorted by namespace then name; `namespace: None` means all.
    pub fn list<'a>(&'a self, key: &StorageKey, namespace: Option<&'a str>) -> impl Iterator<Item = &'a Value> + 'a {
        self.list_after(key, namespace, None)
    }

    /// Like `list`, but only objects whose (namespace, name) sorts after `after`: a continued page
    /// starts where the previous one ended instead of walking the bucket from its start.
    pub fn list_after<'a>(
        &'a self,
        key: &StorageKey,
        namespace: Option<&'a str>,
        after: Option<&ObjectKey>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        let start = after.map_or(Bound::Unbounded, |k| Bound::Excluded(k.clone()));
        self.objects
            .get(key)
            .into_iter()
            .flat_map(move |bucket| bucket.range((start.clone(), Bound::Unbounded)))
            .filter(move |((ns, _), _)| namespace.is_none_or(|want| ns == want))
            .map(|(_, v)| v)
    }

    /// Whether any object of any namespaced bucket lives in `namespace`.
    pub fn namespace_is_empty(&self, namespace: &str) -> bool {
        self.objects.values().all(|bucket| bucket.keys().all(|(ns, _)| ns != namespace))
    }

    /// Names of namespaced objects in `namespace`, per bucket.
    pub fn keys_in_namespace(&self, namespace: &str) -> Vec<(StorageKey, String)> {
        self.objects
            .iter()
            .flat_map(|(key, bucket)| {
                bucket.keys().filter(|(ns, _)| ns == namespace).map(move |(_, name)| (key.clone(), name.clone()))
            })
            .collect()
    }

    fn bump(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    fn record(&mut self, key: StorageKey, event_type: EventType, object: Arc<Value>, previous: Option<Arc<Value>>) {
        let event = Arc::new(Event { resource_version: self.resource_version, key, event_type, object, previous });
        if self.history.len() == self.history_limit {
            self.history.pop_front();
        }
        self.history.push_back(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    /// Stores `object` (creating or replacing), assigning the next resourceVersion; emits ADDED or MODIFIED.
    pub fn put(&mut self, key: &StorageKey, mut object: Value) -> Value {
        let namespace = meta::namespace(&object).unwrap_or_default().to_string();
        let name = meta::name(&object).unwrap_or_default().to_string();
        let rv = self.bump();
        meta::set(&mut object, "resourceVersion", json!(rv.to_string()));
        let previous =
            self.objects.entry(key.clone()).or_default().insert((namespace, name), object.clone()).map(Arc::new);
        let event_type = if previous.is_some() { EventType::Modified } else { EventType::Added };
        self.record(key.clone(), event_type, Arc::new(object.clone()), previous);
        object
    }

    /// Removes an object, assigning the next resourceVersion to its final state (`last_state`, or
    /// the stored object); emits DELETED.
    pub fn remove(
        &mut self,
        key: &StorageKey,
        namespace: &str,
        name: &str,
        last_state: Option<Value>,
    ) -> Option<Value> {
        let previous = self.objects.get_mut(key)?.remove(&(namespace.to_string(), name.to_string()))?;
        self.applied.retain(|(k, ns, n, _), _| !(k == key && ns == namespace && n == name));
        let rv = self.bump();
        let mut last = last_state.unwrap_or_else(|| previous.clone());
        meta::set(&mut last, "resourceVersion", json!(rv.to_string()));
        self.record(key.clone(), EventType::Deleted, Arc::new(last.clone()), Some(Arc::new(previous)));
        Some(last)
    }

    pub fn applied_config(&self, key: &StorageKey, namespace: &str, name: &str, manager: &str) -> Option<&Value> {
        self.applied.get(&(key.clone(), namespace.to_string(), name.to_string(), manager.to_string()))
    }

    pub fn set_applied_config(&mut self, key: &StorageKey, namespace: &str, name: &str, manager: &str, config: Value) {
        self.applied.insert((key.clone(), namespace.to_string(), name.to_string(), manager.to_string()), config);
    }

    /// Retained events after `resource_version` plus a receiver for later ones. Both are taken
    /// under the same lock, so nothing is missed; the caller skips duplicates by resourceVersion.
    pub fn events_since(&self, resource_version: u64) -> Result<Replay, TooOld> {
        let oldest = self.history.front().map_or(self.resource_version + 1, |e| e.resource_version);
        if resource_version + 1 < oldest {
            return Err(TooOld { requested: resource_version, oldest });
        }
        let replay = self.history.iter().filter(|e| e.resource_version > resource_version).cloned().collect();
        Ok((replay, self.events.subscribe()))
    }

    /// A receiver for events after the current resourceVersion.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StorageKey {
        StorageKey { group: String::new(), plural: "configmaps".into() }
    }

    #[test]
    fn history_is_bounded() {
        let mut store = Store::new(3);
        for i in 0..5 {
            store.put(&key(), json!({"metadata": {"name": format!("c{i}"), "namespace": "d"}}));
        }
        assert_eq!(store.resource_version(), 5);
        assert!(store.events_since(1).is_err());
        let (replay, _) = store.events_since(2).unwrap();
        assert_eq!(replay.iter().map(|e| e.resource_version).collect::<Vec<_>>(), vec![3, 4, 5]);
        let removed = store.remove(&key(), "d", "c0", None).unwrap();
        assert_eq!(meta::resource_version(&removed), Some("6"));
        assert_eq!(store.list(&key(), Some("d")).count(), 4);
    }
}
