//! AWS fixtures, created the way `terraform/` would: a VPC with two subnets, the load balancer's
//! security group, worker-node instances in a cluster-tagged security group, an ALB with a
//! listener, and target groups without targets.

use anyhow::Context;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ProtocolEnum, TargetGroupAttribute, TargetTypeEnum,
};

use crate::Sandbox;

/// What [`seed_aws`] created.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
    pub lb_security_group: String,
    pub load_balancer_arn: String,
    pub ip_target_group_arn: String,
    pub instance_target_group_arn: String,
    /// The worker nodes' security group, tagged `kubernetes.io/cluster/<prefix>` = owned.
    pub node_security_group: String,
    /// One running instance per subnet, in the node security group: the cluster's nodes.
    pub instances: Vec<Instance>,
}

/// A fixture instance, as a Node's `spec.providerID` would name it.
#[derive(Clone, Debug)]
pub struct Instance {
    pub id: String,
    pub availability_zone: String,
    pub private_ip: String,
    pub primary_eni: String,
}

impl Instance {
    pub fn provider_id(&self) -> String {
        format!("aws:///{}/{}", self.availability_zone, self.id)
    }
}

/// Creates the fixture; target group names are prefixed with `prefix` (short: names are ≤ 32
/// characters). The ip group drains deregistered targets for `drain_seconds`.
pub async fn seed_aws(sandbox: &Sandbox, prefix: &str, drain_seconds: u32) -> anyhow::Result<Fixture> {
    let config = sandbox.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&config);

    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.context("CreateVpc")?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).context("VPC id")?.to_owned();
    let mut subnet_ids = Vec::new();
    for (i, az) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.0.{i}.0/24"))
            .availability_zone(*az)
            .send()
            .await
            .context("CreateSubnet")?;
        subnet_ids.push(subnet.subnet().and_then(|s| s.subnet_id()).context("subnet id")?.to_owned());
    }
    let sg = ec2
        .create_security_group()
        .group_name(format!("{prefix}-alb"))
        .description("load balancer")
        .vpc_id(&vpc_id)
        .send()
        .await
        .context("CreateSecurityGroup")?;
    let lb_security_group = sg.group_id().context("SG id")?.to_owned();
    let lb = elbv2
        .create_load_balancer()
        .name(format!("{prefix}-alb"))
        .set_subnets(Some(subnet_ids.clone()))
        .security_groups(&lb_security_group)
        .send()
        .await
        .context("CreateLoadBalancer")?;
    let load_balancer_arn =
        lb.load_balancers().first().and_then(|l| l.load_balancer_arn()).context("LB ARN")?.to_owned();

    let node_sg = ec2
        .create_security_group()
        .group_name(format!("{prefix}-nodes"))
        .description("worker nodes")
        .vpc_id(&vpc_id)
        .send()
        .await
        .context("CreateSecurityGroup (nodes)")?;
    let node_security_group = node_sg.group_id().context("node SG id")?.to_owned();
    ec2.create_tags()
        .resources(&node_security_group)
        .tags(aws_sdk_ec2::types::Tag::builder().key(format!("kubernetes.io/cluster/{prefix}")).value("owned").build())
        .send()
        .await
        .context("CreateTags (node SG)")?;
    let mut instances = Vec::new();
    for (subnet, az) in subnet_ids.iter().zip(["us-east-1a", "us-east-1b"]) {
        let run = ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
            .security_group_ids(&node_security_group)
            .send()
            .await
            .context("RunInstances")?;
        let instance = run.instances().first().context("no instance")?;
        let eni = instance.network_interfaces().first().context("no ENI")?;
        instances.push(Instance {
            id: instance.instance_id().context("instance id")?.to_owned(),
            availability_zone: az.to_owned(),
            private_ip: instance.private_ip_address().context("private IP")?.to_owned(),
            primary_eni: eni.network_interface_id().context("ENI id")?.to_owned(),
        });
    }

    let mut arns = Vec::new();
    for (suffix, target_type) in [("ip", TargetTypeEnum::Ip), ("instance", TargetTypeEnum::Instance)] {
        let tg = elbv2
            .create_target_group()
            .name(format!("{prefix}-{suffix}"))
            .protocol(ProtocolEnum::Http)
            .port(80)
            .vpc_id(&vpc_id)
            .target_type(target_type)
            .send()
            .await
            .context("CreateTargetGroup")?;
        let arn = tg.target_groups().first().and_then(|t| t.target_group_arn()).context("TG ARN")?.to_owned();
        elbv2
            .modify_target_group_attributes()
            .target_group_arn(&arn)
            .attributes(
                TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(drain_seconds.to_string())
                    .build(),
            )
            .send()
            .await
            .context("ModifyTargetGroupAttributes")?;
        arns.push(arn);
    }
    elbv2
        .create_listener()
        .load_balancer_arn(&load_balancer_arn)
        .protocol(ProtocolEnum::Http)
        .port(80)
        .default_actions(Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(&arns[0]).build())
        .send()
        .await
        .context("CreateListener")?;
    Ok(Fixture {
        vpc_id,
        subnet_ids,
        lb_security_group,
        load_balancer_arn,
        ip_target_group_arn: arns[0].clone(),
        instance_target_group_arn: arns[1].clone(),
        node_security_group,
        instances,
    })
}

/// The targets of a group as `id:port` → state, draining ones included.
pub async fn targets(sandbox: &Sandbox, arn: &str) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&sandbox.aws().await);
    let out = elbv2.describe_target_health().target_group_arn(arn).send().await.context("DescribeTargetHealth")?;
    Ok(out
        .target_health_descriptions()
        .iter()
        .filter_map(|d| {
            let t = d.target()?;
            let state = d.target_health().and_then(|h| h.state()).map(|s| s.as_str().to_owned()).unwrap_or_default();
            Some((format!("{}:{}", t.id()?, t.port()?), state))
        })
        .collect())
}

/// An extra ip target group in the fixture's VPC, attached to no listener (so tests may delete it).
pub async fn create_ip_target_group(sandbox: &Sandbox, fixture: &Fixture, name: &str) -> anyhow::Result<String> {
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&sandbox.aws().await);
    let tg = elbv2
        .create_target_group()
        .name(name)
        .protocol(ProtocolEnum::Http)
        .port(80)
        .vpc_id(&fixture.vpc_id)
        .target_type(TargetTypeEnum::Ip)
        .send()
        .await
        .context("CreateTargetGroup")?;
    Ok(tg.target_groups().first().and_then(|t| t.target_group_arn()).context("TG ARN")?.to_owned())
}

/// Registers `id:port` targets directly, as another cluster or a person would.
pub async fn register_directly(sandbox: &Sandbox, arn: &str, targets: &[(&str, i32)]) -> anyhow::Result<()> {
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&sandbox.aws().await);
    let targets = targets.iter().map(|(id, port)| {
        aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder().id(*id).port(*port).build()
    });
    elbv2
        .register_targets()
        .target_group_arn(arn)
        .set_targets(Some(targets.collect()))
        .send()
        .await
        .context("RegisterTargets")?;
    Ok(())
}

/// Deregisters `id:port` targets directly, as a person at the console would.
pub async fn deregister_directly(sandbox: &Sandbox, arn: &str, targets: &[(&str, i32)]) -> anyhow::Result<()> {
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&sandbox.aws().await);
    let targets = targets.iter().map(|(id, port)| {
        aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder().id(*id).port(*port).build()
    });
    elbv2
        .deregister_targets()
        .target_group_arn(arn)
        .set_targets(Some(targets.collect()))
        .send()
        .await
        .context("DeregisterTargets")?;
    Ok(())
}

/// The AvailabilityZone each target was registered with (`id:port` → AZ).
pub async fn target_zones(
    sandbox: &Sandbox,
    arn: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, Option<String>>> {
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&sandbox.aws().await);
    let out = elbv2.describe_target_health().target_group_arn(arn).send().await.context("DescribeTargetHealth")?;
    Ok(out
        .target_health_descriptions()
        .iter()
        .filter_map(|d| d.target())
        .filter_map(|t| Some((format!("{}:{}", t.id()?, t.port()?), t.availability_zone().map(str::to_owned))))
        .collect())
}

pub async fn delete_target_group(sandbox: &Sandbox, arn: &str) -> anyhow::Result<()> {
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&sandbox.aws().await);
    elbv2.delete_target_group().target_group_arn(arn).send().await.context("DeleteTargetGroup")?;
    Ok(())
}
