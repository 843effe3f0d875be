use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Once, Weak};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;

use super::relist::Views;
use super::store::{Change, Table, version_of};
use super::views::{service_view, slice_view};
use crate::api::TargetGroupBinding;
use crate::plan::desired::{ServiceView, SliceView};

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

/// What the watches know of one Service and its EndpointSlices.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Backend {
    /// At most one: the Service of that name.
    services: Views<ServiceView>,
    pub slices: Views<SliceView>,
}

impl Backend {
    /// Both kinds are complete for this backend (a list or a fill): absence now means absence, not "not yet seen".
    pub fn synced(&self) -> bool {
        self.services.synced() && self.slices.synced()
    }

    pub fn service(&self) -> Option<&ServiceView> {
        self.services.by_name.values().next()
    }
}

type BindingRef = ObjectRef<TargetGroupBinding>;

/// List page size of the two watches: a list or relist holds at most this many full objects at a
/// time, whatever the size of the cluster (each is reduced to a view, or dropped, as it arrives).
const PAGE_SIZE: u32 = 100;

#[derive(Default)]
struct State {
    bindings: HashMap<BackendKey, HashSet<BindingRef>>,
    backend_of: HashMap<BindingRef, BackendKey>,
    services: Table<ServiceView>,
    slices: Table<SliceView>,
}

/// Keeps the views of exactly the backends some binding references, from one Service watch and
/// one EndpointSlice watch (cluster-wide, or in the watched namespace), and wakes those bindings
/// when their backend changes in a way that matters to them.
pub struct BackendIndex {
    client: Client,
    namespace: Option<String>,
    state: Mutex<State>,
    started: Once,
    wake: mpsc::UnboundedSender<BindingRef>,
}

impl BackendIndex {
    /// `namespace`: watch only there (`--watch-namespace`), else the whole cluster.
    pub fn new(client: Client, namespace: Option<String>, wake: mpsc::UnboundedSender<BindingRef>) -> Arc<Self> {
        Arc::new(Self { client, namespace, state: Mutex::default(), started: Once::new(), wake })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent across every await-free critical section, so a panic
        // elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `binding` reads `key` and returns what is known of it.
    pub fn track(self: &Arc<Self>, binding: &BindingRef, key: &BackendKey) -> Backend {
        self.started.call_once(|| {
            tokio::spawn(watch::<Services>(self.client.clone(), self.namespace.clone(), Arc::downgrade(self)));
            tokio::spawn(watch::<Slices>(self.client.clone(), self.namespace.clone(), Arc::downgrade(self)));
        });
        let mut state = self.state();
        if let Some(old) = state.backend_of.insert(binding.clone(), key.clone())
            && old != *key
        {
            release(&mut state, binding, &old);
        }
        let bindings = state.bindings.entry(key.clone()).or_default();
        let new = bindings.is_empty();
        bindings.insert(binding.clone());
        if new {
            if state.services.reference(key) {
                tokio::spawn(fill::<Services>(self.client.clone(), key.clone(), Arc::downgrade(self)));
            }
            if state.slices.reference(key) {
                tokio::spawn(fill::<Slices>(self.client.clone(), key.clone(), Arc::downgrade(self)));
            }
        }
        Backend { services: state.services.views(key), slices: state.slices.views(key) }
    }

    /// Forgets `binding`; its backend's views are dropped when no binding reads it any more.
    pub fn untrack(&self, binding: &BindingRef) {
        let mut state = self.state();
        if let Some(key) = state.backend_of.remove(binding) {
            release(&mut state, binding, &key);
        }
    }

    /// Number of backends kept.
    pub fn watched(&self) -> usize {
        self.state().bindings.len()
    }

    fn wake_bindings_of(&self, state: &State, keys: &[BackendKey]) {
        for binding in keys.iter().filter_map(|k| state.bindings.get(k)).flatten() {
            // The receiver only goes away at shutdown.
            let _ = self.wake.send(binding.clone());
        }
    }
}

fn release(state: &mut State, binding: &BindingRef, key: &BackendKey) {
    if let Some(bindings) = state.bindings.get_mut(key) {
        bindings.remove(binding);
        if bindings.is_empty() {
            state.bindings.remove(key);
            state.services.forget(key);
            state.slices.forget(key);
        }
    }
}

/// What differs between the two watched kinds.
trait Kind: 'static {
    type Object: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync;
    type View: Clone + PartialEq + Send;
    const NAME: &'static str;
    fn key(object: &Self::Object) -> Option<BackendKey>;
    fn view(object: &Self::Object) -> Option<Self::View>;
    fn table(state: &mut State) -> &mut Table<Self::View>;
    /// The narrow list of one backend, for a fill.
    fn one(key: &BackendKey) -> ListParams;
}

struct Services;

impl Kind for Services {
    type Object = Service;
    type View = ServiceView;
    const NAME: &'static str = "Service";
    fn key(object: &Service) -> Option<BackendKey> {
        Some(BackendKey { namespace: object.namespace()?, service: object.name_any() })
    }
    fn view(object: &Service) -> Option<ServiceView> {
        Some(service_view(object))
    }
    fn table(state: &mut State) -> &mut Table<ServiceView> {
        &mut state.services
    }
    fn one(key: &BackendKey) -> ListParams {
        ListParams::default().fields(&format!("metadata.name={}", key.service))
    }
}

struct Slices;

const SERVICE_NAME: &str = "kubernetes.io/service-name";

impl Kind for Slices {
    type Object = EndpointSlice;
    type View = SliceView;
    const NAME: &'static str = "EndpointSlice";
    fn key(object: &EndpointSlice) -> Option<BackendKey> {
        let service = object.labels().get(SERVICE_NAME)?.clone();
        Some(BackendKey { namespace: object.namespace()?, service })
    }
    fn view(object: &EndpointSlice) -> Option<SliceView> {
        slice_view(object)
    }
    fn table(state: &mut State) -> &mut Table<SliceView> {
        &mut state.slices
    }
    fn one(key: &BackendKey) -> ListParams {
        ListParams::default().labels(&format!("{SERVICE_NAME}={}", key.service))
    }
}

/// Runs one kind's watch until the index is gone, keeping the referenced backends current.
async fn watch<K: Kind>(client: Client, namespace: Option<String>, index: Weak<BackendIndex>) {
    let api: Api<K::Object> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let config = watcher::Config::default().page_size(PAGE_SIZE);
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        let Some(index) = index.upgrade() else { return };
        match event {
            Ok(event) => {
                let mut state = index.state();
                let changed = K::table(&mut state).apply(event, K::key, K::view);
                index.wake_bindings_of(&state, &changed);
            }
            Err(error) => {
                tracing::warn!(kind = K::NAME, %error, "watch failed; retrying with backoff, keeping the last known state");
            }
        }
    }
}

/// Lists one backend that was first referenced after the watch's list began, until it succeeds or
/// is no longer wanted.
async fn fill<K: Kind>(client: Client, key: BackendKey, index: Weak<BackendIndex>) {
    let api: Api<K::Object> = Api::namespaced(client, &key.namespace);
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        let wanted = index.upgrade().is_some_and(|index| K::table(&mut index.state()).fill_pending(&key));
        if !wanted {
            return;
        }
        match api.list(&K::one(&key)).await {
            Ok(list) => {
                let version = list.metadata.resource_version.as_deref().and_then(|v| v.parse().ok());
                let listed = list
                    .items
                    .iter()
                    .filter(|o| K::key(o).as_ref() == Some(&key))
                    .map(|o| Change { name: o.name_any(), version: version_of(o), view: K::view(o) })
                    .collect();
                let Some(index) = index.upgrade() else { return };
                let mut state = index.state();
                if K::table(&mut state).fill_done(&key, listed, version) {
                    index.wake_bindings_of(&state, std::slice::from_ref(&key));
                }
                return;
            }
            Err(error) => {
                tracing::warn!(kind = K::NAME, backend = %key, %error, "listing a newly referenced backend failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}
