//! Desired targets of an ip-mode binding, from its Service port and EndpointSlices.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::{Cidr, Target, TargetId};

/// The part of a Service the planner needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceView {
    pub type_: Option<String>,
    pub ports: Vec<ServicePortView>,
    /// A non-empty `spec.selector`: the EndpointSlice controller publishes its slices, at least an
    /// empty one, so no slice at all means "not published yet", never "no endpoints".
    pub selects_pods: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServicePortView {
    pub name: Option<String>,
    pub port: i32,
    pub node_port: Option<i32>,
}

/// How `spec.serviceRef.port` names a Service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

impl ServiceView {
    /// A number matches `spec.ports[].port`, a name matches `spec.ports[].name`.
    pub fn port(&self, port: &PortRef) -> Option<&ServicePortView> {
        self.ports.iter().find(|p| match port {
            PortRef::Number(n) => p.port == *n,
            PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
    Fqdn,
}

impl From<crate::api::IpAddressType> for AddressFamily {
    fn from(family: crate::api::IpAddressType) -> Self {
        match family {
            crate::api::IpAddressType::Ipv4 => Self::Ipv4,
            crate::api::IpAddressType::Ipv6 => Self::Ipv6,
        }
    }
}

impl std::fmt::Display for AddressFamily {
    /// As EndpointSlice `addressType` spells it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
            Self::Fqdn => "FQDN",
        })
    }
}

/// The part of an EndpointSlice the planner needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SliceView {
    pub family: AddressFamily,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<EndpointView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SlicePort {
    pub name: Option<String>,
    pub port: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointView {
    pub addresses: Vec<String>,
    pub ready: Option<bool>,
    pub terminating: Option<bool>,
    /// The pod behind the endpoint (`targetRef` of kind Pod), in the Service's namespace.
    pub pod: Option<String>,
}

impl EndpointView {
    /// Ready (or unknown, which Kubernetes defines as ready) and not on its way out.
    fn serves_traffic(&self) -> bool {
        self.ready != Some(false) && self.terminating != Some(true)
    }

    /// Serving, or waiting only for this binding's readiness gate (its pod is in `gated`): such a
    /// pod turns Ready only once its target is healthy, so it must be registered first.
    fn to_register(&self, gated: &BTreeSet<String>) -> bool {
        self.serves_traffic()
            || (self.terminating != Some(true) && self.pod.as_ref().is_some_and(|p| gated.contains(p)))
    }
}

/// Every `ip:port` the target group should hold for `service_port`.
///
/// Slices of other address families are ignored. A slice port is used when its name equals the
/// Service port's name, or for every slice port when the Service port is unnamed (the
/// EndpointSlice controller has already resolved named target ports to numbers).
pub fn ip_targets<'a>(
    service_port: &ServicePortView,
    slices: impl IntoIterator<Item = &'a SliceView>,
    family: AddressFamily,
) -> BTreeSet<TargetId> {
    ip_targets_gated(service_port, slices, family, &BTreeSet::new())
}

/// [`ip_targets`], also taking the not-yet-ready endpoints of pods in `gated` (pods whose only
/// missing readiness is this binding's readiness gate).
pub fn ip_targets_gated<'a>(
    service_port: &ServicePortView,
    slices: impl IntoIterator<Item = &'a SliceView>,
    family: AddressFamily,
    gated: &BTreeSet<String>,
) -> BTreeSet<TargetId> {
    let wanted_name = service_port.name.as_deref().filter(|n| !n.is_empty());
    slices
        .into_iter()
        .filter(|slice| slice.family == family)
        .flat_map(|slice| {
            let ports = slice
                .ports
                .iter()
                .filter(move |p| wanted_name.is_none() || p.name.as_deref() == wanted_name)
                .filter_map(|p| p.port.and_then(|port| u16::try_from(port).ok()).filter(|port| *port > 0));
            ports.flat_map(move |port| {
                slice
                    .endpoints
                    .iter()
                    .filter(|e| e.to_register(gated))
                    .filter_map(|e| e.addresses.first())
                    .map(move |ip| TargetId::new(ip.clone(), port))
            })
        })
        .collect()
}

/// The pods behind the endpoints [`ip_targets_gated`] registers, those only their gate holds back
/// included (the load balancer health-checks them): their container ports name the ports of
/// `spec.networking`.
pub fn registered_pods<'a>(
    slices: impl IntoIterator<Item = &'a SliceView>,
    family: AddressFamily,
    gated: &BTreeSet<String>,
) -> BTreeSet<String> {
    slices
        .into_iter()
        .filter(|slice| slice.family == family)
        .flat_map(|slice| slice.endpoints.iter())
        .filter(|e| e.to_register(gated))
        .filter_map(|e| e.pod.clone())
        .collect()
}

/// The pods of endpoints that are neither ready nor terminating: the only ones whose readiness gate
/// can hold them back, so the only ones read to look for it.
pub fn not_ready_pods<'a>(slices: impl IntoIterator<Item = &'a SliceView>, family: AddressFamily) -> BTreeSet<String> {
    slices
        .into_iter()
        .filter(|slice| slice.family == family)
        .flat_map(|slice| slice.endpoints.iter())
        .filter(|e| e.ready == Some(false) && e.terminating != Some(true))
        .filter_map(|e| e.pod.clone())
        .collect()
}

/// Pod → its endpoint address, for the pods in `pods` that are not terminating.
pub fn pod_addresses<'a>(
    slices: impl IntoIterator<Item = &'a SliceView>,
    family: AddressFamily,
    pods: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    slices
        .into_iter()
        .filter(|slice| slice.family == family)
        .flat_map(|slice| slice.endpoints.iter())
        // A terminating pod's gate no longer matters: it is leaving, and closing it costs a write.
        .filter(|e| e.terminating != Some(true))
        .filter_map(|e| Some((e.pod.clone().filter(|p| pods.contains(p))?, e.addresses.first()?.clone())))
        .collect()
}

/// Every address the backend's endpoints hold, ready or not: while an endpoint has it, no other
/// pod in the VPC can, so a target at that address is this binding's.
pub fn endpoint_addresses<'a>(
    slices: impl IntoIterator<Item = &'a SliceView>,
    family: AddressFamily,
) -> BTreeSet<String> {
    slices
        .into_iter()
        .filter(|slice| slice.family == family)
        .flat_map(|slice| slice.endpoints.iter())
        .filter_map(|e| e.addresses.first().cloned())
        .map(crate::model::canonical_address)
        .collect()
}

/// [`endpoint_addresses`] for a binding whose family may not be known (`ipAddressType` unset, the
/// group not read, as on deletion): then the addresses of both families, since an address this
/// binding's endpoints hold in either family is no other pod's.
pub fn held_addresses<'a>(
    slices: impl IntoIterator<Item = &'a SliceView>,
    family: Option<AddressFamily>,
) -> BTreeSet<String> {
    let slices: Vec<&SliceView> = slices.into_iter().collect();
    match family {
        Some(family) => endpoint_addresses(slices, family),
        None => [AddressFamily::Ipv4, AddressFamily::Ipv6]
            .into_iter()
            .flat_map(|family| endpoint_addresses(slices.iter().copied(), family))
            .collect(),
    }
}

/// Attaches the AvailabilityZone to send: `all` for an IP outside every CIDR of the target
/// group's VPC (ELBv2 rejects such an IP otherwise), none when it is inside or the VPC is unknown.
pub fn with_availability_zones(ids: BTreeSet<TargetId>, vpc_cidrs: Option<&[Cidr]>) -> BTreeSet<Target> {
    ids.into_iter()
        .map(|id| {
            let outside = match (vpc_cidrs, id.id.parse::<IpAddr>()) {
                (Some(cidrs), Ok(ip)) => !cidrs.iter().any(|c| c.contains(ip)),
                _ => false,
            };
            Target { availability_zone: outside.then(|| "all".to_owned()), id }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: &str, ready: Option<bool>, terminating: Option<bool>) -> EndpointView {
        EndpointView { addresses: vec![ip.into()], ready, terminating, pod: Some(format!("pod-{ip}")) }
    }

    fn slice(family: AddressFamily, ports: &[(Option<&str>, i32)], endpoints: Vec<EndpointView>) -> SliceView {
        SliceView {
            family,
            ports: ports.iter().map(|(n, p)| SlicePort { name: n.map(str::to_owned), port: Some(*p) }).collect(),
            endpoints,
        }
    }

    fn port(name: Option<&str>) -> ServicePortView {
        ServicePortView { name: name.map(str::to_owned), port: 80, node_port: None }
    }

    fn ids(list: &[(&str, u16)]) -> BTreeSet<TargetId> {
        list.iter().map(|(ip, p)| TargetId::new(*ip, *p)).collect()
    }

    #[test]
    fn ready_and_unset_are_registered_not_ready_and_terminating_are_not() {
        let s = slice(
            AddressFamily::Ipv4,
            &[(Some("http"), 8080)],
            vec![
                ep("10.0.0.1", Some(true), None),
                ep("10.0.0.2", None, None),
                ep("10.0.0.3", Some(false), None),
                ep("10.0.0.4", Some(false), Some(true)),
                ep("10.0.0.5", None, Some(true)),
            ],
        );
        assert_eq!(
            ip_targets(&port(Some("http")), &[s], AddressFamily::Ipv4),
            ids(&[("10.0.0.1", 8080), ("10.0.0.2", 8080)])
        );
    }

    #[test]
    fn a_pod_held_back_only_by_its_readiness_gate_is_registered() {
        let s = slice(
            AddressFamily::Ipv4,
            &[(Some("http"), 8080)],
            vec![
                ep("10.0.0.1", Some(false), None),
                ep("10.0.0.2", Some(false), None),
                ep("10.0.0.3", Some(false), Some(true)),
            ],
        );
        let gated: BTreeSet<String> = ["pod-10.0.0.1".to_string(), "pod-10.0.0.3".to_string()].into();
        let slices = [s];
        assert_eq!(
            ip_targets_gated(&port(Some("http")), &slices, AddressFamily::Ipv4, &gated),
            ids(&[("10.0.0.1", 8080)])
        );
        assert_eq!(
            not_ready_pods(&slices, AddressFamily::Ipv4),
            ["pod-10.0.0.1".to_string(), "pod-10.0.0.2".to_string()].into()
        );
    }

    #[test]
    fn registered_pods_are_those_serving_or_held_back_only_by_the_gate() {
        let s = slice(
            AddressFamily::Ipv4,
            &[(None, 80)],
            vec![ep("10.0.0.1", Some(true), None), ep("10.0.0.2", Some(false), None), ep("10.0.0.3", None, Some(true))],
        );
        let v6 = slice(AddressFamily::Ipv6, &[(None, 80)], vec![ep("fd00::1", None, None)]);
        let mut no_ref = ep("10.0.0.4", None, None);
        no_ref.pod = None;
        let other = SliceView { family: AddressFamily::Ipv4, ports: vec![], endpoints: vec![no_ref] };
        let slices = [s, v6, other];
        let none = BTreeSet::new();
        assert_eq!(registered_pods(&slices, AddressFamily::Ipv4, &none), ["pod-10.0.0.1".to_string()].into());
        let gated = ["pod-10.0.0.2".to_string(), "pod-10.0.0.3".to_string()].into();
        let expected = ["pod-10.0.0.1".to_string(), "pod-10.0.0.2".to_string()].into();
        assert_eq!(registered_pods(&slices, AddressFamily::Ipv4, &gated), expected, "a terminating pod stays out");
    }

    #[test]
    fn named_service_port_takes_only_the_matching_slice_port() {
        let s = slice(
            AddressFamily::Ipv4,
            &[(Some("http"), 8080), (Some("metrics"), 9090)],
            vec![ep("10.0.0.1", Some(true), None)],
        );
        assert_eq!(
            ip_targets(&port(Some("http")), std::slice::from_ref(&s), AddressFamily::Ipv4),
            ids(&[("10.0.0.1", 8080)])
        );
        assert_eq!(ip_targets(&port(None), &[s], AddressFamily::Ipv4), ids(&[("10.0.0.1", 8080), ("10.0.0.1", 9090)]));
    }

    #[test]
    fn other_families_and_bad_ports_are_ignored() {
        let v6 = slice(AddressFamily::Ipv6, &[(None, 8080)], vec![ep("fd00::1", Some(true), None)]);
        let v4 =
            slice(AddressFamily::Ipv4, &[(None, 8080), (None, 0), (None, 70000)], vec![ep("10.0.0.1", None, None)]);
        let no_port = SliceView {
            family: AddressFamily::Ipv4,
            ports: vec![SlicePort { name: None, port: None }],
            endpoints: vec![ep("10.0.0.9", None, None)],
        };
        let slices = [v6, v4, no_port];
        assert_eq!(ip_targets(&port(None), &slices, AddressFamily::Ipv4), ids(&[("10.0.0.1", 8080)]));
        assert_eq!(ip_targets(&port(None), &slices, AddressFamily::Ipv6), ids(&[("fd00::1", 8080)]));
    }

    #[test]
    fn endpoints_across_slices_are_merged_and_deduplicated() {
        let a = slice(AddressFamily::Ipv4, &[(None, 80)], vec![ep("10.0.0.1", None, None)]);
        let b = slice(AddressFamily::Ipv4, &[(None, 80)], vec![ep("10.0.0.1", None, None), ep("10.0.0.2", None, None)]);
        assert_eq!(ip_targets(&port(None), &[a, b], AddressFamily::Ipv4), ids(&[("10.0.0.1", 80), ("10.0.0.2", 80)]));
    }

    #[test]
    fn service_port_lookup_by_number_and_name() {
        let svc = ServiceView {
            type_: None,
            selects_pods: true,
            ports: vec![
                ServicePortView { name: Some("http".into()), port: 80, node_port: None },
                ServicePortView { name: Some("https".into()), port: 443, node_port: Some(30443) },
            ],
        };
        assert_eq!(svc.port(&PortRef::Number(443)).map(|p| p.port), Some(443));
        assert_eq!(svc.port(&PortRef::Name("http".into())).map(|p| p.port), Some(80));
        assert!(svc.port(&PortRef::Number(8080)).is_none());
        assert!(svc.port(&PortRef::Name("grpc".into())).is_none());
    }

    #[test]
    fn outside_the_vpc_gets_az_all() {
        let cidrs: Vec<Cidr> = vec!["10.0.0.0/16".parse().expect("cidr"), "fd00::/8".parse().expect("cidr")];
        let targets = with_availability_zones(
            ids(&[("10.0.1.1", 80), ("192.168.0.1", 80), ("fd00::1", 80), ("2001:db8::1", 80)]),
            Some(&cidrs),
        );
        let all: Vec<String> =
            targets.iter().filter(|t| t.availability_zone.as_deref() == Some("all")).map(|t| t.id.id.clone()).collect();
        assert_eq!(all, vec!["192.168.0.1".to_string(), "2001:db8::1".to_string()]);
        let unknown_vpc = with_availability_zones(ids(&[("192.168.0.1", 80)]), None);
        assert!(unknown_vpc.iter().all(|t| t.availability_zone.is_none()));
    }

    #[test]
    fn ipv6_endpoints_of_a_dual_stack_service_with_named_ports_and_readiness() {
        // A dual-stack Service has one slice per family; an ipv6 binding takes only the IPv6 one.
        let v4 = slice(AddressFamily::Ipv4, &[(Some("http"), 8080)], vec![ep("10.0.0.1", Some(true), None)]);
        let v6 = slice(
            AddressFamily::Ipv6,
            &[(Some("http"), 8080), (Some("metrics"), 9090)],
            vec![
                ep("2600:1f18:0:0::a", Some(true), None),
                ep("2600:1F18::B", None, None),
                ep("2600:1f18::c", Some(false), None),
                ep("2600:1f18::d", Some(true), Some(true)),
            ],
        );
        let slices = [v4, v6];
        // Spelled the canonical way (RFC 5952), as AWS answers: one target, not two.
        assert_eq!(
            ip_targets(&port(Some("http")), &slices, AddressFamily::Ipv6),
            ids(&[("2600:1f18::a", 8080), ("2600:1f18::b", 8080)])
        );
        assert_eq!(ip_targets(&port(Some("http")), &slices, AddressFamily::Ipv4), ids(&[("10.0.0.1", 8080)]));
        assert_eq!(
            endpoint_addresses(&slices, AddressFamily::Ipv6),
            ["2600:1f18::a", "2600:1f18::b", "2600:1f18::c", "2600:1f18::d"].map(String::from).into()
        );
        // AZ `all` only for IPv6 addresses outside the VPC's IPv6 CIDRs.
        let cidrs: Vec<Cidr> = vec!["10.0.0.0/16".parse().expect("cidr"), "2600:1f18:0:0::/56".parse().expect("cidr")];
        let targets = with_availability_zones(ids(&[("2600:1f18::a", 80), ("2600:1f18:0:100::1", 80)]), Some(&cidrs));
        let zones: Vec<(String, Option<String>)> =
            targets.into_iter().map(|t| (t.id.id, t.availability_zone)).collect();
        assert_eq!(
            zones,
            vec![("2600:1f18:0:100::1".into(), Some("all".into())), ("2600:1f18::a".into(), None)],
            "a /56 ends at 2600:1f18:0:ff::"
        );
    }

    #[test]
    fn addresses_are_canonical_and_other_ids_untouched() {
        assert_eq!(TargetId::new("2600:1F18:0000:0:0:0:0:0A", 80).id, "2600:1f18::a");
        assert_eq!(TargetId::new("::ffff:10.0.0.1", 80).id, "::ffff:10.0.0.1");
        assert_eq!(TargetId::new("10.0.0.1", 80).id, "10.0.0.1");
        assert_eq!(TargetId::new("i-0123456789abcdef0", 80).id, "i-0123456789abcdef0");
        assert_eq!("2600:1F18::A:8080".parse::<TargetId>(), Ok(TargetId::new("2600:1f18::a", 8080)));
    }

    #[test]
    fn held_addresses_of_an_unknown_family_are_both_families() {
        let v4 = slice(AddressFamily::Ipv4, &[(None, 80)], vec![ep("10.0.0.1", Some(false), None)]);
        let v6 = slice(AddressFamily::Ipv6, &[(None, 80)], vec![ep("2600:1F18::1", None, Some(true))]);
        let fqdn = slice(AddressFamily::Fqdn, &[(None, 80)], vec![ep("web.example.com", None, None)]);
        let slices = [v4, v6, fqdn];
        assert_eq!(held_addresses(&slices, Some(AddressFamily::Ipv6)), ["2600:1f18::1".to_string()].into());
        assert_eq!(
            held_addresses(&slices, None),
            ["10.0.0.1".to_string(), "2600:1f18::1".to_string()].into(),
            "not ready and terminating endpoints still hold their addresses"
        );
    }

    #[test]
    fn terminating_pods_have_no_gate_to_keep() {
        let mut leaving = ep("10.0.0.2", Some(false), Some(true));
        leaving.pod = Some("old".into());
        let mut starting = ep("10.0.0.3", Some(false), None);
        starting.pod = Some("new".into());
        let slices = [slice(AddressFamily::Ipv4, &[(None, 80)], vec![leaving, starting])];
        let pods: BTreeSet<String> = ["old".to_string(), "new".to_string()].into();
        let found = pod_addresses(&slices, AddressFamily::Ipv4, &pods);
        assert_eq!(found.into_iter().collect::<Vec<_>>(), vec![("new".to_string(), "10.0.0.3".to_string())]);
    }
}
