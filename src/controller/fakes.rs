//! In-memory fakes of the ports the binding level works through, for its unit tests: target groups
//! (ELBv2), ownership records, the cluster's live reads and pod gates, and the binding's own writes
//! (recorded in order). Each read can be made to fail, so a test can see what a reconcile does when
//! it cannot read or write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use crate::api::TargetGroupBinding;
use crate::aws::Network;
use crate::aws::{AwsError, TargetGroups, Turn};
use crate::index::BackendKey;
use crate::k8s::live::{ClusterReads, LiveBackend};
use crate::k8s::ownership::{OwnershipStore, RecordError};
use crate::k8s::pods::{GateCondition, GatedPod, PodGates};
use crate::k8s::writes::BindingWrites;
use crate::model::{
    BindingId, Cidr, RegisteredTarget, Target, TargetGroupInfo, TargetGroupIpType, TargetGroupRef, TargetGroupType,
    TargetId, TargetState,
};
use crate::plan::instance::NodeView;
use crate::plan::ownership::Record;

/// Target groups by ARN; a group absent from the map does not exist (`TargetGroupNotFound`).
#[derive(Default)]
pub struct FakeTargetGroups {
    groups: Mutex<BTreeMap<String, BTreeMap<TargetId, TargetState>>>,
    /// Every call answers this (e.g. a transport error or access denied) when set.
    pub failing: Mutex<Option<AwsError>>,
    /// Calls on one group answer this when set: (its ARN, the error).
    failing_group: Mutex<Option<(String, AwsError)>>,
    /// What `describe` answers for a group other than an ip, IPv4 group in `vpc-1`.
    described: Mutex<BTreeMap<String, TargetGroupInfo>>,
    /// Addresses a registration refuses (`InvalidTarget`, as for an address outside the VPC).
    pub refused: Mutex<BTreeSet<String>>,
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

    /// An empty group described as `info` says (its type, VPC, address family).
    pub fn with_described(self, info: TargetGroupInfo) -> Self {
        self.lock().insert(info.arn.clone(), BTreeMap::new());
        if let Ok(mut described) = self.described.lock() {
            described.insert(info.arn.clone(), info);
        }
        self
    }

    pub fn fail_with(&self, error: AwsError) {
        if let Ok(mut failing) = self.failing.lock() {
            *failing = Some(error);
        }
    }

    /// Calls on `arn` alone fail with `error`.
    pub fn fail_group_with(&self, arn: &str, error: AwsError) {
        if let Ok(mut failing) = self.failing_group.lock() {
            *failing = Some((arn.to_owned(), error));
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
        if let Some((failing, error)) = self.failing_group.lock().ok().and_then(|f| f.clone())
            && failing == arn
        {
            return Err(error);
        }
        let mut groups = self.lock();
        let group = groups.get_mut(arn).ok_or_else(|| AwsError::TargetGroupNotFound(arn.to_owned()))?;
        Ok(f(group))
    }
}

impl TargetGroups for FakeTargetGroups {
    /// Every group is an `ip`, IPv4, HTTP group in `vpc-1`, named by its ARN's name part.
    async fn describe(&self, tg: &TargetGroupRef) -> Result<TargetGroupInfo, AwsError> {
        self.failure()?;
        let TargetGroupRef::Arn(arn) = tg else {
            return Err(AwsError::TargetGroupNotFound(format!("{tg:?}: the fake looks groups up by ARN only")));
        };
        if !self.lock().contains_key(arn) {
            return Err(AwsError::TargetGroupNotFound(arn.clone()));
        }
        if let Some(info) = self.described.lock().ok().and_then(|d| d.get(arn).cloned()) {
            return Ok(info);
        }
        Ok(TargetGroupInfo {
            arn: arn.clone(),
            name: arn.split('/').nth(1).unwrap_or("fake").to_owned(),
            target_type: TargetGroupType::Ip,
            vpc_id: Some("vpc-1".into()),
            ip_address_type: TargetGroupIpType::Ipv4,
            protocol: Some("HTTP".into()),
            health_check: None,
        })
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
        let refused = self.refused.lock().map(|r| r.clone()).unwrap_or_default();
        if let Some(t) = targets.iter().find(|t| refused.contains(&t.id.id)) {
            let message = format!("{} is not a valid target", t.id);
            return Err(AwsError::InvalidTarget { op: "RegisterTargets", message });
        }
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

/// A record failure, made from the record's name.
pub type RecordFailure = fn(String) -> RecordError;

/// Ownership records in memory; `last_known` is only what a test says this process remembers.
#[derive(Default)]
pub struct FakeRecords {
    records: Mutex<HashMap<BindingId, Record>>,
    /// What `last_known` answers: a record this process read or wrote before it was deleted.
    pub remembered: Mutex<HashMap<BindingId, Record>>,
    /// Reads and writes fail (the API server unreachable) while set.
    pub unreachable: std::sync::atomic::AtomicBool,
    /// Reads and writes answer this instead while set.
    pub failing: Mutex<Option<RecordFailure>>,
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
        if let Some(failure) = self.failing.lock().ok().and_then(|f| *f) {
            return Err(failure(format!("tgb-owned-{}", binding.uid)));
        }
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

    fn last_known(&self, binding: &BindingId) -> Option<Record> {
        self.remembered.lock().ok().and_then(|r| r.get(binding).cloned())
    }
}

/// One backend, the nodes, and pods that all declare the gate asked about; the gate conditions set.
#[derive(Default)]
pub struct FakeCluster {
    pub backend: Mutex<LiveBackend>,
    pub nodes: Vec<NodeView>,
    pods: Mutex<BTreeMap<String, GatedPod>>,
    set: Mutex<Vec<(String, String, String)>>,
    /// The API server's answer to every gate patch, when not success.
    refuse_with: Option<u16>,
    /// (pod, container port name, number) the pods declare.
    container_ports: Vec<(String, String, u16)>,
    /// Reading the pods' container ports fails (the API server unreachable).
    pub ports_unreadable: std::sync::atomic::AtomicBool,
}

impl FakeCluster {
    /// Pods (name, containers ready, gate status) that declare the gate.
    pub fn with(pods: &[(&str, bool, Option<&str>)]) -> Self {
        let pods = pods
            .iter()
            .map(|(name, containers_ready, gate)| {
                let pod = GatedPod {
                    name: (*name).to_owned(),
                    uid: format!("uid-{name}"),
                    containers_ready: *containers_ready,
                    gate: gate.map(str::to_owned),
                };
                ((*name).to_owned(), pod)
            })
            .collect();
        Self { pods: Mutex::new(pods), ..Self::default() }
    }

    /// `pod` declares a container port `name` numbered `number`.
    pub fn with_container_port(mut self, pod: &str, name: &str, number: u16) -> Self {
        self.container_ports.push((pod.to_owned(), name.to_owned(), number));
        self
    }

    pub fn refusing_gates_with(self, code: u16) -> Self {
        Self { refuse_with: Some(code), ..self }
    }

    /// (pod, status, reason) per gate write, in order.
    pub fn gates_set(&self) -> Vec<(String, String, String)> {
        self.set.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl ClusterReads for FakeCluster {
    async fn backend(&self, _: &BackendKey) -> Result<LiveBackend, kube::Error> {
        Ok(self.backend.lock().map(|b| b.clone()).unwrap_or_default())
    }

    async fn nodes(&self) -> Result<Vec<NodeView>, kube::Error> {
        Ok(self.nodes.clone())
    }

    async fn named_container_ports(
        &self,
        _: &str,
        pods: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, BTreeSet<u16>>, kube::Error> {
        if self.ports_unreadable.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(kube::Error::Api(Box::new(
                kube::core::Status::failure("unreachable", "ServiceUnavailable").with_code(503),
            )));
        }
        let mut named: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        for (pod, name, number) in &self.container_ports {
            if pods.contains(pod) {
                named.entry(name.clone()).or_default().insert(*number);
            }
        }
        Ok(named)
    }
}

impl PodGates for FakeCluster {
    async fn gated_pods(
        &self,
        _: &str,
        names: &BTreeSet<String>,
        _: &str,
    ) -> Result<BTreeMap<String, GatedPod>, kube::Error> {
        let pods = self.pods.lock().map(|p| p.clone()).unwrap_or_default();
        Ok(pods.into_iter().filter(|(name, _)| names.contains(name)).collect())
    }

    async fn set_gate(&self, _: &str, pod: &GatedPod, gate: &GateCondition<'_>) -> Result<(), kube::Error> {
        if let Some(code) = self.refuse_with {
            let status = kube::core::Status::failure("refused", "Conflict").with_code(code);
            return Err(kube::Error::Api(Box::new(status)));
        }
        if let Ok(mut pods) = self.pods.lock()
            && let Some(p) = pods.get_mut(&pod.name)
        {
            p.gate = Some(gate.status.to_owned());
        }
        if let Ok(mut set) = self.set.lock() {
            set.push((pod.name.clone(), gate.status.to_owned(), gate.reason.to_owned()));
        }
        Ok(())
    }
}

/// One VPC, `vpc-1`, of `10.0.0.0/16`.
#[derive(Default)]
pub struct FakeNetwork;

impl Network for FakeNetwork {
    async fn vpc_cidrs(&self, vpc_id: &str) -> Result<Vec<Cidr>, AwsError> {
        match vpc_id {
            "vpc-1" => Ok(vec!["10.0.0.0/16".parse().map_err(|e| AwsError::VpcNotFound(format!("{e:?}")))?]),
            other => Err(AwsError::VpcNotFound(other.to_owned())),
        }
    }
}

/// Records what the binding level writes, in order.
#[derive(Default)]
pub struct Recorded {
    pub log: std::sync::Mutex<Vec<String>>,
    pub statuses: std::sync::Mutex<Vec<crate::plan::status::Observed>>,
}

impl Recorded {
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl BindingWrites for Recorded {
    fn ensure_finalizer<'a>(
        &'a self,
        _: &'a TargetGroupBinding,
    ) -> futures::future::BoxFuture<'a, Result<(), kube::Error>> {
        self.log.lock().expect("log").push("finalizer added".into());
        Box::pin(async { Ok(()) })
    }
    fn remove_finalizer<'a>(
        &'a self,
        _: &'a TargetGroupBinding,
    ) -> futures::future::BoxFuture<'a, Result<(), kube::Error>> {
        self.log.lock().expect("log").push("finalizer removed".into());
        Box::pin(async { Ok(()) })
    }
    fn update_status<'a>(
        &'a self,
        _: &'a TargetGroupBinding,
        observed: &'a crate::plan::status::Observed,
    ) -> futures::future::BoxFuture<'a, Result<(), kube::Error>> {
        self.log.lock().expect("log").push("status".into());
        self.statuses.lock().expect("statuses").push(observed.clone());
        Box::pin(async { Ok(()) })
    }
    fn annotate<'a>(
        &'a self,
        _: &'a TargetGroupBinding,
        key: &'a str,
        value: String,
    ) -> futures::future::BoxFuture<'a, Result<(), kube::Error>> {
        self.log.lock().expect("log").push(format!("annotated {key}={value}"));
        Box::pin(async { Ok(()) })
    }
    fn event<'a>(
        &'a self,
        _: &'a TargetGroupBinding,
        kind: crate::k8s::writes::EventKind,
        reason: &'a str,
        _: String,
    ) -> futures::future::BoxFuture<'a, ()> {
        self.log.lock().expect("log").push(format!("{kind:?} {reason}"));
        Box::pin(async {})
    }
}
