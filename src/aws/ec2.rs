use std::sync::Arc;

use super::{AwsError, Network, RateLimits};
use crate::metrics::Metrics;
use crate::model::Cidr;

/// [`Network`] over the EC2 API.
#[derive(Clone)]
pub struct Ec2Network {
    ec2: aws_sdk_ec2::Client,
    limits: Arc<RateLimits>,
    metrics: Arc<Metrics>,
}

impl Ec2Network {
    pub fn new(config: &aws_config::SdkConfig, limits: Arc<RateLimits>, metrics: Arc<Metrics>) -> Self {
        Self { ec2: aws_sdk_ec2::Client::new(config), limits, metrics }
    }
}

impl Network for Ec2Network {
    async fn vpc_cidrs(&self, vpc_id: &str) -> Result<Vec<Cidr>, AwsError> {
        const OP: &str = "DescribeVpcs";
        self.limits.describes.acquire().await;
        // Boxed: the SDK's call state lives on the heap only while the call is under way.
        let result = Box::pin(self.ec2.describe_vpcs().vpc_ids(vpc_id).send())
            .await
            .map_err(|e| AwsError::from_sdk(OP, vpc_id, e))
            .and_then(|out| {
                let vpc = out.vpcs().first().ok_or_else(|| AwsError::VpcNotFound(vpc_id.to_owned()))?;
                let v4 = vpc.cidr_block_association_set().iter().filter_map(|a| a.cidr_block());
                let v6 = vpc.ipv6_cidr_block_association_set().iter().filter_map(|a| a.ipv6_cidr_block());
                Ok(vpc.cidr_block().into_iter().chain(v4).chain(v6).filter_map(|c| c.parse().ok()).collect())
            });
        self.metrics.aws_call(OP, result.as_ref().err().map_or("success", AwsError::reason));
        result
    }
}
