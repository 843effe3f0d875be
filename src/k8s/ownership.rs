//! Ownership records of shared bindings, kept as ConfigMaps in the agent's own namespace so they
//! survive restarts and need no rights outside it.

use std::future::Future;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

use crate::model::BindingId;
use crate::plan::ownership::{Record, decode};

const TARGETS_KEY: &str = "targets";
/// Where the first record version kept its one group; read only to migrate such records.
const LEGACY_ARN_ANNOTATION: &str = "elbv2.k8s.aws/target-group-arn";

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("ownership record {name} could not be {action}: {source}")]
    Kube { name: String, action: &'static str, source: kube::Error },
    #[error("ownership record {name} holds unreadable entries {lines:?}; fix or delete them")]
    Corrupt { name: String, lines: Vec<String> },
}

impl RecordError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "OwnershipRecordFailed",
            Self::Corrupt { .. } => "OwnershipRecordCorrupt",
        }
    }
}

/// Where each shared binding's claims are persisted.
pub trait OwnershipStore: Send + Sync + 'static {
    /// The binding's record; `None` when it has none yet.
    fn read(&self, binding: &BindingId) -> impl Future<Output = Result<Option<Record>, RecordError>> + Send;
    /// Replaces the record (creates it when absent).
    fn write(&self, binding: &BindingId, record: &Record) -> impl Future<Output = Result<(), RecordError>> + Send;
    /// Removes the record; a missing one is fine.
    fn delete(&self, binding: &BindingId) -> impl Future<Output = Result<(), RecordError>> + Send;
}

/// [`OwnershipStore`] on ConfigMaps `tgb-owned-<binding uid>`.
#[derive(Clone)]
pub struct OwnershipRecords {
    api: Api<ConfigMap>,
}

impl OwnershipRecords {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self { api: Api::namespaced(client, namespace) }
    }

    /// Named by UID: unique across namespaces and re-creations, and always a valid object name.
    fn name(binding: &BindingId) -> String {
        format!("tgb-owned-{}", binding.uid)
    }
}

impl OwnershipStore for OwnershipRecords {
    async fn read(&self, binding: &BindingId) -> Result<Option<Record>, RecordError> {
        let name = Self::name(binding);
        let cm = self.api.get_opt(&name).await.map_err(|source| RecordError::Kube {
            name: name.clone(),
            action: "read",
            source,
        })?;
        let Some(cm) = cm else { return Ok(None) };
        let text = cm.data.as_ref().and_then(|d| d.get(TARGETS_KEY)).cloned().unwrap_or_default();
        let legacy_arn = cm.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_ARN_ANNOTATION));
        let (record, bad) = decode(&text, legacy_arn.map(String::as_str));
        if !bad.is_empty() {
            return Err(RecordError::Corrupt { name, lines: bad });
        }
        Ok(Some(record))
    }

    async fn write(&self, binding: &BindingId, record: &Record) -> Result<(), RecordError> {
        let name = Self::name(binding);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("app.kubernetes.io/managed-by".to_owned(), "tgb-agent".to_owned())].into()),
                annotations: Some([("elbv2.k8s.aws/binding".to_owned(), binding.to_string())].into()),
                ..Default::default()
            },
            data: Some([(TARGETS_KEY.to_owned(), record.to_string())].into()),
            ..Default::default()
        };
        let mut cm = serde_json::to_value(&cm).map_err(|e| RecordError::Kube {
            name: name.clone(),
            action: "encoded",
            source: kube::Error::SerdeError(e),
        })?;
        cm["apiVersion"] = "v1".into();
        cm["kind"] = "ConfigMap".into();
        self.api
            .patch(&name, &PatchParams::apply("tgb-agent").force(), &Patch::Apply(&cm))
            .await
            .map(drop)
            .map_err(|source| RecordError::Kube { name, action: "written", source })
    }

    async fn delete(&self, binding: &BindingId) -> Result<(), RecordError> {
        let name = Self::name(binding);
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(RecordError::Kube { name, action: "deleted", source }),
        }
    }
}
