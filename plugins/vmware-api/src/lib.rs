//! A client of vCenter's vSphere SOAP API (the `/sdk` endpoint), for the
//! vmware plugin of lifeboat.
//!
//! The crate does no I/O: every request goes through a [`Transport`] the
//! caller supplies (the WebAssembly host's HTTP inside the plugin, a plain
//! socket in tests), so it builds for `wasm32-wasip2` as well as natively.
//!
//! ```no_run
//! use lifeboat_vmware_api::{Client, Response, Transport};
//!
//! struct Http;
//! impl Transport for Http {
//!     fn post(&mut self, _url: &str, _headers: &[(String, String)], _body: &str)
//!         -> Result<Response, String> {
//!         Err("no network here".into())
//!     }
//! }
//!
//! let mut vc = Client::new(Http, "https://vc.example.com/sdk");
//! vc.login("administrator@vsphere.local", "secret")?;
//! let vm = vc.find_vm("web01")?;
//! let inventory = vc.vm_inventory(&vm)?;
//! let snapshot = vc.create_snapshot(&vm, "lifeboat", true)?;
//! for disk in &inventory.disks {
//!     let areas = vc.query_all_changed_disk_areas(&vm, &snapshot, disk.key, disk.capacity_bytes, "*")?;
//!     println!("{}: {} areas", disk.label, areas.len());
//! }
//! vc.remove_snapshot(&snapshot)?;
//! # Ok::<(), lifeboat_vmware_api::VmwareError>(())
//! ```
//!
//! Requests are written with every interpolated value XML-escaped; answers
//! are read with `roxmltree` by local element names, whatever namespace
//! prefixes the server uses. SOAP faults become [`VmwareError::Fault`].

mod client;
mod error;
mod parse;
mod transport;
mod types;
mod xml;

pub use client::{
    Client, DEFAULT_MAX_TASK_POLLS, DEFAULT_SOAP_ACTION, SESSION_COOKIE, escape_inventory_name,
};
pub use error::VmwareError;
pub use transport::{Response, Transport};
pub use types::{ChangedAreas, Disk, MoRef, Nic, ServiceContent, UserSession, VmInventory};
pub use xml::escape as xml_escape;
