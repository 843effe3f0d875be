//! Wakes bindings: queues a reconcile, and when their inputs changed, tells a reconcile of theirs
//! already under way that writes it has not sent yet were decided from an old picture.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::ObjectRef;
use tokio::sync::{mpsc, watch};

use crate::api::TargetGroupBinding;

type BindingRef = ObjectRef<TargetGroupBinding>;

#[derive(Clone)]
pub struct Wake {
    queue: mpsc::UnboundedSender<BindingRef>,
    /// Per binding a reconcile listens to: a counter of input changes.
    changes: Arc<Mutex<HashMap<BindingRef, watch::Sender<u64>>>>,
}

impl Wake {
    /// A waker and the stream of bindings to reconcile.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<BindingRef>) {
        let (queue, woken) = mpsc::unbounded_channel();
        (Self { queue, changes: Arc::default() }, woken)
    }

    fn changes(&self) -> std::sync::MutexGuard<'_, HashMap<BindingRef, watch::Sender<u64>>> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reconcile `binding` again (its status has news; its inputs are the same).
    pub fn reconcile(&self, binding: &BindingRef) {
        // The receiver only goes away at shutdown.
        let _ = self.queue.send(binding.clone());
    }

    /// `binding`'s inputs changed: reconcile it, and mark what a reconcile under way decided as stale.
    pub fn inputs_changed(&self, binding: &BindingRef) {
        if let Some(changes) = self.changes().get(binding) {
            changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        self.reconcile(binding);
    }

    /// Changes to `binding`'s inputs from now on. Subscribe before reading the inputs, so that
    /// every change after the read shows.
    pub fn subscribe(&self, binding: &BindingRef) -> watch::Receiver<u64> {
        self.changes().entry(binding.clone()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Forgets a binding that is gone.
    pub fn forget(&self, binding: &BindingRef) {
        self.changes().remove(binding);
    }

    /// Bindings it keeps a change counter for.
    pub fn known(&self) -> Vec<BindingRef> {
        self.changes().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_input_changes_after_subscribing_make_a_decision_stale() {
        let (wake, mut woken) = Wake::new();
        let binding = ObjectRef::new("web").within("default");
        wake.inputs_changed(&binding);
        let changes = wake.subscribe(&binding);
        assert_eq!(changes.has_changed().ok(), Some(false), "a change before subscribing was read with the inputs");
        wake.reconcile(&binding);
        assert_eq!(changes.has_changed().ok(), Some(false), "news for the status only");
        wake.inputs_changed(&binding);
        assert_eq!(changes.has_changed().ok(), Some(true));
        for _ in 0..3 {
            assert_eq!(woken.recv().await, Some(binding.clone()), "every wake queues a reconcile");
        }
        wake.forget(&binding);
        assert!(changes.has_changed().is_err(), "a forgotten binding reports no more changes");
    }
}
