use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};

use futures::{StreamExt, future::Either, stream};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::relist::Views;
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
    /// At most one: the Service watch selects it by name.
    services: Views<ServiceView>,
    pub slices: Views<SliceView>,
}

impl Backend {
    /// Both watches have completed an initial list: absence now means absence, not "not yet seen".
    pub fn synced(&self) -> bool {
        self.services.synced() && self.slices.synced()
    }

    pub fn service(&self) -> Option<&ServiceView> {
        self.services.by_name.values().next()
    }
}

type BindingRef = ObjectRef<TargetGroupBinding>;

struct Entry {
    state: Arc<RwLock<Backend>>,
    bindings: HashSet<BindingRef>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Tables {
    backends: HashMap<BackendKey, Entry>,
    backend_of: HashMap<BindingRef, BackendKey>,
}

/// Watches exactly the backends some binding references, and wakes those bindings when their
/// backend changes in a way that matters to them.
pub struct BackendIndex {
    client: Client,
    tables: Mutex<Tables>,
    wake: mpsc::UnboundedSender<BindingRef>,
}

impl BackendIndex {
    pub fn new(client: Client, wake: mpsc::UnboundedSender<BindingRef>) -> Arc<Self> {
        Arc::new(Self { client, tables: Mutex::default(), wake })
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // The tables stay consistent across every await-free critical section, so a panic
        // elsewhere cannot leave them half-updated.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `binding` reads `key` (starting its watches if new) and returns what is known.
    pub fn track(self: &Arc<Self>, binding: &BindingRef, key: &BackendKey) -> Backend {
        let mut tables = self.tables();
        if let Some(old) = tables.backend_of.insert(binding.clone(), key.clone())
            && old != *key
        {
            release(&mut tables, binding, &old);
        }
        let entry = tables.backends.entry(key.clone()).or_insert_with(|| {
            let state = Arc::new(RwLock::new(Backend::default()));
            let task =
                tokio::spawn(watch_backend(self.client.clone(), key.clone(), state.clone(), Arc::downgrade(self)));
            Entry { state, bindings: HashSet::new(), task }
        });
        entry.bindings.insert(binding.clone());
        read(&entry.state).clone()
    }

    /// Forgets `binding`; the backend's watches stop when no binding reads it any more.
    pub fn untrack(&self, binding: &BindingRef) {
        let mut tables = self.tables();
        if let Some(key) = tables.backend_of.remove(binding) {
            release(&mut tables, binding, &key);
        }
    }

    /// Number of backends being watched.
    pub fn watched(&self) -> usize {
        self.tables().backends.len()
    }

    fn wake_bindings_of(&self, key: &BackendKey) {
        let bindings: Vec<BindingRef> =
            self.tables().backends.get(key).map(|e| e.bindings.iter().cloned().collect()).unwrap_or_default();
        for binding in bindings {
            // The receiver only goes away at shutdown.
            let _ = self.wake.send(binding);
        }
    }
}

fn release(tables: &mut Tables, binding: &BindingRef, key: &BackendKey) {
    if let Some(entry) = tables.backends.get_mut(key) {
        entry.bindings.remove(binding);
        if entry.bindings.is_empty()
            && let Some(entry) = tables.backends.remove(key)
        {
            entry.task.abort();
        }
    }
}

fn read(state: &RwLock<Backend>) -> std::sync::RwLockReadGuard<'_, Backend> {
    state.read().unwrap_or_else(|p| p.into_inner())
}

/// Runs the two watches of one backend until aborted, keeping `state` current (see [`Views`]).
async fn watch_backend(client: Client, key: BackendKey, state: Arc<RwLock<Backend>>, index: Weak<BackendIndex>) {
    let services = watcher(
        Api::<Service>::namespaced(client.clone(), &key.namespace),
        watcher::Config::default().fields(&format!("metadata.name={}", key.service)),
    )
    .default_backoff();
    let slices = watcher(
        Api::<EndpointSlice>::namespaced(client, &key.namespace),
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={}", key.service)),
    )
    .default_backoff();
    let mut events = std::pin::pin!(stream::select(services.map(Either::Left), slices.map(Either::Right)));
    while let Some(event) = events.next().await {
        let changed = {
            let mut s = state.write().unwrap_or_else(|p| p.into_inner());
            match event {
                Either::Left(Ok(event)) => s.services.apply(event, |svc| Some(service_view(svc))),
                Either::Right(Ok(event)) => s.slices.apply(event, slice_view),
                Either::Left(Err(error)) | Either::Right(Err(error)) => {
                    tracing::warn!(backend = %key, %error, "watch failed; retrying with backoff, keeping the last known state");
                    false
                }
            }
        };
        if changed {
            match index.upgrade() {
                Some(index) => index.wake_bindings_of(&key),
                None => return,
            }
        }
    }
}
