//! What the agent installed from deploy/ runs with, for a run by hand against that cluster.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar};
use kube::{Api, Client};

/// The installed Deployment and the env var deploy/ passes the cluster name in.
const DEPLOYMENT: &str = "tgb-agent";
const CLUSTER_NAME_ENV: &str = "CLUSTER_NAME";

/// The CLUSTER_NAME of Deployment `tgb-agent` in `namespace`: its value, or the ConfigMap key it
/// refers to (deploy/'s `tgb-agent-settings`, whose generated name carries a hash). `None` when no
/// such Deployment, variable or key exists.
pub async fn cluster_name(client: &Client, namespace: &str) -> Result<Option<String>, kube::Error> {
    let Some(deployment) = Api::<Deployment>::namespaced(client.clone(), namespace).get_opt(DEPLOYMENT).await? else {
        return Ok(None);
    };
    let Some(env) = cluster_name_env(&deployment) else { return Ok(None) };
    if let Some(value) = env.value.filter(|v| !v.is_empty()) {
        return Ok(Some(value));
    }
    let Some(key_ref) = env.value_from.and_then(|v| v.config_map_key_ref) else { return Ok(None) };
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt(&key_ref.name).await?;
    Ok(config_map.and_then(|c| c.data).and_then(|d| d.get(&key_ref.key).cloned()).filter(|v| !v.is_empty()))
}

fn cluster_name_env(deployment: &Deployment) -> Option<EnvVar> {
    let containers = &deployment.spec.template.spec.as_ref()?.containers;
    containers.iter().flat_map(|c| c.env.iter().flatten()).find(|e| e.name == CLUSTER_NAME_ENV).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_variable_deploy_sets() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "tgb-agent"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "agent", "env": [
                {"name": "LOG_FORMAT", "value": "json"},
                {"name": "CLUSTER_NAME", "valueFrom": {"configMapKeyRef": {"name": "tgb-agent-settings-5h2k", "key": "CLUSTER_NAME"}}}
            ]}]}}}
        }))
        .expect("deployment");
        let env = cluster_name_env(&deployment).expect("env");
        assert_eq!(
            env.value_from.and_then(|v| v.config_map_key_ref).map(|r| r.name),
            Some("tgb-agent-settings-5h2k".into())
        );
    }
}
