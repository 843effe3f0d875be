//! Ownership records of shared bindings, kept as ConfigMaps in the agent's own namespace so they
//! survive restarts and need no rights outside it.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::api::TargetGroupBinding;
use crate::model::TargetId;
use crate::plan::ownership::{decode, encode};

const TARGETS_KEY: &str = "targets";

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("ownership record {name} could not be {action}: {source}")]
    Kube { name: String, action: &'static str, source: kube::Error },
    #[error("ownership record {name} holds unreadable entries {lines:?}; fix or delete them")]
    Corrupt { name: String, lines: Vec<String> },
}

#[derive(Clone)]
pub struct OwnershipRecords {
    api: Api<ConfigMap>,
}

impl OwnershipRecords {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self { api: Api::namespaced(client, namespace) }
    }

    /// One record per binding, named by its UID: stable across renames of nothing, unique
    /// across namespaces, and always a valid object name.
    fn name(tgb: &TargetGroupBinding) -> String {
        format!("tgb-owned-{}", tgb.uid().unwrap_or_else(|| tgb.name_any()))
    }

    /// The targets this cluster registered for `tgb`; `None` when no record exists yet.
    pub async fn read(&self, tgb: &TargetGroupBinding) -> Result<Option<BTreeSet<TargetId>>, RecordError> {
        let name = Self::name(tgb);
        let cm = self.api.get_opt(&name).await.map_err(|source| RecordError::Kube {
            name: name.clone(),
            action: "read",
            source,
        })?;
        let Some(cm) = cm else { return Ok(None) };
        let text = cm.data.as_ref().and_then(|d| d.get(TARGETS_KEY)).cloned().unwrap_or_default();
        let (owned, bad) = decode(&text);
        if !bad.is_empty() {
            return Err(RecordError::Corrupt { name, lines: bad });
        }
        Ok(Some(owned))
    }

    /// Replaces the record (server-side apply: creates it when absent).
    pub async fn write(
        &self,
        tgb: &TargetGroupBinding,
        arn: &str,
        owned: &BTreeSet<TargetId>,
    ) -> Result<(), RecordError> {
        let name = Self::name(tgb);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("app.kubernetes.io/managed-by".to_owned(), "tgb-agent".to_owned())].into()),
                annotations: Some(
                    [
                        (
                            "elbv2.k8s.aws/binding".to_owned(),
                            format!("{}/{}", tgb.namespace().unwrap_or_default(), tgb.name_any()),
                        ),
                        ("elbv2.k8s.aws/target-group-arn".to_owned(), arn.to_owned()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some([(TARGETS_KEY.to_owned(), encode(owned))].into()),
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

    pub async fn delete(&self, tgb: &TargetGroupBinding) -> Result<(), RecordError> {
        let name = Self::name(tgb);
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(RecordError::Kube { name, action: "deleted", source }),
        }
    }
}
