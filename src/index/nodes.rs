//! The Node index, for instance-mode bindings only: started when the first such binding appears,
//! and waking only those bindings, only on changes that matter (readiness, labels, taints,
//! providerID, cordoning), never on the ~10 s status heartbeats.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock, Weak};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::relist::Views;
use super::views::node_view;
use crate::api::TargetGroupBinding;
use crate::plan::instance::NodeView;

type BindingRef = ObjectRef<TargetGroupBinding>;

/// What the Node watch knows.
pub type Nodes = Views<NodeView>;

pub struct NodeIndex {
    client: Client,
    /// The last published snapshot: every instance binding's reconcile shares it (at 500 nodes a
    /// copy per reconcile under way was most of the agent's memory at start-up).
    state: Arc<RwLock<Arc<Nodes>>>,
    bindings: Mutex<HashSet<BindingRef>>,
    started: std::sync::Once,
    wake: super::Wake,
}

impl NodeIndex {
    pub fn new(client: Client, wake: super::Wake) -> Arc<Self> {
        Arc::new(Self {
            client,
            state: Arc::default(),
            bindings: Mutex::default(),
            started: std::sync::Once::new(),
            wake,
        })
    }

    /// An index that never starts its watch, holding `nodes` as listed (for the controller's unit
    /// tests).
    #[cfg(test)]
    pub fn seeded(client: Client, wake: super::Wake, nodes: Vec<NodeView>) -> Arc<Self> {
        let index = Self::new(client, wake);
        index.started.call_once(|| {});
        let by_name = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        *index.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Nodes::listed(by_name));
        index
    }

    fn bindings(&self) -> std::sync::MutexGuard<'_, HashSet<BindingRef>> {
        self.bindings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `binding` reads nodes (starting the watch on first use) and returns them.
    pub fn track(self: &Arc<Self>, binding: &BindingRef) -> Arc<Nodes> {
        self.bindings().insert(binding.clone());
        self.started.call_once(|| {
            tokio::spawn(watch_nodes(self.client.clone(), self.state.clone(), Arc::downgrade(self)));
        });
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn untrack(&self, binding: &BindingRef) {
        self.bindings().remove(binding);
    }

    /// Bindings it tracks.
    pub fn tracked(&self) -> Vec<BindingRef> {
        self.bindings().iter().cloned().collect()
    }

    fn wake_all(&self) {
        for binding in self.bindings().iter() {
            self.wake.inputs_changed(binding);
        }
    }
}

async fn watch_nodes(client: Client, state: Arc<RwLock<Arc<Nodes>>>, index: Weak<NodeIndex>) {
    let mut events = std::pin::pin!(watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff());
    // The watch's own copy takes every event; a snapshot is published only when what bindings
    // see changes, never for the ~10 s status heartbeats.
    let mut nodes = Nodes::default();
    while let Some(event) = events.next().await {
        let changed = match event {
            Ok(event) => {
                let changed = nodes.apply(event, |node| Some(node_view(node)));
                if changed {
                    *state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(nodes.clone());
                }
                changed
            }
            Err(error) => {
                tracing::warn!(%error, "node watch failed; retrying with backoff, keeping the last known nodes");
                false
            }
        };
        if changed {
            match index.upgrade() {
                Some(index) => index.wake_all(),
                None => return,
            }
        }
    }
}
