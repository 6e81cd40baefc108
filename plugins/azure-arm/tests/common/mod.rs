//! Specs shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use lifeboat_azure_arm::{DiskSku, DiskSpec, Firmware, NicSpec, OsType, TestNetwork, VmSpec};

pub const RG: &str =
    "/subscriptions/6a1c2f0e-4b7d-4f3a-9c2e-1d5b8e7f0a11/resourceGroups/lifeboat-dr";
pub const GIB: u64 = 1 << 30;

pub fn storage_account() -> String {
    format!("{RG}/providers/Microsoft.Storage/storageAccounts/lbcache01")
}

pub fn subnet(vnet: &str, subnet: &str) -> String {
    format!("{RG}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}")
}

pub fn blob(name: &str) -> String {
    format!("https://lbcache01.blob.core.windows.net/lifeboat-replica/{name}.vhd")
}

pub fn disk(name: &str, size_bytes: u64, os: bool, sku: DiskSku) -> DiskSpec {
    DiskSpec {
        name: name.into(),
        size_bytes,
        blob_uri: blob(name),
        os,
        sku,
    }
}

pub fn nic(name: &str, subnet_id: String, ip: Option<&str>, mac: Option<&str>) -> NicSpec {
    NicSpec {
        name: name.into(),
        mac: mac.map(Into::into),
        subnet_id,
        private_ip: ip.map(Into::into),
    }
}

/// BIOS, one disk, one NIC with a dynamic address.
pub fn bios_one_disk() -> VmSpec {
    VmSpec {
        name: "web01".into(),
        location: "westeurope".into(),
        cpus: 2,
        memory_mib: 4096,
        firmware: Firmware::Bios,
        os_type: Some(OsType::Linux),
        size: None,
        disks: vec![disk("web01-os", 32 * GIB, true, DiskSku::StandardLrs)],
        nics: vec![nic("web01-nic0", subnet("prod-vnet", "web"), None, None)],
        storage_account_id: storage_account(),
        boot_diagnostics: true,
        tags: BTreeMap::from([("lifeboat-plan".into(), "web-tier".into())]),
    }
}

/// UEFI, three disks (the OS disk listed second, so LUNs skip it), two
/// NICs with static IPs on two subnets and their source MACs.
pub fn uefi_three_disks() -> VmSpec {
    VmSpec {
        name: "db01".into(),
        location: "westeurope".into(),
        cpus: 4,
        memory_mib: 24 * 1024,
        firmware: Firmware::Uefi,
        os_type: Some(OsType::Windows),
        size: None,
        disks: vec![
            disk("db01-data0", 512 * GIB, false, DiskSku::PremiumLrs),
            disk("db01-os", 128 * GIB, true, DiskSku::PremiumLrs),
            disk(
                "db01-logs",
                1024 * GIB + (1 << 20),
                false,
                DiskSku::StandardLrs,
            ),
        ],
        nics: vec![
            nic(
                "db01-nic0",
                subnet("prod-vnet", "db"),
                Some("10.1.2.10"),
                Some("00:50:56:9a:01:02"),
            ),
            nic(
                "db01-nic1",
                subnet("prod-vnet", "backup"),
                Some("10.1.3.10"),
                Some("00-50-56-9A-01-03"),
            ),
        ],
        storage_account_id: storage_account(),
        boot_diagnostics: true,
        tags: BTreeMap::from([
            ("lifeboat-plan".into(), "db-tier".into()),
            ("owner".into(), "[dba-team]".into()),
        ]),
    }
}

/// A VM to test-fail-over, with an explicit size: one NIC whose static IP
/// fits the test subnet, one whose static IP does not.
pub fn test_failover() -> (VmSpec, TestNetwork) {
    let spec = VmSpec {
        name: "app01".into(),
        location: "northeurope".into(),
        cpus: 1,
        memory_mib: 2048,
        firmware: Firmware::Uefi,
        os_type: Some(OsType::Linux),
        size: Some("Standard_D2s_v5".into()),
        disks: vec![
            disk("app01-os", 64 * GIB, true, DiskSku::PremiumLrs),
            disk("app01-data", 10 * GIB, false, DiskSku::StandardLrs),
        ],
        nics: vec![
            nic(
                "app01-nic0",
                subnet("prod-vnet", "app"),
                Some("10.99.1.20"),
                None,
            ),
            nic(
                "app01-nic1",
                subnet("prod-vnet", "app"),
                Some("10.1.4.20"),
                None,
            ),
        ],
        storage_account_id: storage_account(),
        boot_diagnostics: false,
        tags: BTreeMap::new(),
    };
    let net = TestNetwork {
        name: "lifeboat-test-vnet".into(),
        address_prefix: "10.99.0.0/16".into(),
        subnet_name: "isolated".into(),
        subnet_prefix: "10.99.1.0/24".into(),
    };
    (spec, net)
}
