//! Lookups of target groups by ARN share DescribeTargetGroups calls of at most 20 ARNs (the
//! emulator refuses 21, as AWS does), lookups made while the describe budget is busy share the
//! next call, and one bad ARN does not fail the others' lookups.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tgb_agent::aws::{AwsError, Elbv2TargetGroups, Rate, RateLimits, TargetGroups};
use tgb_agent::fence::Fence;
use tgb_agent::metrics::Metrics;
use tgb_agent::model::TargetGroupRef;
use tgb_sandbox::{Sandbox, create_ip_target_group, delete_target_group, seed_aws};

const DESCRIBE: &str = "DescribeTargetGroups";

async fn describe_all(
    groups: &Elbv2TargetGroups,
    arns: &[String],
) -> Vec<Result<tgb_agent::model::TargetGroupInfo, AwsError>> {
    let refs: Vec<TargetGroupRef> = arns.iter().cloned().map(TargetGroupRef::Arn).collect();
    join_all(refs.iter().map(|tg| groups.describe(tg))).await
}

#[tokio::test]
async fn concurrent_lookups_share_calls_of_at_most_20_arns() {
    let sandbox = Sandbox::start().expect("sandbox");
    let fixture = seed_aws(&sandbox, "batch", 0).await.expect("fixture");
    let mut arns = vec![fixture.ip_target_group_arn.clone()];
    for i in 0..44 {
        arns.push(create_ip_target_group(&sandbox, &fixture, &format!("batch-{i}")).await.expect("group"));
    }
    let groups =
        Elbv2TargetGroups::new(&sandbox.aws().await, Arc::new(RateLimits::default()), Arc::new(Metrics::default()));

    // 45 lookups at once, one ARN asked twice: three calls (20 + 20 + 5), each lookup its own answer.
    let before = sandbox.aws_call_count(DESCRIBE).await.expect("calls");
    let mut asked = arns.clone();
    asked.push(arns[3].clone());
    let answers = describe_all(&groups, &asked).await;
    for (arn, answer) in asked.iter().zip(&answers) {
        let info = answer.as_ref().unwrap_or_else(|e| panic!("{arn}: {e}"));
        assert_eq!(&info.arn, arn);
    }
    assert_eq!(sandbox.aws_call_count(DESCRIBE).await.expect("calls") - before, 3);

    // A lone lookup is one call, as before.
    let before = sandbox.aws_call_count(DESCRIBE).await.expect("calls");
    assert_eq!(describe_all(&groups, &arns[..1]).await[0].as_ref().expect("lone lookup").arn, arns[0]);
    assert_eq!(sandbox.aws_call_count(DESCRIBE).await.expect("calls") - before, 1);

    // One deleted group fails the shared call: each of the six is then looked up alone, and only the
    // deleted one is not found.
    delete_target_group(&sandbox, &arns[10]).await.expect("delete");
    let before = sandbox.aws_call_count(DESCRIBE).await.expect("calls");
    let answers = describe_all(&groups, &arns[8..14]).await;
    for (arn, answer) in arns[8..14].iter().zip(&answers) {
        match answer {
            Err(AwsError::TargetGroupNotFound(_)) if *arn == arns[10] => {}
            Ok(info) if *arn != arns[10] => assert_eq!(&info.arn, arn),
            other => panic!("{arn}: {other:?}"),
        }
    }
    assert_eq!(sandbox.aws_call_count(DESCRIBE).await.expect("calls") - before, 1 + 6);

    // On a busy describe budget (2 a second, burst 1), lookups that trickle in while the sender
    // waits for its turn ride along: 25 lookups 20 ms apart after a lone one cost 1 + 2 calls, not 26.
    let busy = RateLimits::new(Arc::new(Fence::open()), Rate::WRITES, Rate { per_second: 2.0, burst: 1 });
    let groups = Elbv2TargetGroups::new(&sandbox.aws().await, Arc::new(busy), Arc::new(Metrics::default()));
    let before = sandbox.aws_call_count(DESCRIBE).await.expect("calls");
    describe_all(&groups, &arns[..1]).await[0].as_ref().expect("lone lookup");
    let trickle = arns.iter().filter(|arn| **arn != arns[10]).take(25).enumerate().map(|(i, arn)| {
        let groups = &groups;
        async move {
            tokio::time::sleep(Duration::from_millis(20) * i as u32).await;
            groups.describe(&TargetGroupRef::Arn(arn.clone())).await
        }
    });
    for answer in join_all(trickle).await {
        answer.expect("lookup");
    }
    assert_eq!(sandbox.aws_call_count(DESCRIBE).await.expect("calls") - before, 1 + 2);
}
