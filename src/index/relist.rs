//! One mechanism for every index watch: keep a map of plain views from a watcher's events, swap a
//! relist in whole (so a 410 or reconnect never shows an empty map), and say whether anything
//! visible changed (so only real changes wake bindings, without comparing whole maps).

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::runtime::watcher;

/// Views of one watch, by object name. Equality and hashing see only what is visible, never a
/// relist in progress, so input fingerprints stay stable through a relist.
#[derive(Clone, Debug)]
pub struct Views<V> {
    pub by_name: BTreeMap<String, V>,
    synced: bool,
    /// A relist in progress, swapped in when it completes.
    relist: Option<BTreeMap<String, V>>,
}

impl<V: PartialEq> PartialEq for Views<V> {
    fn eq(&self, other: &Self) -> bool {
        self.synced == other.synced && self.by_name == other.by_name
    }
}

impl<V: Eq> Eq for Views<V> {}

impl<V: std::hash::Hash> std::hash::Hash for Views<V> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.synced.hash(state);
        self.by_name.hash(state);
    }
}

impl<V> Default for Views<V> {
    fn default() -> Self {
        Self { by_name: BTreeMap::new(), synced: false, relist: None }
    }
}

impl<V: PartialEq> Views<V> {
    /// Views as a completed list shows them (for the controller's unit tests).
    #[cfg(test)]
    pub fn listed(by_name: BTreeMap<String, V>) -> Self {
        Self { by_name, synced: true, relist: None }
    }

    /// The watch has completed an initial list: absence now means absence, not "not yet seen".
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Applies one event; `view` keeps what matters of an object (`None`: leave it out). Returns
    /// whether the visible views changed.
    pub fn apply<K: ResourceExt>(&mut self, event: watcher::Event<K>, view: impl Fn(&K) -> Option<V>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(object) => {
                if let (Some(relist), Some(v)) = (self.relist.as_mut(), view(&object)) {
                    relist.insert(object.name_any(), v);
                }
                false
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                self.swap_in(fresh)
            }
            watcher::Event::Apply(object) => {
                let v = view(&object);
                self.set(object.name_any(), v)
            }
            watcher::Event::Delete(object) => self.set(object.name_any(), None),
        }
    }

    /// Replaces everything with a complete list and marks the views synced. Returns whether the
    /// visible views changed.
    pub fn swap_in(&mut self, fresh: BTreeMap<String, V>) -> bool {
        let changed = !self.synced || self.by_name != fresh;
        self.by_name = fresh;
        self.synced = true;
        changed
    }

    /// Sets (`Some`) or removes (`None`) one object's view. Returns whether the visible views changed.
    pub fn set(&mut self, name: String, view: Option<V>) -> bool {
        match view {
            Some(v) if self.by_name.get(&name) == Some(&v) => false,
            Some(v) => {
                self.by_name.insert(name, v);
                true
            }
            None => self.by_name.remove(&name).is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn cm(name: &str, value: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.data = Some([("v".to_owned(), value.to_owned())].into());
        cm
    }

    fn view(cm: &ConfigMap) -> Option<String> {
        cm.data.as_ref().and_then(|d| d.get("v")).cloned().filter(|v| v != "skip")
    }

    #[test]
    fn relist_is_swapped_in_whole_and_changes_are_reported() {
        let mut views = Views::default();
        assert!(!views.apply(watcher::Event::Init, view));
        assert!(!views.apply(watcher::Event::InitApply(cm("a", "1")), view));
        assert!(!views.synced(), "nothing is known before the list is done");
        assert!(views.apply(watcher::Event::InitDone, view), "the first sync is a change even when empty");
        assert_eq!(views.by_name.len(), 1);

        // A relist keeps the old views visible until it is complete, and the same content is no change.
        assert!(!views.apply(watcher::Event::Init, view));
        assert_eq!(views.by_name.len(), 1);
        assert!(!views.apply(watcher::Event::InitApply(cm("a", "1")), view));
        assert!(!views.apply(watcher::Event::InitDone, view));

        assert!(!views.apply(watcher::Event::Apply(cm("a", "1")), view), "same view: no change");
        assert!(views.apply(watcher::Event::Apply(cm("a", "2")), view));
        assert!(views.apply(watcher::Event::Apply(cm("a", "skip")), view), "no longer viewed: removed");
        assert!(!views.apply(watcher::Event::Delete(cm("a", "2")), view), "already gone");
        assert!(views.apply(watcher::Event::Apply(cm("b", "1")), view));
        assert!(views.apply(watcher::Event::Delete(cm("b", "1")), view));
        assert!(views.by_name.is_empty());
    }
}
