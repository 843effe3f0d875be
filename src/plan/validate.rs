//! Checks a binding against its target group before anything is written to AWS.

use crate::api::{IpAddressType, TargetGroupBindingSpec, TargetType};
use crate::model::{
    Account, AssumeRole, TargetGroupInfo, TargetGroupIpType, TargetGroupRef, TargetGroupType, arn_account, role_account,
};

use super::desired::{AddressFamily, PortRef};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Why a binding cannot be applied as written. Each maps to a condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBinding {
    #[error("spec.targetGroupARN or spec.targetGroupName must be set")]
    NoTargetGroup,
    #[error("spec.nodeSelector is only valid with targetType instance")]
    NodeSelectorWithIp,
    #[error("spec.iamRoleArnToAssume {0:?} is not an IAM role ARN (arn:<partition>:iam::<account>:role/<name>)")]
    MalformedRoleArn(String),
    #[error(
        "spec.iamRoleArnToAssume needs targetType ip: ELB cannot register the instances of one account in another account's target group"
    )]
    CrossAccountInstance,
    #[error(
        "spec.targetGroupARN is in account {group}, but spec.iamRoleArnToAssume acts in account {role}: a role can only reach its own account's target groups"
    )]
    RoleAccountMismatch { group: String, role: String },
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
            | Self::ArnNameMismatch { .. }
            | Self::MalformedRoleArn(_)
            | Self::RoleAccountMismatch { .. } => "InvalidSpec",
            Self::CrossAccountInstance => "CrossAccountInstance",
            Self::Networking(e) => e.reason(),
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
    // ELB takes instance targets only from the target group's own account: refused before any call.
    if let Account::Role(role) = account_of(spec)? {
        if spec.target_type == Some(TargetType::Instance) {
            return Err(InvalidBinding::CrossAccountInstance);
        }
        if let (TargetGroupRef::Arn(arn), Some(role)) = (&tg, role.account_id())
            && let Some(group) = arn_account(arn)
            && group != role
        {
            return Err(InvalidBinding::RoleAccountMismatch { group: group.to_owned(), role: role.to_owned() });
        }
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

/// The account the binding's target group lives in: its own, or the one `spec.iamRoleArnToAssume`
/// reaches. `spec.assumeRoleExternalId` counts only when non-empty (an empty one is never sent).
pub fn account_of(spec: &TargetGroupBindingSpec) -> Result<Account, InvalidBinding> {
    let Some(role_arn) = non_empty(&spec.iam_role_arn_to_assume) else { return Ok(Account::Own) };
    if role_account(role_arn).is_none() {
        return Err(InvalidBinding::MalformedRoleArn(role_arn.to_owned()));
    }
    let external_id = spec.assume_role_external_id.as_deref().filter(|id| !id.is_empty()).map(str::to_owned);
    Ok(Account::Role(AssumeRole { role_arn: role_arn.to_owned(), external_id }))
}

/// Whether `arn` is shaped like a target group's ARN (it may still name no group).
pub fn is_target_group_arn(arn: &str) -> bool {
    target_group_name_of(arn).is_some()
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
    // An unset targetType resolved to instance from the group: refused before any write.
    if target_type == TargetType::Instance && non_empty(&spec.iam_role_arn_to_assume).is_some() {
        return Err(InvalidBinding::CrossAccountInstance);
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
    Ok(Resolved { target_type, family: family.into() })
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
            health_check: None,
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

    const ROLE: &str = "arn:aws:iam::123456789012:role/tgb";

    #[test]
    fn the_account_comes_from_the_role_and_an_empty_external_id_is_none() {
        let mut s = spec();
        assert_eq!(account_of(&s), Ok(Account::Own));
        s.iam_role_arn_to_assume = Some(" ".into());
        s.assume_role_external_id = Some("ignored without a role".into());
        assert_eq!(account_of(&s), Ok(Account::Own));
        s.iam_role_arn_to_assume = Some(ROLE.into());
        let role = |external_id: Option<&str>| {
            Account::Role(AssumeRole { role_arn: ROLE.into(), external_id: external_id.map(str::to_owned) })
        };
        assert_eq!(account_of(&s), Ok(role(Some("ignored without a role"))));
        s.assume_role_external_id = Some(String::new());
        assert_eq!(account_of(&s), Ok(role(None)));
        s.assume_role_external_id = None;
        assert_eq!(account_of(&s), Ok(role(None)));
        assert!(check_spec(&s).is_ok());
    }

    #[test]
    fn cross_account_mistakes_are_refused_before_any_aws_call() {
        let mut s = spec();
        s.iam_role_arn_to_assume = Some("tgb-role".into());
        assert_eq!(check_spec(&s).map(|_| ()), Err(InvalidBinding::MalformedRoleArn("tgb-role".into())));
        // ELB cannot register another account's instances.
        s.iam_role_arn_to_assume = Some(ROLE.into());
        s.target_type = Some(TargetType::Instance);
        let err = check_spec(&s).map(|_| ()).expect_err("instance with a role");
        assert_eq!((err.reason(), err.clone()), ("CrossAccountInstance", InvalidBinding::CrossAccountInstance));
        // Unset targetType resolved to instance from the group: refused before any write.
        s.target_type = None;
        assert_eq!(check_against(&s, &tg(TargetGroupType::Instance)), Err(InvalidBinding::CrossAccountInstance));
        assert!(check_against(&s, &tg(TargetGroupType::Ip)).is_ok());
        // A role reaches only its own account's groups.
        s.iam_role_arn_to_assume = Some("arn:aws:iam::222222222222:role/tgb".into());
        assert_eq!(
            check_spec(&s).map(|_| ()).map_err(|e| e.reason()),
            Err("InvalidSpec"),
            "group in 123456789012, role in 222222222222"
        );
        s.target_group_arn = None;
        s.target_group_name = Some("web".into());
        assert!(check_spec(&s).is_ok(), "by name: looked up in the role's account");
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
