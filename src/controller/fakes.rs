//! In-memory fakes of the ports the binding level writes through, for its unit tests: target groups
//! (ELBv2) and ownership records. Either can be made unreachable, so a test can see what a reconcile
//! does when it cannot read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::aws::{AwsError, TargetGroups, Turn};
use crate::k8s::ownership::{OwnershipStore, RecordError};
use crate::model::{BindingId, RegisteredTarget, Target, TargetGroupInfo, TargetGroupRef, TargetId, TargetState};
use crate::plan::ownership::Record;

/// Target groups by ARN; a group absent from the map does not exist (`TargetGroupNotFound`).
#[derive(Default)]
pub struct FakeTargetGroups {
    groups: Mutex<BTreeMap<String, BTreeMap<TargetId, TargetState>>>,
    /// Every call answers this (e.g. a transport error or access denied) when set.
    pub failing: Mutex<Option<AwsError>>,
}

impl FakeTargetGroups {
    /// A group holding `targets` (all healthy) at port 8080.
    pub fn with_group(self, arn: &str, targets: &[&str]) -> Self {
        let entries = targets.iter().map(|a| (TargetId::new(*a, 8080), TargetState::Healthy)).collect();
        self.lock().insert(arn.to_owned(), entries);
        self
    }

    /// Addresses registered (not draining) in `arn`; `None` when the group does not exist.
    pub fn active(&self, arn: &str) -> Option<Vec<String>> {
        let groups = self.lock();
        let group = groups.get(arn)?;
        Some(group.iter().filter(|(_, s)| !s.is_draining()).map(|(id, _)| id.id.clone()).collect())
    }

    pub fn fail_with(&self, error: AwsError) {
        if let Ok(mut failing) = self.failing.lock() {
            *failing = Some(error);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<TargetId, TargetState>>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failure(&self) -> Result<(), AwsError> {
        match self.failing.lock().ok().and_then(|f| f.clone()) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn group<T>(&self, arn: &str, f: impl FnOnce(&mut BTreeMap<TargetId, TargetState>) -> T) -> Result<T, AwsError> {
        self.failure()?;
        let mut groups = self.lock();
        let group = groups.get_mut(arn).ok_or_else(|| AwsError::TargetGroupNotFound(arn.to_owned()))?;
        Ok(f(group))
    }
}

impl TargetGroups for FakeTargetGroups {
    async fn describe(&self, tg: &TargetGroupRef) -> Result<TargetGroupInfo, AwsError> {
        self.failure()?;
        Err(AwsError::TargetGroupNotFound(format!("{tg:?}: the fake describes no group")))
    }

    async fn targets(&self, arn: &str) -> Result<Vec<RegisteredTarget>, AwsError> {
        self.group(arn, |group| {
            group
                .iter()
                .map(|(id, state)| RegisteredTarget { target: Target::new(id.clone()), state: *state, reason: None })
                .collect()
        })
    }

    async fn register(&self, arn: &str, targets: &[Target], _: &Turn) -> Result<(), AwsError> {
        self.group(arn, |group| {
            for t in targets {
                group.insert(t.id.clone(), TargetState::Initial);
            }
        })
    }

    async fn deregister(&self, arn: &str, targets: &[Target], _: &Turn) -> Result<(), AwsError> {
        self.group(arn, |group| {
            for t in targets {
                if let Some(state) = group.get_mut(&t.id) {
                    *state = TargetState::Draining;
                }
            }
        })
    }
}

/// Ownership records in memory; with no API server to lose them, `last_known` is what is stored.
#[derive(Default)]
pub struct FakeRecords {
    records: Mutex<HashMap<BindingId, Record>>,
    /// Reads and writes fail (the API server unreachable) while set.
    pub unreachable: std::sync::atomic::AtomicBool,
}

impl FakeRecords {
    pub fn get(&self, binding: &BindingId) -> Option<Record> {
        self.lock().get(binding).cloned()
    }

    pub fn put(&self, binding: &BindingId, record: Record) {
        self.lock().insert(binding.clone(), record);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BindingId, Record>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reachable(&self, binding: &BindingId) -> Result<(), RecordError> {
        match self.unreachable.load(std::sync::atomic::Ordering::Relaxed) {
            true => {
                let status = kube::core::Status::failure("unreachable", "ServiceUnavailable").with_code(503);
                let source = kube::Error::Api(Box::new(status));
                Err(RecordError::Kube { name: format!("tgb-owned-{}", binding.uid), action: "read", source })
            }
            false => Ok(()),
        }
    }
}

impl OwnershipStore for FakeRecords {
    async fn read(&self, binding: &BindingId) -> Result<Option<Record>, RecordError> {
        self.reachable(binding)?;
        Ok(self.get(binding))
    }

    async fn write(&self, binding: &BindingId, record: &Record) -> Result<(), RecordError> {
        self.reachable(binding)?;
        self.put(binding, record.clone());
        Ok(())
    }

    async fn delete(&self, binding: &BindingId) -> Result<(), RecordError> {
        self.reachable(binding)?;
        self.lock().remove(binding);
        Ok(())
    }

    fn last_known(&self, _: &BindingId) -> Option<Record> {
        None
    }
}
