//! Network mapping: each source NIC onto an Azure subnet, with its static IP
//! kept or replaced, and the isolated network of a test failover.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use lifeboat_azure_arm::TestNetwork;
use lifeboat_plugin_sdk::StepError;
use serde::{Deserialize, Serialize};

use crate::source::SourceVm;

/// The kind of failover (ASR's three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A drill: the VM comes up in an isolated network, production untouched.
    Test,
    /// The source was shut down and synchronised first: no data loss.
    Planned,
    /// The source is gone: recover from the chosen point.
    Unplanned,
}

impl Kind {
    /// `test`, `planned` or `unplanned` (empty means `test`).
    pub fn parse(s: &str) -> Result<Kind, StepError> {
        match s {
            "" | "test" => Ok(Kind::Test),
            "planned" => Ok(Kind::Planned),
            "unplanned" => Ok(Kind::Unplanned),
            other => Err(StepError::invalid_input(format!(
                "kind {other:?} is not one of test, planned, unplanned"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Test => "test",
            Kind::Planned => "planned",
            Kind::Unplanned => "unplanned",
        }
    }
}

/// Whether static IPs survive the failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpMode {
    /// Static IPs are retained (ASR's "IP retention").
    Keep,
    /// Every NIC takes a dynamic address from its subnet (re-IP).
    Dynamic,
}

impl IpMode {
    /// `keep` (also empty) or `dynamic`.
    pub fn parse(s: &str) -> Result<IpMode, StepError> {
        match s {
            "" | "keep" => Ok(IpMode::Keep),
            "dynamic" => Ok(IpMode::Dynamic),
            other => Err(StepError::invalid_input(format!(
                "ip {other:?} is neither `keep` (static IPs retained) nor `dynamic` (re-IP from the subnet)"
            ))),
        }
    }
}

/// One NIC as it will be created: the shape of `lifeboat_azure_arm::NicSpec`
/// (with the source NIC's name; `create-vm` prefixes the VM's) plus the
/// source network it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedNic {
    /// The source NIC's name, e.g. `ethernet0`.
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    /// ARM id of the production subnet it maps to (a test failover puts it
    /// on the test network's subnet instead).
    pub subnet_id: String,
    /// The static IP it keeps; `None` is a dynamic one.
    #[serde(default)]
    pub private_ip: Option<String>,
    /// The source network, e.g. `VM Network`.
    #[serde(default)]
    pub network: String,
}

/// What `reconfigure-network` decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub nics: Vec<MappedNic>,
    /// One human line per NIC.
    pub lines: Vec<String>,
    pub test_network: Option<TestNetwork>,
}

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u32,
    len: u8,
}

impl Cidr {
    /// `10.20.0.0/24`; host bits must be clear.
    pub fn parse(field: &str, text: &str) -> Result<Cidr, StepError> {
        let bad = |why: &str| StepError::invalid_input(format!("{field}: {text:?} {why}"));
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| bad("is not an IPv4 prefix like 10.99.0.0/24"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| bad("is not an IPv4 prefix like 10.99.0.0/24"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| bad("has no prefix length from 0 to 32"))?;
        let c = Cidr {
            net: u32::from(addr),
            len,
        };
        if c.net & c.mask() != c.net {
            return Err(bad(&format!(
                "has host bits set; did you mean {}/{len}?",
                Ipv4Addr::from(c.net & c.mask())
            )));
        }
        Ok(c)
    }

    fn mask(self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0)
    }

    /// Whether `other` lies inside this prefix.
    pub fn contains_net(self, other: Cidr) -> bool {
        other.len >= self.len && other.net & self.mask() == self.net
    }

    /// Whether a NIC may hold `ip` statically in this subnet: inside it and
    /// not one of the five addresses Azure reserves (the network address,
    /// the next three, the broadcast address). The same rule
    /// `lifeboat_azure_arm::deployment` applies.
    pub fn usable_host(self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        if ip & self.mask() != self.net {
            return false;
        }
        let offset = ip - self.net;
        offset >= 4 && offset != !self.mask()
    }
}

/// `/subscriptions/S/resourceGroups/G/providers/Microsoft.Network/virtualNetworks/V/subnets/N`
/// → `V/N`, or `None` when `id` is not a subnet id.
pub fn subnet_short(id: &str) -> Option<String> {
    let parts: Vec<&str> = id.strip_prefix('/')?.split('/').collect();
    let ok = parts.len() == 10
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.contains(char::is_whitespace))
        && parts[0].eq_ignore_ascii_case("subscriptions")
        && parts[2].eq_ignore_ascii_case("resourceGroups")
        && parts[4].eq_ignore_ascii_case("providers")
        && parts[5].eq_ignore_ascii_case("Microsoft.Network")
        && parts[6].eq_ignore_ascii_case("virtualNetworks")
        && parts[8].eq_ignore_ascii_case("subnets");
    ok.then(|| format!("{}/{}", parts[7], parts[9]))
}

/// The subnet id a `network_map` entry names: a string, or `{subnet_id}`.
fn target(network: &str, v: &serde_json::Value) -> Result<String, StepError> {
    let id = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(m) => {
            if let Some(k) = m.keys().find(|k| k.as_str() != "subnet_id") {
                return Err(StepError::invalid_input(format!(
                    "network_map[{network:?}] has an unknown field `{k}`; an entry is a subnet id or {{subnet_id}}"
                )));
            }
            match m.get("subnet_id") {
                Some(serde_json::Value::String(s)) => s.clone(),
                _ => {
                    return Err(StepError::invalid_input(format!(
                        "network_map[{network:?}] needs `subnet_id` (a string)"
                    )));
                }
            }
        }
        other => {
            return Err(StepError::invalid_input(format!(
                "network_map[{network:?}] is {other}; give the ARM id of a subnet"
            )));
        }
    };
    if subnet_short(&id).is_none() {
        return Err(StepError::invalid_input(format!(
            "network_map[{network:?}] is {id:?}, not a subnet id \
             /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Network/virtualNetworks/VNET/subnets/SUBNET"
        )));
    }
    Ok(id)
}

fn resource_name(field: &str, name: &str, min: usize, max: usize) -> Result<(), StepError> {
    let n = name.chars().count();
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let ends_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    if (min..=max).contains(&n) && chars_ok && ends_ok {
        Ok(())
    } else {
        Err(StepError::invalid_input(format!(
            "{field} {name:?} is not an Azure name: {min} to {max} letters, digits, '_', '.' or '-', \
             starting with a letter or digit and ending with a letter, digit or '_'"
        )))
    }
}

/// Check the isolated network of a test failover; returns its subnet.
pub fn check_test_network(net: &TestNetwork) -> Result<Cidr, StepError> {
    resource_name("test_network.name", &net.name, 2, 64)?;
    resource_name("test_network.subnet_name", &net.subnet_name, 1, 80)?;
    let space = Cidr::parse("test_network.address_prefix", &net.address_prefix)?;
    let subnet = Cidr::parse("test_network.subnet_prefix", &net.subnet_prefix)?;
    if subnet.len > 29 {
        return Err(StepError::invalid_input(format!(
            "test_network.subnet_prefix: {:?} is smaller than /29, the smallest subnet Azure allows",
            net.subnet_prefix
        )));
    }
    if !space.contains_net(subnet) {
        return Err(StepError::invalid_input(format!(
            "test_network.subnet_prefix: {} is not inside the address space {}",
            net.subnet_prefix, net.address_prefix
        )));
    }
    Ok(subnet)
}

/// Map every NIC of `vm` through `network_map`.
pub fn map(
    vm: &SourceVm,
    network_map: &serde_json::Map<String, serde_json::Value>,
    kind: Kind,
    ip: IpMode,
    test_network: Option<TestNetwork>,
) -> Result<Mapping, StepError> {
    if vm.nics.is_empty() {
        return Err(StepError::invalid_input(format!(
            "VM {} has no NICs; an Azure VM needs at least one",
            vm.name
        )));
    }
    let unmapped: Vec<String> = vm
        .nics
        .iter()
        .filter(|n| !network_map.contains_key(&n.network))
        .map(|n| format!("{} ({:?})", n.name, n.network))
        .collect();
    if let Some(first) = vm
        .nics
        .iter()
        .find(|n| !network_map.contains_key(&n.network))
    {
        let mapped: Vec<String> = network_map.keys().map(|k| format!("{k:?}")).collect();
        return Err(StepError::invalid_input(format!(
            "`network_map` does not map the {} {} of VM {}; it maps {}. Add e.g. \
             {:?}: /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Network/virtualNetworks/VNET/subnets/SUBNET",
            if unmapped.len() == 1 {
                "network of NIC"
            } else {
                "networks of NICs"
            },
            unmapped.join(", "),
            vm.name,
            if mapped.is_empty() {
                "nothing".to_string()
            } else {
                mapped.join(", ")
            },
            first.network
        )));
    }
    let test = match (kind, test_network) {
        (Kind::Test, Some(net)) => {
            let subnet = check_test_network(&net)?;
            Some((net, subnet))
        }
        (Kind::Test, None) => {
            return Err(StepError::invalid_input(
                "a test failover needs `test_network` {name, address_prefix, subnet_name, subnet_prefix}: \
                 the isolated virtual network the test VM comes up in, so it cannot reach production",
            ));
        }
        // Planned and unplanned failovers use the production subnets; a
        // workflow may declare its drill network for every kind.
        (_, _) => None,
    };

    let mut nics = Vec::new();
    let mut lines = Vec::new();
    let mut taken = BTreeSet::new();
    for n in &vm.nics {
        let subnet_id = target(&n.network, &network_map[&n.network])?;
        let source_ip = match &n.ip {
            Some(text) => Some(text.parse::<Ipv4Addr>().map_err(|_| {
                StepError::invalid_input(format!(
                    "NIC {} of VM {} has IP {text:?}, which is not an IPv4 address",
                    n.name, vm.name
                ))
            })?),
            None => None,
        };
        let prod = subnet_short(&subnet_id).unwrap_or_default();
        let (ip_out, ip_line) = match (source_ip, ip) {
            (None, _) => (None, "dynamic IP".to_string()),
            (Some(a), IpMode::Dynamic) => (
                None,
                format!("IP {a} replaced by a dynamic one (ip: dynamic)"),
            ),
            (Some(a), IpMode::Keep) => match &test {
                None => (Some(a), format!("IP {a} kept")),
                Some((net, subnet)) => {
                    if !subnet.usable_host(a) {
                        (
                            None,
                            format!("IP {a} is not usable in {}: dynamic", net.subnet_prefix),
                        )
                    } else if !taken.insert(a) {
                        (
                            None,
                            format!("IP {a} already taken in the test subnet: dynamic"),
                        )
                    } else {
                        (Some(a), format!("IP {a} kept"))
                    }
                }
            },
        };
        let line = match &test {
            None => format!("{} ({}) → subnet {prod}, {ip_line}", n.name, n.network),
            Some((net, _)) => format!(
                "{} ({}) → isolated test subnet {}/{} {} (production: {prod}), {ip_line}",
                n.name, n.network, net.name, net.subnet_name, net.subnet_prefix
            ),
        };
        lines.push(line);
        nics.push(MappedNic {
            name: n.name.clone(),
            mac: Some(n.mac.clone()).filter(|m| !m.is_empty()),
            subnet_id,
            private_ip: ip_out.map(|a| a.to_string()),
            network: n.network.clone(),
        });
    }
    Ok(Mapping {
        nics,
        lines,
        test_network: test.map(|(n, _)| n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceNic;

    const RG: &str = "/subscriptions/6a1c2f0e-4b7d-4f3a-9c2e-1d5b8e7f0a11/resourceGroups/dr";

    fn subnet(v: &str, s: &str) -> String {
        format!("{RG}/providers/Microsoft.Network/virtualNetworks/{v}/subnets/{s}")
    }

    fn vm() -> SourceVm {
        SourceVm {
            name: "web01".into(),
            cpus: 2,
            memory_mib: 4096,
            firmware: "uefi".into(),
            guest_os: "debian12-64".into(),
            disks: vec![],
            nics: vec![
                SourceNic {
                    name: "ethernet0".into(),
                    mac: "00:50:56:8a:10:01".into(),
                    network: "VM Network".into(),
                    ip: None,
                },
                SourceNic {
                    name: "ethernet1".into(),
                    mac: "00:50:56:00:20:02".into(),
                    network: "Backend".into(),
                    ip: Some("10.20.0.15".into()),
                },
            ],
            vm_size: None,
        }
    }

    fn netmap() -> serde_json::Map<String, serde_json::Value> {
        let v = serde_json::json!({
            "VM Network": subnet("prod", "web"),
            "Backend": {"subnet_id": subnet("prod", "backend")},
        });
        v.as_object().unwrap().clone()
    }

    fn testnet(space: &str, sub: &str) -> TestNetwork {
        TestNetwork {
            name: "drill-vnet".into(),
            address_prefix: space.into(),
            subnet_name: "isolated".into(),
            subnet_prefix: sub.into(),
        }
    }

    #[test]
    fn planned_keeps_static_ips() {
        let m = map(&vm(), &netmap(), Kind::Planned, IpMode::Keep, None).unwrap();
        assert_eq!(m.nics[0].private_ip, None);
        assert_eq!(m.nics[1].private_ip.as_deref(), Some("10.20.0.15"));
        assert_eq!(m.nics[1].subnet_id, subnet("prod", "backend"));
        assert_eq!(m.nics[1].mac.as_deref(), Some("00:50:56:00:20:02"));
        assert_eq!(
            m.lines,
            [
                "ethernet0 (VM Network) → subnet prod/web, dynamic IP",
                "ethernet1 (Backend) → subnet prod/backend, IP 10.20.0.15 kept"
            ]
        );
        assert!(m.test_network.is_none());
    }

    #[test]
    fn dynamic_re_ips() {
        let m = map(&vm(), &netmap(), Kind::Unplanned, IpMode::Dynamic, None).unwrap();
        assert!(m.nics.iter().all(|n| n.private_ip.is_none()));
        assert!(
            m.lines[1].contains("IP 10.20.0.15 replaced by a dynamic one"),
            "{:?}",
            m.lines
        );
    }

    #[test]
    fn test_failover_keeps_ips_only_inside_the_test_subnet() {
        let inside = testnet("10.20.0.0/16", "10.20.0.0/24");
        let m = map(
            &vm(),
            &netmap(),
            Kind::Test,
            IpMode::Keep,
            Some(inside.clone()),
        )
        .unwrap();
        assert_eq!(m.nics[1].private_ip.as_deref(), Some("10.20.0.15"));
        assert_eq!(m.test_network.as_ref(), Some(&inside));
        assert!(
            m.lines[1].starts_with("ethernet1 (Backend) → isolated test subnet drill-vnet/isolated 10.20.0.0/24 (production: prod/backend), IP 10.20.0.15 kept"),
            "{:?}",
            m.lines
        );
        let outside = testnet("10.99.0.0/16", "10.99.0.0/24");
        let m = map(&vm(), &netmap(), Kind::Test, IpMode::Keep, Some(outside)).unwrap();
        assert_eq!(m.nics[1].private_ip, None);
        assert!(m.lines[1].contains("IP 10.20.0.15 is not usable in 10.99.0.0/24: dynamic"));
        // two NICs with the same address: the second goes dynamic
        let mut twice = vm();
        twice.nics[0].ip = Some("10.20.0.15".into());
        let m = map(&twice, &netmap(), Kind::Test, IpMode::Keep, Some(inside)).unwrap();
        assert_eq!(m.nics[0].private_ip.as_deref(), Some("10.20.0.15"));
        assert_eq!(m.nics[1].private_ip, None);
    }

    #[test]
    fn unmapped_networks_are_named() {
        let mut nm = netmap();
        nm.remove("Backend");
        let e = map(&vm(), &nm, Kind::Planned, IpMode::Keep, None).unwrap_err();
        assert_eq!(e.code, "invalid-input");
        assert!(
            e.message.starts_with("`network_map` does not map the network of NIC ethernet1 (\"Backend\") of VM web01; it maps \"VM Network\". Add e.g. \"Backend\": /subscriptions/"),
            "{e}"
        );
        let e = map(
            &vm(),
            &serde_json::Map::new(),
            Kind::Planned,
            IpMode::Keep,
            None,
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("NICs ethernet0 (\"VM Network\"), ethernet1 (\"Backend\")"),
            "{e}"
        );
        assert!(e.message.contains("maps nothing"), "{e}");
    }

    #[test]
    fn bad_entries_and_test_networks() {
        let mut nm = netmap();
        nm.insert("Backend".into(), serde_json::json!("backend"));
        let e = map(&vm(), &nm, Kind::Planned, IpMode::Keep, None).unwrap_err();
        assert!(
            e.message
                .contains("network_map[\"Backend\"] is \"backend\", not a subnet id"),
            "{e}"
        );
        nm.insert("Backend".into(), serde_json::json!({"subnet": "x"}));
        let e = map(&vm(), &nm, Kind::Planned, IpMode::Keep, None).unwrap_err();
        assert!(e.message.contains("unknown field `subnet`"), "{e}");

        let e = map(&vm(), &netmap(), Kind::Test, IpMode::Keep, None).unwrap_err();
        assert!(
            e.message.contains("a test failover needs `test_network`"),
            "{e}"
        );
        // only a test failover uses it
        let m = map(
            &vm(),
            &netmap(),
            Kind::Planned,
            IpMode::Keep,
            Some(testnet("10.0.0.0/16", "10.0.0.0/24")),
        )
        .unwrap();
        assert!(m.test_network.is_none());
        assert_eq!(m.nics[1].private_ip.as_deref(), Some("10.20.0.15"));
        for (space, sub, want) in [
            (
                "10.0.0.0/16",
                "10.1.0.0/24",
                "is not inside the address space",
            ),
            ("10.0.0.0/16", "10.0.0.0/30", "smaller than /29"),
            ("10.0.0.1/16", "10.0.0.0/24", "did you mean 10.0.0.0/16?"),
            ("10.0.0.0", "10.0.0.0/24", "is not an IPv4 prefix"),
        ] {
            let e = map(
                &vm(),
                &netmap(),
                Kind::Test,
                IpMode::Keep,
                Some(testnet(space, sub)),
            )
            .unwrap_err();
            assert!(e.message.contains(want), "{space} {sub}: {e}");
        }
        let mut bad = testnet("10.0.0.0/16", "10.0.0.0/24");
        bad.name = "drill vnet".into();
        let e = check_test_network(&bad).unwrap_err();
        assert!(
            e.message.starts_with("test_network.name \"drill vnet\""),
            "{e}"
        );
    }

    #[test]
    fn reserved_addresses() {
        let c = Cidr::parse("x", "10.0.0.0/24").unwrap();
        for (ip, ok) in [
            ("10.0.0.0", false),
            ("10.0.0.3", false),
            ("10.0.0.4", true),
            ("10.0.0.254", true),
            ("10.0.0.255", false),
            ("10.0.1.4", false),
        ] {
            assert_eq!(c.usable_host(ip.parse().unwrap()), ok, "{ip}");
        }
        assert_eq!(Kind::parse("planned").unwrap(), Kind::Planned);
        assert!(
            Kind::parse("drill")
                .unwrap_err()
                .message
                .contains("test, planned, unplanned")
        );
        assert!(IpMode::parse("static").is_err());
    }
}
