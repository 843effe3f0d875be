use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Once, Weak};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::time::Duration;
use tokio::sync::Notify;

use super::relist::Views;
use super::store::{BackendKey, Change, Table, version_of};
use super::views::{service_view, slice_view};
use crate::api::TargetGroupBinding;
use crate::plan::desired::{ServiceView, SliceView};

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
    /// When a backend was last referenced for the first time (see [`gather`]).
    last_new_reference: Option<std::time::Instant>,
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
    /// Wake the fill workers (see [`fill_worker`]).
    service_fills: Arc<Notify>,
    slice_fills: Arc<Notify>,
    wake: super::Wake,
}

impl BackendIndex {
    /// `namespace`: watch only there (`--watch-namespace`), else the whole cluster.
    pub fn new(client: Client, namespace: Option<String>, wake: super::Wake) -> Arc<Self> {
        Arc::new(Self {
            client,
            namespace,
            state: Mutex::default(),
            started: Once::new(),
            service_fills: Arc::default(),
            slice_fills: Arc::default(),
            wake,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent across every await-free critical section, so a panic
        // elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `binding` reads `key` and returns what is known of it.
    pub fn track(self: &Arc<Self>, binding: &BindingRef, key: &BackendKey) -> Backend {
        self.started.call_once(|| {
            let (client, namespace) = (&self.client, &self.namespace);
            tokio::spawn(watch::<Services>(client.clone(), namespace.clone(), Arc::downgrade(self)));
            tokio::spawn(watch::<Slices>(client.clone(), namespace.clone(), Arc::downgrade(self)));
            let (services, slices) = (self.service_fills.clone(), self.slice_fills.clone());
            tokio::spawn(fill_worker::<Services>(client.clone(), namespace.clone(), services, Arc::downgrade(self)));
            tokio::spawn(fill_worker::<Slices>(client.clone(), namespace.clone(), slices, Arc::downgrade(self)));
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
            state.last_new_reference = Some(std::time::Instant::now());
            if state.services.reference(key) {
                self.service_fills.notify_one();
            }
            if state.slices.reference(key) {
                self.slice_fills.notify_one();
            }
        }
        Backend { services: state.services.views(key), slices: state.slices.views(key) }
    }

    /// An index that never starts its watches, holding `key`'s backend as given, as listed (for the
    /// controller's unit tests).
    #[cfg(test)]
    pub fn seeded(
        client: Client,
        wake: super::Wake,
        key: &BackendKey,
        service: Option<ServiceView>,
        slices: Vec<SliceView>,
    ) -> Arc<Self> {
        let index = Self::new(client, None, wake);
        index.started.call_once(|| {});
        {
            let mut state = index.state();
            state.services.seed(key, service.into_iter().map(|s| (key.service.clone(), s)).collect());
            let slices = slices.into_iter().enumerate().map(|(i, s)| (format!("{}-{i}", key.service), s)).collect();
            state.slices.seed(key, slices);
        }
        index
    }

    /// Forgets `binding`; its backend's views are dropped when no binding reads it any more.
    pub fn untrack(&self, binding: &BindingRef) {
        let mut state = self.state();
        if let Some(key) = state.backend_of.remove(binding) {
            release(&mut state, binding, &key);
        }
    }

    /// Bindings it tracks.
    pub fn tracked(&self) -> Vec<BindingRef> {
        self.state().backend_of.keys().cloned().collect()
    }

    /// Number of backends kept.
    pub fn watched(&self) -> usize {
        self.state().bindings.len()
    }

    fn wake_bindings_of(&self, state: &State, keys: &[BackendKey]) {
        for binding in keys.iter().filter_map(|k| state.bindings.get(k)).flatten() {
            self.wake.inputs_changed(binding);
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

/// Waits, before the first list, until bindings stop referencing new backends (a quiet 250 ms, at
/// most 5 s): at start every binding is tracked within moments, and backends referenced before the
/// list begins are served by it; those referenced after it began each need a fill.
async fn gather(index: &Weak<BackendIndex>) {
    const QUIET: Duration = Duration::from_millis(250);
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(QUIET).await;
        let Some(index) = index.upgrade() else { return };
        if index.state().last_new_reference.is_none_or(|at| at.elapsed() >= QUIET) {
            return;
        }
    }
}

/// Runs one kind's watch until the index is gone, keeping the referenced backends current.
async fn watch<K: Kind>(client: Client, namespace: Option<String>, index: Weak<BackendIndex>) {
    let api: Api<K::Object> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    gather(&index).await;
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

/// Fills the backends first referenced after their watch's list began, one batch at a time: a narrow
/// list each when a few wait, else one paginated list of the kind filtered to them (after a
/// restart most bindings are tracked while the watch lists: one list, not a request per backend).
async fn fill_worker<K: Kind>(
    client: Client,
    namespace: Option<String>,
    notify: Arc<Notify>,
    index: Weak<BackendIndex>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        let pending = match index.upgrade() {
            Some(index) => K::table(&mut index.state()).pending_fills(),
            None => return,
        };
        if pending.is_empty() {
            notify.notified().await;
            continue;
        }
        let filled = if pending.len() <= NARROW_FILLS {
            fill_each::<K>(&client, pending, &index).await
        } else {
            fill_from_one_list::<K>(&client, namespace.as_deref(), pending, &index).await
        };
        match filled {
            Ok(()) => delay = Duration::from_millis(200),
            Err(error) => {
                tracing::warn!(kind = K::NAME, %error, "listing newly referenced backends failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// At most this many backends are filled by a narrow list each; more share one list of the kind.
const NARROW_FILLS: usize = 8;

fn change_of<K: Kind>(object: &K::Object) -> Change<K::View> {
    Change { name: object.name_any(), version: version_of(object), view: K::view(object) }
}

fn list_version(meta: &kube::core::ListMeta) -> Option<u64> {
    meta.resource_version.as_deref().and_then(|v| v.parse().ok())
}

fn complete<K: Kind>(
    index: &Weak<BackendIndex>,
    listed: HashMap<BackendKey, Vec<Change<K::View>>>,
    version: Option<u64>,
) {
    let Some(index) = index.upgrade() else { return };
    let mut state = index.state();
    let changed: Vec<BackendKey> = listed
        .into_iter()
        .filter_map(|(key, objects)| K::table(&mut state).fill_done(&key, objects, version).then_some(key))
        .collect();
    index.wake_bindings_of(&state, &changed);
}

async fn fill_each<K: Kind>(
    client: &Client,
    keys: Vec<BackendKey>,
    index: &Weak<BackendIndex>,
) -> Result<(), kube::Error> {
    for key in keys {
        let list = Api::<K::Object>::namespaced(client.clone(), &key.namespace).list(&K::one(&key)).await?;
        let objects = list.items.iter().filter(|o| K::key(o).as_ref() == Some(&key)).map(change_of::<K>).collect();
        complete::<K>(index, HashMap::from([(key, objects)]), list_version(&list.metadata));
    }
    Ok(())
}

/// One paginated list (a consistent snapshot), keeping only the objects of `keys`.
async fn fill_from_one_list<K: Kind>(
    client: &Client,
    namespace: Option<&str>,
    keys: Vec<BackendKey>,
    index: &Weak<BackendIndex>,
) -> Result<(), kube::Error> {
    let api: Api<K::Object> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut listed: HashMap<BackendKey, Vec<Change<K::View>>> = keys.into_iter().map(|k| (k, Vec::new())).collect();
    let mut params = ListParams::default().limit(PAGE_SIZE);
    let mut version = None;
    loop {
        let page = api.list(&params).await?;
        // Every page is read at the first one's resourceVersion.
        version = version.or_else(|| list_version(&page.metadata));
        for object in &page.items {
            if let Some(kept) = K::key(object).and_then(|key| listed.get_mut(&key)) {
                kept.push(change_of::<K>(object));
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    complete::<K>(index, listed, version);
    Ok(())
}
