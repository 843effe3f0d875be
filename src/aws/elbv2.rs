use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use aws_sdk_elasticloadbalancingv2::error::{ProvideErrorMetadata, SdkError};

use aws_sdk_elasticloadbalancingv2::types::{
    TargetDescription, TargetGroupIpAddressTypeEnum, TargetHealthStateEnum, TargetTypeEnum,
};

use super::accounts::{RoleCache, Sts, config_with};
use super::describe_batch::{Answer, DescribeBatches, GATHER_WINDOW, Reply, retry_one_by_one};
use super::{AwsError, RateLimits, Scoped, TargetGroups, Turn};
use crate::metrics::Metrics;
use crate::model::{
    Account, HealthCheckTiming, RegisteredTarget, Target, TargetGroupInfo, TargetGroupIpType, TargetGroupRef,
    TargetGroupType, TargetId, TargetState,
};

/// [`TargetGroups`] over the ELBv2 API, in the agent's own account or, through an assumed role, in
/// the role's account. Rate limits, metrics and the fence are shared by every account.
#[derive(Clone)]
pub struct Elbv2TargetGroups {
    elbv2: aws_sdk_elasticloadbalancingv2::Client,
    limits: Arc<RateLimits>,
    metrics: Arc<Metrics>,
    /// The account an assumed-role client acts in: it refuses ARNs of any other account, so a
    /// `TargetGroupNotFound` from the wrong account can never pass for a deleted group.
    account: Option<String>,
    /// The role this client acts through (`None`: the agent's own credentials).
    role: Option<String>,
    roles: Arc<Roles>,
    /// Lookups by ARN waiting to share a DescribeTargetGroups call, per client.
    batches: Arc<DescribeBatches>,
}

/// How clients for other accounts are made and kept.
struct Roles {
    config: aws_config::SdkConfig,
    sts: Sts,
    clients: RoleCache<aws_sdk_elasticloadbalancingv2::Client>,
}

impl Elbv2TargetGroups {
    pub fn new(config: &aws_config::SdkConfig, limits: Arc<RateLimits>, metrics: Arc<Metrics>) -> Self {
        let roles = Roles { config: config.clone(), sts: Sts::new(config), clients: RoleCache::default() };
        Self {
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(config),
            limits,
            metrics,
            account: None,
            role: None,
            roles: Arc::new(roles),
            batches: Arc::default(),
        }
    }

    /// Refuses an ARN outside the account this client acts in (assumed-role clients only).
    fn check_account(&self, op: &'static str, arn: &str) -> Result<(), AwsError> {
        match &self.account {
            Some(account) if crate::model::arn_account(arn) != Some(account.as_str()) => {
                Err(AwsError::OtherAccount { op, arn: arn.to_owned(), account: account.clone() })
            }
            _ => Ok(()),
        }
    }

    /// A `TargetGroupNotFound` counts only from the ARN's own account: the agent's own client asks
    /// STS which account it is (once) before letting a foreign ARN pass for a deleted group.
    async fn not_found_here(&self, op: &'static str, arn: &str, error: AwsError) -> AwsError {
        if !matches!(error, AwsError::TargetGroupNotFound(_)) || self.account.is_some() {
            return error;
        }
        match self.roles.sts.own_account().await {
            Ok(own) if crate::model::arn_account(arn).is_some_and(|a| a != own) => {
                AwsError::OtherAccount { op, arn: arn.to_owned(), account: own.to_owned() }
            }
            Ok(_) => error,
            Err(sts) => sts,
        }
    }

    fn record<T>(&self, op: &'static str, result: &Result<T, AwsError>) {
        self.metrics.aws_call(op, result.as_ref().err().map_or("success", AwsError::reason));
    }
}

const DESCRIBE: &str = "DescribeTargetGroups";

impl TargetGroups for Elbv2TargetGroups {
    /// By ARN, the lookup shares a call with the others made before that call's turn at the
    /// describe rate limit comes.
    async fn describe(&self, tg: &TargetGroupRef) -> Result<TargetGroupInfo, AwsError> {
        let TargetGroupRef::Arn(arn) = tg else {
            return self.describe_one(tg).await;
        };
        self.check_account(DESCRIBE, arn)?;
        let (opens, answer) = self.batches.join(&self.role, arn);
        if opens {
            // A sender of its own: the lookups that joined wait for it even when the reconcile
            // that started it is cancelled. It takes twenty ARNs per turn at the rate limit, so
            // lookups made while it waits for a turn share that turn's call.
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(GATHER_WINDOW).await;
                loop {
                    this.limits.describes.acquire().await;
                    let (chunk, more) = this.batches.take(&this.role);
                    let answering = this.clone();
                    tokio::spawn(async move { answering.answer_chunk(chunk).await });
                    if !more {
                        break;
                    }
                }
            });
        }
        answer.await.unwrap_or_else(|_| {
            Err(AwsError::Transport { op: DESCRIBE, message: "the shared DescribeTargetGroups call was lost".into() })
        })
    }

    async fn targets(&self, arn: &str) -> Result<Vec<RegisteredTarget>, AwsError> {
        const OP: &str = "DescribeTargetHealth";
        self.check_account(OP, arn)?;
        self.limits.describes.acquire().await;
        // Boxed, as every call a reconcile awaits: the SDK's call state (kilobytes) is on the heap
        // only while the call is under way, not in each of the reconciles waiting their turn.
        let result = match Box::pin(self.elbv2.describe_target_health().target_group_arn(arn).send()).await {
            Ok(out) => Ok(out.target_health_descriptions().iter().filter_map(registered_target).collect()),
            Err(e) => Err(self.not_found_here(OP, arn, AwsError::from_sdk(OP, arn, e)).await),
        };
        self.record(OP, &result);
        result
    }

    async fn register(&self, arn: &str, targets: &[Target], turn: &Turn) -> Result<(), AwsError> {
        let request = self.elbv2.register_targets().target_group_arn(arn).set_targets(Some(descriptions(targets)));
        self.write("RegisterTargets", arn, turn, || request.customize().config_override(one_attempt()).send()).await
    }

    async fn deregister(&self, arn: &str, targets: &[Target], turn: &Turn) -> Result<(), AwsError> {
        let request = self.elbv2.deregister_targets().target_group_arn(arn).set_targets(Some(descriptions(targets)));
        self.write("DeregisterTargets", arn, turn, || request.customize().config_override(one_attempt()).send()).await
    }

    async fn in_account(&self, account: &Account) -> Result<Scoped<'_, Self>, AwsError> {
        let role = match account {
            Account::Own => return Ok(Scoped::Own(self)),
            Account::Role(role) => role,
        };
        let roles = &self.roles;
        let result = roles
            .clients
            .get(role, std::time::SystemTime::now(), || async {
                // Counted only when STS is asked: a cached client is no call.
                let assumed = roles.sts.assume(role).await;
                self.record("AssumeRole", &assumed);
                let (credentials, expires) = assumed?;
                let config = config_with(&roles.config, credentials);
                Ok((aws_sdk_elasticloadbalancingv2::Client::new(&config), expires))
            })
            .await;
        let elbv2 = result?;
        Ok(Scoped::Assumed(Self {
            elbv2,
            limits: self.limits.clone(),
            metrics: self.metrics.clone(),
            account: role.account_id().map(str::to_owned),
            role: Some(role.role_arn.clone()),
            roles: self.roles.clone(),
            batches: self.batches.clone(),
        }))
    }
}

impl Elbv2TargetGroups {
    /// One DescribeTargetGroups call for one group, by ARN or name.
    async fn describe_one(&self, tg: &TargetGroupRef) -> Result<TargetGroupInfo, AwsError> {
        self.limits.describes.acquire().await;
        self.describe_one_now(tg).await
    }

    /// [`describe_one`](Self::describe_one) with the rate-limit token already taken.
    async fn describe_one_now(&self, tg: &TargetGroupRef) -> Result<TargetGroupInfo, AwsError> {
        let request = match tg {
            TargetGroupRef::Arn(arn) => {
                self.check_account(DESCRIBE, arn)?;
                self.elbv2.describe_target_groups().target_group_arns(arn)
            }
            TargetGroupRef::Name(name) => self.elbv2.describe_target_groups().names(name),
        };
        let resource = tg.to_string();
        let sent = match Box::pin(request.send()).await {
            Ok(out) => Ok(out),
            Err(e) => match tg {
                TargetGroupRef::Arn(arn) => {
                    Err(self.not_found_here(DESCRIBE, arn, AwsError::from_sdk(DESCRIBE, &resource, e)).await)
                }
                TargetGroupRef::Name(_) => Err(AwsError::from_sdk(DESCRIBE, &resource, e)),
            },
        };
        let result = sent.and_then(|out| match out.target_groups() {
            [one] => Ok(target_group_info(one)),
            [] => Err(AwsError::TargetGroupNotFound(resource.clone())),
            many => Err(AwsError::Api {
                op: DESCRIBE,
                code: "Ambiguous".into(),
                message: format!("{} target groups match {resource}", many.len()),
            }),
        });
        self.record(DESCRIBE, &result);
        result
    }

    /// Answers the lookups of one chunk of a batch, whose rate-limit token is already taken: one
    /// call for all of them, then one call per ARN the shared call did not settle.
    async fn answer_chunk(&self, chunk: Vec<(String, Vec<Reply>)>) {
        let mut answers = match chunk.as_slice() {
            [] => return,
            [(arn, _)] => {
                HashMap::from([(arn.clone(), self.describe_one_now(&TargetGroupRef::Arn(arn.clone())).await)])
            }
            _ => self.describe_several(chunk.iter().map(|(arn, _)| arn.clone()).collect()).await,
        };
        for (arn, replies) in chunk {
            let answer = match answers.remove(&arn) {
                Some(answer) => answer,
                None => self.describe_one(&TargetGroupRef::Arn(arn)).await,
            };
            for reply in replies {
                // A lookup whose reconcile was cancelled no longer listens: nothing to do.
                let _ = reply.send(answer.clone());
            }
        }
    }

    /// One call for several ARNs, the rate-limit token already taken. A group missing from the
    /// answer, or a call failed by one bad ARN, is left out (looked up alone next); any other
    /// failure is every lookup's answer.
    async fn describe_several(&self, arns: Vec<String>) -> HashMap<String, Answer> {
        let resource = arns.join(",");
        let sent = self.elbv2.describe_target_groups().set_target_group_arns(Some(arns.clone())).send().await;
        let result = sent.map_err(|e| AwsError::from_sdk(DESCRIBE, &resource, e));
        self.record(DESCRIBE, &result);
        match result {
            Ok(out) => out
                .target_groups()
                .iter()
                .filter_map(|tg| Some((tg.target_group_arn()?.to_owned(), Ok(target_group_info(tg)))))
                .collect(),
            Err(e) if retry_one_by_one(&e) => HashMap::new(),
            Err(e) => arns.into_iter().map(|arn| (arn, Err(e.clone()))).collect(),
        }
    }

    /// Sends a target write once its turn at the write budget comes. The call's state (the SDK's
    /// futures run to kilobytes) is made only then, on the heap: the up to `--concurrency`
    /// reconciles waiting for their turn each hold a request builder, not a call.
    async fn write<T, E, R, F>(
        &self,
        op: &'static str,
        arn: &str,
        turn: &Turn,
        request: impl FnOnce() -> F,
    ) -> Result<(), AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
        F: Future<Output = Result<T, SdkError<E, R>>>,
    {
        self.check_account(op, arn)?;
        self.limits.target_writes.acquire(op, turn).await?;
        let result = Box::pin(request()).await.map(drop).map_err(|e| AwsError::from_sdk(op, arn, e));
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
        health_check: health_check_timing(tg),
    }
}

fn health_check_timing(tg: &aws_sdk_elasticloadbalancingv2::types::TargetGroup) -> Option<HealthCheckTiming> {
    let secs = |v: Option<i32>| v.and_then(|v| u64::try_from(v).ok());
    Some(HealthCheckTiming {
        interval_secs: secs(tg.health_check_interval_seconds())?,
        timeout_secs: secs(tg.health_check_timeout_seconds())?,
        unhealthy_threshold: secs(tg.unhealthy_threshold_count())?,
    })
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

/// Target writes are sent once: after an SDK retry, the final error (say a throttle) would hide
/// that an earlier attempt took effect and only its answer was lost, and the claim would be
/// settled as "did not happen". One attempt, one exact outcome; the reconcile owns the retry
/// (and every attempt passes the write budget).
fn one_attempt() -> aws_sdk_elasticloadbalancingv2::config::Builder {
    aws_sdk_elasticloadbalancingv2::config::Builder::default()
        .retry_config(aws_sdk_elasticloadbalancingv2::config::retry::RetryConfig::disabled())
}

#[cfg(test)]
mod tests {
    #[test]
    fn target_writes_make_one_attempt() {
        let config = super::one_attempt().build();
        assert_eq!(config.retry_config().map(|r| r.max_attempts()), Some(1));
    }

    use super::*;
    use crate::aws::Urgency;

    /// A client acting in account 222222222222 through a role, sending nowhere: every check below
    /// must answer before a request would go out.
    async fn assumed() -> Elbv2TargetGroups {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(aws_sdk_elasticloadbalancingv2::config::Credentials::new("k", "s", None, None, "t"))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await;
        let mut client = Elbv2TargetGroups::new(&config, Arc::default(), Arc::default());
        client.account = Some("222222222222".into());
        client
    }

    #[tokio::test]
    async fn an_assumed_role_client_refuses_other_accounts_groups_before_sending() {
        let client = assumed().await;
        let foreign = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";
        let targets = [Target::new(TargetId::new("10.0.0.1", 80))];
        let errors = [
            client.targets(foreign).await.map(drop).expect_err("targets"),
            client.register(foreign, &targets, &Turn::new(Urgency::Add)).await.expect_err("register"),
            client.deregister(foreign, &targets, &Turn::new(Urgency::Remove)).await.expect_err("deregister"),
            client.describe(&TargetGroupRef::Arn(foreign.into())).await.map(drop).expect_err("describe"),
        ];
        for error in errors {
            // Never TargetGroupNotFound: that would let a cleanup take the group for gone.
            assert_eq!(error.reason(), "TargetGroupInOtherAccount", "{error}");
            assert!(!error.may_have_taken_effect());
        }
        // Its own account's groups go out (and here fail to connect: nothing listens on port 9).
        let own = "arn:aws:elasticloadbalancing:us-east-1:222222222222:targetgroup/web/0123456789abcdef";
        assert_eq!(client.targets(own).await.map(drop).map_err(|e| e.reason()), Err("AWSUnreachable"));
    }
}
