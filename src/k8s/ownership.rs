//! Ownership records of shared bindings, kept as ConfigMaps in the agent's own namespace so they
//! survive restarts and need no rights outside it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};

use crate::fence::Fence;
use crate::model::BindingId;
use crate::plan::ownership::{Record, decode};

const TARGETS_KEY: &str = "targets";
/// Changes with every write (see [`OwnershipRecords::write`]).
const WRITE_ANNOTATION: &str = "tgb-agent.elbv2.k8s.aws/write";
/// Where the first record version kept its one group; read only to migrate such records.
const LEGACY_ARN_ANNOTATION: &str = "elbv2.k8s.aws/target-group-arn";

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("ownership record {name} could not be {action}: {source}")]
    Kube { name: String, action: &'static str, source: kube::Error },
    #[error("ownership record {name} holds unreadable entries {lines:?}; fix or delete them")]
    Corrupt { name: String, lines: Vec<String> },
    /// This replica no longer leads: a deposed leader must not overwrite the new leader's claims.
    #[error("ownership record {name} not written: this replica does not hold the leader lease")]
    Fenced { name: String },
    /// The record changed since this replica read it (another writer): read again, decide again.
    #[error("ownership record {name} changed since it was read; it is read again")]
    Conflict { name: String },
}

impl RecordError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "OwnershipRecordFailed",
            Self::Corrupt { .. } => "OwnershipRecordCorrupt",
            Self::Fenced { .. } => "NotLeader",
            Self::Conflict { .. } => "OwnershipRecordConflict",
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
    /// The record as this process last read or wrote it, unless another writer changed it since or
    /// we deleted it: what a record deleted by hand held, claims a pending deregistration still
    /// needs included. Memory only (a restart forgets it); it survives a read that finds the record
    /// gone, so the caller can tell "never had one" from "lost".
    fn last_known(&self, binding: &BindingId) -> Option<Record>;
}

/// What one replica last saw of each record: the precondition its next write of it carries.
#[derive(Debug, Default)]
pub struct Versions {
    seen: HashMap<String, Seen>,
    /// The record at the version last read or written by this replica (see `last_known`).
    known: HashMap<String, Record>,
}

#[derive(Clone, Debug)]
enum Seen {
    Absent,
    Version(String),
    /// Changed by another writer since: what this replica holds in memory is stale.
    Stale,
}

/// The condition a record write is sent with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Seen absent: create it, so that a record another writer made meanwhile is not replaced.
    Create,
    /// Replace it only if it is still at this resourceVersion.
    Version(String),
    /// Never read by this replica (the controller always reads before it writes): as it is.
    Unconditional,
    /// Another writer changed it since this replica read it: not sent until it is read again.
    ReadFirst,
}

impl Versions {
    /// A read saw the record at `version` (`None`: absent).
    pub fn read(&mut self, name: &str, version: Option<String>) {
        self.seen.insert(name.to_owned(), version.map_or(Seen::Absent, Seen::Version));
    }

    pub fn precondition(&self, name: &str) -> Precondition {
        match self.seen.get(name) {
            Some(Seen::Absent) => Precondition::Create,
            Some(Seen::Version(version)) => Precondition::Version(version.clone()),
            Some(Seen::Stale) => Precondition::ReadFirst,
            None => Precondition::Unconditional,
        }
    }

    /// Our write left it at `version` (unknown: read it again before the next write).
    pub fn written(&mut self, name: &str, version: Option<String>) {
        self.seen.insert(name.to_owned(), version.map_or(Seen::Stale, Seen::Version));
    }

    /// Another writer changed it since we saw it. The caller may go on to another group with the
    /// record it holds (a deletion's loop, a changed spec's old group): that write must not
    /// replace the newer record unconditionally.
    pub fn conflicted(&mut self, name: &str) {
        self.seen.insert(name.to_owned(), Seen::Stale);
        self.known.remove(name);
    }

    /// We deleted it.
    pub fn deleted(&mut self, name: &str) {
        self.seen.insert(name.to_owned(), Seen::Absent);
        self.known.remove(name);
    }

    /// What a read found or a write left, as the record stands now. A read that finds the record
    /// absent does not call this: the last one known stays, to be restored.
    pub fn remember(&mut self, name: &str, record: &Record) {
        self.known.insert(name.to_owned(), record.clone());
    }

    /// Nothing once another writer may have changed it since (or our write's answer was lost).
    pub fn last_known(&self, name: &str) -> Option<Record> {
        match self.seen.get(name) {
            Some(Seen::Stale) | None => None,
            Some(Seen::Version(_) | Seen::Absent) => self.known.get(name).cloned(),
        }
    }
}

/// [`OwnershipStore`] on ConfigMaps `tgb-owned-<binding uid>`. Writes pass the same fence as AWS
/// writes, and are conditional on the version this replica last read or wrote: a stale writer's
/// record never replaces a newer one.
#[derive(Clone)]
pub struct OwnershipRecords {
    api: Api<ConfigMap>,
    fence: Arc<Fence>,
    versions: Arc<Mutex<Versions>>,
    /// This process (its start, in nanoseconds) and its writes so far: the write mark.
    process: u128,
    writes: Arc<AtomicU64>,
}

impl OwnershipRecords {
    pub fn new(client: Client, namespace: &str, fence: Arc<Fence>) -> Self {
        let process = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Self {
            api: Api::namespaced(client, namespace),
            fence,
            versions: Arc::default(),
            process,
            writes: Arc::default(),
        }
    }

    /// Unique per write across processes (another replica starts at another nanosecond).
    fn write_mark(&self) -> String {
        format!("{}-{}", self.process, self.writes.fetch_add(1, Ordering::Relaxed))
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, Versions> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Named by UID: unique across namespaces and re-creations, and always a valid object name.
    pub fn name(binding: &BindingId) -> String {
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
        self.versions().read(&name, cm.as_ref().and_then(|cm| cm.metadata.resource_version.clone()));
        let Some(cm) = cm else { return Ok(None) };
        let text = cm.data.as_ref().and_then(|d| d.get(TARGETS_KEY)).cloned().unwrap_or_default();
        let legacy_arn = cm.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_ARN_ANNOTATION));
        let (record, bad) = decode(&text, legacy_arn.map(String::as_str));
        if !bad.is_empty() {
            return Err(RecordError::Corrupt { name, lines: bad });
        }
        self.versions().remember(&name, &record);
        Ok(Some(record))
    }

    async fn write(&self, binding: &BindingId, record: &Record) -> Result<(), RecordError> {
        let name = Self::name(binding);
        if !self.fence.allows_writes() {
            return Err(RecordError::Fenced { name });
        }
        let precondition = self.versions().precondition(&name);
        if precondition == Precondition::ReadFirst {
            return Err(RecordError::Conflict { name });
        }
        // A fresh mark on every write: a write of unchanged claims still moves the
        // resourceVersion (the API server drops a no-op write), so that a writer that decided on
        // the version before it fails its precondition.
        let mark = self.write_mark();
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("app.kubernetes.io/managed-by".to_owned(), "tgb-agent".to_owned())].into()),
                annotations: Some(
                    [("elbv2.k8s.aws/binding".to_owned(), binding.to_string()), (WRITE_ANNOTATION.to_owned(), mark)]
                        .into(),
                ),
                ..Default::default()
            },
            data: Some([(TARGETS_KEY.to_owned(), record.to_string())].into()),
            ..Default::default()
        };
        let written = match precondition {
            Precondition::Create => self.api.create(&PostParams::default(), &cm).await,
            precondition => {
                let mut cm = serde_json::to_value(&cm).map_err(|e| RecordError::Kube {
                    name: name.clone(),
                    action: "encoded",
                    source: kube::Error::SerdeError(e),
                })?;
                cm["apiVersion"] = "v1".into();
                cm["kind"] = "ConfigMap".into();
                if let Precondition::Version(version) = precondition {
                    cm["metadata"]["resourceVersion"] = version.into();
                }
                self.api.patch(&name, &PatchParams::apply("tgb-agent").force(), &Patch::Apply(&cm)).await
            }
        };
        match written {
            Ok(cm) => {
                let mut versions = self.versions();
                versions.written(&name, cm.metadata.resource_version);
                versions.remember(&name, record);
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                self.versions().conflicted(&name);
                Err(RecordError::Conflict { name })
            }
            Err(source) => Err(RecordError::Kube { name, action: "written", source }),
        }
    }

    async fn delete(&self, binding: &BindingId) -> Result<(), RecordError> {
        let name = Self::name(binding);
        if !self.fence.allows_writes() {
            return Err(RecordError::Fenced { name });
        }
        // Only the version this replica decided on: claims another writer added since stay.
        let params = match self.versions().precondition(&name) {
            Precondition::ReadFirst => return Err(RecordError::Conflict { name }),
            Precondition::Version(version) => {
                DeleteParams::default().preconditions(Preconditions { resource_version: Some(version), uid: None })
            }
            Precondition::Create | Precondition::Unconditional => DeleteParams::default(),
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => {
                self.versions().deleted(&name);
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                self.versions().deleted(&name);
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                self.versions().conflicted(&name);
                Err(RecordError::Conflict { name })
            }
            Err(source) => Err(RecordError::Kube { name, action: "deleted", source }),
        }
    }

    fn last_known(&self, binding: &BindingId) -> Option<Record> {
        self.versions().last_known(&Self::name(binding))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica that met another writer's change holds a stale record in memory: its next write
    /// (another group of the same deletion, say) waits for a read, never replaces the newer one.
    #[test]
    fn after_a_conflict_a_write_waits_for_a_read() {
        let mut versions = Versions::default();
        assert_eq!(versions.precondition("r"), Precondition::Unconditional);
        versions.read("r", None);
        assert_eq!(versions.precondition("r"), Precondition::Create);
        versions.written("r", Some("7".into()));
        assert_eq!(versions.precondition("r"), Precondition::Version("7".into()));
        versions.conflicted("r");
        assert_eq!(versions.precondition("r"), Precondition::ReadFirst);
        versions.read("r", Some("9".into()));
        assert_eq!(versions.precondition("r"), Precondition::Version("9".into()));
        versions.written("r", None);
        assert_eq!(versions.precondition("r"), Precondition::ReadFirst, "a write whose version is unknown");
        versions.deleted("r");
        assert_eq!(versions.precondition("r"), Precondition::Create);
    }

    /// What was last read or written survives a read that finds the record gone (deleted by hand),
    /// and nothing else: another writer's change or our own deletion forgets it.
    #[test]
    fn the_last_known_record_survives_its_deletion_by_hand_only() {
        let record = Record::default().with_group(
            "arn",
            [(crate::model::TargetId::new("10.0.0.1", 80), crate::plan::ownership::Claim::Registered)].into(),
        );
        let mut versions = Versions::default();
        versions.read("r", Some("3".into()));
        versions.remember("r", &record);
        versions.read("r", None);
        assert_eq!(versions.last_known("r"), Some(record.clone()), "deleted by hand: still known");
        versions.written("r", Some("4".into()));
        versions.remember("r", &record);
        versions.conflicted("r");
        assert_eq!(versions.last_known("r"), None, "another writer changed it");
        versions.read("r", Some("5".into()));
        versions.remember("r", &record);
        versions.written("r", None);
        assert_eq!(versions.last_known("r"), None, "our write's outcome unknown");
        versions.read("r", Some("6".into()));
        versions.remember("r", &record);
        versions.deleted("r");
        assert_eq!(versions.last_known("r"), None, "we deleted it");
    }
}
