use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use super::locks::KeyedLocks;
use super::observe::{LiveReads, Reads};
use super::ports::Ports;
use crate::api::TargetGroupBinding;
use crate::aws::AwsError;
use crate::aws::{Network as _, TargetGroups as _};
use crate::index::{Backend, BackendIndex, NodeIndex, Nodes, Wake};
use crate::k8s::writes::BindingWrites;
use crate::metrics::Metrics;
use crate::model::{Account, BindingId, Cidr, RegisteredTarget, TargetGroupInfo, TargetGroupRef};
use crate::plan::ownership::Record;

/// How long VPC CIDRs are trusted; they change only when someone associates a new block.
const VPC_CIDR_TTL: Duration = Duration::from_secs(600);

/// The Kubernetes side: the API client, the binding cache and what the agent writes there.
pub struct Kube {
    pub client: Client,
    pub bindings: Store<TargetGroupBinding>,
    /// The binding's finalizer, status and Events.
    pub writes: Arc<dyn BindingWrites>,
}

/// The watches that feed the bindings' inputs, and how they wake bindings.
pub struct Watches {
    pub backends: Arc<BackendIndex>,
    pub nodes: Arc<NodeIndex>,
    pub wake: Wake,
}

/// After this many reconciles in a row whose writes went stale while waiting, the next one's
/// writes wait however the inputs move, so a backend that never stops changing is still fed.
const MAX_STALE_IN_A_ROW: u32 = 3;

/// Everything a reconcile needs, shared by all reconciles, in named parts.
pub struct Context<P> {
    pub kube: Kube,
    pub ports: P,
    pub watches: Watches,
    pub cluster_name: String,
    pub drift_interval: Duration,
    pub metrics: Arc<Metrics>,
    /// One writer per target group.
    pub locks: KeyedLocks,
    /// Each binding's part of the security-group rules, for the networking reconcile.
    pub networking: super::asks::Contributions,
    /// Pods that declare a binding's readiness gate.
    pub gates: super::gates::GateMemory,
    /// When this replica began to lead (Unix seconds): the controller is built only once it leads,
    /// and a deposed leader exits.
    pub leading_since: u64,
    memory: Mutex<Memory>,
    vpc_lookups: KeyedLocks,
}

/// What the agent remembers between reconciles. Losing it (a restart) only costs AWS calls.
#[derive(Default)]
struct Memory {
    /// Per account: a name means another group in another account.
    target_groups: HashMap<(Account, TargetGroupRef), (TargetGroupInfo, Instant)>,
    vpc_cidrs: HashMap<String, (Vec<Cidr>, Instant)>,
    /// Per binding UID: the inputs last applied successfully and when to check AWS again.
    converged: HashMap<String, (u64, Instant)>,
    failures: HashMap<ObjectRef<TargetGroupBinding>, u32>,
    /// Binding UIDs last resolved to instance targets (their inputs include the nodes).
    instance_mode: std::collections::HashSet<String>,
    /// Per binding UID: reconciles in a row whose writes went stale while they waited.
    stale_in_a_row: HashMap<String, u32>,
    /// What the last sweep found kept for bindings absent from the cluster (see `forget_gone`).
    absent_uids: HashSet<String>,
    absent_refs: HashSet<ObjectRef<TargetGroupBinding>>,
}

impl<P: Ports> Context<P> {
    pub fn new(
        kube: Kube,
        ports: P,
        watches: Watches,
        cluster_name: String,
        drift_interval: Duration,
        metrics: Arc<Metrics>,
        networking: super::asks::Contributions,
    ) -> Self {
        Self {
            kube,
            ports,
            watches,
            cluster_name,
            drift_interval,
            metrics,
            locks: KeyedLocks::default(),
            networking,
            gates: Default::default(),
            leading_since: crate::clock::unix_now(),
            memory: Mutex::default(),
            vpc_lookups: KeyedLocks::default(),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The target group. A change in the cluster uses what is known of it, however old (a burst
    /// of changes costs no DescribeTargetGroups); a drift check describes it again once half a
    /// drift interval has passed, so a re-created or renamed group is seen at the next check.
    /// A failed write or a group found gone drops what is known.
    pub async fn target_group(
        &self,
        tg: &TargetGroupRef,
        account: &Account,
        drift_check: bool,
    ) -> Result<TargetGroupInfo, AwsError> {
        let ttl = self.drift_interval / 2;
        let key = (account.clone(), tg.clone());
        if let Some((info, at)) = self.memory().target_groups.get(&key)
            && (!drift_check || at.elapsed() < ttl)
        {
            return Ok(info.clone());
        }
        let result = self.ports.target_groups().in_account(account).await?.describe(tg).await;
        let mut memory = self.memory();
        match &result {
            Ok(info) => {
                memory.target_groups.insert(key, (info.clone(), Instant::now()));
            }
            Err(_) => {
                memory.target_groups.remove(&key);
            }
        }
        result
    }

    /// Forgets a group that turned out to be gone, however it was named.
    pub fn forget_target_group_arn(&self, arn: &str) {
        self.memory()
            .target_groups
            .retain(|(_, name), (info, _)| info.arn != arn && *name != TargetGroupRef::Arn(arn.to_owned()));
    }

    /// Forgets the VPC CIDRs: a target AWS refused may have been sent with a stale AZ `all`.
    pub fn invalidate_vpc_cidrs(&self) {
        self.memory().vpc_cidrs.clear();
    }

    /// The CIDRs of the target group's VPC, read with the agent's own credentials: the pods' account
    /// sees its own VPCs and those shared with it. For a group in another account (`account`), a VPC
    /// it cannot see is that account's own (peered): every pod address is outside it.
    pub async fn vpc_cidrs(&self, vpc_id: &str, account: &Account) -> Result<Vec<Cidr>, AwsError> {
        let key = match account {
            Account::Own => vpc_id.to_owned(),
            Account::Role(role) => format!("{vpc_id} for {}", role.role_arn),
        };
        let cached =
            || self.memory().vpc_cidrs.get(&key).filter(|(_, at)| at.elapsed() < VPC_CIDR_TTL).map(|(c, _)| c.clone());
        if let Some(cidrs) = cached() {
            return Ok(cidrs);
        }
        // One lookup per VPC at a time: the reconciles of a cold start, many groups in one VPC,
        // wait for the first one's answer instead of all asking EC2.
        let _one_lookup = self.vpc_lookups.lock(&key).await;
        if let Some(cidrs) = cached() {
            return Ok(cidrs);
        }
        let cidrs = super::observe::seen_from(self.ports.network().vpc_cidrs(vpc_id).await, account)?;
        self.memory().vpc_cidrs.insert(key, (cidrs.clone(), Instant::now()));
        Ok(cidrs)
    }

    /// Whether the inputs are those of the last successful apply: a reconcile now is a check
    /// against AWS (drift, health), not a change.
    pub fn unchanged_since_converged(&self, uid: &str, fingerprint: u64) -> bool {
        self.memory().converged.get(uid).is_some_and(|(last, _)| *last == fingerprint)
    }

    /// Whether this binding's waiting writes may be dropped when its inputs change (not after
    /// [`MAX_STALE_IN_A_ROW`] such drops in a row).
    pub fn may_go_stale(&self, uid: &str) -> bool {
        self.memory().stale_in_a_row.get(uid).is_none_or(|n| *n < MAX_STALE_IN_A_ROW)
    }

    /// Counts a reconcile whose writes went stale (`true`) or one that got to send them.
    pub fn went_stale(&self, uid: &str, stale: bool) {
        let mut memory = self.memory();
        if stale {
            *memory.stale_in_a_row.entry(uid.to_owned()).or_default() += 1;
        } else {
            memory.stale_in_a_row.remove(uid);
        }
    }

    /// When the inputs are unchanged since the last successful apply and no drift check is due,
    /// the time until that check; `None` means AWS must be consulted now.
    pub fn unchanged_until_drift_check(&self, uid: &str, fingerprint: u64) -> Option<Duration> {
        let memory = self.memory();
        let (last, next_check) = memory.converged.get(uid)?;
        (*last == fingerprint).then(|| next_check.checked_duration_since(Instant::now())).flatten()
    }

    /// Records a successful apply; returns when the next drift check is due (jittered by ±10%
    /// so bindings created together do not check together), or sooner when `check_within` asks.
    pub fn converged(&self, uid: &str, fingerprint: u64, check_within: Option<Duration>) -> Duration {
        let jittered = self.drift_interval.mul_f64(0.9 + 0.2 * fastrand::f64());
        let after = check_within.map_or(jittered, |w| w.min(jittered));
        self.memory().converged.insert(uid.to_owned(), (fingerprint, Instant::now() + after));
        after
    }

    /// Forces the next reconcile of `uid` to consult AWS.
    pub fn invalidate(&self, uid: &str) {
        self.memory().converged.remove(uid);
    }

    /// Whether the binding was last resolved to instance targets.
    pub fn was_instance_mode(&self, uid: &str) -> bool {
        self.memory().instance_mode.contains(uid)
    }

    pub fn set_instance_mode(&self, uid: &str, instance: bool) {
        let mut memory = self.memory();
        if instance {
            memory.instance_mode.insert(uid.to_owned());
        } else {
            memory.instance_mode.remove(uid);
        }
    }

    /// Forgets everything kept about `tgb`, whose deletion is done: the one place every part of a
    /// binding's state is dropped, so none lingers.
    pub fn forget_binding(&self, tgb: &TargetGroupBinding) {
        if let Some(uid) = tgb.uid() {
            self.forget_uid(&uid);
        }
        self.forget_ref(&ObjectRef::from_obj(tgb));
    }

    /// What is kept by UID.
    fn forget_uid(&self, uid: &str) {
        let mut memory = self.memory();
        memory.converged.remove(uid);
        memory.instance_mode.remove(uid);
        memory.stale_in_a_row.remove(uid);
        drop(memory);
        self.gates.forget(uid);
        self.networking.withdraw(uid);
    }

    /// What is kept by namespace and name.
    fn forget_ref(&self, binding: &ObjectRef<TargetGroupBinding>) {
        self.memory().failures.remove(binding);
        self.watches.wake.forget(binding);
        self.watches.backends.untrack(binding);
        self.watches.nodes.untrack(binding);
        self.metrics.registered_targets(binding.namespace.as_deref().unwrap_or_default(), &binding.name, None);
    }

    /// Forgets the bindings gone from the cluster without a cleanup of theirs (a finalizer removed
    /// by hand) for two sweeps in a row: one sweep could race a binding created meanwhile.
    /// Returns how many were forgotten.
    pub fn forget_gone(&self, present: &[Arc<TargetGroupBinding>]) -> usize {
        let uids: HashSet<String> = present.iter().filter_map(|b| b.uid()).collect();
        let refs: HashSet<ObjectRef<TargetGroupBinding>> =
            present.iter().map(|b| ObjectRef::from_obj(b.as_ref())).collect();
        let (gone_uids, gone_refs) = {
            let mut memory = self.memory();
            let mut known_uids: HashSet<String> = memory.converged.keys().cloned().collect();
            known_uids.extend(memory.instance_mode.iter().cloned());
            known_uids.extend(memory.stale_in_a_row.keys().cloned());
            known_uids.extend(self.gates.uids());
            let mut known_refs: HashSet<ObjectRef<TargetGroupBinding>> = memory.failures.keys().cloned().collect();
            known_refs.extend(self.watches.wake.known());
            known_refs.extend(self.watches.backends.tracked());
            known_refs.extend(self.watches.nodes.tracked());
            let absent_uids: HashSet<String> = known_uids.into_iter().filter(|u| !uids.contains(u)).collect();
            let absent_refs: HashSet<_> = known_refs.into_iter().filter(|r| !refs.contains(r)).collect();
            let gone_uids: Vec<String> = absent_uids.intersection(&memory.absent_uids).cloned().collect();
            let gone_refs: Vec<_> = absent_refs.intersection(&memory.absent_refs).cloned().collect();
            memory.absent_uids = absent_uids;
            memory.absent_refs = absent_refs;
            (gone_uids, gone_refs)
        };
        for uid in &gone_uids {
            self.forget_uid(uid);
        }
        for binding in &gone_refs {
            self.forget_ref(binding);
        }
        gone_uids.len() + gone_refs.len()
    }

    /// Counts a failure of `binding` and returns the retry delay: exponential from 1 s, capped at
    /// 60 s, with full jitter in the upper half so retries of many bindings spread out.
    pub fn failed(&self, binding: &ObjectRef<TargetGroupBinding>) -> Duration {
        let mut memory = self.memory();
        let n = memory.failures.entry(binding.clone()).or_default();
        *n = n.saturating_add(1);
        let base = Duration::from_secs(1u64 << (*n - 1).min(6)).min(Duration::from_secs(60));
        base.mul_f64(0.5 + 0.5 * fastrand::f64())
    }

    pub fn succeeded(&self, binding: &ObjectRef<TargetGroupBinding>) {
        self.memory().failures.remove(binding);
    }
}

/// `run` reads through the caches and watches: target groups and VPC CIDRs as remembered, gated
/// pods remembered for their gates; the rest as `plan` does, straight from the ports.
impl<P: Ports> Context<P> {
    fn live(&self) -> LiveReads<'_, P> {
        LiveReads { ports: &self.ports }
    }
}

impl<P: Ports> Reads for Context<P> {
    async fn target_group(
        &self,
        tg: &TargetGroupRef,
        account: &Account,
        drift_check: bool,
    ) -> Result<TargetGroupInfo, super::error::ReconcileError> {
        Ok(Context::target_group(self, tg, account, drift_check).await?)
    }

    async fn vpc_cidrs(&self, vpc_id: &str, account: &Account) -> Result<Vec<Cidr>, super::error::ReconcileError> {
        Ok(Context::vpc_cidrs(self, vpc_id, account).await?)
    }

    async fn held_back(
        &self,
        tgb: &TargetGroupBinding,
        slices: &[&crate::plan::desired::SliceView],
        family: crate::plan::desired::AddressFamily,
    ) -> Result<std::collections::BTreeSet<String>, super::error::ReconcileError> {
        super::gates::held_back(self.ports.cluster(), &self.gates, tgb, slices, family).await
    }

    async fn record(&self, id: &BindingId) -> Result<Option<Record>, super::error::ReconcileError> {
        self.live().record(id).await
    }

    fn last_known(&self, id: &BindingId) -> Option<Record> {
        self.live().last_known(id)
    }

    async fn group_targets(
        &self,
        arn: &str,
        account: &Account,
    ) -> Result<Vec<RegisteredTarget>, super::error::ReconcileError> {
        self.live().group_targets(arn, account).await
    }

    async fn named_ports(
        &self,
        namespace: &str,
        pods: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, BTreeSet<u16>>, super::error::ReconcileError> {
        self.live().named_ports(namespace, pods).await
    }
}

/// A fingerprint of everything a binding's desired state is computed from.
/// `networking`: the version of the security-group loop's last outcome for the binding, so a new
/// outcome reaches its status.
pub fn fingerprint(tgb: &TargetGroupBinding, backend: &Backend, nodes: Option<&Nodes>, networking: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    networking.hash(&mut h);
    tgb.metadata.generation.hash(&mut h);
    backend.hash(&mut h);
    nodes.hash(&mut h);
    h.finish()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::aws::RateLimits;
    use crate::aws::security_groups::Ec2SecurityGroups;
    use crate::controller::fakes::{FakeCluster, FakeNetwork, FakeRecords, FakeTargetGroups};
    use crate::controller::ports::Adapters;
    use crate::fence::Fence;

    /// A Context on in-memory target groups and records; its other clients point at a closed port.
    pub(in crate::controller) type TestContext =
        Context<Adapters<FakeTargetGroups, FakeNetwork, Ec2SecurityGroups, FakeRecords, FakeCluster>>;

    pub(in crate::controller) async fn context() -> TestContext {
        context_with(Arc::new(crate::k8s::writes::ApiWrites::new(test_client(), None))).await
    }

    pub(in crate::controller) fn test_client() -> Client {
        let url = "http://127.0.0.1:9".parse().expect("url");
        Client::try_from(kube::Config::new(url)).expect("client")
    }

    /// A Context writing to `writes`, with no target group and no record yet.
    pub(in crate::controller) async fn context_with(writes: Arc<dyn BindingWrites>) -> TestContext {
        context_on(writes, FakeTargetGroups::default(), FakeCluster::default()).await
    }

    /// A Context writing to `writes` on `target_groups` and `cluster`.
    pub(in crate::controller) async fn context_on(
        writes: Arc<dyn BindingWrites>,
        target_groups: FakeTargetGroups,
        cluster: FakeCluster,
    ) -> TestContext {
        let client = test_client();
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(aws_sdk_elasticloadbalancingv2::config::Credentials::new("k", "s", None, None, "t"))
            .load()
            .await;
        let metrics = Arc::new(Metrics::default());
        let limits = Arc::new(RateLimits::fenced(Arc::new(Fence::closed())));
        let ports = Adapters {
            target_groups,
            network: FakeNetwork,
            security_groups: Ec2SecurityGroups::new(&sdk, limits, metrics.clone()),
            records: FakeRecords::default(),
            cluster,
        };
        let (wake, _) = crate::index::Wake::new();
        let kube = Kube {
            client: client.clone(),
            bindings: kube::runtime::reflector::store::Writer::default().as_reader(),
            writes,
        };
        let watches = Watches {
            backends: BackendIndex::new(client.clone(), None, wake.clone()),
            nodes: NodeIndex::new(client, wake.clone()),
            wake: wake.clone(),
        };
        let contributions = super::super::asks::Contributions::new(wake);
        Context::new(kube, ports, watches, "test".into(), Duration::from_secs(300), metrics, contributions)
    }

    fn binding(name: &str, uid: &str) -> Arc<TargetGroupBinding> {
        let mut tgb = TargetGroupBinding::new(name, Default::default());
        tgb.metadata.namespace = Some("demo".into());
        tgb.metadata.uid = Some(uid.into());
        Arc::new(tgb)
    }

    #[tokio::test]
    async fn a_binding_gone_without_a_cleanup_is_forgotten_at_the_second_sweep() {
        let ctx = context().await;
        let (gone, here) = (binding("gone", "u-gone"), binding("here", "u-here"));
        for b in [&gone, &here] {
            let uid = b.uid().expect("uid");
            ctx.converged(&uid, 7, None);
            ctx.set_instance_mode(&uid, true);
            ctx.went_stale(&uid, true);
            ctx.failed(&ObjectRef::from_obj(b.as_ref()));
            ctx.metrics.registered_targets("demo", &b.name_any(), Some(2));
        }
        assert_eq!(ctx.forget_gone(std::slice::from_ref(&here)), 0, "one sweep could race a binding just created");
        assert!(ctx.unchanged_since_converged("u-gone", 7));
        assert!(ctx.forget_gone(std::slice::from_ref(&here)) > 0);
        assert!(!ctx.unchanged_since_converged("u-gone", 7) && !ctx.was_instance_mode("u-gone"));
        assert!(ctx.may_go_stale("u-gone"), "its stale count is gone too");
        assert!(!ctx.memory().failures.contains_key(&ObjectRef::from_obj(gone.as_ref())));
        assert!(!ctx.metrics.render().contains("name=\"gone\""), "its metric series are dropped");
        // The binding still there keeps everything.
        assert!(ctx.unchanged_since_converged("u-here", 7) && ctx.was_instance_mode("u-here"));
        assert!(ctx.memory().failures.contains_key(&ObjectRef::from_obj(here.as_ref())));
        assert!(ctx.metrics.render().contains("name=\"here\""));
    }

    #[tokio::test]
    async fn a_binding_back_before_the_second_sweep_is_kept() {
        let ctx = context().await;
        let back = binding("back", "u-back");
        ctx.converged("u-back", 7, None);
        assert_eq!(ctx.forget_gone(&[]), 0);
        assert_eq!(ctx.forget_gone(&[back]), 0);
        assert!(ctx.unchanged_since_converged("u-back", 7));
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::tests::context;
    use super::*;

    #[tokio::test]
    async fn failures_back_off_exponentially_up_to_a_minute_and_a_success_resets() {
        let ctx = context().await;
        let binding = ObjectRef::new("web").within("demo");
        let delays: Vec<Duration> = (0..9).map(|_| ctx.failed(&binding)).collect();
        for (n, delay) in delays.iter().enumerate() {
            let base = Duration::from_secs(1u64 << n.min(6)).min(Duration::from_secs(60));
            assert!(
                *delay >= base / 2 && *delay <= base,
                "failure {}: {delay:?} outside [{:?}, {base:?}]",
                n + 1,
                base / 2
            );
        }
        ctx.succeeded(&binding);
        assert!(ctx.failed(&binding) <= Duration::from_secs(1), "a success starts the count again");
    }
}
