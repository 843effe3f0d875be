//! Narrow pod reads: only the endpoint pods of a binding whose `spec.networking` names a port, and
//! only when its rules are computed. No pod cache, no pod watch.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

/// Container port name → the numbers it has across `pods`; sidecars (restartable init
/// containers) count, other init containers do not. Pods already gone are skipped.
pub async fn named_container_ports(
    client: &Client,
    namespace: &str,
    pods: &BTreeSet<String>,
) -> Result<BTreeMap<String, BTreeSet<u16>>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut named: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for name in pods {
        let Some(pod) = api.get_opt(name).await? else { continue };
        let Some(spec) = pod.spec else { continue };
        let sidecars =
            spec.init_containers.into_iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
        for container in spec.containers.into_iter().chain(sidecars) {
            for port in container.ports.into_iter().flatten() {
                if let (Some(port_name), Ok(number)) = (port.name, u16::try_from(port.container_port)) {
                    named.entry(port_name).or_default().insert(number);
                }
            }
        }
    }
    Ok(named)
}
