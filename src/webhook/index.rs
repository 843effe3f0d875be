//! What the pod webhook needs at admission, kept in memory on every replica (leader or standby):
//! per namespace, the `targetType: ip` bindings and the Service each points at, and every
//! Service's selector. Two watches (bindings, Services), reduced on receipt; no pods are watched.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::api::{TargetGroupBinding, TargetType};
use crate::plan::inject::Candidate;

/// List page size: a relist holds at most this many full objects at a time.
const PAGE_SIZE: u32 = 100;

type Key = (String, String);

#[derive(Default)]
struct Tables {
    /// (namespace, binding) → Service name, for ip bindings not being deleted.
    bindings: BTreeMap<Key, String>,
    /// (namespace, Service) → selector (empty for a Service without one).
    selectors: HashMap<Key, BTreeMap<String, String>>,
}

#[derive(Default)]
pub struct InjectIndex {
    tables: RwLock<Tables>,
    /// Filled by a (re)list, swapped in at its end: admission keeps the old answers meanwhile.
    listing_bindings: std::sync::Mutex<Option<BTreeMap<Key, String>>>,
    listing_selectors: std::sync::Mutex<Option<HashMap<Key, BTreeMap<String, String>>>>,
    bindings_listed: AtomicBool,
    services_listed: AtomicBool,
}

impl InjectIndex {
    /// Both watches have listed once: absence now means absence.
    pub fn synced(&self) -> bool {
        self.bindings_listed.load(Ordering::Relaxed) && self.services_listed.load(Ordering::Relaxed)
    }

    /// The bindings of `namespace` whose gates a new pod there may need.
    pub fn candidates(&self, namespace: &str) -> Vec<Candidate> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        let start = (namespace.to_owned(), String::new());
        tables
            .bindings
            .range(start..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|((ns, binding), service)| Candidate {
                binding: binding.clone(),
                selector: tables.selectors.get(&(ns.clone(), service.clone())).cloned(),
            })
            .collect()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs both watches until dropped (`watch_namespace`: only that namespace's bindings, as the
    /// controller; Services likewise).
    pub async fn run(self: Arc<Self>, client: Client, watch_namespace: Option<String>) {
        let (bindings, services): (Api<TargetGroupBinding>, Api<Service>) = match &watch_namespace {
            Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
            None => (Api::all(client.clone()), Api::all(client)),
        };
        let config = watcher::Config::default().page_size(PAGE_SIZE);
        let binding_index = self.clone();
        let bindings = follow(watcher(bindings, config.clone()), move |event| binding_index.binding_event(event));
        let service_index = self.clone();
        let services = follow(watcher(services, config), move |event| service_index.service_event(event));
        futures::join!(bindings, services);
    }

    pub(super) fn binding_event(&self, event: watcher::Event<TargetGroupBinding>) {
        let entry = |b: &TargetGroupBinding| {
            let ip = b.spec.target_type == Some(TargetType::Ip) && b.metadata.deletion_timestamp.is_none();
            let key = (b.namespace().unwrap_or_default(), b.name_any());
            (key, ip.then(|| b.spec.service_ref.name.clone()))
        };
        let put = |table: &mut BTreeMap<Key, String>, b: &TargetGroupBinding| match entry(b) {
            (key, Some(service)) => table.insert(key, service),
            (key, None) => table.remove(&key),
        };
        match event {
            watcher::Event::Apply(b) => {
                put(&mut self.write().bindings, &b);
            }
            watcher::Event::Delete(b) => {
                self.write().bindings.remove(&entry(&b).0);
            }
            watcher::Event::Init => *lock(&self.listing_bindings) = Some(BTreeMap::new()),
            watcher::Event::InitApply(b) => {
                put(lock(&self.listing_bindings).get_or_insert_default(), &b);
            }
            watcher::Event::InitDone => {
                if let Some(listed) = lock(&self.listing_bindings).take() {
                    self.write().bindings = listed;
                }
                self.bindings_listed.store(true, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn service_event(&self, event: watcher::Event<Service>) {
        let entry = |s: Service| {
            let key = (s.namespace().unwrap_or_default(), s.name_any());
            (key, s.spec.and_then(|spec| spec.selector).unwrap_or_default())
        };
        match event {
            watcher::Event::Apply(s) => {
                let (key, selector) = entry(s);
                self.write().selectors.insert(key, selector);
            }
            watcher::Event::Delete(s) => {
                self.write().selectors.remove(&entry(s).0);
            }
            watcher::Event::Init => *lock(&self.listing_selectors) = Some(HashMap::new()),
            watcher::Event::InitApply(s) => {
                let (key, selector) = entry(s);
                lock(&self.listing_selectors).get_or_insert_default().insert(key, selector);
            }
            watcher::Event::InitDone => {
                if let Some(listed) = lock(&self.listing_selectors).take() {
                    self.write().selectors = listed;
                }
                self.services_listed.store(true, Ordering::Relaxed);
            }
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Feeds a watch's events to `apply`, retrying with backoff; errors are logged, never fatal.
async fn follow<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    mut apply: impl FnMut(watcher::Event<K>),
) {
    let mut events = std::pin::pin!(events.default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => apply(event),
            Err(error) => tracing::warn!(%error, "webhook index watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn binding(ns: &str, name: &str, service: &str, target_type: Option<&str>) -> TargetGroupBinding {
        serde_json::from_value(json!({
            "apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"targetGroupARN": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/t/1",
                     "serviceRef": {"name": service, "port": 80}, "targetType": target_type}
        }))
        .expect("binding")
    }

    fn service(ns: &str, name: &str, selector: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": {"selector": selector}}))
            .expect("service")
    }

    #[test]
    fn candidates_are_the_ip_bindings_of_the_namespace_with_their_services_selectors() {
        let index = InjectIndex::default();
        index.binding_event(watcher::Event::Init);
        for b in [
            binding("demo", "web", "web-svc", Some("ip")),
            binding("demo", "nodes", "web-svc", Some("instance")),
            binding("demo", "unset", "web-svc", None),
            binding("demo", "orphan", "missing", Some("ip")),
            binding("demo-2", "other", "web-svc", Some("ip")),
        ] {
            index.binding_event(watcher::Event::InitApply(b));
        }
        index.binding_event(watcher::Event::InitDone);
        assert!(!index.synced(), "Services not listed yet");
        index.service_event(watcher::Event::InitApply(service("demo", "web-svc", json!({"app": "web"}))));
        index.service_event(watcher::Event::InitDone);
        assert!(index.synced());
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        assert_eq!(
            index.candidates("demo"),
            vec![
                Candidate { binding: "orphan".into(), selector: None },
                Candidate { binding: "web".into(), selector: Some(labels(&[("app", "web")])) },
            ]
        );
        assert_eq!(index.candidates("demo-2"), vec![Candidate { binding: "other".into(), selector: None }]);
        assert_eq!(index.candidates("dem"), vec![]);
    }

    #[test]
    fn deletion_and_a_changed_target_type_remove_a_binding_and_a_relist_forgets_the_rest() {
        let index = InjectIndex::default();
        index.binding_event(watcher::Event::Apply(binding("demo", "web", "web", Some("ip"))));
        index.binding_event(watcher::Event::Apply(binding("demo", "api", "api", Some("ip"))));
        let mut deleting = binding("demo", "web", "web", Some("ip"));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        index.binding_event(watcher::Event::Apply(deleting));
        assert_eq!(index.candidates("demo").len(), 1, "a binding being deleted injects no gate");
        index.binding_event(watcher::Event::Delete(binding("demo", "api", "api", Some("ip"))));
        assert!(index.candidates("demo").is_empty());
        index.binding_event(watcher::Event::Apply(binding("demo", "gone", "gone", Some("ip"))));
        index.binding_event(watcher::Event::Init);
        index.binding_event(watcher::Event::InitApply(binding("demo", "kept", "kept", Some("ip"))));
        assert_eq!(index.candidates("demo").len(), 1, "admission keeps the old answers during a relist");
        index.binding_event(watcher::Event::InitDone);
        let names: Vec<String> = index.candidates("demo").into_iter().map(|c| c.binding).collect();
        assert_eq!(names, ["kept"], "a relist that no longer has it forgets it");
    }
}
