//! What the bindings ask of the security groups, and how each ask fared: published by the binding
//! reconciles, read and answered by the security-group loop (`networking`). Shared state only; no
//! I/O here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use kube::runtime::reflector::ObjectRef;
use tokio::sync::Notify;

use crate::api::TargetGroupBinding;
use crate::model::sg_rule::{EniGroups, IngressRule};

pub(super) type BindingRef = ObjectRef<TargetGroupBinding>;

/// What one binding asks of the security groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// These rules, on the groups of these targets' interfaces.
    Rules { rules: BTreeSet<IngressRule>, target_is_ip: bool, vpc_id: Option<String>, ids: BTreeSet<String> },
    /// The binding cannot say right now: the rules it had (and can still derive) stay, everywhere.
    Broken { protect: BTreeSet<IngressRule> },
}

/// How a binding's rules fared in the last pass: `None` fine, else (reason, message).
pub type Outcome = Option<(&'static str, String)>;

/// The asks, the loop's memory and the results, shared by the binding reconciles and the loop.
pub struct Contributions {
    state: Mutex<State>,
    /// Notified when an ask changed: the loop passes again at once.
    pub(super) changed: Notify,
    /// Wakes a binding whose outcome changed, so its status says so.
    pub(super) wake: crate::index::Wake,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) asks: HashMap<String, (BindingRef, Ask)>,
    /// The last outcome per binding UID and a counter that changes with it.
    pub(super) results: HashMap<String, (u64, Outcome)>,
    pub(super) version: u64,
    /// Instance id or IP → its interface and groups, trusted for half a drift interval.
    pub(super) enis: HashMap<String, (EniGroups, Instant)>,
    /// Per group: rule id → when first seen created by an agent and claimed by nobody.
    pub(super) unclaimed_since: HashMap<String, BTreeMap<String, u64>>,
    /// Whether any binding ever asked for rules since start.
    pub(super) ever_asked: bool,
    /// Since start, a pass that could release found nothing of this cluster's left to release or
    /// revoke. Until a binding asks, passes run only to sweep up what an earlier run claimed.
    pub(super) swept: bool,
}

impl Contributions {
    pub fn new(wake: crate::index::Wake) -> Self {
        Self { state: Mutex::default(), changed: Notify::new(), wake }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `uid`'s ask; the loop looks again when it changed.
    pub fn publish(&self, uid: &str, binding: BindingRef, ask: Ask) {
        let mut state = self.state();
        state.ever_asked = true;
        let previous = state.asks.insert(uid.to_owned(), (binding, ask.clone()));
        if previous.map(|(_, a)| a) != Some(ask) {
            self.changed.notify_one();
        }
    }

    /// The binding failed before it could say what it asks: what it asked before stays protected.
    pub fn broken(&self, uid: &str, binding: BindingRef, derivable: BTreeSet<IngressRule>) {
        let mut protect = derivable;
        match self.state().asks.get(uid) {
            Some((_, Ask::Rules { rules, .. })) => protect.extend(rules.iter().cloned()),
            Some((_, Ask::Broken { protect: before })) => protect.extend(before.iter().cloned()),
            None => {}
        }
        // Even with nothing to protect it has now spoken, so it no longer holds releases back.
        self.publish(uid, binding, Ask::Broken { protect });
    }

    /// The binding has no `spec.networking` (any more), or is gone: its rules may go.
    pub fn withdraw(&self, uid: &str) {
        let mut state = self.state();
        state.results.remove(uid);
        if state.asks.remove(uid).is_some() {
            self.changed.notify_one();
        }
    }

    /// The last pass's outcome for `uid`, and a number that changes whenever it does.
    pub fn result(&self, uid: &str) -> (u64, Outcome) {
        self.state().results.get(uid).cloned().unwrap_or((0, None))
    }
}
