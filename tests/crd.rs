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

fn crd_json() -> serde_json::Value {
    serde_json::to_value(tgb_agent::api::crd()).expect("CRD serializes")
}

#[test]
fn v1alpha1_is_served_not_stored_with_the_v1beta1_schema() {
    let crd = crd_json();
    let versions = crd.pointer("/spec/versions").and_then(|v| v.as_array()).expect("versions");
    let names: Vec<(&str, bool, bool)> = versions
        .iter()
        .map(|v| (v["name"].as_str().unwrap_or_default(), v["served"] == true, v["storage"] == true))
        .collect();
    assert_eq!(names, vec![("v1alpha1", true, false), ("v1beta1", true, true)]);
    assert_eq!(versions[0]["schema"], versions[1]["schema"]);
    assert_eq!(versions[0]["subresources"], versions[1]["subresources"]);
    assert!(crd.pointer("/spec/conversion").is_none(), "no conversion webhook: strategy None");
}

#[test]
fn the_schema_has_the_references_shape() {
    let crd = crd_json();
    let schema = crd.pointer("/spec/versions/1/schema/openAPIV3Schema").expect("schema");
    // A deliberate difference: without `spec` one object would break every list of bindings.
    assert_eq!(schema.get("required"), Some(&serde_json::json!(["spec"])));
    assert_eq!(schema.pointer("/properties/spec/required"), Some(&serde_json::json!(["serviceRef"])));
    let selector = schema.pointer("/properties/spec/properties/nodeSelector").expect("nodeSelector");
    assert_eq!(selector["x-kubernetes-map-type"], "atomic");
    assert_eq!(selector.pointer("/properties/matchExpressions/x-kubernetes-list-type"), Some(&"atomic".into()));
    assert_eq!(
        selector.pointer("/properties/matchExpressions/items/properties/values/x-kubernetes-list-type"),
        Some(&"atomic".into())
    );
    let condition = schema.pointer("/properties/status/properties/conditions/items/properties").expect("conditions");
    assert_eq!(condition.pointer("/status/enum"), Some(&serde_json::json!(["True", "False", "Unknown"])));
    assert_eq!(condition.pointer("/reason/minLength"), Some(&serde_json::json!(1)));
    assert_eq!(condition.pointer("/type/maxLength"), Some(&serde_json::json!(316)));
    assert_eq!(condition.pointer("/message/maxLength"), Some(&serde_json::json!(32768)));
}

#[test]
fn identity_fields_are_immutable_through_cel_transition_rules() {
    let crd = crd_json();
    let rules = crd
        .pointer("/spec/versions/1/schema/openAPIV3Schema/properties/spec/x-kubernetes-validations")
        .and_then(|r| r.as_array())
        .expect("spec has validation rules");
    for field in ["targetGroupARN", "targetGroupName", "targetType", "ipAddressType"] {
        let rule = rules
            .iter()
            .find(|r| r["fieldPath"] == format!(".{field}"))
            .unwrap_or_else(|| panic!("a rule for {field}"));
        let text = rule["rule"].as_str().unwrap_or_default();
        assert!(text.contains(&format!("oldSelf.{field}")), "{field}: a transition rule, got {text}");
        assert!(rule["message"].as_str().unwrap_or_default().starts_with(&format!("{field} is immutable")));
    }
}

#[test]
fn ports_are_bounded_at_admission() {
    let crd = crd_json();
    let spec = crd.pointer("/spec/versions/1/schema/openAPIV3Schema/properties/spec/properties").expect("spec");
    for pointer in
        ["/serviceRef/properties/port", "/networking/properties/ingress/items/properties/ports/items/properties/port"]
    {
        let port = spec.pointer(pointer).expect(pointer);
        assert_eq!((port["minimum"].as_f64(), port["maximum"].as_f64()), (Some(1.0), Some(65535.0)), "{pointer}");
        assert_eq!(port["x-kubernetes-int-or-string"], true, "{pointer}: names stay allowed");
    }
    let cidr = spec
        .pointer("/networking/properties/ingress/items/properties/from/items/properties/ipBlock/properties/cidr")
        .expect("cidr");
    assert!(cidr["pattern"].as_str().is_some_and(|p| p.starts_with('^') && p.ends_with('$')));
}

#[test]
fn int_or_string_ports_list_both_types_as_the_reference_does() {
    let rendered: serde_json::Value =
        serde_yaml::from_str(&tgb_agent::api::crd_yaml().expect("CRD renders")).expect("YAML parses");
    let port = rendered
        .pointer("/spec/versions/1/schema/openAPIV3Schema/properties/spec/properties/serviceRef/properties/port")
        .expect("serviceRef.port");
    assert_eq!(port["anyOf"], serde_json::json!([{"type": "integer"}, {"type": "string"}]));
    assert_eq!(
        (port["minimum"].as_i64(), port["maximum"].as_i64()),
        (Some(1), Some(65535)),
        "bounds render as integers"
    );
}
