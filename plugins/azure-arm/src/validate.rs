//! Input checks: everything Azure would refuse is refused here first, with
//! an error naming the field.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::sizes::{self, VmSize};
use crate::{ArmError, OsType, TestNetwork, VmSpec};

const MIB: u64 = 1 << 20;
/// Largest page blob Azure stores: 8 TiB, VHD footer (512 bytes) included.
const MAX_PAGE_BLOB: u64 = 8 << 40;
/// A VM has LUNs 0..=63.
const MAX_LUNS: usize = 64;
const MAX_TAGS: usize = 50;

/// Check a spec (and the test network, for a test failover) without
/// building anything. [`crate::deployment`] runs the same checks.
pub fn validate(spec: &VmSpec, test_network: Option<&TestNetwork>) -> Result<(), ArmError> {
    check(spec, test_network).map(|_| ())
}

/// What validation learnt that building needs.
pub(crate) struct Checked<'a> {
    /// The VM size to use.
    pub size: &'a str,
    /// The test network's subnet, when there is one.
    pub test_subnet: Option<Cidr>,
}

pub(crate) fn check<'a>(
    spec: &'a VmSpec,
    test_network: Option<&TestNetwork>,
) -> Result<Checked<'a>, ArmError> {
    vm_name(&spec.name, spec.os_type)?;
    location(&spec.location)?;
    let account = storage_account_id(&spec.storage_account_id)?;
    tags(&spec.tags, "tags")?;

    // Disks.
    let mut disk_names = BTreeSet::new();
    let mut os_disk: Option<&str> = None;
    for (i, disk) in spec.disks.iter().enumerate() {
        resource_name("disk", &disk.name, 1, 80)?;
        if !disk_names.insert(disk.name.to_ascii_lowercase()) {
            return Err(ArmError::Duplicate {
                kind: "disk",
                name: disk.name.clone(),
            });
        }
        disk_size(&disk.name, disk.size_bytes)?;
        blob_uri(&format!("disks[{i}].blob_uri"), &disk.blob_uri, account)?;
        if disk.os {
            if let Some(first) = os_disk {
                return Err(ArmError::TwoOsDisks {
                    vm: spec.name.clone(),
                    first: first.to_owned(),
                    second: disk.name.clone(),
                });
            }
            os_disk = Some(&disk.name);
        }
    }
    if os_disk.is_none() {
        return Err(ArmError::NoOsDisk {
            vm: spec.name.clone(),
        });
    }
    let data_disks = spec.disks.len() - 1;
    if data_disks > MAX_LUNS {
        return Err(ArmError::Invalid {
            field: "disks".into(),
            reason: format!("{data_disks} data disks; a VM has at most {MAX_LUNS} LUNs"),
        });
    }

    // NICs.
    if spec.nics.is_empty() {
        return Err(ArmError::Invalid {
            field: "nics".into(),
            reason: format!("VM {:?} needs at least one NIC", spec.name),
        });
    }
    let mut nic_names = BTreeSet::new();
    let mut static_ips = BTreeSet::new();
    for (i, nic) in spec.nics.iter().enumerate() {
        resource_name("NIC", &nic.name, 1, 80)?;
        if !nic_names.insert(nic.name.to_ascii_lowercase()) {
            return Err(ArmError::Duplicate {
                kind: "NIC",
                name: nic.name.clone(),
            });
        }
        if let Some(mac) = &nic.mac {
            mac_address(&format!("nics[{i}].mac"), mac)?;
        }
        subnet_id(&format!("nics[{i}].subnet_id"), &nic.subnet_id)?;
        if let Some(ip) = &nic.private_ip {
            let addr = ipv4(&format!("nics[{i}].private_ip"), ip)?;
            if test_network.is_none()
                && !static_ips.insert((nic.subnet_id.to_ascii_lowercase(), addr))
            {
                return Err(ArmError::Invalid {
                    field: format!("nics[{i}].private_ip"),
                    reason: format!(
                        "{ip} is already the static IP of another NIC on subnet {}",
                        nic.subnet_id
                    ),
                });
            }
        }
    }

    // Size.
    if spec.cpus == 0 || spec.memory_mib == 0 {
        let field = if spec.cpus == 0 { "cpus" } else { "memory_mib" };
        return Err(ArmError::Invalid {
            field: field.into(),
            reason: "must be at least 1".into(),
        });
    }
    let size = match &spec.size {
        Some(name) => {
            size_name(name)?;
            if let Some(row) = sizes::lookup(name) {
                size_limits(row, data_disks, spec.nics.len())?;
            }
            name.as_str()
        }
        None => {
            sizes::choose_size_for(spec.cpus, spec.memory_mib, data_disks, spec.nics.len())?.name
        }
    };

    let test_subnet = test_network.map(test_net).transpose()?;
    Ok(Checked { size, test_subnet })
}

fn size_limits(row: &VmSize, data_disks: usize, nics: usize) -> Result<(), ArmError> {
    if !sizes::fits(data_disks, row.max_data_disks) {
        return Err(ArmError::SizeLimit {
            size: row.name.into(),
            what: "data disks",
            have: data_disks,
            max: row.max_data_disks,
        });
    }
    if !sizes::fits(nics, row.max_nics) {
        return Err(ArmError::SizeLimit {
            size: row.name.into(),
            what: "NICs",
            have: nics,
            max: row.max_nics,
        });
    }
    Ok(())
}

fn invalid_name(kind: &'static str, name: &str, reason: impl Into<String>) -> ArmError {
    ArmError::InvalidName {
        kind,
        name: name.to_owned(),
        reason: reason.into(),
    }
}

fn length(kind: &'static str, name: &str, min: usize, max: usize) -> Result<(), ArmError> {
    let len = name.chars().count();
    if len == 0 {
        return Err(invalid_name(kind, name, "is empty"));
    }
    if len < min || len > max {
        return Err(invalid_name(
            kind,
            name,
            format!("is {len} characters long; {min} to {max} allowed"),
        ));
    }
    Ok(())
}

/// Disks, NICs, virtual networks, subnets: letters, digits, `_`, `.`, `-`;
/// starting with a letter or digit; ending with a letter, digit or `_`.
pub(crate) fn resource_name(
    kind: &'static str,
    name: &str,
    min: usize,
    max: usize,
) -> Result<(), ArmError> {
    length(kind, name, min, max)?;
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(invalid_name(
            kind,
            name,
            format!("contains {c:?}; only letters, digits, '_', '.' and '-' are allowed"),
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid_name(
            kind,
            name,
            "must start with a letter or digit",
        ));
    }
    if !name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        return Err(invalid_name(
            kind,
            name,
            "must end with a letter, digit or '_'",
        ));
    }
    Ok(())
}

/// VMs: 1–64 letters, digits, `-` and `.` (no `.` for Windows), starting
/// with a letter or digit, not ending with `-` or `.`. Azure forbids `_`
/// and the other punctuation in VM names.
fn vm_name(name: &str, os: Option<OsType>) -> Result<(), ArmError> {
    length("VM", name, 1, 64)?;
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.')))
    {
        return Err(invalid_name(
            "VM",
            name,
            format!("contains {c:?}; only letters, digits, '-' and '.' are allowed"),
        ));
    }
    if os == Some(OsType::Windows) && name.contains('.') {
        return Err(invalid_name(
            "VM",
            name,
            "contains '.', which Windows VM names cannot",
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid_name(
            "VM",
            name,
            "must start with a letter or digit",
        ));
    }
    if name.ends_with(['-', '.']) {
        return Err(invalid_name("VM", name, "must not end with '-' or '.'"));
    }
    Ok(())
}

fn location(loc: &str) -> Result<(), ArmError> {
    let bad = |reason: &str| ArmError::Invalid {
        field: "location".into(),
        reason: reason.into(),
    };
    if loc.trim().is_empty() {
        return Err(bad("is empty"));
    }
    if loc.len() > 64 || !loc.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ') {
        return Err(bad(&format!(
            "{loc:?} is not an Azure region name such as \"westeurope\""
        )));
    }
    Ok(())
}

fn tags(tags: &std::collections::BTreeMap<String, String>, field: &str) -> Result<(), ArmError> {
    if tags.len() > MAX_TAGS {
        return Err(ArmError::Invalid {
            field: field.into(),
            reason: format!(
                "{} tags; Azure allows at most {MAX_TAGS} per resource",
                tags.len()
            ),
        });
    }
    for (key, value) in tags {
        let bad = |reason: String| ArmError::Invalid {
            field: format!("{field}[{key:?}]"),
            reason,
        };
        if key.is_empty() || key.chars().count() > 512 {
            return Err(bad("tag names are 1 to 512 characters".into()));
        }
        if let Some(c) = key
            .chars()
            .find(|c| "<>%&\\?/".contains(*c) || c.is_control())
        {
            return Err(bad(format!("tag name contains {c:?}, which Azure forbids")));
        }
        if value.chars().count() > 256 {
            return Err(bad("tag values are at most 256 characters".into()));
        }
    }
    Ok(())
}

fn disk_size(disk: &str, size_bytes: u64) -> Result<(), ArmError> {
    let bad = |reason: String| ArmError::DiskSize {
        disk: disk.to_owned(),
        size_bytes,
        reason,
    };
    if size_bytes == 0 {
        return Err(bad("is zero".into()));
    }
    if !size_bytes.is_multiple_of(MIB) {
        return Err(bad(format!(
            "is not a multiple of 1 MiB ({MIB} bytes), which Azure requires of an imported VHD; round it up to {}",
            size_bytes.div_ceil(MIB) * MIB
        )));
    }
    if size_bytes > MAX_PAGE_BLOB - 512 {
        return Err(bad(
            "does not fit in a page blob (8 TiB including the VHD footer)".into(),
        ));
    }
    Ok(())
}

/// A parsed ARM resource id: the provider namespace and the type/name
/// pairs after it.
type ArmId<'a> = (&'a str, Vec<(&'a str, &'a str)>);

/// `/subscriptions/S/resourceGroups/G/providers/NS/TYPE/NAME[/TYPE/NAME…]`.
fn arm_id<'a>(field: &str, id: &'a str) -> Result<ArmId<'a>, ArmError> {
    let bad = |reason: &str| ArmError::Invalid {
        field: field.to_owned(),
        reason: format!("{id:?} {reason}"),
    };
    if let Some(c) = id
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '\'' | '"' | '[' | ']'))
    {
        return Err(bad(&format!("contains {c:?}")));
    }
    let Some(rest) = id.strip_prefix('/') else {
        return Err(bad(
            "is not an ARM resource id (it must start with /subscriptions/)",
        ));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("has an empty segment"));
    }
    let shape_ok = parts.len() >= 7
        && parts[0].eq_ignore_ascii_case("subscriptions")
        && parts[2].eq_ignore_ascii_case("resourceGroups")
        && parts[4].eq_ignore_ascii_case("providers")
        && (parts.len() - 6).is_multiple_of(2);
    if !shape_ok {
        return Err(bad(
            "is not an ARM resource id of the form /subscriptions/S/resourceGroups/G/providers/NS/TYPE/NAME",
        ));
    }
    let pairs = parts[6..].chunks(2).map(|c| (c[0], c[1])).collect();
    Ok((parts[5], pairs))
}

/// Returns the storage account name.
fn storage_account_id(id: &str) -> Result<&str, ArmError> {
    let field = "storage_account_id";
    let (ns, pairs) = arm_id(field, id)?;
    match pairs.as_slice() {
        [(ty, name)]
            if ns.eq_ignore_ascii_case("Microsoft.Storage")
                && ty.eq_ignore_ascii_case("storageAccounts") =>
        {
            let ok = (3..=24).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            if ok {
                Ok(name)
            } else {
                Err(ArmError::Invalid {
                    field: field.into(),
                    reason: format!(
                        "storage account name {name:?} must be 3 to 24 lowercase letters and digits"
                    ),
                })
            }
        }
        _ => Err(ArmError::Invalid {
            field: field.into(),
            reason: format!("{id:?} is not a Microsoft.Storage/storageAccounts id"),
        }),
    }
}

fn subnet_id(field: &str, id: &str) -> Result<(), ArmError> {
    let (ns, pairs) = arm_id(field, id)?;
    let ok = ns.eq_ignore_ascii_case("Microsoft.Network")
        && matches!(pairs.as_slice(), [(v, _), (s, _)]
            if v.eq_ignore_ascii_case("virtualNetworks") && s.eq_ignore_ascii_case("subnets"));
    if ok {
        Ok(())
    } else {
        Err(ArmError::Invalid {
            field: field.to_owned(),
            reason: format!("{id:?} is not a Microsoft.Network/virtualNetworks/V/subnets/S id"),
        })
    }
}

/// `https://ACCOUNT.blob…/CONTAINER/BLOB`, in the storage account the
/// import reads through, without a query string.
fn blob_uri(field: &str, uri: &str, account: &str) -> Result<(), ArmError> {
    let bad = |reason: String| ArmError::Invalid {
        field: field.to_owned(),
        reason,
    };
    if let Some(c) = uri.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(format!("{uri:?} contains {c:?}")));
    }
    let rest = match uri.get(..8) {
        Some(scheme) if scheme.eq_ignore_ascii_case("https://") => &uri[8..],
        _ => return Err(bad(format!("{uri:?} is not an https:// URI"))),
    };
    if uri.contains(['?', '#']) {
        return Err(bad(format!(
            "{uri:?} has a query or fragment; a SAS token does not belong in a deployment (the import reads through storage_account_id)"
        )));
    }
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_account = host.split('.').next().unwrap_or("");
    if host.is_empty() || !host.contains('.') {
        return Err(bad(format!("{uri:?} has no storage host name")));
    }
    if !host_account.eq_ignore_ascii_case(account) {
        return Err(bad(format!(
            "{uri:?} is in storage account {host_account:?}, not in {account:?} of storage_account_id"
        )));
    }
    match path.split_once('/') {
        Some((container, blob)) if !container.is_empty() && !blob.is_empty() => Ok(()),
        _ => Err(bad(format!("{uri:?} does not name a container and a blob"))),
    }
}

fn mac_address(field: &str, mac: &str) -> Result<(), ArmError> {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(ArmError::Invalid {
            field: field.to_owned(),
            reason: format!("{mac:?} is not a MAC address like 00:50:56:aa:bb:cc"),
        })
    }
}

/// The canonical tag form of a MAC already checked by [`mac_address`].
pub(crate) fn normalize_mac(mac: &str) -> String {
    mac.to_ascii_lowercase().replace('-', ":")
}

pub(crate) fn ipv4(field: &str, ip: &str) -> Result<Ipv4Addr, ArmError> {
    ip.parse::<Ipv4Addr>().map_err(|_| ArmError::Invalid {
        field: field.to_owned(),
        reason: format!("{ip:?} is not an IPv4 address"),
    })
}

fn size_name(name: &str) -> Result<(), ArmError> {
    let body = name
        .strip_prefix("Standard_")
        .or_else(|| name.strip_prefix("Basic_"));
    let ok = body.is_some_and(|b| {
        !b.is_empty()
            && b.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    });
    if ok {
        Ok(())
    } else {
        Err(ArmError::Invalid {
            field: "size".into(),
            reason: format!("{name:?} is not an Azure VM size name such as \"Standard_D2s_v5\""),
        })
    }
}

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    net: u32,
    len: u8,
}

impl Cidr {
    fn mask(self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0)
    }

    fn contains_net(self, other: Cidr) -> bool {
        other.len >= self.len && other.net & self.mask() == self.net
    }

    /// Whether Azure lets a NIC have `ip` statically in this subnet: inside
    /// it, and not one of the five addresses Azure reserves (network
    /// address, the next three, broadcast).
    pub(crate) fn usable_host(self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        if ip & self.mask() != self.net {
            return false;
        }
        let offset = ip - self.net;
        let last = !self.mask();
        offset >= 4 && offset != last
    }
}

fn cidr(field: &str, text: &str) -> Result<Cidr, ArmError> {
    let bad = |reason: String| ArmError::Invalid {
        field: field.to_owned(),
        reason,
    };
    let (addr, len) = text
        .split_once('/')
        .ok_or_else(|| bad(format!("{text:?} is not an IPv4 prefix like 10.99.0.0/24")))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| bad(format!("{text:?} is not an IPv4 prefix like 10.99.0.0/24")))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| bad(format!("{text:?} has no prefix length from 0 to 32")))?;
    if len > 29 {
        return Err(bad(format!(
            "{text:?} is smaller than /29, the smallest Azure allows"
        )));
    }
    let c = Cidr {
        net: u32::from(addr),
        len,
    };
    if c.net & c.mask() != c.net {
        let net = Ipv4Addr::from(c.net & c.mask());
        return Err(bad(format!(
            "{text:?} has host bits set; did you mean {net}/{len}?"
        )));
    }
    Ok(c)
}

fn test_net(net: &TestNetwork) -> Result<Cidr, ArmError> {
    resource_name("virtual network", &net.name, 2, 64)?;
    resource_name("subnet", &net.subnet_name, 1, 80)?;
    let space = cidr("test_network.address_prefix", &net.address_prefix)?;
    let subnet = cidr("test_network.subnet_prefix", &net.subnet_prefix)?;
    if !space.contains_net(subnet) {
        return Err(ArmError::Invalid {
            field: "test_network.subnet_prefix".into(),
            reason: format!("{} is not inside {}", net.subnet_prefix, net.address_prefix),
        });
    }
    Ok(subnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        for ok in ["a", "web01-os", "Disk_1", "a.b-c_", "x".repeat(80).as_str()] {
            resource_name("disk", ok, 1, 80).unwrap();
        }
        let cases = [
            ("", "is empty"),
            ("-disk", "must start with a letter or digit"),
            ("_disk", "must start with a letter or digit"),
            ("disk.", "must end with a letter, digit or '_'"),
            ("disk-", "must end with a letter, digit or '_'"),
            ("my disk", "contains ' '"),
            ("disk/1", "contains '/'"),
            ("dïsk", "contains 'ï'"),
        ];
        for (name, want) in cases {
            let err = resource_name("disk", name, 1, 80).unwrap_err().to_string();
            assert!(err.contains(want), "{name:?}: {err}");
            assert!(err.starts_with("invalid disk name"), "{err}");
        }
        let long = "x".repeat(81);
        let err = resource_name("NIC", &long, 1, 80).unwrap_err().to_string();
        assert!(
            err.contains("is 81 characters long; 1 to 80 allowed"),
            "{err}"
        );
        let err = resource_name("virtual network", "v", 2, 64)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 characters long; 2 to 64"), "{err}");
    }

    #[test]
    fn vm_names() {
        vm_name("web01", None).unwrap();
        vm_name("web01.example", Some(OsType::Linux)).unwrap();
        for (name, os, want) in [
            ("web_01", None, "contains '_'"),
            ("web01.", None, "must not end"),
            ("web01-", None, "must not end"),
            ("-web", None, "must start"),
            ("web01.example", Some(OsType::Windows), "Windows"),
            ("", None, "is empty"),
        ] {
            let err = vm_name(name, os).unwrap_err().to_string();
            assert!(err.contains(want), "{name:?}: {err}");
        }
        assert!(vm_name(&"v".repeat(65), None).is_err());
    }

    #[test]
    fn disk_sizes() {
        disk_size("d", MIB).unwrap();
        disk_size("d", 8 * (1 << 40) - MIB).unwrap();
        let err = disk_size("d", 10 * MIB + 1).unwrap_err().to_string();
        assert!(
            err.contains("not a multiple of 1 MiB") && err.contains(&(11 * MIB).to_string()),
            "{err}"
        );
        assert!(
            disk_size("d", 0)
                .unwrap_err()
                .to_string()
                .contains("is zero")
        );
        assert!(
            disk_size("d", 8 << 40)
                .unwrap_err()
                .to_string()
                .contains("page blob")
        );
    }

    #[test]
    fn ids_and_uris() {
        let sa =
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/drcache";
        assert_eq!(storage_account_id(sa).unwrap(), "drcache");
        for bad in [
            "",
            "subscriptions/s",
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/DRcache",
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v",
            "/subscriptions/s/resourceGroups//providers/Microsoft.Storage/storageAccounts/x1x",
        ] {
            assert!(storage_account_id(bad).is_err(), "{bad:?}");
        }
        subnet_id("n", "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/s").unwrap();
        assert!(
            subnet_id(
                "n",
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v"
            )
            .is_err()
        );
        assert!(subnet_id("n", "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/s x").is_err());

        blob_uri(
            "b",
            "https://drcache.blob.core.windows.net/c/d.vhd",
            "drcache",
        )
        .unwrap();
        for (uri, want) in [
            (
                "http://drcache.blob.core.windows.net/c/d.vhd",
                "not an https://",
            ),
            (
                "https://other.blob.core.windows.net/c/d.vhd",
                "storage account \"other\"",
            ),
            (
                "https://drcache.blob.core.windows.net/c/d.vhd?sv=x&sig=y",
                "SAS token",
            ),
            (
                "https://drcache.blob.core.windows.net/c",
                "container and a blob",
            ),
            ("https://drcache/c/d", "no storage host"),
        ] {
            let err = blob_uri("b", uri, "drcache").unwrap_err().to_string();
            assert!(err.contains(want), "{uri}: {err}");
        }
    }

    #[test]
    fn prefixes_and_hosts() {
        let c = cidr("p", "10.99.1.0/24").unwrap();
        assert!(c.usable_host("10.99.1.4".parse().unwrap()));
        assert!(c.usable_host("10.99.1.254".parse().unwrap()));
        for reserved in ["10.99.1.0", "10.99.1.3", "10.99.1.255", "10.99.2.10"] {
            assert!(!c.usable_host(reserved.parse().unwrap()), "{reserved}");
        }
        assert!(
            cidr("p", "10.99.1.0/30")
                .unwrap_err()
                .to_string()
                .contains("/29")
        );
        assert!(
            cidr("p", "10.99.1.1/24")
                .unwrap_err()
                .to_string()
                .contains("10.99.1.0/24")
        );
        assert!(cidr("p", "10.99.1.0").is_err());
        assert!(cidr("p", "10.99.1.0/33").is_err());
        assert!(cidr("p", "0.0.0.0/0").is_ok());
        let space = cidr("p", "10.99.0.0/16").unwrap();
        assert!(space.contains_net(c));
        assert!(!c.contains_net(space));
    }

    #[test]
    fn tag_rules() {
        let mut t = std::collections::BTreeMap::new();
        t.insert("env".to_owned(), "dr".to_owned());
        tags(&t, "tags").unwrap();
        t.insert("a/b".to_owned(), "x".to_owned());
        assert!(tags(&t, "tags").unwrap_err().to_string().contains("'/'"));
        t.remove("a/b");
        t.insert("long".to_owned(), "v".repeat(257));
        assert!(tags(&t, "tags").unwrap_err().to_string().contains("256"));
    }

    #[test]
    fn macs_and_sizes() {
        mac_address("m", "00:50:56:AA:bb:cc").unwrap();
        mac_address("m", "00-50-56-AA-bb-cc").unwrap();
        assert_eq!(normalize_mac("00-50-56-AA-bb-cc"), "00:50:56:aa:bb:cc");
        for bad in ["", "00:50:56:aa:bb", "00:50:56:aa:bb:cg", "0050.56aa.bbcc"] {
            assert!(mac_address("m", bad).is_err(), "{bad}");
        }
        size_name("Standard_D2s_v5").unwrap();
        size_name("Standard_E32-8s_v5").unwrap();
        for bad in ["", "D2s_v5", "Standard_", "Standard_D2 s"] {
            assert!(size_name(bad).is_err(), "{bad}");
        }
    }
}
