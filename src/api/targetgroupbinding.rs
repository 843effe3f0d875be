// kube-derive takes one `printcolumn(...)` attribute per column; clippy sees repeated keys.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// Binds the endpoints of a Service to an existing AWS target group.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "elbv2.k8s.aws",
    version = "v1beta1",
    kind = "TargetGroupBinding",
    plural = "targetgroupbindings",
    singular = "targetgroupbinding",
    namespaced,
    status = "TargetGroupBindingStatus",
    doc = "TargetGroupBinding binds the endpoints of a Service to an existing ELBv2 target group.",
    printcolumn(
        name = "SERVICE-NAME",
        type_ = "string",
        json_path = ".spec.serviceRef.name",
        description = "The Kubernetes Service's name"
    ),
    printcolumn(
        name = "SERVICE-PORT",
        type_ = "string",
        json_path = ".spec.serviceRef.port",
        description = "The Kubernetes Service's port"
    ),
    printcolumn(
        name = "TARGET-TYPE",
        type_ = "string",
        json_path = ".spec.targetType",
        description = "The AWS TargetGroup's TargetType"
    ),
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the target group holds exactly the desired targets"
    ),
    printcolumn(
        name = "DESIRED",
        type_ = "integer",
        json_path = ".status.desiredTargets",
        description = "Targets this binding wants registered"
    ),
    printcolumn(
        name = "HEALTHY",
        type_ = "string",
        json_path = ".status.healthyTargets",
        description = "Desired targets AWS reports healthy, of all desired (e.g. 3/3)"
    ),
    printcolumn(
        name = "ARN",
        type_ = "string",
        json_path = ".spec.targetGroupARN",
        description = "The AWS TargetGroup's Amazon Resource Name",
        priority = 1
    ),
    printcolumn(
        name = "NAME",
        type_ = "string",
        json_path = ".spec.targetGroupName",
        description = "The AWS TargetGroup's name",
        priority = 2
    ),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(oldSelf.targetGroupARN) || (has(self.targetGroupARN) && self.targetGroupARN == oldSelf.targetGroupARN)",
        "fieldPath": ".targetGroupARN",
        "message": "targetGroupARN is immutable once set: create a new TargetGroupBinding for another target group"
    },
    {
        "rule": "!has(oldSelf.targetGroupName) || (has(self.targetGroupName) && self.targetGroupName == oldSelf.targetGroupName)",
        "fieldPath": ".targetGroupName",
        "message": "targetGroupName is immutable once set: create a new TargetGroupBinding for another target group"
    },
    {
        "rule": "!has(oldSelf.targetType) || (has(self.targetType) && self.targetType == oldSelf.targetType)",
        "fieldPath": ".targetType",
        "message": "targetType is immutable once set: create a new TargetGroupBinding for another target type"
    },
    {
        "rule": "!has(oldSelf.ipAddressType) || (has(self.ipAddressType) && self.ipAddressType == oldSelf.ipAddressType)",
        "fieldPath": ".ipAddressType",
        "message": "ipAddressType is immutable once set: create a new TargetGroupBinding for another address family"
    },
    {
        "rule": "!(has(oldSelf.multiClusterTargetGroup) && oldSelf.multiClusterTargetGroup) || (has(self.multiClusterTargetGroup) && self.multiClusterTargetGroup)",
        "fieldPath": ".multiClusterTargetGroup",
        "message": "multiClusterTargetGroup cannot be turned off: an exclusive binding deregisters every target it did not register, the other clusters' serving targets included"
    }
]))]
pub struct TargetGroupBindingSpec {
    /// ARN of the target group. Takes precedence over targetGroupName.
    #[serde(rename = "targetGroupARN", default, skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,

    /// Name of the target group, resolved to its ARN when targetGroupARN is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_name: Option<String>,

    /// Share the target group with other clusters or registrars: only targets this cluster
    /// registered are ever deregistered. May be turned on at any time (the targets the binding's
    /// endpoints hold become its claims); once on, it cannot be turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_cluster_target_group: Option<bool>,

    /// How targets are registered: pod IPs (`ip`) or node ports (`instance`). Unset: taken from the
    /// target group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<TargetType>,

    /// Protocol of the target group. Unset: taken from the target group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_protocol: Option<TargetGroupProtocol>,

    /// The Service whose endpoints are registered.
    pub service_ref: ServiceReference,

    /// Security-group ingress rules that admit traffic to the targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<TargetGroupBindingNetworking>,

    /// Restricts instance targets to matching nodes (instance targets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = schema::atomic_label_selector)]
    pub node_selector: Option<LabelSelector>,

    /// Address family of the targets. Unset: taken from the target group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address_type: Option<IpAddressType>,

    /// VPC of the target group; IPs outside its CIDRs are registered with AvailabilityZone `all`.
    #[serde(rename = "vpcID", default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,

    /// IAM role to assume for a target group in another account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_role_arn_to_assume: Option<String>,

    /// External ID for the role assumption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role_external_id: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    Instance,
    Ip,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum TargetGroupProtocol {
    HTTP,
    HTTPS,
    TCP,
    TLS,
    UDP,
    TCP_UDP,
    QUIC,
    TCP_QUIC,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IpAddressType {
    #[default]
    Ipv4,
    Ipv6,
}

/// Reference to a Service in the binding's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ServiceReference {
    /// Name of the Service.
    pub name: String,
    /// Port of the Service: a number matches `spec.ports[].port`, a name matches `spec.ports[].name`.
    #[schemars(extend("minimum" = 1, "maximum" = 65535))]
    pub port: IntOrString,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TargetGroupBindingNetworking {
    /// Ingress rules to allow on the targets' security groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<NetworkingIngressRule>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NetworkingIngressRule {
    /// Peers allowed to reach the targets.
    pub from: Vec<NetworkingPeer>,
    /// Ports allowed; an empty list means every TCP port.
    pub ports: Vec<NetworkingPort>,
}

/// Exactly one of ipBlock or securityGroup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkingPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group: Option<SecurityGroupPeer>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IpBlock {
    /// An IPv4 or IPv6 CIDR.
    #[schemars(extend("pattern" = schema::CIDR_PATTERN))]
    pub cidr: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecurityGroupPeer {
    /// ID of the peer security group, e.g. the load balancer's.
    #[serde(rename = "groupID")]
    pub group_id: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NetworkingPort {
    /// TCP (default) or UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<NetworkingProtocol>,
    /// A port number, or a container port name (ip targets only). Unset: every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1, "maximum" = 65535))]
    pub port: Option<IntOrString>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum NetworkingProtocol {
    TCP,
    UDP,
}

/// Observed state of a binding.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupBindingStatus {
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` tells whether the target group holds exactly the desired targets, with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = schema::condition_constraints)]
    pub conditions: Vec<Condition>,
    /// Number of targets this binding wants registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_targets: Option<i32>,
    /// Number of desired targets found registered (not draining) in the target group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_targets: Option<i32>,
    /// Shared bindings: targets in the group that this binding's ownership record claims, pending
    /// deregistrations included. Kept beside the record so that, should the record be deleted, the
    /// binding knows how many targets it must still account for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_targets: Option<i32>,
    /// ARN the binding resolved to (useful when only targetGroupName is set).
    #[serde(rename = "targetGroupARN", default, skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    /// Desired targets AWS reports healthy, of all desired, e.g. `3/3` (the HEALTHY column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_targets: Option<String>,
    /// This binding's targets per AWS target state, as last read from AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetHealthStatus>,
}

/// This binding's desired targets per AWS target state (DescribeTargetHealth), and when it was read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetHealthStatus {
    pub healthy: i32,
    pub initial: i32,
    pub unhealthy: i32,
    pub draining: i32,
    pub unused: i32,
    pub unavailable: i32,
    /// Desired but not in the target group (not registered yet, or refused).
    pub not_registered: i32,
    /// A few targets that are not healthy, with ELBv2's reason code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<TargetReason>,
    /// When AWS was read (RFC 3339).
    pub read_at: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TargetReason {
    /// `id:port`.
    pub target: String,
    /// e.g. `Target.FailedHealthChecks`.
    pub reason: String,
}
