//! The ownership-record store on the real API server: writes are fenced like AWS writes and
//! conditional on the version last read, so a deposed or stale writer never replaces a newer
//! record (a revived claim or dropped claims would follow).

use std::collections::BTreeMap;
use std::sync::Arc;

use tgb_agent::fence::Fence;
use tgb_agent::k8s::ownership::{OwnershipRecords, OwnershipStore, RecordError};
use tgb_agent::model::{BindingId, TargetId};
use tgb_agent::plan::ownership::{Claim, Record};
use tgb_sandbox::Sandbox;

const ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";

fn record(ip: &str) -> Record {
    Record::default().with_group(ARN, BTreeMap::from([(TargetId::new(ip, 8080), Claim::Registered)]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_deposed_writers_never_replace_a_newer_record() {
    let sandbox = Sandbox::start().expect("sandbox");
    let kube = sandbox.agent_kube().await.expect("agent kube client");
    let binding = BindingId { uid: "0b6c5f4e-uid".into(), namespace: "demo".into(), name: "web".into() };
    let store = |fence: Fence| OwnershipRecords::new(kube.clone(), "tgb-system", Arc::new(fence));
    let (old_leader, new_leader) = (store(Fence::open()), store(Fence::open()));

    // Both see no record; the first to write creates it, the other's create is refused.
    assert_eq!(old_leader.read(&binding).await.expect("read"), None);
    assert_eq!(new_leader.read(&binding).await.expect("read"), None);
    new_leader.write(&binding, &record("10.0.0.1")).await.expect("first write");
    let refused = old_leader.write(&binding, &record("10.0.0.9")).await.expect_err("stale create");
    assert!(matches!(refused, RecordError::Conflict { .. }), "{refused:?}");

    // Read again, the old one writes; the new one's version is now stale, and it is refused.
    assert_eq!(old_leader.read(&binding).await.expect("read"), Some(record("10.0.0.1")));
    old_leader.write(&binding, &record("10.0.0.2")).await.expect("write after reading");
    let refused = new_leader.write(&binding, &record("10.0.0.3")).await.expect_err("stale update");
    assert!(matches!(refused, RecordError::Conflict { .. }), "{refused:?}");
    assert_eq!(new_leader.read(&binding).await.expect("read"), Some(record("10.0.0.2")), "the newer record stays");

    // A replica whose fence closed (it lost the lease) writes nothing at all.
    let deposed = store(Fence::closed());
    assert!(deposed.read(&binding).await.expect("read").is_some());
    let refused = deposed.write(&binding, &record("10.0.0.4")).await.expect_err("fenced");
    assert_eq!(refused.reason(), "NotLeader");
    assert_eq!(new_leader.read(&binding).await.expect("read"), Some(record("10.0.0.2")));
}
