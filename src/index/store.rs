//! The store of one cluster-wide (or per-namespace) watch, Services or EndpointSlices, filtered on
//! receipt to the backends that bindings reference: every other object is dropped as it arrives,
//! so memory follows what bindings use, not the size of the cluster.
//!
//! Two ways a backend's views become complete ("synced"):
//! - a list of the watch (initial or relist) that began while the backend was referenced; its
//!   objects are buffered per backend and swapped in whole at its end, so a 410 never shows an
//!   empty backend;
//! - a fill: a narrow list of that one backend, for a backend first referenced while the watch was
//!   already past the start of its list. Watch changes that arrive meanwhile are kept and replayed
//!   over the fill's answer when they are newer than it (by resourceVersion).

use std::collections::{BTreeMap, HashMap};

use kube::ResourceExt;
use kube::runtime::watcher;

use super::relist::Views;

/// A Service a binding points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub namespace: String,
    pub service: String,
}

impl std::fmt::Display for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service)
    }
}

/// One object's view as a fill lists it, or a watch change kept during a fill.
#[derive(Clone, Debug)]
pub struct Change<V> {
    pub name: String,
    /// `metadata.resourceVersion`, when it is a number (it is on etcd and on the sandbox).
    pub version: Option<u64>,
    /// `None`: deleted, or no longer viewed.
    pub view: Option<V>,
}

struct Slot<V> {
    views: Views<V>,
    /// A fill in progress: the watch's changes to this backend since it began.
    fill: Option<Vec<Change<V>>>,
}

pub struct Table<V> {
    slots: HashMap<BackendKey, Slot<V>>,
    /// A list in progress: what it delivered so far, for the backends referenced when it began.
    relist: Option<HashMap<BackendKey, BTreeMap<String, V>>>,
    /// The watch has begun its first list: backends referenced from now on need a fill.
    listing: bool,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self { slots: HashMap::new(), relist: None, listing: false }
    }
}

pub fn version_of<K: ResourceExt>(object: &K) -> Option<u64> {
    object.resource_version().and_then(|v| v.parse().ok())
}

impl<V: Clone + PartialEq> Table<V> {
    /// Starts keeping `key`; returns whether it needs a fill (the watch's list began without it).
    pub fn reference(&mut self, key: &BackendKey) -> bool {
        if self.slots.contains_key(key) {
            return false;
        }
        let fill = self.listing.then(Vec::new);
        let needs_fill = fill.is_some();
        self.slots.insert(key.clone(), Slot { views: Views::default(), fill });
        needs_fill
    }

    /// Drops `key` and everything kept for it.
    pub fn forget(&mut self, key: &BackendKey) {
        self.slots.remove(key);
        if let Some(relist) = self.relist.as_mut() {
            relist.remove(key);
        }
    }

    pub fn views(&self, key: &BackendKey) -> Views<V> {
        self.slots.get(key).map(|s| s.views.clone()).unwrap_or_default()
    }

    /// The backends waiting for a fill.
    pub fn pending_fills(&self) -> Vec<BackendKey> {
        self.slots.iter().filter(|(_, s)| s.fill.is_some()).map(|(k, _)| k.clone()).collect()
    }

    /// Applies one watch event, keeping only referenced backends. Returns the synced backends whose
    /// visible views changed.
    pub fn apply<K: ResourceExt>(
        &mut self,
        event: watcher::Event<K>,
        key_of: impl Fn(&K) -> Option<BackendKey>,
        view: impl Fn(&K) -> Option<V>,
    ) -> Vec<BackendKey> {
        match event {
            watcher::Event::Init => {
                self.listing = true;
                self.relist = Some(self.slots.keys().map(|k| (k.clone(), BTreeMap::new())).collect());
                Vec::new()
            }
            watcher::Event::InitApply(object) => {
                let kept = key_of(&object).and_then(|key| self.relist.as_mut()?.get_mut(&key));
                if let Some(views) = kept
                    && let Some(v) = view(&object)
                {
                    views.insert(object.name_any(), v);
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                let mut changed = Vec::new();
                for (key, fresh) in self.relist.take().unwrap_or_default() {
                    if let Some(slot) = self.slots.get_mut(&key) {
                        // The list began after the fill would have: it is at least as new.
                        slot.fill = None;
                        if slot.views.swap_in(fresh) {
                            changed.push(key);
                        }
                    }
                }
                changed
            }
            watcher::Event::Apply(object) => {
                let v = view(&object);
                self.change(key_of(&object), &object, v)
            }
            watcher::Event::Delete(object) => self.change(key_of(&object), &object, None),
        }
    }

    fn change<K: ResourceExt>(&mut self, key: Option<BackendKey>, object: &K, view: Option<V>) -> Vec<BackendKey> {
        let Some(slot) = key.as_ref().and_then(|k| self.slots.get_mut(k)) else { return Vec::new() };
        let name = object.name_any();
        if let Some(kept) = slot.fill.as_mut() {
            kept.push(Change { name: name.clone(), version: version_of(object), view: view.clone() });
        }
        let changed = slot.views.set(name, view) && slot.views.synced();
        key.filter(|_| changed).into_iter().collect()
    }

    /// Completes `key`'s fill with a list of it taken at `list_version`; the watch's changes seen
    /// meanwhile win when newer (or when versions cannot be compared). Returns whether the
    /// visible views changed; a fill no longer wanted (unreferenced, or a relist got there first)
    /// changes nothing.
    pub fn fill_done(&mut self, key: &BackendKey, listed: Vec<Change<V>>, list_version: Option<u64>) -> bool {
        let Some(slot) = self.slots.get_mut(key) else { return false };
        let Some(kept) = slot.fill.take() else { return false };
        let mut fresh: BTreeMap<String, V> = listed.into_iter().filter_map(|c| Some(c.name).zip(c.view)).collect();
        for change in kept {
            let newer = match (change.version, list_version) {
                (Some(seen), Some(listed)) => seen > listed,
                _ => true,
            };
            if newer {
                match change.view {
                    Some(v) => fresh.insert(change.name, v),
                    None => fresh.remove(&change.name),
                };
            }
        }
        slot.views.swap_in(fresh)
    }

    /// Keeps `key` with exactly `views`, as a completed list would (for tests of the layers above).
    #[cfg(test)]
    pub fn seed(&mut self, key: &BackendKey, views: BTreeMap<String, V>) {
        let mut slot = Slot { views: Views::default(), fill: None };
        slot.views.swap_in(views);
        self.slots.insert(key.clone(), slot);
    }

    /// Backends kept, and views held across them.
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.slots.len(), self.slots.values().map(|s| s.views.by_name.len()).sum())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    /// Test objects: ConfigMaps whose label `svc` names their backend (namespace `ns`) and whose
    /// data `v` is their view.
    fn cm(name: &str, svc: &str, value: &str, version: u64) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("ns".into());
        cm.metadata.resource_version = Some(version.to_string());
        cm.metadata.labels = Some([("svc".to_owned(), svc.to_owned())].into());
        cm.data = Some([("v".to_owned(), value.to_owned())].into());
        cm
    }

    fn key(svc: &str) -> BackendKey {
        BackendKey { namespace: "ns".into(), service: svc.into() }
    }

    fn key_of(cm: &ConfigMap) -> Option<BackendKey> {
        cm.labels().get("svc").map(|s| key(s))
    }

    fn view(cm: &ConfigMap) -> Option<String> {
        cm.data.as_ref().and_then(|d| d.get("v")).cloned()
    }

    fn apply(t: &mut Table<String>, event: watcher::Event<ConfigMap>) -> Vec<BackendKey> {
        t.apply(event, key_of, view)
    }

    fn names(t: &Table<String>, svc: &str) -> Vec<String> {
        t.views(&key(svc)).by_name.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
    }

    #[test]
    fn only_referenced_backends_are_kept() {
        let mut t = Table::default();
        assert!(!t.reference(&key("web")), "referenced before the first list: the list covers it");
        apply(&mut t, watcher::Event::Init);
        apply(&mut t, watcher::Event::InitApply(cm("web-1", "web", "a", 1)));
        for i in 0..100 {
            apply(&mut t, watcher::Event::InitApply(cm(&format!("other-{i}"), &format!("svc-{i}"), "x", 2)));
        }
        assert!(!t.views(&key("web")).synced(), "nothing is known before the list is done");
        assert_eq!(apply(&mut t, watcher::Event::InitDone), vec![key("web")]);
        assert_eq!(names(&t, "web"), ["web-1=a"]);
        assert_eq!(t.len(), (1, 1), "the 100 unrelated objects were dropped on receipt");

        assert!(apply(&mut t, watcher::Event::Apply(cm("other-1", "svc-1", "y", 3))).is_empty());
        assert_eq!(apply(&mut t, watcher::Event::Apply(cm("web-2", "web", "b", 4))), vec![key("web")]);
        assert!(apply(&mut t, watcher::Event::Apply(cm("web-2", "web", "b", 5))).is_empty(), "same view");
        assert_eq!(apply(&mut t, watcher::Event::Delete(cm("web-1", "web", "a", 6))), vec![key("web")]);
        assert_eq!(names(&t, "web"), ["web-2=b"]);

        t.forget(&key("web"));
        assert_eq!(t.len(), (0, 0));
        assert!(apply(&mut t, watcher::Event::Apply(cm("web-3", "web", "c", 7))).is_empty());
    }

    #[test]
    fn a_relist_is_swapped_in_whole_and_wakes_only_what_changed() {
        let mut t = Table::default();
        t.reference(&key("web"));
        t.reference(&key("api"));
        apply(&mut t, watcher::Event::Init);
        apply(&mut t, watcher::Event::InitApply(cm("web-1", "web", "a", 1)));
        apply(&mut t, watcher::Event::InitApply(cm("api-1", "api", "a", 1)));
        apply(&mut t, watcher::Event::InitDone);

        // A 410: the old views stay visible until the relist is complete.
        apply(&mut t, watcher::Event::Init);
        apply(&mut t, watcher::Event::InitApply(cm("web-1", "web", "a", 1)));
        assert_eq!(names(&t, "web"), ["web-1=a"]);
        assert_eq!(names(&t, "api"), ["api-1=a"], "not yet relisted: still shown");
        apply(&mut t, watcher::Event::InitApply(cm("api-1", "api", "changed", 9)));
        assert_eq!(names(&t, "api"), ["api-1=a"]);
        assert_eq!(apply(&mut t, watcher::Event::InitDone), vec![key("api")], "web is unchanged");
        assert_eq!(names(&t, "api"), ["api-1=changed"]);

        // A relist that finds a backend empty empties it only at its end.
        apply(&mut t, watcher::Event::Init);
        apply(&mut t, watcher::Event::InitApply(cm("web-1", "web", "a", 1)));
        assert_eq!(names(&t, "api"), ["api-1=changed"]);
        assert_eq!(apply(&mut t, watcher::Event::InitDone), vec![key("api")]);
        assert!(names(&t, "api").is_empty());
        assert!(t.views(&key("api")).synced());
    }

    #[test]
    fn a_backend_referenced_after_the_list_is_filled_and_keeps_newer_watch_changes() {
        let mut t = Table::default();
        apply(&mut t, watcher::Event::Init);
        apply(&mut t, watcher::Event::InitApply(cm("web-1", "web", "a", 1)));
        apply(&mut t, watcher::Event::InitDone);
        assert!(t.reference(&key("web")), "the list dropped its objects: a fill is needed");
        assert_eq!(t.pending_fills(), vec![key("web")]);
        assert!(!t.views(&key("web")).synced());

        // Watch changes during the fill: one older than the fill's list, two newer.
        assert!(apply(&mut t, watcher::Event::Apply(cm("web-1", "web", "old", 5))).is_empty(), "not synced");
        apply(&mut t, watcher::Event::Apply(cm("web-2", "web", "new", 12)));
        apply(&mut t, watcher::Event::Delete(cm("web-3", "web", "x", 13)));
        let listed = vec![
            Change { name: "web-1".into(), version: Some(8), view: Some("listed".into()) },
            Change { name: "web-3".into(), version: Some(7), view: Some("x".into()) },
        ];
        assert!(t.fill_done(&key("web"), listed, Some(10)));
        assert_eq!(names(&t, "web"), ["web-1=listed", "web-2=new"]);
        assert!(t.pending_fills().is_empty());
        assert!(!t.fill_done(&key("web"), Vec::new(), Some(20)), "a second answer changes nothing");
    }

    #[test]
    fn a_relist_that_began_after_the_reference_makes_the_fill_moot() {
        let mut t = Table::default();
        apply(&mut t, watcher::Event::Init);
        apply(&mut t, watcher::Event::InitDone);
        assert!(t.reference(&key("web")));
        apply(&mut t, watcher::Event::Init);
        apply(&mut t, watcher::Event::InitApply(cm("web-1", "web", "a", 30)));
        assert_eq!(apply(&mut t, watcher::Event::InitDone), vec![key("web")]);
        assert!(!t.fill_done(&key("web"), Vec::new(), Some(20)), "the older fill is ignored");
        assert_eq!(names(&t, "web"), ["web-1=a"]);
    }
}
