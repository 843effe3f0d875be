use std::net::IpAddr;

/// An IPv4 or IPv6 network, e.g. a VPC CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_match(u32::from(net).into(), u32::from(ip).into(), self.prefix_len, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_match(u128::from(net), u128::from(ip), self.prefix_len, 128),
            _ => false,
        }
    }
}

fn prefix_match(net: u128, ip: u128, prefix_len: u8, bits: u32) -> bool {
    let host_bits = bits - u32::from(prefix_len);
    if host_bits >= bits {
        return true;
    }
    (net >> host_bits) == (ip >> host_bits)
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR"))?;
        let network: IpAddr = addr.parse().map_err(|_| format!("{s:?} has an invalid address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len: u8 =
            len.parse().ok().filter(|l| *l <= max).ok_or_else(|| format!("{s:?} has an invalid prefix length"))?;
        Ok(Self { network, prefix_len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("valid test CIDR")
    }

    #[test]
    fn v4_containment() {
        let c = cidr("10.0.0.0/16");
        assert!(c.contains("10.0.255.1".parse().expect("ip")));
        assert!(!c.contains("10.1.0.1".parse().expect("ip")));
        assert!(!c.contains("::1".parse().expect("ip")));
        assert!(cidr("0.0.0.0/0").contains("8.8.8.8".parse().expect("ip")));
        assert!(cidr("10.0.0.7/32").contains("10.0.0.7".parse().expect("ip")));
        assert!(!cidr("10.0.0.7/32").contains("10.0.0.8".parse().expect("ip")));
    }

    #[test]
    fn v6_containment() {
        let c = cidr("2600:1f18:abcd::/56");
        assert!(c.contains("2600:1f18:abcd:ff::1".parse().expect("ip")));
        assert!(!c.contains("2600:1f18:abce::1".parse().expect("ip")));
        assert!(!c.contains("10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129", "10.0.0.0/-1"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
