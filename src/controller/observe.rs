//! Observe, for `run` and `plan` alike: a binding's spec checked against its target group, then
//! every read its decision needs, once: its ownership record, the targets its backend wants, the
//! ports its rules name. What differs is only where the reads go ([`Reads`]): the running
//! controller's caches (`run`), or AWS and the API server directly (`plan`). The checks, the
//! backend's reading and the decision of what is wanted are this one code path, so a plan cannot
//! drift from the run it previews.

use std::collections::{BTreeMap, BTreeSet};

use super::error::ReconcileError;
use super::gates::gated_endpoint_pods_of;
use super::ports::Ports;
use crate::api::{TargetGroupBinding, TargetType};
use crate::aws::AwsError;
use crate::aws::{Network as _, TargetGroups as _};
use crate::index::{Backend, BackendKey, Nodes, selector};
use crate::k8s::live::{ClusterReads as _, LiveBackend};
use crate::k8s::ownership::OwnershipStore as _;
use crate::k8s::pods::held_back_by_gate;
use crate::model::{Account, BindingId, Cidr, RegisteredTarget, TargetGroupInfo, TargetGroupRef};
use crate::plan::binding::{Observed, binding_id, ours_now};
use crate::plan::desired::{AddressFamily, PortRef, ServiceView, SliceView};
use crate::plan::instance::{NodeView, Selector};
use crate::plan::lost_record::{RecordFound, lost_record};
use crate::plan::ownership::Record;
use crate::plan::sg_rules::names_a_port;
use crate::plan::validate::{Resolved, account_of, check_against, check_spec};
use crate::plan::wanted::{wanted_instance, wanted_ip};

/// Where a binding's inputs are read from.
#[allow(async_fn_in_trait)] // used with concrete types only; no Send bound needed across await
pub trait Reads {
    /// The target group `tg` names in `account`; `drift_check`: a cached answer may be too old.
    async fn target_group(
        &self,
        tg: &TargetGroupRef,
        account: &Account,
        drift_check: bool,
    ) -> Result<TargetGroupInfo, ReconcileError>;
    /// The CIDRs of the group's VPC as seen from `account` (see [`seen_from`]).
    async fn vpc_cidrs(&self, vpc_id: &str, account: &Account) -> Result<Vec<Cidr>, ReconcileError>;
    /// The pods of `slices`' not-Ready endpoints only `tgb`'s readiness gate holds back.
    async fn held_back(
        &self,
        tgb: &TargetGroupBinding,
        slices: &[&SliceView],
        family: crate::plan::desired::AddressFamily,
    ) -> Result<BTreeSet<String>, ReconcileError>;
    /// The binding's ownership record as stored.
    async fn record(&self, id: &BindingId) -> Result<Option<Record>, ReconcileError>;
    /// The record as this process last read or wrote it (one deleted since comes back from it).
    fn last_known(&self, id: &BindingId) -> Option<Record>;
    /// What group `arn` holds now, read through `account`.
    async fn group_targets(&self, arn: &str, account: &Account) -> Result<Vec<RegisteredTarget>, ReconcileError>;
    /// Container port name → its numbers across `pods` of `namespace`.
    async fn named_ports(
        &self,
        namespace: &str,
        pods: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, BTreeSet<u16>>, ReconcileError>;
}

/// Reads straight from the ports, with no cache and no memory: all of `plan`'s reads (its ports'
/// fence never opens), and those of the running controller it does not cache.
pub struct LiveReads<'a, P> {
    pub ports: &'a P,
}

impl<P: Ports> Reads for LiveReads<'_, P> {
    async fn target_group(
        &self,
        tg: &TargetGroupRef,
        account: &Account,
        _drift_check: bool,
    ) -> Result<TargetGroupInfo, ReconcileError> {
        Ok(self.ports.target_groups().in_account(account).await?.describe(tg).await?)
    }

    async fn vpc_cidrs(&self, vpc_id: &str, account: &Account) -> Result<Vec<Cidr>, ReconcileError> {
        Ok(seen_from(self.ports.network().vpc_cidrs(vpc_id).await, account)?)
    }

    async fn held_back(
        &self,
        tgb: &TargetGroupBinding,
        slices: &[&SliceView],
        family: AddressFamily,
    ) -> Result<BTreeSet<String>, ReconcileError> {
        Ok(held_back_by_gate(&gated_endpoint_pods_of(self.ports.cluster(), tgb, slices, family).await?))
    }

    async fn record(&self, id: &BindingId) -> Result<Option<Record>, ReconcileError> {
        Ok(self.ports.records().read(id).await?)
    }

    fn last_known(&self, id: &BindingId) -> Option<Record> {
        self.ports.records().last_known(id)
    }

    async fn group_targets(&self, arn: &str, account: &Account) -> Result<Vec<RegisteredTarget>, ReconcileError> {
        Ok(self.ports.target_groups().in_account(account).await?.targets(arn).await?)
    }

    async fn named_ports(
        &self,
        namespace: &str,
        pods: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, BTreeSet<u16>>, ReconcileError> {
        let ports = self.ports.cluster().named_container_ports(namespace, pods).await;
        ports.map_err(ReconcileError::kube("read the endpoint pods' container ports"))
    }
}

/// A binding's spec, checked and resolved against its target group.
pub struct Binding {
    pub id: BindingId,
    pub key: BackendKey,
    pub port: PortRef,
    pub account: Account,
    pub tg: TargetGroupInfo,
    pub resolved: Resolved,
    pub node_selector: Option<Selector>,
    pub shared: bool,
}

impl Binding {
    pub fn instance_mode(&self) -> bool {
        self.resolved.target_type == TargetType::Instance
    }
}

/// A binding observed: its spec resolved, and what its decision reads.
pub struct Observation {
    pub binding: Binding,
    pub observed: Observed,
    /// Why the wanted pods' container ports could not be read, if they could not.
    pub ports_unread: Option<ReconcileError>,
}

/// The backend's plain views, from the watches or a live read.
pub struct BackendViews<'a> {
    pub service: Option<&'a ServiceView>,
    pub slices: Vec<&'a SliceView>,
    /// Instance mode only.
    pub nodes: Option<Vec<&'a NodeView>>,
}

impl<'a> BackendViews<'a> {
    /// From the watches: `nodes` once the binding resolved to instance targets.
    pub fn watched(backend: &'a Backend, nodes: Option<&'a Nodes>) -> Self {
        Self {
            service: backend.service(),
            slices: backend.slices.by_name.values().collect(),
            nodes: nodes.map(|n| n.by_name.values().collect()),
        }
    }

    /// From a live read.
    pub fn live(backend: &'a LiveBackend, nodes: Option<&'a [NodeView]>) -> Self {
        Self {
            service: backend.service.as_ref(),
            slices: backend.slices.iter().collect(),
            nodes: nodes.map(|n| n.iter().collect()),
        }
    }
}

/// Checks the spec (before any AWS call), then against the target group it names.
pub async fn resolve(
    reads: &impl Reads,
    tgb: &TargetGroupBinding,
    drift_check: bool,
) -> Result<Binding, ReconcileError> {
    let (tg_ref, port) = check_spec(&tgb.spec)?;
    let account = account_of(&tgb.spec)?;
    let tg = reads.target_group(&tg_ref, &account, drift_check).await?;
    let resolved = check_against(&tgb.spec, &tg)?;
    let node_selector = match &tgb.spec.node_selector {
        Some(s) => Some(selector(s).map_err(ReconcileError::InvalidNodeSelector)?),
        None => None,
    };
    let id = binding_id(tgb);
    Ok(Binding {
        key: BackendKey { namespace: id.namespace.clone(), service: tgb.spec.service_ref.name.clone() },
        id,
        port,
        account,
        tg,
        resolved,
        node_selector,
        shared: tgb.spec.multi_cluster_target_group == Some(true),
    })
}

/// Observes a binding: its spec checked (before any AWS call) and resolved against its target
/// group, then what its decision reads, each once. ip targets outside the group's VPC go with AZ
/// `all`; pods only the binding's readiness gate holds back are wanted, so the gate can open.
/// `None`: it resolved to instance targets and `backend` has no nodes: observe again with them.
pub async fn binding(
    reads: &impl Reads,
    tgb: &TargetGroupBinding,
    backend: &BackendViews<'_>,
    drift_check: bool,
) -> Result<Option<Observation>, ReconcileError> {
    let binding = resolve(reads, tgb, drift_check).await?;
    let (instance, family) = (binding.instance_mode(), binding.resolved.family);
    let nodes = match (instance, &backend.nodes) {
        (true, None) => return Ok(None),
        (true, Some(nodes)) => Some(nodes.as_slice()),
        (false, _) => None,
    };
    let ours_now = ours_now(&backend.slices, nodes, family);
    // Only a shared binding keeps claims; one whose record was deleted by hand gets back what this
    // process last knew of it, or else claims again what it can prove.
    let record = match binding.shared {
        false => RecordFound::Read(Record::default()),
        true => match (reads.record(&binding.id).await?, reads.last_known(&binding.id)) {
            (Some(record), _) => RecordFound::Read(record),
            (None, Some(known)) => RecordFound::Remembered(known),
            (None, None) => match lost_record(tgb, false) {
                Some((arn, registered)) => {
                    RecordFound::Lost { current: reads.group_targets(&arn, &binding.account).await?, arn, registered }
                }
                None => RecordFound::Read(Record::default()),
            },
        },
    };
    let name = binding.key.to_string();
    let wanted = match (nodes, binding.tg.vpc_id.as_deref()) {
        (Some(nodes), _) => wanted_instance(
            backend.service,
            &name,
            &binding.port,
            nodes.iter().copied(),
            binding.node_selector.as_ref(),
        ),
        (None, vpc) => {
            let cidrs = match vpc {
                Some(vpc) => Some(reads.vpc_cidrs(vpc, &binding.account).await?),
                None => None,
            };
            let gated = reads.held_back(tgb, &backend.slices, family).await?;
            let slices = backend.slices.iter().copied();
            wanted_ip(backend.service, &name, &binding.port, slices, family, cidrs.as_deref(), &gated)
        }
    };
    // Read only when the rules name a port and the targets are pods (a pod held back only by its
    // readiness gate included: its port must open for its target to turn healthy).
    let named_ports = match (&tgb.spec.networking, &wanted) {
        (Some(networking), Ok(wanted)) if names_a_port(networking) && !instance => {
            reads.named_ports(&binding.id.namespace, &wanted.pods).await
        }
        _ => Ok(BTreeMap::new()),
    };
    let (named_ports, ports_unread) = match named_ports {
        Ok(ports) => (Some(ports), None),
        Err(e) => (None, Some(e)),
    };
    let observed = Observed {
        arn: binding.tg.arn.clone(),
        shared: binding.shared,
        record,
        ours_now,
        wanted,
        target_is_ip: !instance,
        vpc_id: binding.tg.vpc_id.clone(),
        named_ports,
    };
    Ok(Some(Observation { binding, observed, ports_unread }))
}

/// A VPC lookup as seen from `account`: for a group in another account, a VPC the agent's own
/// credentials cannot see is that account's own (peered), so every pod address is outside it.
pub fn seen_from(lookup: Result<Vec<Cidr>, AwsError>, account: &Account) -> Result<Vec<Cidr>, AwsError> {
    match lookup {
        Err(AwsError::VpcNotFound(_)) if *account != Account::Own => Ok(Vec::new()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use serde_json::json;

    use super::*;
    use crate::model::{TargetGroupIpType, TargetGroupType};
    use crate::plan::desired::{AddressFamily, EndpointView, ServicePortView, SlicePort};
    use crate::plan::wanted::Wanted;

    /// Reads from memory, counting target-group reads.
    struct FakeReads {
        tg: TargetGroupInfo,
        cidrs: Vec<Cidr>,
        held_back: BTreeSet<String>,
        describes: Cell<u32>,
    }

    impl Reads for FakeReads {
        async fn target_group(
            &self,
            _: &TargetGroupRef,
            _: &Account,
            _: bool,
        ) -> Result<TargetGroupInfo, ReconcileError> {
            self.describes.set(self.describes.get() + 1);
            Ok(self.tg.clone())
        }
        async fn vpc_cidrs(&self, _: &str, _: &Account) -> Result<Vec<Cidr>, ReconcileError> {
            Ok(self.cidrs.clone())
        }
        async fn held_back(
            &self,
            _: &TargetGroupBinding,
            _: &[&SliceView],
            _: AddressFamily,
        ) -> Result<BTreeSet<String>, ReconcileError> {
            Ok(self.held_back.clone())
        }
        async fn record(&self, _: &BindingId) -> Result<Option<Record>, ReconcileError> {
            Ok(None)
        }
        fn last_known(&self, _: &BindingId) -> Option<Record> {
            None
        }
        async fn group_targets(&self, _: &str, _: &Account) -> Result<Vec<RegisteredTarget>, ReconcileError> {
            Ok(Vec::new())
        }
        async fn named_ports(
            &self,
            _: &str,
            _: &BTreeSet<String>,
        ) -> Result<BTreeMap<String, BTreeSet<u16>>, ReconcileError> {
            Ok(BTreeMap::new())
        }
    }

    const ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";

    fn reads(target_type: TargetGroupType, held_back: &[&str]) -> FakeReads {
        FakeReads {
            tg: TargetGroupInfo {
                arn: ARN.into(),
                name: "web".into(),
                target_type,
                vpc_id: Some("vpc-1".into()),
                ip_address_type: TargetGroupIpType::Ipv4,
                protocol: Some("HTTP".into()),
                health_check: None,
            },
            cidrs: vec!["10.0.0.0/16".parse().expect("cidr")],
            held_back: held_back.iter().map(|p| (*p).to_owned()).collect(),
            describes: Cell::new(0),
        }
    }

    fn binding(spec: serde_json::Value) -> TargetGroupBinding {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "demo", "uid": "u-1"}, "spec": spec}))
            .expect("binding")
    }

    fn service() -> ServiceView {
        ServiceView {
            type_: Some("NodePort".into()),
            ports: vec![ServicePortView { name: Some("http".into()), port: 80, node_port: Some(30080) }],
            selects_pods: true,
        }
    }

    fn endpoint(ip: &str, ready: bool) -> EndpointView {
        EndpointView {
            addresses: vec![ip.into()],
            ready: Some(ready),
            terminating: Some(false),
            pod: Some(format!("pod-{}", ip.replace('.', "-"))),
        }
    }

    fn slice(endpoints: Vec<EndpointView>) -> SliceView {
        SliceView {
            family: AddressFamily::Ipv4,
            ports: vec![SlicePort { name: Some("http".into()), port: Some(8080) }],
            endpoints,
        }
    }

    fn ids(wanted: &Wanted) -> Vec<String> {
        wanted.targets.iter().map(|t| format!("{}@{}", t.id, t.availability_zone.as_deref().unwrap_or("-"))).collect()
    }

    #[tokio::test]
    async fn a_spec_mistake_is_refused_before_any_aws_read() {
        let reads = reads(TargetGroupType::Ip, &[]);
        let tgb = binding(json!({"serviceRef": {"name": "web", "port": 80}}));
        let error = resolve(&reads, &tgb, false).await.err().expect("no group named");
        assert_eq!(error.reason(), "InvalidSpec", "{error}");
        assert_eq!(reads.describes.get(), 0);
    }

    #[tokio::test]
    async fn ip_targets_include_pods_only_their_gate_holds_back_and_outsiders_go_to_az_all() {
        let reads = reads(TargetGroupType::Ip, &["pod-10-0-0-12"]);
        let tgb = binding(json!({"targetGroupARN": ARN, "serviceRef": {"name": "web", "port": 80}}));
        let svc = service();
        let slices = [slice(vec![
            endpoint("10.0.0.10", true),
            endpoint("10.0.0.11", false),
            endpoint("10.0.0.12", false),
            endpoint("192.168.0.9", true),
        ])];
        let views = BackendViews { service: Some(&svc), slices: slices.iter().collect(), nodes: None };
        let observation = super::binding(&reads, &tgb, &views, false).await.expect("reads").expect("ip targets");
        assert!(!observation.binding.instance_mode() && !observation.binding.shared);
        assert_eq!(observation.binding.key.to_string(), "demo/web");
        let wanted = observation.observed.wanted.expect("wanted");
        assert_eq!(ids(&wanted), ["10.0.0.10:8080@-", "10.0.0.12:8080@-", "192.168.0.9:8080@all"]);
        let ours: Vec<String> = observation.observed.ours_now.into_iter().collect();
        assert_eq!(ours, ["10.0.0.10", "10.0.0.11", "10.0.0.12", "192.168.0.9"], "ready or not, ours");
    }

    #[tokio::test]
    async fn a_missing_service_is_a_problem_not_an_empty_backend() {
        let reads = reads(TargetGroupType::Ip, &[]);
        let tgb = binding(json!({"targetGroupARN": ARN, "serviceRef": {"name": "web", "port": 80}}));
        let views = BackendViews { service: None, slices: Vec::new(), nodes: None };
        let observation = super::binding(&reads, &tgb, &views, false).await.expect("reads").expect("ip targets");
        let problem = observation.observed.wanted.expect_err("fail static");
        assert_eq!(problem.reason(), "ServiceNotFound");
    }

    #[tokio::test]
    async fn instance_targets_come_from_the_nodes_on_the_node_port() {
        let reads = reads(TargetGroupType::Instance, &[]);
        let tgb = binding(json!({"targetGroupARN": ARN, "serviceRef": {"name": "web", "port": 80}}));
        let node: NodeView = NodeView {
            name: "n1".into(),
            provider_id: Some("aws:///us-east-1a/i-0123456789abcdef0".into()),
            ready: Some(true),
            ..NodeView::default()
        };
        let svc = service();
        let without_nodes = BackendViews { service: Some(&svc), slices: Vec::new(), nodes: None };
        let again = super::binding(&reads, &tgb, &without_nodes, true).await.expect("reads");
        assert!(again.is_none(), "unset targetType resolved from the group: observed again with the nodes");
        let views = BackendViews { service: Some(&svc), slices: Vec::new(), nodes: Some(vec![&node]) };
        let observation = super::binding(&reads, &tgb, &views, true).await.expect("reads").expect("instance targets");
        assert!(observation.binding.instance_mode());
        let wanted = observation.observed.wanted.expect("wanted");
        assert_eq!(ids(&wanted), ["i-0123456789abcdef0:30080@-"]);
        let ours: Vec<String> = observation.observed.ours_now.into_iter().collect();
        assert_eq!(ours, ["i-0123456789abcdef0"]);
    }

    #[test]
    fn another_accounts_vpc_the_agent_cannot_see_holds_no_pod_address() {
        let role = Account::Role(crate::model::AssumeRole {
            role_arn: "arn:aws:iam::222222222222:role/x".into(),
            external_id: None,
        });
        let gone = || Err(AwsError::VpcNotFound("vpc-9".into()));
        assert_eq!(seen_from(gone(), &role).ok(), Some(Vec::new()));
        assert!(seen_from(gone(), &Account::Own).is_err(), "our own VPC missing is an error");
    }
}
