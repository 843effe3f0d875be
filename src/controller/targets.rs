//! Applying a target plan, and the rules for bindings that share a target group.

use std::sync::Arc;

use kube::ResourceExt;

use super::context::Context;
use super::error::ReconcileError;
use crate::api::TargetGroupBinding;
use crate::aws::security_groups::SecurityGroups;
use crate::aws::{AwsError, MAX_TARGETS_PER_CALL, Network, TargetGroups};
use crate::model::Target;
use crate::plan::diff::TargetPlan;

/// What got done of a plan, even when it stopped half way.
pub struct Applied {
    pub deregistered: Vec<Target>,
    pub result: Result<(), ReconcileError>,
}

/// Applies a plan to a target group and reports it (metrics, log, Events).
pub async fn apply_plan<T: TargetGroups, N: Network, S: SecurityGroups>(
    ctx: &Context<T, N, S>,
    tgb: &TargetGroupBinding,
    arn: &str,
    plan: &TargetPlan,
) -> Applied {
    let done = execute(&ctx.target_groups, arn, plan).await;
    report(ctx, tgb, "Deregistered", &done.deregistered, arn).await;
    report(ctx, tgb, "Registered", &done.registered, arn).await;
    Applied { deregistered: done.deregistered, result: done.error.map_or(Ok(()), |e| Err(e.into())) }
}

struct Executed {
    deregistered: Vec<Target>,
    registered: Vec<Target>,
    error: Option<AwsError>,
}

/// Deregisters, then registers, in batches of at most [`MAX_TARGETS_PER_CALL`]; stops at the
/// first failure and says what was done before it.
async fn execute<T: TargetGroups>(target_groups: &T, arn: &str, plan: &TargetPlan) -> Executed {
    let mut done = Executed { deregistered: Vec::new(), registered: Vec::new(), error: None };
    for batch in plan.deregister.chunks(MAX_TARGETS_PER_CALL) {
        if let Err(e) = target_groups.deregister(arn, batch).await {
            done.error = Some(e);
            return done;
        }
        done.deregistered.extend_from_slice(batch);
    }
    for batch in plan.register.chunks(MAX_TARGETS_PER_CALL) {
        if let Err(e) = target_groups.register(arn, batch).await {
            done.error = Some(e);
            return done;
        }
        done.registered.extend_from_slice(batch);
    }
    done
}

async fn report<T: TargetGroups, N: Network, S: SecurityGroups>(
    ctx: &Context<T, N, S>,
    tgb: &TargetGroupBinding,
    what: &'static str,
    targets: &[Target],
    arn: &str,
) {
    if targets.is_empty() {
        return;
    }
    ctx.metrics.targets_changed(if what == "Registered" { "register" } else { "deregister" }, targets.len());
    let sample: Vec<String> = targets.iter().take(5).map(|t| t.id.to_string()).collect();
    let more = if targets.len() > sample.len() {
        format!(" and {} more", targets.len() - sample.len())
    } else {
        String::new()
    };
    tracing::info!(binding = %tgb.name_any(), count = targets.len(), arn, "{what} targets");
    let note = format!("{what} {} targets in {arn}: {}{more}", targets.len(), sample.join(", "));
    ctx.events.normal(tgb, what, note).await;
}

/// The target group ARN a binding is bound to: from its spec, or as resolved into its status.
pub fn bound_arn(tgb: &TargetGroupBinding) -> Option<String> {
    tgb.spec
        .target_group_arn
        .clone()
        .filter(|a| !a.trim().is_empty())
        .or_else(|| tgb.status.as_ref().and_then(|s| s.target_group_arn.clone()))
}

fn is_multi_cluster(tgb: &TargetGroupBinding) -> bool {
    tgb.spec.multi_cluster_target_group == Some(true)
}

/// The other bindings of this cluster on target group `arn`. Several bindings may share a group
/// only when all of them are multi-cluster; otherwise the oldest binding keeps the group and
/// every later one fails with a conflict (and touches nothing).
pub fn siblings_of(
    tgb: &TargetGroupBinding,
    arn: &str,
    all: &[Arc<TargetGroupBinding>],
) -> Result<Vec<Arc<TargetGroupBinding>>, ReconcileError> {
    let siblings: Vec<_> =
        all.iter().filter(|o| o.uid() != tgb.uid() && bound_arn(o).as_deref() == Some(arn)).cloned().collect();
    if siblings.is_empty() || (is_multi_cluster(tgb) && siblings.iter().all(|s| is_multi_cluster(s))) {
        return Ok(siblings);
    }
    let age = |b: &TargetGroupBinding| (b.creation_timestamp().map(|t| t.0), b.namespace(), b.name_any());
    let oldest = siblings.iter().map(Arc::as_ref).chain(std::iter::once(tgb)).min_by_key(|b| age(b));
    match oldest {
        Some(oldest) if oldest.uid() != tgb.uid() => Err(ReconcileError::TargetGroupConflict {
            arn: arn.to_owned(),
            other: format!("{}/{}", oldest.namespace().unwrap_or_default(), oldest.name_any()),
        }),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod execute_tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::{RegisteredTarget, TargetGroupInfo, TargetGroupRef, TargetId};

    /// Records every write; fails the call numbered `fail_at` (0-based) with throttling.
    #[derive(Default)]
    struct FakeTargetGroups {
        calls: Mutex<Vec<(&'static str, usize)>>,
        fail_at: Option<usize>,
    }

    impl FakeTargetGroups {
        fn write(&self, op: &'static str, n: usize) -> Result<(), AwsError> {
            let mut calls = self.calls.lock().expect("fake lock");
            let index = calls.len();
            calls.push((op, n));
            if self.fail_at == Some(index) {
                return Err(AwsError::Throttled { op, message: "slow down".into() });
            }
            Ok(())
        }
    }

    impl TargetGroups for FakeTargetGroups {
        async fn describe(&self, _: &TargetGroupRef) -> Result<TargetGroupInfo, AwsError> {
            unreachable!("execute only writes")
        }
        async fn targets(&self, _: &str) -> Result<Vec<RegisteredTarget>, AwsError> {
            unreachable!("execute only writes")
        }
        async fn register(&self, _: &str, targets: &[Target]) -> Result<(), AwsError> {
            self.write("register", targets.len())
        }
        async fn deregister(&self, _: &str, targets: &[Target]) -> Result<(), AwsError> {
            self.write("deregister", targets.len())
        }
    }

    fn targets(n: usize, base: usize) -> Vec<Target> {
        (0..n).map(|i| Target::new(TargetId::new(format!("10.{}.{}.{}", base, i / 250, i % 250), 80))).collect()
    }

    #[tokio::test]
    async fn deregisters_first_then_registers_in_batches_of_200() {
        let fake = FakeTargetGroups::default();
        let plan = TargetPlan { deregister: targets(450, 1), register: targets(201, 2) };
        let done = execute(&fake, "arn", &plan).await;
        assert!(done.error.is_none());
        assert_eq!((done.deregistered.len(), done.registered.len()), (450, 201));
        let calls = fake.calls.lock().expect("fake lock").clone();
        assert_eq!(
            calls,
            vec![("deregister", 200), ("deregister", 200), ("deregister", 50), ("register", 200), ("register", 1)]
        );
    }

    #[tokio::test]
    async fn stops_at_the_first_failure_and_reports_what_was_done() {
        let fake = FakeTargetGroups { fail_at: Some(1), ..Default::default() };
        let plan = TargetPlan { deregister: targets(300, 1), register: targets(5, 2) };
        let done = execute(&fake, "arn", &plan).await;
        assert_eq!(done.error.as_ref().map(AwsError::reason), Some("Throttled"));
        assert_eq!(done.deregistered.len(), 200, "the first batch went through");
        assert!(done.registered.is_empty(), "nothing is registered after a failed deregistration");
        assert_eq!(fake.calls.lock().expect("fake lock").len(), 2);
    }

    #[tokio::test]
    async fn an_empty_plan_makes_no_call() {
        let fake = FakeTargetGroups::default();
        let done = execute(&fake, "arn", &TargetPlan::default()).await;
        assert!(done.error.is_none());
        assert!(fake.calls.lock().expect("fake lock").is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TargetGroupBindingSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn binding(name: &str, uid: &str, age_secs: i64, multi: bool) -> Arc<TargetGroupBinding> {
        let mut b = TargetGroupBinding::new(
            name,
            TargetGroupBindingSpec {
                target_group_arn: Some("arn:tg".into()),
                multi_cluster_target_group: Some(multi),
                ..Default::default()
            },
        );
        b.metadata.namespace = Some("ns".into());
        b.metadata.uid = Some(uid.into());
        let t = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age_secs).expect("valid time");
        b.metadata.creation_timestamp = Some(Time(t));
        Arc::new(b)
    }

    #[test]
    fn alone_is_fine() {
        let a = binding("a", "1", 0, false);
        assert!(siblings_of(&a, "arn:tg", std::slice::from_ref(&a)).expect("alone").is_empty());
    }

    #[test]
    fn all_multi_cluster_share() {
        let a = binding("a", "1", 0, true);
        let b = binding("b", "2", 5, true);
        assert_eq!(siblings_of(&b, "arn:tg", &[a.clone(), b.clone()]).expect("shared").len(), 1);
    }

    #[test]
    fn the_later_exclusive_binding_conflicts_and_the_older_keeps_the_group() {
        for (a_multi, b_multi) in [(false, false), (true, false), (false, true)] {
            let a = binding("a", "1", 0, a_multi);
            let b = binding("b", "2", 5, b_multi);
            let all = [a.clone(), b.clone()];
            let err = siblings_of(&b, "arn:tg", &all).expect_err("later one conflicts");
            assert_eq!(err.reason(), "TargetGroupConflict");
            assert!(siblings_of(&a, "arn:tg", &all).is_ok(), "older one proceeds ({a_multi},{b_multi})");
        }
    }
}
