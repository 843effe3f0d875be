//! The Node index, for instance-mode bindings only: started when the first such binding appears,
//! and waking only those bindings, only on changes that matter (readiness, labels, taints,
//! providerID, cordoning), never on the ~10 s status heartbeats.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;

use super::views::node_view;
use crate::api::TargetGroupBinding;
use crate::plan::instance::NodeView;

type BindingRef = ObjectRef<TargetGroupBinding>;

/// What the Node watch knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Nodes {
    pub nodes: BTreeMap<String, NodeView>,
    synced: bool,
}

impl Nodes {
    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn list(&self) -> Vec<NodeView> {
        self.nodes.values().cloned().collect()
    }
}

pub struct NodeIndex {
    client: Client,
    state: Arc<RwLock<Nodes>>,
    bindings: Mutex<HashSet<BindingRef>>,
    started: std::sync::Once,
    wake: mpsc::UnboundedSender<BindingRef>,
}

impl NodeIndex {
    pub fn new(client: Client, wake: mpsc::UnboundedSender<BindingRef>) -> Arc<Self> {
        Arc::new(Self {
            client,
            state: Arc::default(),
            bindings: Mutex::default(),
            started: std::sync::Once::new(),
            wake,
        })
    }

    fn bindings(&self) -> std::sync::MutexGuard<'_, HashSet<BindingRef>> {
        self.bindings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `binding` reads nodes (starting the watch on first use) and returns them.
    pub fn track(self: &Arc<Self>, binding: &BindingRef) -> Nodes {
        self.bindings().insert(binding.clone());
        self.started.call_once(|| {
            tokio::spawn(watch_nodes(self.client.clone(), self.state.clone(), Arc::downgrade(self)));
        });
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn untrack(&self, binding: &BindingRef) {
        self.bindings().remove(binding);
    }

    fn wake_all(&self) {
        for binding in self.bindings().iter() {
            let _ = self.wake.send(binding.clone());
        }
    }
}

async fn watch_nodes(client: Client, state: Arc<RwLock<Nodes>>, index: Weak<NodeIndex>) {
    let mut events = std::pin::pin!(watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff());
    let mut buffer: Option<BTreeMap<String, NodeView>> = None;
    while let Some(event) = events.next().await {
        let changed = {
            let mut s = state.write().unwrap_or_else(|p| p.into_inner());
            let before = s.clone();
            match event {
                Ok(watcher::Event::Init) => buffer = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(node)) => {
                    if let Some(b) = buffer.as_mut() {
                        b.insert(node.name_any(), node_view(&node));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    s.nodes = buffer.take().unwrap_or_default();
                    s.synced = true;
                }
                Ok(watcher::Event::Apply(node)) => {
                    s.nodes.insert(node.name_any(), node_view(&node));
                }
                Ok(watcher::Event::Delete(node)) => {
                    s.nodes.remove(&node.name_any());
                }
                Err(error) => {
                    tracing::warn!(%error, "node watch failed; retrying with backoff, keeping the last known nodes")
                }
            }
            *s != before
        };
        if changed {
            match index.upgrade() {
                Some(index) => index.wake_all(),
                None => return,
            }
        }
    }
}
