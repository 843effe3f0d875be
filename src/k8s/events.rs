use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use crate::api::TargetGroupBinding;

/// Publishes Events about bindings. Failures are logged, never fatal: an Event is a courtesy.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self { recorder: Recorder::new(client, Reporter { controller: "tgb-agent".into(), instance }) }
    }

    pub async fn normal(&self, tgb: &TargetGroupBinding, reason: &str, note: String) {
        self.publish(tgb, EventType::Normal, reason, note).await;
    }

    pub async fn warning(&self, tgb: &TargetGroupBinding, reason: &str, note: String) {
        self.publish(tgb, EventType::Warning, reason, note).await;
    }

    async fn publish(&self, tgb: &TargetGroupBinding, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &tgb.object_ref(&())).await {
            tracing::warn!(%error, reason, "could not publish event");
        }
    }
}
