//! Security-group ingress rules and the ENI lookups that find which groups carry them.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, NetworkInterface, ResourceType, SecurityGroupRule, Tag, TagSpecification,
    UserIdGroupPair,
};

use super::{AwsError, RateLimits, Turn, Urgency};
use crate::metrics::Metrics;
use crate::model::Cidr;
use crate::model::sg_rule::{
    CLAIM_TAG_PREFIX, CLUSTER_TAG, EniGroups, ExistingRule, IngressRule, MANAGED_TAG, Peer, RuleProtocol, claims_of,
    still_unclaimed,
};

/// Most values EC2 takes in one filter.
const FILTER_VALUES: usize = 199;
/// Page size for the paginated Describe calls (EC2 allows 5–1000).
const PAGE_SIZE: i32 = 1000;

/// A failed security-group call. The rule-specific outcomes are split out because the caller
/// acts on each differently; everything else is the shared [`AwsError`].
#[derive(Debug, thiserror::Error)]
pub enum SecurityGroupError {
    /// Another writer added one of the rules since the group was read: re-read and plan again.
    #[error("{op} on {group}: a rule already exists (another writer added it first): {message}")]
    Duplicate { op: &'static str, group: String, message: String },
    /// The group holds as many rules as its quota allows (60 by default).
    #[error("{op} on {group}: the security group is at its rules quota: {message}")]
    RulesLimitExceeded { op: &'static str, group: String, message: String },
    /// The group, or a peer group a rule names, does not exist (the message says which).
    #[error("{op} on {group}: security group not found: {message}")]
    GroupNotFound { op: &'static str, group: String, message: String },
    /// EC2 rejected a rule as malformed (e.g. a peer group id of the wrong shape or VPC).
    #[error("{op} on {group}: invalid rule: {message}")]
    InvalidRule { op: &'static str, group: String, message: String },
    /// A rule id read a moment ago is gone (another cluster revoked it between our read and our
    /// claim): re-read and authorize it again.
    #[error("{op} on {group}: the rule is gone: {message}")]
    RuleNotFound { op: &'static str, group: String, message: String },
    #[error(transparent)]
    Aws(#[from] AwsError),
}

impl SecurityGroupError {
    /// Low-cardinality reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Duplicate { .. } => "SecurityGroupRuleDuplicate",
            Self::RulesLimitExceeded { .. } => "SecurityGroupRulesLimitExceeded",
            Self::GroupNotFound { .. } => "SecurityGroupNotFound",
            Self::InvalidRule { .. } => "InvalidSecurityGroupRule",
            Self::RuleNotFound { .. } => "SecurityGroupRuleNotFound",
            Self::Aws(e) => e.reason(),
        }
    }

    /// Splits the security-group codes out of what [`AwsError::from_sdk`] left generic.
    fn classify(group: &str, err: AwsError) -> Self {
        let AwsError::Api { op, code, message } = err else { return Self::Aws(err) };
        let group = group.to_owned();
        match code.as_str() {
            "InvalidPermission.Duplicate" => Self::Duplicate { op, group, message },
            "RulesPerSecurityGroupLimitExceeded" => Self::RulesLimitExceeded { op, group, message },
            "InvalidGroup.NotFound" => Self::GroupNotFound { op, group, message },
            "InvalidSecurityGroupRuleId.NotFound" => Self::RuleNotFound { op, group, message },
            "InvalidGroupId.Malformed"
            | "InvalidPermission.Malformed"
            | "InvalidParameterValue"
            | "InvalidParameterCombination" => Self::InvalidRule { op, group, message },
            _ => Self::Aws(AwsError::Api { op, code, message }),
        }
    }

    /// The rule or group is already gone, which is what a revoke wanted.
    fn is_gone(&self) -> bool {
        match self {
            Self::GroupNotFound { .. } | Self::RuleNotFound { .. } => true,
            Self::Aws(AwsError::Api { code, .. }) => code == "InvalidPermission.NotFound",
            _ => false,
        }
    }
}

/// The security-group operations `spec.networking` needs.
pub trait SecurityGroups: Send + Sync + 'static {
    /// Every ingress rule of `group` the agent can express, with who created and claims it.
    /// Rules of other shapes (all protocols, ICMP, prefix lists) are left out: they never match a
    /// planned rule and are never this agent's to revoke.
    fn ingress_rules(&self, group: &str) -> impl Future<Output = Result<Vec<ExistingRule>, SecurityGroupError>> + Send;

    /// Every group holding a rule `cluster` claims, or one an agent created that nobody claims any
    /// more, in any VPC: the groups to plan even when no binding points at them (the last one was
    /// deleted, or its nodes changed groups).
    fn groups_with_rules_of(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<BTreeSet<String>, SecurityGroupError>> + Send;

    /// Adds one rule to `group`, tagged as created by an agent and claimed by `cluster`.
    /// [`SecurityGroupError::Duplicate`] means another writer got there first.
    fn authorize(
        &self,
        group: &str,
        rule: &IngressRule,
        cluster: &str,
    ) -> impl Future<Output = Result<(), SecurityGroupError>> + Send;

    /// Adds `cluster`'s claim tag to rules an agent created.
    fn claim(
        &self,
        group: &str,
        rule_ids: &[String],
        cluster: &str,
    ) -> impl Future<Output = Result<(), SecurityGroupError>> + Send;

    /// Removes `cluster`'s claims (its claim tag, and the creator tag where it names `cluster`).
    fn release(
        &self,
        group: &str,
        rule_ids: &[String],
        cluster: &str,
    ) -> impl Future<Output = Result<(), SecurityGroupError>> + Send;

    /// Removes the rules of `rule_ids` that nobody claims once this write's turn comes: the group
    /// is read again after the wait, so a claim another cluster made meanwhile keeps its rule. A
    /// rule (or group) already gone counts as removed.
    fn revoke(&self, group: &str, rule_ids: &[String]) -> impl Future<Output = Result<(), SecurityGroupError>> + Send;

    /// Instance id → the security groups (with tags) of its primary network interface (device
    /// index 0). Unknown or terminated instances are absent from the answer.
    fn instance_enis(
        &self,
        instance_ids: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, EniGroups>, SecurityGroupError>> + Send;

    /// Private IP (as given) → the network interface in `vpc_id` holding it, with its groups.
    /// IPs no interface holds are absent from the answer.
    fn enis_for_ips(
        &self,
        vpc_id: &str,
        ips: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, EniGroups>, SecurityGroupError>> + Send;
}

/// [`SecurityGroups`] over the EC2 API. Writes share the target-write rate limit; reads the
/// Describe one.
#[derive(Clone)]
pub struct Ec2SecurityGroups {
    ec2: aws_sdk_ec2::Client,
    limits: Arc<RateLimits>,
    metrics: Arc<Metrics>,
}

impl Ec2SecurityGroups {
    pub fn new(config: &aws_config::SdkConfig, limits: Arc<RateLimits>, metrics: Arc<Metrics>) -> Self {
        Self { ec2: aws_sdk_ec2::Client::new(config), limits, metrics }
    }

    fn record<T>(&self, op: &'static str, result: &Result<T, SecurityGroupError>) {
        self.metrics.aws_call(op, result.as_ref().err().map_or("success", SecurityGroupError::reason));
    }

    /// Every page of a paginated Describe call: `page(token)` sends one request and returns its
    /// output with the next token. Each page waits for the describe rate limit and is counted.
    async fn every_page<O, F, Fut>(&self, op: &'static str, mut page: F) -> Result<Vec<O>, SecurityGroupError>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: Future<Output = Result<(O, Option<String>), SecurityGroupError>>,
    {
        let mut pages = Vec::new();
        let mut token = None;
        loop {
            self.limits.describes.acquire().await;
            let result = page(token.take()).await;
            self.record(op, &result);
            let (out, next_token) = result?;
            pages.push(out);
            token = next_token.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(pages);
            }
        }
    }

    /// Tags of each group in `ids`; a group deleted meanwhile just has none. Filtered rather than
    /// asked for by id, so one missing group does not fail the whole lookup.
    async fn group_tags(
        &self,
        ids: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, SecurityGroupError> {
        const OP: &str = "DescribeSecurityGroups";
        let ids: Vec<String> = ids.iter().cloned().collect();
        let mut tags = BTreeMap::new();
        for chunk in ids.chunks(FILTER_VALUES) {
            let pages = self
                .every_page(OP, |token| async move {
                    let out = self
                        .ec2
                        .describe_security_groups()
                        .filters(filter("group-id", chunk))
                        .max_results(PAGE_SIZE)
                        .set_next_token(token)
                        .send()
                        .await
                        .map_err(|e| SecurityGroupError::Aws(AwsError::from_sdk(OP, "", e)))?;
                    let next = out.next_token().map(str::to_owned);
                    Ok((out, next))
                })
                .await?;
            for group in pages.iter().flat_map(|out| out.security_groups()) {
                if let Some(id) = group.group_id() {
                    tags.insert(id.to_owned(), tag_map(group.tags()));
                }
            }
        }
        Ok(tags)
    }

    /// Attaches tags to the groups of each ENI found.
    async fn with_tags(
        &self,
        found: BTreeMap<String, (String, Vec<String>)>,
    ) -> Result<BTreeMap<String, EniGroups>, SecurityGroupError> {
        let ids: BTreeSet<String> = found.values().flat_map(|(_, groups)| groups.iter().cloned()).collect();
        let tags = if ids.is_empty() { BTreeMap::new() } else { self.group_tags(&ids).await? };
        Ok(found
            .into_iter()
            .map(|(key, (eni_id, groups))| {
                let groups =
                    groups.into_iter().map(|g| (g.clone(), tags.get(&g).cloned().unwrap_or_default())).collect();
                (key, EniGroups { eni_id, groups })
            })
            .collect())
    }

    /// Revokes those of `rule_ids` that are still unclaimed once it is this write's turn: the
    /// planning read may be a long write-queue wait old by now, so the group is read again right
    /// before the call, which is sent at once.
    async fn revoke_unclaimed(&self, group: &str, rule_ids: &[String]) -> Result<(), SecurityGroupError> {
        const OP: &str = "RevokeSecurityGroupIngress";
        if rule_ids.is_empty() {
            return Ok(());
        }
        self.take_turn(OP).await?;
        let fresh = match self.ingress_rules(group).await {
            Ok(fresh) => fresh,
            Err(e) if e.is_gone() => return Ok(()),
            Err(e) => return Err(e),
        };
        let rule_ids = still_unclaimed(rule_ids, &fresh);
        if rule_ids.is_empty() {
            return Ok(());
        }
        let request =
            self.ec2.revoke_security_group_ingress().group_id(group).set_security_group_rule_ids(Some(rule_ids));
        self.send(OP, group, request.send()).await
    }

    /// Sends a write on `group` under the write limit and fence (the request only goes out when
    /// awaited), classified and counted.
    async fn write<T, E, R>(
        &self,
        op: &'static str,
        group: &str,
        request: impl std::future::Future<Output = Result<T, aws_sdk_ec2::error::SdkError<E, R>>>,
    ) -> Result<(), SecurityGroupError>
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        self.take_turn(op).await?;
        self.send(op, group, request).await
    }

    /// Waits for this write's turn under the write limit and fence. Rules new targets need, and
    /// the claims that keep them, rank with registrations.
    async fn take_turn(&self, op: &'static str) -> Result<(), SecurityGroupError> {
        let turn = Turn::new(Urgency::Add);
        self.limits.target_writes.acquire(op, &turn).await.map_err(SecurityGroupError::Aws)
    }

    /// Sends a write whose turn under the write limit was already taken, classified and counted.
    async fn send<T, E, R>(
        &self,
        op: &'static str,
        group: &str,
        request: impl std::future::Future<Output = Result<T, aws_sdk_ec2::error::SdkError<E, R>>>,
    ) -> Result<(), SecurityGroupError>
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let result =
            request.await.map(drop).map_err(|e| SecurityGroupError::classify(group, AwsError::from_sdk(op, group, e)));
        self.record(op, &result);
        result
    }
}

impl SecurityGroups for Ec2SecurityGroups {
    async fn ingress_rules(&self, group: &str) -> Result<Vec<ExistingRule>, SecurityGroupError> {
        const OP: &str = "DescribeSecurityGroupRules";
        let pages = self
            .every_page(OP, |token| async move {
                let out = self
                    .ec2
                    .describe_security_group_rules()
                    .filters(filter("group-id", &[group.to_owned()]))
                    .max_results(PAGE_SIZE)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| SecurityGroupError::classify(group, AwsError::from_sdk(OP, group, e)))?;
                let next = out.next_token().map(str::to_owned);
                Ok((out, next))
            })
            .await?;
        let mut rules: Vec<ExistingRule> =
            pages.iter().flat_map(|out| out.security_group_rules()).filter_map(|r| existing_rule(r, group)).collect();
        rules.sort();
        Ok(rules)
    }

    async fn groups_with_rules_of(&self, cluster: &str) -> Result<BTreeSet<String>, SecurityGroupError> {
        const OP: &str = "DescribeSecurityGroupRules";
        let by_claim = filter("tag-key", &[format!("{CLAIM_TAG_PREFIX}{cluster}")]);
        let by_creator = filter(&format!("tag:{CLUSTER_TAG}"), &[cluster.to_owned()]);
        let created = filter("tag-key", &[MANAGED_TAG.to_owned()]);
        let mut groups = BTreeSet::new();
        for tag_filter in [by_claim, by_creator, created] {
            let pages = self
                .every_page(OP, |token| {
                    let tag_filter = tag_filter.clone();
                    async move {
                        let out = self
                            .ec2
                            .describe_security_group_rules()
                            .filters(tag_filter)
                            .max_results(PAGE_SIZE)
                            .set_next_token(token)
                            .send()
                            .await
                            .map_err(|e| SecurityGroupError::Aws(AwsError::from_sdk(OP, "", e)))?;
                        let next = out.next_token().map(str::to_owned);
                        Ok((out, next))
                    }
                })
                .await?;
            // The filter is the server's; the claim check is ours, so a loose match cannot widen it.
            groups.extend(
                pages
                    .iter()
                    .flat_map(|out| out.security_group_rules())
                    .filter(|r| r.is_egress() == Some(false))
                    .filter(|r| {
                        let (managed, claims) = claims_of(&tag_map(r.tags()));
                        claims.contains(cluster) || (managed && claims.is_empty())
                    })
                    .filter_map(|r| r.group_id().map(str::to_owned)),
            );
        }
        Ok(groups)
    }

    async fn authorize(&self, group: &str, rule: &IngressRule, cluster: &str) -> Result<(), SecurityGroupError> {
        const OP: &str = "AuthorizeSecurityGroupIngress";
        // The same for every cluster: two clusters authorizing one rule at once must collide
        // (Duplicate) rather than, where an emulator tells descriptions apart, leave two copies.
        let description = "managed by tgb-agent";
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::SecurityGroupRule)
            .tags(Tag::builder().key(CLUSTER_TAG).value(cluster).build())
            .tags(Tag::builder().key(MANAGED_TAG).value("true").build())
            .build();
        let request = self
            .ec2
            .authorize_security_group_ingress()
            .group_id(group)
            .ip_permissions(permission(rule, description))
            .tag_specifications(tags);
        self.write(OP, group, request.send()).await
    }

    async fn claim(&self, group: &str, rule_ids: &[String], cluster: &str) -> Result<(), SecurityGroupError> {
        const OP: &str = "CreateTags";
        if rule_ids.is_empty() {
            return Ok(());
        }
        let request = self
            .ec2
            .create_tags()
            .set_resources(Some(rule_ids.to_vec()))
            .tags(Tag::builder().key(format!("{CLAIM_TAG_PREFIX}{cluster}")).value("true").build());
        self.write(OP, group, request.send()).await
    }

    async fn release(&self, group: &str, rule_ids: &[String], cluster: &str) -> Result<(), SecurityGroupError> {
        const OP: &str = "DeleteTags";
        if rule_ids.is_empty() {
            return Ok(());
        }
        // A rule of the first version carries only the cluster tag: mark it an agent's first, or
        // releasing it would make it look hand-made, and nobody would ever revoke it.
        let mark = self
            .ec2
            .create_tags()
            .set_resources(Some(rule_ids.to_vec()))
            .tags(Tag::builder().key(MANAGED_TAG).value("true").build());
        self.write("CreateTags", group, mark.send()).await?;
        // With a value, EC2 deletes a tag only when its value matches: another creator's tag stays.
        let request = self
            .ec2
            .delete_tags()
            .set_resources(Some(rule_ids.to_vec()))
            .tags(Tag::builder().key(format!("{CLAIM_TAG_PREFIX}{cluster}")).build())
            .tags(Tag::builder().key(CLUSTER_TAG).value(cluster).build());
        self.write(OP, group, request.send()).await
    }

    async fn revoke(&self, group: &str, rule_ids: &[String]) -> Result<(), SecurityGroupError> {
        match self.revoke_unclaimed(group, rule_ids).await {
            Err(e) if e.is_gone() && rule_ids.len() > 1 => {
                // One id already gone may have failed the whole call: each again on its own, each
                // read again after its own wait (a claim may land during any of them).
                for id in rule_ids {
                    match self.revoke_unclaimed(group, std::slice::from_ref(id)).await {
                        Err(e) if !e.is_gone() => return Err(e),
                        _ => {}
                    }
                }
                Ok(())
            }
            Err(e) if e.is_gone() => Ok(()),
            other => other,
        }
    }

    async fn instance_enis(&self, instance_ids: &[String]) -> Result<BTreeMap<String, EniGroups>, SecurityGroupError> {
        const OP: &str = "DescribeInstances";
        let ids: Vec<String> = instance_ids.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        let mut found = BTreeMap::new();
        for chunk in ids.chunks(FILTER_VALUES) {
            // Filtered, not by InstanceIds: one terminated node must not fail the lookup.
            let pages = self
                .every_page(OP, |token| async move {
                    let out = self
                        .ec2
                        .describe_instances()
                        .filters(filter("instance-id", chunk))
                        .max_results(PAGE_SIZE)
                        .set_next_token(token)
                        .send()
                        .await
                        .map_err(|e| SecurityGroupError::Aws(AwsError::from_sdk(OP, &chunk.join(","), e)))?;
                    let next = out.next_token().map(str::to_owned);
                    Ok((out, next))
                })
                .await?;
            for instance in pages.iter().flat_map(|out| out.reservations()).flat_map(|r| r.instances()) {
                let Some(id) = instance.instance_id() else { continue };
                let primary = instance
                    .network_interfaces()
                    .iter()
                    .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0));
                if let Some(eni) = primary {
                    let groups = eni.groups().iter().filter_map(|g| g.group_id().map(str::to_owned)).collect();
                    let eni_id = eni.network_interface_id().unwrap_or_default().to_owned();
                    found.insert(id.to_owned(), (eni_id, groups));
                }
            }
        }
        self.with_tags(found).await
    }

    async fn enis_for_ips(
        &self,
        vpc_id: &str,
        ips: &[String],
    ) -> Result<BTreeMap<String, EniGroups>, SecurityGroupError> {
        // Compare parsed addresses: EC2 may spell an IPv6 address differently from the pod.
        let wanted: BTreeMap<IpAddr, &String> = ips.iter().filter_map(|s| Some((s.trim().parse().ok()?, s))).collect();
        let mut found = BTreeMap::new();
        let record = |eni: &NetworkInterface, ip: &IpAddr, found: &mut BTreeMap<String, (String, Vec<String>)>| {
            if let Some(original) = wanted.get(ip) {
                let groups = eni.groups().iter().filter_map(|g| g.group_id().map(str::to_owned)).collect();
                found.insert((*original).clone(), (eni.network_interface_id().unwrap_or_default().to_owned(), groups));
            }
        };
        // Pod IPs that are an interface's own addresses: secondary IPs (VPC CNI), branch ENIs
        // (security groups for pods), Fargate.
        for (filter_name, v6) in [("addresses.private-ip-address", false), ("ipv6-addresses.ipv6-address", true)] {
            let values: Vec<String> = wanted.keys().filter(|ip| ip.is_ipv6() == v6).map(IpAddr::to_string).collect();
            for eni in self.network_interfaces(vpc_id, filter_name, &values).await? {
                for ip in eni_addresses(&eni) {
                    record(&eni, &ip, &mut found);
                }
            }
        }
        // The rest may sit in a prefix delegated to a node's interface (VPC CNI prefix mode: /28
        // for IPv4, /80 for IPv6); EC2 can filter by exact prefix, so ask for each IP's prefix.
        let rest: Vec<IpAddr> = wanted.iter().filter(|(_, s)| !found.contains_key(**s)).map(|(ip, _)| *ip).collect();
        for (filter_name, v6) in [("ipv4-prefixes.ipv4-prefix", false), ("ipv6-prefixes.ipv6-prefix", true)] {
            let prefixes: BTreeSet<String> =
                rest.iter().filter(|ip| ip.is_ipv6() == v6).map(|ip| delegated_prefix(*ip)).collect();
            if prefixes.is_empty() {
                continue;
            }
            let prefixes: Vec<String> = prefixes.into_iter().collect();
            // A fallback: if it fails, those IPs stay unresolved and are reported as such.
            let interfaces = match self.network_interfaces(vpc_id, filter_name, &prefixes).await {
                Ok(interfaces) => interfaces,
                Err(error) => {
                    tracing::warn!(%error, vpc_id, "looking pod IPs up by delegated prefix failed");
                    continue;
                }
            };
            for eni in interfaces {
                let delegated: Vec<Cidr> = eni_prefixes(&eni).iter().filter_map(|p| p.parse().ok()).collect();
                for ip in rest.iter().filter(|ip| delegated.iter().any(|p| p.contains(**ip))) {
                    record(&eni, ip, &mut found);
                }
            }
        }
        self.with_tags(found).await
    }
}

impl Ec2SecurityGroups {
    /// Network interfaces in `vpc_id` matching `filter_name` ∈ `values`, every page.
    async fn network_interfaces(
        &self,
        vpc_id: &str,
        filter_name: &str,
        values: &[String],
    ) -> Result<Vec<NetworkInterface>, SecurityGroupError> {
        const OP: &str = "DescribeNetworkInterfaces";
        let mut interfaces = Vec::new();
        for chunk in values.chunks(FILTER_VALUES) {
            let pages = self
                .every_page(OP, |token| async move {
                    let out = self
                        .ec2
                        .describe_network_interfaces()
                        .filters(filter("vpc-id", &[vpc_id.to_owned()]))
                        .filters(filter(filter_name, chunk))
                        .max_results(PAGE_SIZE)
                        .set_next_token(token)
                        .send()
                        .await
                        .map_err(|e| SecurityGroupError::Aws(AwsError::from_sdk(OP, vpc_id, e)))?;
                    let next = out.next_token().map(str::to_owned);
                    Ok((out, next))
                })
                .await?;
            interfaces.extend(pages.iter().flat_map(|out| out.network_interfaces()).cloned());
        }
        Ok(interfaces)
    }
}

/// The prefix the VPC CNI would have delegated for `ip`: its /28 (IPv4) or /80 (IPv6).
fn delegated_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{}/28", std::net::Ipv4Addr::from(u32::from(v4) & !0xf)),
        IpAddr::V6(v6) => format!("{}/80", std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 48) - 1))),
    }
}

/// Every prefix delegated to an interface.
fn eni_prefixes(eni: &NetworkInterface) -> Vec<String> {
    let v4 = eni.ipv4_prefixes().iter().filter_map(|p| p.ipv4_prefix());
    let v6 = eni.ipv6_prefixes().iter().filter_map(|p| p.ipv6_prefix());
    v4.chain(v6).map(str::to_owned).collect()
}

fn filter(name: &str, values: &[String]) -> Filter {
    Filter::builder().name(name).set_values(Some(values.to_vec())).build()
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter().filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned()))).collect()
}

/// Every private address of an interface, primary, secondary and IPv6.
fn eni_addresses(eni: &NetworkInterface) -> Vec<IpAddr> {
    let secondary = eni.private_ip_addresses().iter().filter_map(|a| a.private_ip_address());
    let v4 = eni.private_ip_address().into_iter().chain(secondary);
    let v6 = eni.ipv6_addresses().iter().filter_map(|a| a.ipv6_address());
    v4.chain(v6).filter_map(|s| s.parse().ok()).collect()
}

/// An ingress rule of `group` as the planner sees it, or `None` for egress rules, other groups'
/// rules and shapes the agent never creates.
fn existing_rule(r: &SecurityGroupRule, group: &str) -> Option<ExistingRule> {
    if r.is_egress() != Some(false) || r.group_id().is_some_and(|g| g != group) {
        return None;
    }
    let protocol = RuleProtocol::from_ec2(r.ip_protocol()?)?;
    let from_port = u16::try_from(r.from_port()?).ok()?;
    let to_port = u16::try_from(r.to_port()?).ok()?;
    let peer = match (r.referenced_group_info().and_then(|g| g.group_id()), r.cidr_ipv4(), r.cidr_ipv6()) {
        (Some(sg), None, None) => Peer::SecurityGroup(sg.to_owned()),
        (None, Some(v4), None) => Peer::reported_cidr(v4, false),
        (None, None, Some(v6)) => Peer::reported_cidr(v6, true),
        _ => return None,
    };
    let (managed, claims) = claims_of(&tag_map(r.tags()));
    Some(ExistingRule {
        rule_id: r.security_group_rule_id()?.to_owned(),
        rule: IngressRule::new(protocol, from_port, to_port, peer),
        managed,
        claims,
    })
}

/// One EC2 permission for one rule.
fn permission(rule: &IngressRule, description: &str) -> IpPermission {
    let base = IpPermission::builder()
        .ip_protocol(rule.protocol.as_ec2())
        .from_port(i32::from(rule.from_port))
        .to_port(i32::from(rule.to_port));
    match &rule.peer {
        Peer::SecurityGroup(id) => {
            base.user_id_group_pairs(UserIdGroupPair::builder().group_id(id).description(description).build())
        }
        Peer::Ipv4Cidr(cidr) => base.ip_ranges(IpRange::builder().cidr_ip(cidr).description(description).build()),
        Peer::Ipv6Cidr(cidr) => base.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(cidr).description(description).build()),
    }
    .build()
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::ReferencedSecurityGroup;

    use super::*;

    fn row(id: &str) -> aws_sdk_ec2::types::builders::SecurityGroupRuleBuilder {
        SecurityGroupRule::builder()
            .security_group_rule_id(id)
            .group_id("sg-target")
            .is_egress(false)
            .ip_protocol("tcp")
            .from_port(8080)
            .to_port(8080)
    }

    fn tag(k: &str, v: &str) -> Tag {
        Tag::builder().key(k).value(v).build()
    }

    #[test]
    fn a_rule_revoked_under_a_claim_is_told_apart() {
        let api = |code: &str| AwsError::Api { op: "CreateTags", code: code.into(), message: "m".into() };
        let gone = SecurityGroupError::classify("sg-1", api("InvalidSecurityGroupRuleId.NotFound"));
        assert_eq!(gone.reason(), "SecurityGroupRuleNotFound");
        assert!(gone.is_gone());
        let other = SecurityGroupError::classify("sg-1", api("InternalError"));
        assert!(!matches!(other, SecurityGroupError::RuleNotFound { .. }));
    }

    #[test]
    fn reads_each_peer_kind_and_owner() {
        let sg = row("sgr-1")
            .referenced_group_info(ReferencedSecurityGroup::builder().group_id("sg-lb").user_id("123").build())
            .tags(tag(CLUSTER_TAG, "prod"))
            .build();
        let got = existing_rule(&sg, "sg-target").expect("rule");
        assert_eq!(got.rule.to_string(), "tcp 8080-8080 from sg-lb");
        assert!(got.managed && got.claims.contains("prod"));
        assert_eq!(got.rule_id, "sgr-1");

        let v4 = row("sgr-2").cidr_ipv4("10.0.0.0/16").build();
        let got = existing_rule(&v4, "sg-target").expect("rule");
        assert_eq!(got.rule.peer, Peer::Ipv4Cidr("10.0.0.0/16".into()));
        assert!(!got.managed && got.claims.is_empty());

        let claim = format!("{CLAIM_TAG_PREFIX}green");
        let v6 = row("sgr-3")
            .ip_protocol("udp")
            .cidr_ipv6("2600:1F18::/56")
            .tags(tag(CLUSTER_TAG, "blue"))
            .tags(tag(&claim, "true"))
            .build();
        let got = existing_rule(&v6, "sg-target").expect("rule");
        assert_eq!(got.rule.to_string(), "udp 8080-8080 from 2600:1f18::/56");
        assert_eq!(got.claims.iter().map(String::as_str).collect::<Vec<_>>(), vec!["blue", "green"]);
    }

    #[test]
    fn skips_what_the_agent_never_manages() {
        let skipped = [
            row("e").is_egress(true).cidr_ipv4("0.0.0.0/0").build(),
            row("g").group_id("sg-other").cidr_ipv4("10.0.0.0/8").build(),
            row("all").ip_protocol("-1").from_port(-1).to_port(-1).cidr_ipv4("0.0.0.0/0").build(),
            row("icmp").ip_protocol("icmp").cidr_ipv4("0.0.0.0/0").build(),
            row("pl").prefix_list_id("pl-123").build(),
            row("none").build(),
            SecurityGroupRule::builder().group_id("sg-target").is_egress(false).cidr_ipv4("10.0.0.0/8").build(),
        ];
        for r in &skipped {
            assert_eq!(existing_rule(r, "sg-target"), None, "{r:?}");
        }
    }

    #[test]
    fn one_permission_per_rule_with_the_description() {
        let p = permission(
            &IngressRule::new(RuleProtocol::Tcp, 80, 80, Peer::SecurityGroup("sg-lb".into())),
            "tgb-agent: prod",
        );
        assert_eq!((p.ip_protocol(), p.from_port(), p.to_port()), (Some("tcp"), Some(80), Some(80)));
        assert_eq!(p.user_id_group_pairs()[0].group_id(), Some("sg-lb"));
        assert_eq!(p.user_id_group_pairs()[0].description(), Some("tgb-agent: prod"));
        assert!(p.ip_ranges().is_empty() && p.ipv6_ranges().is_empty());

        let p = permission(&IngressRule::new(RuleProtocol::Udp, 0, 65535, Peer::Ipv6Cidr("::/0".into())), "d");
        assert_eq!((p.ip_protocol(), p.from_port(), p.to_port()), (Some("udp"), Some(0), Some(65535)));
        assert_eq!(p.ipv6_ranges()[0].cidr_ipv6(), Some("::/0"));

        let p = permission(&IngressRule::new(RuleProtocol::Tcp, 1, 2, Peer::Ipv4Cidr("10.0.0.0/8".into())), "d");
        assert_eq!(p.ip_ranges()[0].cidr_ip(), Some("10.0.0.0/8"));
    }

    #[test]
    fn classifies_rule_errors() {
        let api = |code: &str| AwsError::Api { op: "Op", code: code.into(), message: "m".into() };
        let reason = |code: &str| SecurityGroupError::classify("sg-1", api(code)).reason();
        assert_eq!(reason("InvalidPermission.Duplicate"), "SecurityGroupRuleDuplicate");
        assert_eq!(reason("RulesPerSecurityGroupLimitExceeded"), "SecurityGroupRulesLimitExceeded");
        assert_eq!(reason("InvalidGroup.NotFound"), "SecurityGroupNotFound");
        assert_eq!(reason("InvalidGroupId.Malformed"), "InvalidSecurityGroupRule");
        assert_eq!(reason("Whatever"), "AWSError");
        let throttled = AwsError::Throttled { op: "Op", message: "m".into() };
        assert_eq!(SecurityGroupError::classify("sg-1", throttled).reason(), "Throttled");
        assert!(SecurityGroupError::classify("sg-1", api("InvalidPermission.NotFound")).is_gone());
        assert!(SecurityGroupError::classify("sg-1", api("InvalidSecurityGroupRuleId.NotFound")).is_gone());
        assert!(SecurityGroupError::classify("sg-1", api("InvalidGroup.NotFound")).is_gone());
        assert!(!SecurityGroupError::classify("sg-1", api("InvalidPermission.Duplicate")).is_gone());
        let text = SecurityGroupError::classify("sg-1", api("RulesPerSecurityGroupLimitExceeded")).to_string();
        assert!(text.contains("sg-1") && text.contains("quota"), "{text}");
    }

    #[test]
    fn addresses_of_an_eni() {
        use aws_sdk_ec2::types::{NetworkInterface, NetworkInterfaceIpv6Address, NetworkInterfacePrivateIpAddress};
        let eni = NetworkInterface::builder()
            .private_ip_address("10.0.0.4")
            .private_ip_addresses(NetworkInterfacePrivateIpAddress::builder().private_ip_address("10.0.0.4").build())
            .private_ip_addresses(NetworkInterfacePrivateIpAddress::builder().private_ip_address("10.0.0.9").build())
            .ipv6_addresses(NetworkInterfaceIpv6Address::builder().ipv6_address("2600:1F18::0001").build())
            .build();
        let got: BTreeSet<IpAddr> = eni_addresses(&eni).into_iter().collect();
        let expected: BTreeSet<IpAddr> =
            ["10.0.0.4", "10.0.0.9", "2600:1f18::1"].iter().map(|s| s.parse().expect("ip")).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn delegated_prefixes_are_the_cni_s_28_and_80() {
        let prefix = |ip: &str| delegated_prefix(ip.parse().expect("ip"));
        assert_eq!(prefix("10.0.3.77"), "10.0.3.64/28");
        assert_eq!(prefix("10.0.3.64"), "10.0.3.64/28");
        assert_eq!(prefix("10.0.3.79"), "10.0.3.64/28");
        assert_eq!(prefix("2600:1f18:1:2:3:4:5:6"), "2600:1f18:1:2:3::/80");
        let eni = NetworkInterface::builder()
            .ipv4_prefixes(aws_sdk_ec2::types::Ipv4PrefixSpecification::builder().ipv4_prefix("10.0.3.64/28").build())
            .build();
        let delegated: Vec<Cidr> = eni_prefixes(&eni).iter().filter_map(|p| p.parse().ok()).collect();
        assert!(delegated.iter().any(|p| p.contains("10.0.3.77".parse().expect("ip"))));
        assert!(!delegated.iter().any(|p| p.contains("10.0.3.80".parse().expect("ip"))));
    }
}
