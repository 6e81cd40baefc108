//! Azure Resource Manager (ARM) bodies for a failover to Azure.
//!
//! Given a description of a protected VM ([`VmSpec`]) this crate builds the
//! ARM deployment that brings it up in Azure, the way Azure Site Recovery
//! does: every disk is a managed disk imported from the fixed-size VHD page
//! blob that replication wrote ([`DiskSpec::blob_uri`]), every NIC is a
//! network interface on the mapped subnet, and the virtual machine attaches
//! them. A *test* failover ([`TestNetwork`]) also creates an isolated virtual
//! network and puts the NICs on it instead of the production subnets.
//!
//! The crate is a pure library: no I/O, no clock, no randomness, so it also
//! builds for `wasm32-wasip2` and the same input always gives byte-identical
//! JSON. Submitting the deployment (`PUT .../deployments/NAME`) is the azure
//! plugin's job.
//!
//! ```
//! use std::collections::BTreeMap;
//! use lifeboat_azure_arm::{deployment, DiskSku, DiskSpec, Firmware, NicSpec, OsType, VmSpec};
//!
//! let rg = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/dr";
//! let spec = VmSpec {
//!     name: "web01".into(),
//!     location: "westeurope".into(),
//!     cpus: 2,
//!     memory_mib: 4096,
//!     firmware: Firmware::Bios,
//!     os_type: Some(OsType::Linux),
//!     size: None,
//!     disks: vec![DiskSpec {
//!         name: "web01-os".into(),
//!         size_bytes: 32 << 30,
//!         blob_uri: "https://drcache.blob.core.windows.net/lifeboat/web01-os.vhd".into(),
//!         os: true,
//!         sku: DiskSku::StandardLrs,
//!     }],
//!     nics: vec![NicSpec {
//!         name: "web01-nic0".into(),
//!         mac: None,
//!         subnet_id: format!("{rg}/providers/Microsoft.Network/virtualNetworks/prod/subnets/web"),
//!         private_ip: None,
//!     }],
//!     storage_account_id: format!("{rg}/providers/Microsoft.Storage/storageAccounts/drcache"),
//!     boot_diagnostics: true,
//!     tags: BTreeMap::new(),
//! };
//! let body = deployment(&spec, None).unwrap();
//! assert_eq!(body["properties"]["mode"], "Incremental");
//! ```

mod sizes;
mod template;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use sizes::{VM_SIZES, VmSize, choose_size, choose_size_for};
pub use template::{
    COMPUTE_DISKS_API_VERSION, COMPUTE_VMS_API_VERSION, NETWORK_API_VERSION, TEMPLATE_SCHEMA,
    deployment,
};
pub use validate::validate;

/// The firmware the protected VM boots with. UEFI VMs become Azure
/// generation 2 VMs (`hyperVGeneration` `V2`), BIOS VMs generation 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// Legacy BIOS: Azure generation 1.
    Bios,
    /// UEFI: Azure generation 2.
    Uefi,
}

/// The guest operating system family, as Azure records it on the OS disk
/// (`osType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsType {
    /// `Linux`.
    Linux,
    /// `Windows`.
    Windows,
}

impl OsType {
    /// The ARM spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OsType::Linux => "Linux",
            OsType::Windows => "Windows",
        }
    }
}

/// The managed disk SKU of a failed-over disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DiskSku {
    /// `Standard_LRS`: standard HDD, locally redundant.
    #[default]
    #[serde(rename = "Standard_LRS")]
    StandardLrs,
    /// `Premium_LRS`: premium SSD, locally redundant. Every size in
    /// [`VM_SIZES`] supports premium storage.
    #[serde(rename = "Premium_LRS")]
    PremiumLrs,
}

impl DiskSku {
    /// The ARM spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskSku::StandardLrs => "Standard_LRS",
            DiskSku::PremiumLrs => "Premium_LRS",
        }
    }
}

/// One replicated disk of the protected VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Name of the managed disk to create (1–80 of `A-Z a-z 0-9 _ . -`,
    /// starting with a letter or digit, ending with a letter, digit or `_`).
    pub name: String,
    /// Virtual size of the disk in bytes: a positive multiple of 1 MiB, as
    /// Azure requires of an imported fixed VHD.
    pub size_bytes: u64,
    /// `https://` URI of the fixed VHD page blob holding the disk; the blob
    /// must live in [`VmSpec::storage_account_id`].
    pub blob_uri: String,
    /// Whether this is the boot (OS) disk. Exactly one disk must be.
    pub os: bool,
    /// Managed disk SKU.
    #[serde(default)]
    pub sku: DiskSku,
}

/// One network adapter of the protected VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// Name of the network interface to create (1–80 of
    /// `A-Z a-z 0-9 _ . -`, starting with a letter or digit, ending with a
    /// letter, digit or `_`).
    pub name: String,
    /// The source adapter's MAC address (`aa:bb:cc:dd:ee:ff` or with `-`).
    /// Azure assigns MAC addresses itself and cannot be told one, so it is
    /// only recorded, as the NIC's `lifeboat-source-mac` tag.
    #[serde(default)]
    pub mac: Option<String>,
    /// ARM id of the production subnet this NIC maps to
    /// (`/subscriptions/…/providers/Microsoft.Network/virtualNetworks/V/subnets/S`).
    pub subnet_id: String,
    /// A static IPv4 address to keep; `None` takes a dynamic one from the
    /// subnet.
    #[serde(default)]
    pub private_ip: Option<String>,
}

/// The protected VM, as the failover should recreate it in Azure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Name of the Azure VM (1–64 letters, digits, `-` and `.`; not ending
    /// in `-` or `.`; no `.` for Windows).
    pub name: String,
    /// Azure region, e.g. `westeurope`.
    pub location: String,
    /// Virtual CPUs of the source VM.
    pub cpus: u32,
    /// Memory of the source VM in MiB.
    pub memory_mib: u64,
    /// Boot firmware of the source VM.
    pub firmware: Firmware,
    /// Guest OS family, recorded on the OS disk and the VM's OS disk
    /// reference when known.
    #[serde(default)]
    pub os_type: Option<OsType>,
    /// An explicit Azure VM size (`Standard_…`) overriding
    /// [`choose_size_for`].
    #[serde(default)]
    pub size: Option<String>,
    /// The disks, in the order data disks get their LUNs (0, 1, …).
    pub disks: Vec<DiskSpec>,
    /// The NICs; the first is the primary one. At least one is needed.
    pub nics: Vec<NicSpec>,
    /// ARM id of the storage account that holds the VHD blobs
    /// (`/subscriptions/…/providers/Microsoft.Storage/storageAccounts/NAME`).
    pub storage_account_id: String,
    /// Enable boot diagnostics (serial console and screenshot) with
    /// Azure-managed storage.
    pub boot_diagnostics: bool,
    /// Tags put on every created resource (at most 50; names up to 512
    /// characters without `< > % & \ ? /`, values up to 256).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// The isolated virtual network a *test* failover creates.
///
/// NICs attach to its subnet instead of their production subnet. A NIC's
/// static IP is kept when it is a usable host address of `subnet_prefix`
/// (Azure reserves the first four and the last address of a subnet);
/// otherwise the NIC takes a dynamic address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestNetwork {
    /// Name of the virtual network to create (2–64 of `A-Z a-z 0-9 _ . -`).
    pub name: String,
    /// Its IPv4 address space, e.g. `10.99.0.0/16`.
    pub address_prefix: String,
    /// Name of its single subnet (1–80 of `A-Z a-z 0-9 _ . -`).
    pub subnet_name: String,
    /// The subnet's IPv4 prefix, inside `address_prefix`, at most `/29`.
    pub subnet_prefix: String,
}

/// Why a deployment could not be built. Every variant names the offending
/// input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArmError {
    /// A name that Azure would refuse for that kind of resource.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// Kind of resource (`VM`, `disk`, `NIC`, …).
        kind: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two resources of one kind with the same name (Azure names are
    /// case-insensitive).
    #[error("duplicate {kind} name {name:?} (Azure names are case-insensitive)")]
    Duplicate {
        /// Kind of resource.
        kind: &'static str,
        /// The second occurrence.
        name: String,
    },
    /// No disk is marked as the OS disk.
    #[error("VM {vm:?} has no OS disk: exactly one disk must have os = true")]
    NoOsDisk {
        /// The VM name.
        vm: String,
    },
    /// More than one disk is marked as the OS disk.
    #[error(
        "VM {vm:?} has two OS disks, {first:?} and {second:?}: exactly one disk must have os = true"
    )]
    TwoOsDisks {
        /// The VM name.
        vm: String,
        /// The first OS disk.
        first: String,
        /// The second OS disk.
        second: String,
    },
    /// A disk size Azure cannot import.
    #[error("disk {disk:?}: size {size_bytes} bytes {reason}")]
    DiskSize {
        /// The disk name.
        disk: String,
        /// Its size as given.
        size_bytes: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// No size in [`VM_SIZES`] is big enough.
    #[error(
        "no VM size in the table fits {cpus} vCPUs, {memory_mib} MiB, {data_disks} data disks and {nics} NICs \
         (largest: {largest}); set an explicit size"
    )]
    NoSize {
        /// vCPUs asked for.
        cpus: u32,
        /// Memory asked for, MiB.
        memory_mib: u64,
        /// Data disks to attach.
        data_disks: usize,
        /// NICs to attach.
        nics: usize,
        /// The largest size in the table.
        largest: &'static str,
    },
    /// The size override cannot hold the VM's disks or NICs.
    #[error("VM size {size} allows at most {max} {what}, the VM has {have}")]
    SizeLimit {
        /// The size.
        size: String,
        /// `data disks` or `NICs`.
        what: &'static str,
        /// How many the VM has.
        have: usize,
        /// The size's limit.
        max: u32,
    },
    /// Any other invalid field.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, e.g. `nics[1].private_ip`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}
