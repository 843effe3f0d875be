//! Checks a binding against its target group before anything is written to AWS.

use crate::api::{IpAddressType, TargetGroupBindingSpec, TargetType};
use crate::model::{TargetGroupInfo, TargetGroupIpType, TargetGroupRef, TargetGroupType};

use super::desired::{AddressFamily, PortRef};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Why a binding cannot be applied as written. Each maps to a condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBinding {
    #[error("spec.targetGroupARN or spec.targetGroupName must be set")]
    NoTargetGroup,
    #[error("spec.nodeSelector is only valid with targetType instance")]
    NodeSelectorWithIp,
    #[error("spec.iamRoleArnToAssume (cross-account target groups) is not supported by this version of tgb-agent")]
    CrossAccountUnsupported,
    #[error("spec.serviceRef.port {0:?} is neither a port number (1-65535) nor a port name")]
    BadServicePort(String),
    #[error(
        "spec.targetGroupARN {0:?} is not a target group ARN (arn:<partition>:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>)"
    )]
    MalformedArn(String),
    #[error(
        "spec.targetGroupARN names target group {arn_name:?} but spec.targetGroupName is {name:?}; set one, or both naming the same group"
    )]
    ArnNameMismatch { arn_name: String, name: String },
    #[error(transparent)]
    Networking(#[from] super::sg_rules::NetworkingError),
    #[error("target group {arn} has target type {actual}, not {expected}")]
    TargetTypeMismatch { arn: String, expected: &'static str, actual: String },
    #[error("target group {arn} has target type {actual}, which TargetGroupBindings cannot feed")]
    UnsupportedTargetType { arn: String, actual: String },
    #[error("spec.vpcID {spec} does not match the target group's VPC {actual}")]
    VpcMismatch { spec: String, actual: String },
    #[error("spec.ipAddressType {spec} does not match the target group's {actual}")]
    IpAddressTypeMismatch { spec: &'static str, actual: &'static str },
}

impl InvalidBinding {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TargetTypeMismatch { .. } | Self::UnsupportedTargetType { .. } => "TargetTypeMismatch",
            Self::VpcMismatch { .. } => "VpcMismatch",
            Self::IpAddressTypeMismatch { .. } => "IpAddressTypeMismatch",
            Self::NoTargetGroup
            | Self::NodeSelectorWithIp
            | Self::BadServicePort(_)
            | Self::MalformedArn(_)
            | Self::ArnNameMismatch { .. } => "InvalidSpec",
            Self::Networking(e) => e.reason(),
            Self::CrossAccountUnsupported => "Unsupported",
        }
    }
}

/// Checks that need no AWS call; returns the target group reference and the Service port.
/// Everything statically wrong is refused here, before any AWS call, so a typo never registers
/// targets first and fails later.
pub fn check_spec(spec: &TargetGroupBindingSpec) -> Result<(TargetGroupRef, PortRef), InvalidBinding> {
    let tg = match (non_empty(&spec.target_group_arn), non_empty(&spec.target_group_name)) {
        (Some(arn), name) => {
            let arn_name = target_group_name_of(arn).ok_or_else(|| InvalidBinding::MalformedArn(arn.to_owned()))?;
            if let Some(name) = name
                && name != arn_name
            {
                return Err(InvalidBinding::ArnNameMismatch { arn_name: arn_name.to_owned(), name: name.to_owned() });
            }
            TargetGroupRef::Arn(arn.to_owned())
        }
        (None, Some(name)) => TargetGroupRef::Name(name.to_owned()),
        (None, None) => return Err(InvalidBinding::NoTargetGroup),
    };
    if spec.target_type == Some(TargetType::Ip) && spec.node_selector.is_some() {
        return Err(InvalidBinding::NodeSelectorWithIp);
    }
    // Acting on the agent's own account instead would touch the wrong target group or fail late.
    if non_empty(&spec.iam_role_arn_to_assume).is_some() {
        return Err(InvalidBinding::CrossAccountUnsupported);
    }
    let port = match &spec.service_ref.port {
        IntOrString::Int(n) => PortRef::Number(*n),
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => PortRef::Number(n),
            Err(_) if !s.is_empty() => PortRef::Name(s.clone()),
            Err(_) => return Err(InvalidBinding::BadServicePort(s.clone())),
        },
    };
    if let PortRef::Number(n) = port
        && !(1..=65535).contains(&n)
    {
        return Err(InvalidBinding::BadServicePort(n.to_string()));
    }
    if let Some(networking) = &spec.networking {
        super::sg_rules::check_networking(networking, spec.target_type != Some(TargetType::Instance))?;
    }
    Ok((tg, port))
}

/// The `<name>` of `arn:<partition>:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>`.
fn target_group_name_of(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else { return None };
    let resource: Vec<&str> = resource.split('/').collect();
    let ok = *prefix == "arn"
        && !partition.is_empty()
        && *service == "elasticloadbalancing"
        && !region.is_empty()
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit());
    match resource.as_slice() {
        ["targetgroup", name, id] if ok && !name.is_empty() && !id.is_empty() => Some(name),
        _ => None,
    }
}

/// What the binding resolves to once checked against its target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub target_type: TargetType,
    pub family: AddressFamily,
}

/// Checks the binding against the target group it names.
pub fn check_against(spec: &TargetGroupBindingSpec, tg: &TargetGroupInfo) -> Result<Resolved, InvalidBinding> {
    let tg_type = match &tg.target_type {
        TargetGroupType::Ip => TargetType::Ip,
        TargetGroupType::Instance => TargetType::Instance,
        TargetGroupType::Unsupported(actual) => {
            return Err(InvalidBinding::UnsupportedTargetType { arn: tg.arn.clone(), actual: actual.clone() });
        }
    };
    let target_type = spec.target_type.unwrap_or(tg_type);
    if target_type != tg_type {
        return Err(InvalidBinding::TargetTypeMismatch {
            arn: tg.arn.clone(),
            expected: type_name(target_type),
            actual: type_name(tg_type).to_owned(),
        });
    }
    if target_type == TargetType::Ip && spec.node_selector.is_some() {
        return Err(InvalidBinding::NodeSelectorWithIp);
    }
    if let (Some(spec_vpc), Some(actual)) = (non_empty(&spec.vpc_id), tg.vpc_id.as_deref())
        && spec_vpc != actual
    {
        return Err(InvalidBinding::VpcMismatch { spec: spec_vpc.to_owned(), actual: actual.to_owned() });
    }
    let tg_family = match tg.ip_address_type {
        TargetGroupIpType::Ipv4 => IpAddressType::Ipv4,
        TargetGroupIpType::Ipv6 => IpAddressType::Ipv6,
    };
    let family = spec.ip_address_type.unwrap_or(tg_family);
    if family != tg_family {
        return Err(InvalidBinding::IpAddressTypeMismatch {
            spec: family_name(family),
            actual: family_name(tg_family),
        });
    }
    let family = match family {
        IpAddressType::Ipv4 => AddressFamily::Ipv4,
        IpAddressType::Ipv6 => AddressFamily::Ipv6,
    };
    Ok(Resolved { target_type, family })
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn type_name(t: TargetType) -> &'static str {
    match t {
        TargetType::Ip => "ip",
        TargetType::Instance => "instance",
    }
}

fn family_name(f: IpAddressType) -> &'static str {
    match f {
        IpAddressType::Ipv4 => "ipv4",
        IpAddressType::Ipv6 => "ipv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServiceReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    const ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";

    fn spec() -> TargetGroupBindingSpec {
        TargetGroupBindingSpec {
            target_group_arn: Some(ARN.into()),
            service_ref: ServiceReference { name: "web".into(), port: IntOrString::Int(80) },
            ..Default::default()
        }
    }

    fn tg(target_type: TargetGroupType) -> TargetGroupInfo {
        TargetGroupInfo {
            arn: "arn:tg".into(),
            name: "tg".into(),
            target_type,
            vpc_id: Some("vpc-1".into()),
            ip_address_type: TargetGroupIpType::Ipv4,
            protocol: Some("HTTP".into()),
        }
    }

    #[test]
    fn arn_wins_over_name_and_one_is_required() {
        let mut s = spec();
        s.target_group_name = Some("web".into());
        assert_eq!(check_spec(&s).map(|r| r.0), Ok(TargetGroupRef::Arn(ARN.into())));
        s.target_group_name = Some("by-name".into());
        assert_eq!(check_spec(&s).map(|_| ()).map_err(|e| e.to_string()), Err("spec.targetGroupARN names target group \"web\" but spec.targetGroupName is \"by-name\"; set one, or both naming the same group".into()));
        s.target_group_arn = Some(" ".into());
        assert_eq!(check_spec(&s).map(|r| r.0), Ok(TargetGroupRef::Name("by-name".into())));
        s.target_group_name = None;
        assert_eq!(check_spec(&s), Err(InvalidBinding::NoTargetGroup));
    }

    #[test]
    fn cross_account_is_refused_before_any_aws_call() {
        let mut s = spec();
        s.iam_role_arn_to_assume = Some("arn:aws:iam::222222222222:role/tgb".into());
        assert_eq!(check_spec(&s).map(|_| ()).map_err(|e| e.reason()), Err("Unsupported"));
        s.iam_role_arn_to_assume = Some(String::new());
        assert!(check_spec(&s).is_ok());
    }

    #[test]
    fn static_mistakes_are_refused_before_any_aws_call() {
        let mut s = spec();
        for bad in [
            "arn:tg",
            "arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/web/1",
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/x/1",
        ] {
            s.target_group_arn = Some(bad.into());
            assert_eq!(check_spec(&s).map(|_| ()), Err(InvalidBinding::MalformedArn(bad.into())), "{bad}");
        }
        let mut s = spec();
        for bad in [0, 65536, 70000, -1] {
            s.service_ref.port = IntOrString::Int(bad);
            assert_eq!(check_spec(&s).map(|_| ()).map_err(|e| e.reason()), Err("InvalidSpec"), "{bad}");
        }
        let networking = |port: i32, cidr: &str| -> crate::api::TargetGroupBindingNetworking {
            serde_json::from_value(
                serde_json::json!({"ingress": [{"from": [{"ipBlock": {"cidr": cidr}}], "ports": [{"port": port}]}]}),
            )
            .expect("networking")
        };
        let mut s = spec();
        s.networking = Some(networking(70000, "10.0.0.0/16"));
        assert!(check_spec(&s).is_err(), "port 70000");
        s.networking = Some(networking(80, "10.0.0.0/33"));
        assert!(check_spec(&s).is_err(), "CIDR /33");
        s.networking = Some(networking(80, "10.0.0.0/16"));
        assert!(check_spec(&s).is_ok());
    }

    #[test]
    fn service_port_forms() {
        let mut s = spec();
        s.service_ref.port = IntOrString::String("http".into());
        assert_eq!(check_spec(&s).map(|r| r.1), Ok(PortRef::Name("http".into())));
        s.service_ref.port = IntOrString::String("8080".into());
        assert_eq!(check_spec(&s).map(|r| r.1), Ok(PortRef::Number(8080)));
        s.service_ref.port = IntOrString::String(String::new());
        assert_eq!(check_spec(&s).map(|r| r.1).map_err(|e| e.reason()), Err("InvalidSpec"));
    }

    #[test]
    fn target_type_defaults_from_the_group_and_must_match_it() {
        let s = spec();
        assert_eq!(check_against(&s, &tg(TargetGroupType::Ip)).map(|r| r.target_type), Ok(TargetType::Ip));
        let mut s = spec();
        s.target_type = Some(TargetType::Ip);
        let err = check_against(&s, &tg(TargetGroupType::Instance)).expect_err("mismatch");
        assert_eq!(err.reason(), "TargetTypeMismatch");
        let err = check_against(&s, &tg(TargetGroupType::Unsupported("lambda".into()))).expect_err("lambda");
        assert_eq!(err.reason(), "TargetTypeMismatch");
    }

    #[test]
    fn node_selector_is_invalid_with_ip() {
        let mut s = spec();
        s.node_selector = Some(LabelSelector::default());
        // Unset targetType resolved to ip from the group is caught too.
        assert_eq!(check_against(&s, &tg(TargetGroupType::Ip)), Err(InvalidBinding::NodeSelectorWithIp));
        s.target_type = Some(TargetType::Ip);
        assert_eq!(check_spec(&s).map(|_| ()), Err(InvalidBinding::NodeSelectorWithIp));
    }

    #[test]
    fn vpc_and_family_must_match() {
        let mut s = spec();
        s.vpc_id = Some("vpc-2".into());
        assert_eq!(check_against(&s, &tg(TargetGroupType::Ip)).map_err(|e| e.reason()), Err("VpcMismatch"));
        let mut s = spec();
        s.ip_address_type = Some(IpAddressType::Ipv6);
        assert_eq!(check_against(&s, &tg(TargetGroupType::Ip)).map_err(|e| e.reason()), Err("IpAddressTypeMismatch"));
        let mut v6 = tg(TargetGroupType::Ip);
        v6.ip_address_type = TargetGroupIpType::Ipv6;
        assert_eq!(check_against(&s, &v6).map(|r| r.family), Ok(AddressFamily::Ipv6));
    }
}
