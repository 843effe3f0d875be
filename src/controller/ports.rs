//! The ports the controller works through, bundled as one bound.

use kube::Client;

use crate::aws::security_groups::SecurityGroups;
use crate::aws::{Network, TargetGroups};
use crate::k8s::live::ClusterReads;
use crate::k8s::ownership::{OwnershipRecords, OwnershipStore};
use crate::k8s::pods::PodGates;

/// What the controller works through, one narrow trait per concern: AWS (target groups, the VPC,
/// security groups), the ownership records (the state it persists), and the cluster's live reads
/// and pod readiness gates. In production the SDK clients, [`OwnershipRecords`] and the API
/// server's [`Client`]; in the controller's tests, in-memory fakes.
pub struct Adapters<T, N, S, R = OwnershipRecords, C = Client> {
    pub target_groups: T,
    pub network: N,
    pub security_groups: S,
    pub records: R,
    pub cluster: C,
}

/// The ports as one bound (`P: Ports`) in place of a type parameter per trait.
pub trait Ports: Send + Sync + 'static {
    type TargetGroups: TargetGroups;
    type Network: Network;
    type SecurityGroups: SecurityGroups;
    type Records: OwnershipStore;
    type Cluster: ClusterReads + PodGates;
    fn target_groups(&self) -> &Self::TargetGroups;
    fn network(&self) -> &Self::Network;
    fn security_groups(&self) -> &Self::SecurityGroups;
    fn records(&self) -> &Self::Records;
    fn cluster(&self) -> &Self::Cluster;
}

impl<T, N, S, R, C> Ports for Adapters<T, N, S, R, C>
where
    T: TargetGroups,
    N: Network,
    S: SecurityGroups,
    R: OwnershipStore,
    C: ClusterReads + PodGates + 'static,
{
    type TargetGroups = T;
    type Network = N;
    type SecurityGroups = S;
    type Records = R;
    type Cluster = C;
    fn target_groups(&self) -> &T {
        &self.target_groups
    }
    fn network(&self) -> &N {
        &self.network
    }
    fn security_groups(&self) -> &S {
        &self.security_groups
    }
    fn records(&self) -> &R {
        &self.records
    }
    fn cluster(&self) -> &C {
        &self.cluster
    }
}
