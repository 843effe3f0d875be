//! End to end on the sandbox, through the real binary: a binding in the cluster's account (A)
//! feeds a target group owned by another account (B) through `spec.iamRoleArnToAssume`. The
//! emulator selects the account from the assumed role's credentials, so account B's groups are
//! invisible to A's credentials, exactly as in AWS.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetTypeEnum};
use common::*;
use serde_json::json;
use tgb_sandbox::{Agent, Sandbox, seed_aws};

const ACCOUNT_B: &str = "222222222222";
const ROLE_B: &str = "arn:aws:iam::222222222222:role/tgb-agent-cross-account";

/// Account B as its own administrator (Terraform) sees it.
async fn account_b(sandbox: &Sandbox) -> aws_config::SdkConfig {
    let own = sandbox.aws().await;
    let sts = aws_sdk_sts::Client::new(&own);
    let out = sts.assume_role().role_arn(ROLE_B).role_session_name("terraform").send().await.expect("AssumeRole");
    let c = out.credentials().expect("credentials");
    let creds = aws_sdk_elasticloadbalancingv2::config::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "account-b",
    );
    let config = own
        .to_builder()
        .credentials_provider(aws_sdk_elasticloadbalancingv2::config::SharedCredentialsProvider::new(creds))
        .build();
    let who = aws_sdk_sts::Client::new(&config).get_caller_identity().send().await.expect("GetCallerIdentity");
    assert_eq!(who.account(), Some(ACCOUNT_B), "the emulator acts in account B with the role's credentials");
    config
}

/// An ip target group `name` in a VPC of its own (10.1.0.0/16: the pods' 10.0.x addresses are outside it).
async fn target_group_in(config: &aws_config::SdkConfig, name: &str, cidr: &str) -> anyhow::Result<String> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let vpc = ec2.create_vpc().cidr_block(cidr).send().await.context("CreateVpc")?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).context("VPC id")?;
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(config);
    let tg = elbv2
        .create_target_group()
        .name(name)
        .protocol(ProtocolEnum::Http)
        .port(80)
        .vpc_id(vpc_id)
        .target_type(TargetTypeEnum::Ip)
        .send()
        .await
        .context("CreateTargetGroup")?;
    Ok(tg.target_groups().first().and_then(|t| t.target_group_arn()).context("TG ARN")?.to_owned())
}

/// `id:port` → AvailabilityZone of the group's targets, read with `config`'s credentials.
async fn targets_in(config: &aws_config::SdkConfig, arn: &str) -> BTreeMap<String, Option<String>> {
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(config);
    let out = elbv2.describe_target_health().target_group_arn(arn).send().await.expect("DescribeTargetHealth");
    out.target_health_descriptions()
        .iter()
        .filter(|d| d.target_health().and_then(|h| h.state()).is_none_or(|s| !s.as_str().contains("draining")))
        .filter_map(|d| d.target())
        .filter_map(|t| Some((format!("{}:{}", t.id()?, t.port()?), t.availability_zone().map(str::to_owned))))
        .collect()
}

async fn wait_for_targets_in(config: &aws_config::SdkConfig, arn: &str, expected: &[&str]) {
    let expected = set(expected);
    eventually(&format!("{arn} holding {expected:?}"), Duration::from_secs(30), || async {
        let now: std::collections::BTreeSet<String> = targets_in(config, arn).await.into_keys().collect();
        (now == expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_in_account_a_registers_into_a_group_of_account_b_through_the_role() {
    let sandbox = Sandbox::start().expect("sandbox");
    let fixture = seed_aws(&sandbox, "xa", 0).await.expect("fixture");
    let b = account_b(&sandbox).await;
    let arn_b = target_group_in(&b, "xa-web", "10.1.0.0/16").await.expect("group in B");
    assert!(arn_b.contains(&format!(":{ACCOUNT_B}:targetgroup/")), "{arn_b}");
    // Account A has a group of the same name: a name lookup in the wrong account would feed it.
    let own = sandbox.aws().await;
    let arn_a_same_name = tgb_sandbox::create_ip_target_group(&sandbox, &fixture, "xa-web").await.expect("group in A");
    // A's credentials cannot see B's group at all.
    let from_a = aws_sdk_elasticloadbalancingv2::Client::new(&own)
        .describe_target_health()
        .target_group_arn(&arn_b)
        .send()
        .await;
    assert!(from_a.is_err(), "account A must not see account B's group");

    let kube = sandbox.kube().await.expect("kube");
    namespace(&kube, "demo").await;
    service(&kube, "demo", "web", 80, "http", 8080).await;
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.1.11")])
        .await;
    binding(
        &kube,
        "demo",
        "web",
        json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupName": "xa-web", "targetType": "ip",
               "iamRoleArnToAssume": ROLE_B, "assumeRoleExternalId": "tgb-e2e"}),
    )
    .await;
    // An instance binding with a role: refused before any AWS call (ELB takes only its own account's instances).
    let instance_group_b = target_group_in(&b, "xa-nodes", "10.2.0.0/16").await.expect("second group in B");
    binding(
        &kube,
        "demo",
        "nodes",
        json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": instance_group_b, "targetType": "instance",
               "iamRoleArnToAssume": ROLE_B}),
    )
    .await;
    // `plan` reads account B's group through the role, as `run` will, and writes nothing.
    let (code, text) = plan_as_agent(&sandbox, "e2e");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&arn_b) && !text.contains(&arn_a_same_name), "{text}");
    let registers: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("+ register"))
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    assert_eq!(registers, ["10.0.0.10:8080", "10.0.1.11:8080"], "{text}");
    assert!(text.contains("CrossAccountInstance"), "{text}");
    assert!(targets_in(&b, &arn_b).await.is_empty(), "plan wrote nothing");
    let mut agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "2s"]).expect("agent");

    wait_for_targets_in(&b, &arn_b, &["10.0.0.10:8080", "10.0.1.11:8080"]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;
    wait_for_condition(&kube, "demo", "nodes", "False", "CrossAccountInstance").await;
    let (_, message) = ready_condition(&kube, "demo", "nodes").await.expect("condition");
    let nodes = get_binding(&kube, "demo", "nodes").await.expect("nodes binding");
    let message_text =
        nodes.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready")).map(|c| c.message);
    assert_eq!(message, "CrossAccountInstance");
    assert!(message_text.as_deref().is_some_and(|m| m.contains("instances")), "{message_text:?}");
    // The pods' 10.0.x addresses are outside B's VPC (the agent cannot see it from A): AZ `all`.
    let zones = targets_in(&b, &arn_b).await;
    assert!(zones.values().all(|z| z.as_deref() == Some("all")), "{zones:?}");
    // A's group of the same name was never touched.
    assert!(active_targets(&sandbox, &arn_a_same_name).await.is_empty());

    // Scale and drift checks (every ~2 s) reuse the assumed role's client: one AssumeRole only.
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.1.11"), Ep::Ready("10.0.0.12")])
        .await;
    wait_for_targets_in(&b, &arn_b, &["10.0.1.11:8080", "10.0.0.12:8080"]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let metrics = agent.metrics().expect("metrics");
    assert!(metrics.contains("tgb_aws_calls_total{operation=\"AssumeRole\",outcome=\"success\"} 1\n"), "{metrics}");
    assert!(
        metrics.contains("tgb_aws_calls_total{operation=\"DescribeTargetHealth\",outcome=\"success\"}"),
        "{metrics}"
    );

    // A role ARN with a typo is refused before any call, and the binding stays deletable (nothing to clean).
    binding(
        &kube,
        "demo",
        "typo",
        json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupName": "xa-web", "iamRoleArnToAssume": "tgb-agent-cross-account"}),
    )
    .await;
    wait_for_condition(&kube, "demo", "typo", "False", "InvalidSpec").await;
    delete_binding(&kube, "demo", "typo").await;
    eventually("typo binding gone", Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "typo").await.is_none().then_some(())
    })
    .await;

    // Deletion deregisters through the role too.
    delete_binding(&kube, "demo", "web").await;
    wait_for_targets_in(&b, &arn_b, &[]).await;
    eventually("binding gone", Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "web").await.is_none().then_some(())
    })
    .await;
    assert!(active_targets(&sandbox, &arn_a_same_name).await.is_empty());
    let status = agent.terminate().expect("terminate");
    assert!(status.success(), "{status:?}");
}

/// Dropping the role from a binding (the role is mutable, the ARN is not): the agent's own
/// credentials cannot see account B's group (the emulator, like AWS, answers TargetGroupNotFound),
/// which must never pass for "the group is gone": deleting the binding would then let it go and
/// strand its targets in B. It is refused and reported instead, until the role is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_role_never_takes_the_other_accounts_group_for_gone() {
    let sandbox = Sandbox::start().expect("sandbox");
    seed_aws(&sandbox, "xb", 0).await.expect("fixture");
    let b = account_b(&sandbox).await;
    let arn_b = target_group_in(&b, "xb-web", "10.1.0.0/16").await.expect("group in B");
    let kube = sandbox.kube().await.expect("kube");
    namespace(&kube, "demo").await;
    service(&kube, "demo", "web", 80, "http", 8080).await;
    endpoint_slice(&kube, "demo", "web", "web-a", "http", 8080, &[Ep::Ready("10.0.0.10")]).await;
    let with_role = json!({"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": arn_b, "targetType": "ip",
                           "iamRoleArnToAssume": ROLE_B});
    binding(&kube, "demo", "web", with_role.clone()).await;
    let _agent = Agent::start(AGENT.as_ref(), &sandbox, &["--drift-interval", "2s"]).expect("agent");
    wait_for_targets_in(&b, &arn_b, &["10.0.0.10:8080"]).await;
    wait_for_condition(&kube, "demo", "web", "True", "Reconciled").await;

    // Without the role: refused with a reason naming the account, nothing written.
    binding(&kube, "demo", "web", ip_binding(&arn_b)).await;
    wait_for_condition(&kube, "demo", "web", "False", "TargetGroupInOtherAccount").await;
    // Deleting it now cannot clean B's group: the finalizer stays, the target is kept.
    delete_binding(&kube, "demo", "web").await;
    wait_for_condition(&kube, "demo", "web", "False", "FailedCleanup").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        get_binding(&kube, "demo", "web").await.is_some(),
        "the binding must not go while B's group holds its target"
    );
    let left: std::collections::BTreeSet<String> = targets_in(&b, &arn_b).await.into_keys().collect();
    assert_eq!(left, set(&["10.0.0.10:8080"]));
    // The role back: the cleanup goes through it, and the binding goes.
    binding(&kube, "demo", "web", with_role).await;
    wait_for_targets_in(&b, &arn_b, &[]).await;
    eventually("binding gone", Duration::from_secs(30), || async {
        get_binding(&kube, "demo", "web").await.is_none().then_some(())
    })
    .await;
}
