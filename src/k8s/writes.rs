//! What a binding's reconcile writes to Kubernetes about the binding itself: its finalizer, its
//! status and its Events. A port (object-safe, boxed futures), so the binding level runs against
//! a fake in unit tests; [`ApiWrites`] is the API server's side.

use futures::future::BoxFuture;
use kube::{Api, Client, ResourceExt};

use super::events::Events;
use super::{finalizer, status};
use crate::api::TargetGroupBinding;
use crate::plan::status::Observed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

pub trait BindingWrites: Send + Sync {
    /// Adds the finalizer unless present (conditional on the binding's resourceVersion).
    fn ensure_finalizer<'a>(&'a self, tgb: &'a TargetGroupBinding) -> BoxFuture<'a, Result<(), kube::Error>>;
    /// Removes the finalizer, letting Kubernetes delete the binding.
    fn remove_finalizer<'a>(&'a self, tgb: &'a TargetGroupBinding) -> BoxFuture<'a, Result<(), kube::Error>>;
    /// Writes what `observed` says into the status.
    fn update_status<'a>(
        &'a self,
        tgb: &'a TargetGroupBinding,
        observed: &'a Observed,
    ) -> BoxFuture<'a, Result<(), kube::Error>>;
    /// Sets one annotation on the binding (what the agent must remember on the binding itself).
    fn annotate<'a>(
        &'a self,
        tgb: &'a TargetGroupBinding,
        key: &'a str,
        value: String,
    ) -> BoxFuture<'a, Result<(), kube::Error>>;
    /// Records an Event on the binding; a failure is logged, never fatal.
    fn event<'a>(
        &'a self,
        tgb: &'a TargetGroupBinding,
        kind: EventKind,
        reason: &'a str,
        note: String,
    ) -> BoxFuture<'a, ()>;
}

impl dyn BindingWrites + '_ {
    pub async fn normal(&self, tgb: &TargetGroupBinding, reason: &str, note: String) {
        self.event(tgb, EventKind::Normal, reason, note).await;
    }

    pub async fn warning(&self, tgb: &TargetGroupBinding, reason: &str, note: String) {
        self.event(tgb, EventKind::Warning, reason, note).await;
    }
}

/// The API server's side.
pub struct ApiWrites {
    client: Client,
    events: Events,
}

impl ApiWrites {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self { events: Events::new(client.clone(), instance), client }
    }

    fn api(&self, tgb: &TargetGroupBinding) -> Api<TargetGroupBinding> {
        Api::namespaced(self.client.clone(), &tgb.namespace().unwrap_or_default())
    }
}

impl BindingWrites for ApiWrites {
    fn ensure_finalizer<'a>(&'a self, tgb: &'a TargetGroupBinding) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(async move { finalizer::ensure(&self.api(tgb), tgb).await.map(drop) })
    }

    fn remove_finalizer<'a>(&'a self, tgb: &'a TargetGroupBinding) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(async move { finalizer::remove(&self.api(tgb), tgb).await })
    }

    fn update_status<'a>(
        &'a self,
        tgb: &'a TargetGroupBinding,
        observed: &'a Observed,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(async move { status::update(&self.api(tgb), tgb, observed).await })
    }

    fn annotate<'a>(
        &'a self,
        tgb: &'a TargetGroupBinding,
        key: &'a str,
        value: String,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(async move {
            let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
            let params = kube::api::PatchParams::default();
            self.api(tgb).patch(&tgb.name_any(), &params, &kube::api::Patch::Merge(&patch)).await.map(drop)
        })
    }

    fn event<'a>(
        &'a self,
        tgb: &'a TargetGroupBinding,
        kind: EventKind,
        reason: &'a str,
        note: String,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match kind {
                EventKind::Normal => self.events.normal(tgb, reason, note).await,
                EventKind::Warning => self.events.warning(tgb, reason, note).await,
            }
        })
    }
}
