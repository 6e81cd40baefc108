//! What the client returns.

use std::fmt;

/// A managed object reference: the type and id of a vSphere object, e.g.
/// `VirtualMachine:vm-42` or `VirtualMachineSnapshot:snapshot-7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoRef {
    /// The managed object type, e.g. `VirtualMachine`.
    pub kind: String,
    /// The managed object id, e.g. `vm-42`.
    pub value: String,
}

impl MoRef {
    /// A reference to the object of type `kind` with id `value`.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        MoRef {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

impl fmt::Display for MoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// The part of the `ServiceContent` this client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContent {
    /// The inventory's root folder.
    pub root_folder: MoRef,
    /// The property collector.
    pub property_collector: MoRef,
    /// The view manager (container views).
    pub view_manager: Option<MoRef>,
    /// The session manager (login, logout).
    pub session_manager: MoRef,
    /// The search index.
    pub search_index: Option<MoRef>,
    /// `about.fullName`, e.g. `VMware vCenter Server 6.5.0 build-5973321`.
    pub full_name: String,
    /// `about.apiType`: `VirtualCenter` or `HostAgent`.
    pub api_type: String,
    /// `about.apiVersion`, e.g. `6.5`.
    pub api_version: String,
}

/// The session that a login opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    /// The session key.
    pub key: String,
    /// The user name vCenter knows the session by.
    pub user_name: String,
}

/// What disaster recovery needs to know about a virtual machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInventory {
    /// The VM's inventory name (`/`, `\` and `%` appear as `%2f`, `%5c`, `%25`).
    pub name: String,
    /// Number of virtual CPUs (`config.hardware.numCPU`).
    pub cpus: u32,
    /// Memory in MiB (`config.hardware.memoryMB`).
    pub memory_mib: u64,
    /// `bios` or `efi` (`config.firmware`; `bios` when unset).
    pub firmware: String,
    /// The guest OS identifier, e.g. `otherGuest`, `windows9Server64Guest`.
    pub guest_id: String,
    /// Whether changed block tracking is on (`config.changeTrackingEnabled`).
    pub change_tracking: bool,
    /// The virtual disks, in device order.
    pub disks: Vec<Disk>,
    /// The network adapters, in device order.
    pub nics: Vec<Nic>,
}

/// A virtual disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The device key, used by `QueryChangedDiskAreas`.
    pub key: i32,
    /// The device label, e.g. `Hard disk 1`.
    pub label: String,
    /// The capacity in bytes.
    pub capacity_bytes: u64,
    /// The backing file, e.g. `[datastore1] vm/vm.vmdk`.
    pub file_name: String,
    /// Where the disk sits: controller kind, bus number and unit number,
    /// e.g. `scsi0:0`, `ide0:1`, `sata0:2`, `nvme0:0`.
    pub controller: String,
    /// The changed block tracking id of the disk's current state, when
    /// tracking is on and the disk has one.
    pub change_id: Option<String>,
}

/// A network adapter of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The device label, e.g. `Network adapter 1`.
    pub label: String,
    /// The MAC address, e.g. `00:50:56:01:02:03`.
    pub mac: String,
    /// The name of the network (standard port group, distributed port group
    /// or opaque network) the adapter is connected to. When vCenter does not
    /// list the network among the VM's networks, the backing's own reference
    /// is used (device name, port group key or opaque network id); empty when
    /// the adapter has no network backing.
    pub network: String,
}

/// One answer of `QueryChangedDiskAreas`: the areas changed within
/// `start_offset .. start_offset + length`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangedAreas {
    /// Where the covered range starts, in bytes.
    pub start_offset: u64,
    /// How many bytes the answer covers; less than the rest of the disk when
    /// more answers are needed.
    pub length: u64,
    /// The changed areas as `(start, length)` in bytes.
    pub areas: Vec<(u64, u64)>,
}
