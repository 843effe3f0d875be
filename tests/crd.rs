//! The committed CRD must be exactly what the Rust types generate.

#[test]
fn committed_crd_matches_the_rust_types() {
    let generated = tgb_agent::api::crd_yaml().expect("CRD renders");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/targetgroupbindings.elbv2.k8s.aws.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/targetgroupbindings.elbv2.k8s.aws.yaml exists");
    assert!(
        generated == committed,
        "crds/ is stale: regenerate it with `cargo run -- crd > crds/targetgroupbindings.elbv2.k8s.aws.yaml`"
    );
}

#[test]
fn the_mission_manifest_deserializes_unchanged() {
    let manifest = include_str!("fixtures/mission-targetgroupbinding.yaml");
    let tgb: tgb_agent::api::TargetGroupBinding = serde_yaml::from_str(manifest).expect("manifest parses");
    assert_eq!(tgb.spec.service_ref.name, "service-name");
    assert_eq!(tgb.spec.target_type, Some(tgb_agent::api::TargetType::Ip));
    let rule = &tgb.spec.networking.expect("networking").ingress[0];
    assert_eq!(rule.from[0].security_group.as_ref().map(|g| g.group_id.as_str()), Some("sg-0123456789abcdef0"));
    assert_eq!(rule.ports[0].protocol, Some(tgb_agent::api::NetworkingProtocol::TCP));
    assert_eq!(rule.ports[0].port, None);
}
