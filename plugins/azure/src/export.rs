//! An Azure VM as Azure Resource Manager describes it, turned into the VM
//! shape every source plugin records with its points.
//!
//! The user exports the VM and its network interfaces with the Azure CLI
//! (both are the ARM REST answers, unchanged):
//!
//! ```sh
//! az vm get-instance-view -g RG -n web03 > web03/vm.json
//! az network nic show --ids $(az vm show -g RG -n web03 \
//!     --query 'networkProfile.networkInterfaces[].id' -o tsv) > web03/nics.json
//! ```
//!
//! `vm.json` is `GET …/virtualMachines/web03?$expand=instanceView`: the model
//! (size, disks, NIC ids, security profile) and the instance view, which says
//! the VM's generation (`hyperVGeneration`). `nics.json` is one NIC object, or an
//! array of them when the VM has several.

use serde::{Deserialize, Serialize};

/// `vm.json`: the fields lifeboat reads (ARM sends many more).
#[derive(Debug, Deserialize)]
pub struct ArmVm {
    pub name: String,
    #[serde(default)]
    pub id: String,
    pub location: String,
    pub properties: ArmVmProps,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmVmProps {
    pub hardware_profile: HardwareProfile,
    pub storage_profile: StorageProfile,
    pub network_profile: NetworkProfile,
    #[serde(default)]
    pub security_profile: Option<serde_json::Value>,
    #[serde(default)]
    pub instance_view: Option<InstanceView>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HardwareProfile {
    pub vm_size: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProfile {
    pub os_disk: ArmDisk,
    #[serde(default)]
    pub data_disks: Vec<ArmDisk>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmDisk {
    pub name: String,
    #[serde(default)]
    pub lun: Option<u32>,
    /// `Linux` or `Windows` (OS disk only).
    #[serde(default)]
    pub os_type: Option<String>,
    /// An unmanaged disk: its page blob.
    #[serde(default)]
    pub vhd: Option<Vhd>,
    /// A managed disk: its resource.
    #[serde(default)]
    pub managed_disk: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct Vhd {
    pub uri: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProfile {
    #[serde(default)]
    pub network_interfaces: Vec<NicRef>,
}

#[derive(Debug, Deserialize)]
pub struct NicRef {
    pub id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// `V1` or `V2`.
    #[serde(default)]
    pub hyper_v_generation: Option<String>,
}

/// One object of `nics.json`.
#[derive(Debug, Deserialize)]
pub struct ArmNic {
    pub id: String,
    pub name: String,
    pub properties: ArmNicProps,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmNicProps {
    /// `00-0D-3A-…`; absent until the NIC is attached to a running VM.
    #[serde(default)]
    pub mac_address: Option<String>,
    pub ip_configurations: Vec<IpConfig>,
}

#[derive(Debug, Deserialize)]
pub struct IpConfig {
    pub properties: IpConfigProps,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfigProps {
    #[serde(default, rename = "privateIPAddress")]
    pub private_ip_address: Option<String>,
    /// `Static` or `Dynamic`.
    #[serde(default, rename = "privateIPAllocationMethod")]
    pub private_ip_allocation_method: Option<String>,
    pub subnet: SubnetRef,
    #[serde(default)]
    pub primary: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct SubnetRef {
    pub id: String,
}

/// `nics.json`: one NIC or an array of them.
pub fn nics(text: &str) -> Result<Vec<ArmNic>, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    if v.is_array() {
        serde_json::from_value(v)
    } else {
        Ok(vec![serde_json::from_value(v)?])
    }
}

/// The VM as `discover` returns it and the snapshot step records it: the
/// fields every source records (`name`, `cpus`, `memory_mib`, `firmware`,
/// `guest_os`, `disks`, `nics`) plus Azure's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureVm {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// `bios` (generation 1) or `uefi` (generation 2).
    pub firmware: String,
    pub generation: u8,
    /// `linux` or `windows`, from the OS disk's `osType`.
    pub guest_os: String,
    /// The ARM size, kept by a failover to another region.
    pub vm_size: String,
    /// The source region.
    pub location: String,
    /// The VM's ARM resource id.
    pub resource_id: String,
    /// OS disk first, then data disks by LUN.
    pub disks: Vec<AzureDisk>,
    pub nics: Vec<AzureNic>,
}

/// A disk of the VM: a page blob of the source storage site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureDisk {
    /// Its name inside recovery points: `os`, `lun0`, `lun1`, …
    pub name: String,
    /// The ARM disk name.
    pub arm_name: String,
    /// The page blob's path in the site.
    pub path: String,
    /// The blob's URI as ARM gives it.
    pub uri: String,
    pub size_bytes: u64,
    /// The blob snapshot this point was read from: the next capture's baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// A network interface of the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureNic {
    /// `nic0`, `nic1`, … in the VM's order.
    pub name: String,
    /// The ARM NIC name.
    pub label: String,
    /// `aa:bb:cc:dd:ee:ff`, empty if ARM has not assigned one.
    pub mac: String,
    /// The source network a network map keys on: `VNET/SUBNET`.
    pub network: String,
    /// The subnet's ARM id.
    pub subnet_id: String,
    /// The static private IPv4 address, when the allocation is `Static`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `VNET/SUBNET` from a subnet id `…/virtualNetworks/VNET/subnets/SUBNET`.
pub fn network_of(subnet_id: &str) -> Option<String> {
    let parts: Vec<&str> = subnet_id.split('/').collect();
    let at = |key: &str| {
        parts
            .iter()
            .position(|p| p.eq_ignore_ascii_case(key))
            .and_then(|i| parts.get(i + 1))
            .filter(|s| !s.is_empty())
    };
    Some(format!("{}/{}", at("virtualNetworks")?, at("subnets")?))
}

/// Site paths a page blob URI may have: `CONTAINER/BLOB` (a site that is the
/// storage account) then `BLOB` (a site that is the container).
pub fn blob_candidates(uri: &str) -> Option<Vec<String>> {
    let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or(uri);
    let path = rest.split_once('/')?.1;
    let path = path.split(['?', '#']).next().unwrap_or(path);
    // Azurite's path-style URIs carry the account first
    let path = path
        .strip_prefix("devstoreaccount1/")
        .unwrap_or(path)
        .trim_matches('/');
    let (container, blob) = path.split_once('/')?;
    if container.is_empty() || blob.is_empty() {
        return None;
    }
    Some(vec![path.to_string(), blob.to_string()])
}

/// What is wrong with `vm.json` or `nics.json`, and how to make it.
pub fn problem(path: &str, e: impl std::fmt::Display) -> String {
    format!(
        "{path}: not an Azure VM export ({e}); make it with `az vm get-instance-view -g RG -n NAME > vm.json` and `az network nic show --ids … > nics.json` (see the azure plugin's documentation)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_networks_and_blobs() {
        assert_eq!(
            network_of("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet-a/subnets/app")
                .as_deref(),
            Some("vnet-a/app")
        );
        assert_eq!(network_of("/subscriptions/s/subnets/app"), None);
        assert_eq!(
            blob_candidates("https://lbprodwe01.blob.core.windows.net/vhds/web03-os.vhd").unwrap(),
            ["vhds/web03-os.vhd", "web03-os.vhd"]
        );
        assert_eq!(
            blob_candidates("https://127.0.0.1:10000/devstoreaccount1/vhds/a/b.vhd").unwrap(),
            ["vhds/a/b.vhd", "a/b.vhd"]
        );
        assert!(blob_candidates("https://host/only").is_none());
    }

    #[test]
    fn one_nic_or_many() {
        let one = r#"{"id": "/n/web03-nic0", "name": "web03-nic0", "properties": {"macAddress": "00-0D-3A-00-00-01",
            "ipConfigurations": [{"properties": {"privateIPAddress": "10.1.0.4", "privateIPAllocationMethod": "Static",
            "subnet": {"id": "/x/virtualNetworks/v/subnets/s"}}}]}}"#;
        assert_eq!(nics(one).unwrap().len(), 1);
        assert_eq!(nics(&format!("[{one},{one}]")).unwrap().len(), 2);
        let e = nics(r#"{"id": "x", "name": "y", "properties": {}}"#).unwrap_err();
        assert!(e.to_string().contains("ipConfigurations"), "{e}");
    }
}
