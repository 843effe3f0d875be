use std::future::Future;
use std::sync::Arc;

use aws_sdk_elasticloadbalancingv2::error::{ProvideErrorMetadata, SdkError};

use aws_sdk_elasticloadbalancingv2::types::{
    TargetDescription, TargetGroupIpAddressTypeEnum, TargetHealthStateEnum, TargetTypeEnum,
};

use super::{AwsError, RateLimits, TargetGroups};
use crate::metrics::Metrics;
use crate::model::{
    RegisteredTarget, Target, TargetGroupInfo, TargetGroupIpType, TargetGroupRef, TargetGroupType, TargetId,
    TargetState,
};

/// [`TargetGroups`] over the ELBv2 API.
#[derive(Clone)]
pub struct Elbv2TargetGroups {
    elbv2: aws_sdk_elasticloadbalancingv2::Client,
    limits: Arc<RateLimits>,
    metrics: Arc<Metrics>,
}

impl Elbv2TargetGroups {
    pub fn new(config: &aws_config::SdkConfig, limits: Arc<RateLimits>, metrics: Arc<Metrics>) -> Self {
        Self { elbv2: aws_sdk_elasticloadbalancingv2::Client::new(config), limits, metrics }
    }

    fn record<T>(&self, op: &'static str, result: &Result<T, AwsError>) {
        self.metrics.aws_call(op, result.as_ref().err().map_or("success", AwsError::reason));
    }
}

impl TargetGroups for Elbv2TargetGroups {
    async fn describe(&self, tg: &TargetGroupRef) -> Result<TargetGroupInfo, AwsError> {
        const OP: &str = "DescribeTargetGroups";
        self.limits.describes.acquire().await;
        let request = match tg {
            TargetGroupRef::Arn(arn) => self.elbv2.describe_target_groups().target_group_arns(arn),
            TargetGroupRef::Name(name) => self.elbv2.describe_target_groups().names(name),
        };
        let resource = tg.to_string();
        let result = request.send().await.map_err(|e| AwsError::from_sdk(OP, &resource, e)).and_then(|out| {
            match out.target_groups() {
                [one] => Ok(target_group_info(one)),
                [] => Err(AwsError::TargetGroupNotFound(resource.clone())),
                many => Err(AwsError::Api {
                    op: OP,
                    code: "Ambiguous".into(),
                    message: format!("{} target groups match {resource}", many.len()),
                }),
            }
        });
        self.record(OP, &result);
        result
    }

    async fn targets(&self, arn: &str) -> Result<Vec<RegisteredTarget>, AwsError> {
        const OP: &str = "DescribeTargetHealth";
        self.limits.describes.acquire().await;
        let result = self
            .elbv2
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OP, arn, e))
            .map(|out| out.target_health_descriptions().iter().filter_map(registered_target).collect());
        self.record(OP, &result);
        result
    }

    async fn register(&self, arn: &str, targets: &[Target]) -> Result<(), AwsError> {
        let request = self.elbv2.register_targets().target_group_arn(arn).set_targets(Some(descriptions(targets)));
        self.write("RegisterTargets", arn, request.send()).await
    }

    async fn deregister(&self, arn: &str, targets: &[Target]) -> Result<(), AwsError> {
        let request = self.elbv2.deregister_targets().target_group_arn(arn).set_targets(Some(descriptions(targets)));
        self.write("DeregisterTargets", arn, request.send()).await
    }
}

impl Elbv2TargetGroups {
    /// Sends a target write under the write rate limit (the request only goes out when awaited).
    async fn write<T, E, R>(
        &self,
        op: &'static str,
        arn: &str,
        request: impl Future<Output = Result<T, SdkError<E, R>>>,
    ) -> Result<(), AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        self.limits.target_writes.acquire(op).await?;
        let result = request.await.map(drop).map_err(|e| AwsError::from_sdk(op, arn, e));
        self.record(op, &result);
        result
    }
}

fn target_group_info(tg: &aws_sdk_elasticloadbalancingv2::types::TargetGroup) -> TargetGroupInfo {
    let target_type = match tg.target_type() {
        Some(TargetTypeEnum::Ip) => TargetGroupType::Ip,
        Some(TargetTypeEnum::Instance) => TargetGroupType::Instance,
        Some(other) => TargetGroupType::Unsupported(other.as_str().to_owned()),
        None => TargetGroupType::Unsupported("unknown".into()),
    };
    let ip_address_type = match tg.ip_address_type() {
        Some(TargetGroupIpAddressTypeEnum::Ipv6) => TargetGroupIpType::Ipv6,
        _ => TargetGroupIpType::Ipv4,
    };
    TargetGroupInfo {
        arn: tg.target_group_arn().unwrap_or_default().to_owned(),
        name: tg.target_group_name().unwrap_or_default().to_owned(),
        target_type,
        vpc_id: tg.vpc_id().map(str::to_owned),
        ip_address_type,
        protocol: tg.protocol().map(|p| p.as_str().to_owned()),
    }
}

fn registered_target(d: &aws_sdk_elasticloadbalancingv2::types::TargetHealthDescription) -> Option<RegisteredTarget> {
    let target = d.target()?;
    let port = u16::try_from(target.port()?).ok()?;
    let state = match d.target_health().and_then(|h| h.state()) {
        Some(TargetHealthStateEnum::Initial) => TargetState::Initial,
        Some(TargetHealthStateEnum::Healthy) => TargetState::Healthy,
        Some(TargetHealthStateEnum::Unhealthy) => TargetState::Unhealthy,
        Some(TargetHealthStateEnum::UnhealthyDraining) => TargetState::UnhealthyDraining,
        Some(TargetHealthStateEnum::Draining) => TargetState::Draining,
        Some(TargetHealthStateEnum::Unused) => TargetState::Unused,
        _ => TargetState::Unavailable,
    };
    Some(RegisteredTarget {
        target: Target {
            id: TargetId::new(target.id()?, port),
            availability_zone: target.availability_zone().map(str::to_owned),
        },
        state,
        reason: d.target_health().and_then(|h| h.reason()).map(|r| r.as_str().to_owned()),
    })
}

fn descriptions(targets: &[Target]) -> Vec<TargetDescription> {
    targets
        .iter()
        .map(|target| {
            TargetDescription::builder()
                .id(&target.id.id)
                .port(i32::from(target.id.port))
                .set_availability_zone(target.availability_zone.clone())
                .build()
        })
        .collect()
}
