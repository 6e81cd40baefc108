//! The client against a real vCenter simulator (vcsim, built from Debian's
//! govmomi simulator library by `tests/lab/vcsim/build.sh`), started by each
//! test on 127.0.0.1 and stopped by its PID when the test ends or panics.
//!
//! These tests fail (they never skip) when vcsim cannot be built: that needs
//! Go and govmomi's simulator library, which `build.sh` installs with apt-get
//! (as root) when they are missing.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use lifeboat_vmware_api::{Client, MoRef, Response, Transport, VmwareError};

/// The only user and password the simulator accepts in these tests. The
/// password has XML markup in it, so login also checks request escaping.
const USER: &str = "lifeboat";
const PASSWORD: &str = "s3cr&t<pw>\"'";
const WRONG_PASSWORD: &str = "Wr0ng-Passw0rd-77";

// ---------------------------------------------------------------------------
// vcsim

#[path = "../../../tests/common/vcsim.rs"]
mod vcsim;
use vcsim::Vcsim;

fn start() -> Vcsim {
    Vcsim::start(USER, PASSWORD)
}

fn client(sim: &Vcsim) -> Client<Http> {
    Client::new(Http, sim.url.clone())
}

fn logged_in(sim: &Vcsim) -> Client<Http> {
    let mut vc = client(sim);
    if let Err(e) = vc.login(USER, PASSWORD) {
        panic!("login with the right password failed: {e}");
    }
    vc
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client: one POST per connection, `Connection: close`.

struct Http;

impl Transport for Http {
    fn post(
        &mut self,
        url: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> Result<Response, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| format!("bad address {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("no address for {authority}"))?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(60))))
            .map_err(|e| e.to_string())?;

        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("send: {e}"))?;

        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| format!("receive: {e}"))?;
        parse_http_response(&raw)
    }
}

fn parse_http_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|e| e.to_string())?;
    let payload = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty answer")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(payload)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        payload
            .get(..len)
            .ok_or("body shorter than Content-Length")?
            .to_vec()
    } else {
        payload.to_vec()
    };
    let body = String::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|e| e.to_string())?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("truncated chunk")?);
        data = data.get(size + 2..).ok_or("truncated chunk end")?;
    }
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn login_accepts_only_the_right_password() {
    let sim = start();
    let mut vc = client(&sim);

    let content = vc.retrieve_service_content().unwrap();
    assert_eq!(content.api_type, "VirtualCenter");
    assert_eq!(content.api_version, "6.5");

    // Nothing but the service content without a session.
    let err = vc.find_vm("DC0_H0_VM0").unwrap_err();
    assert!(
        matches!(&err, VmwareError::Fault { fault_type, .. } if fault_type == "NotAuthenticated"),
        "{err:?}"
    );

    let err = vc.login(USER, WRONG_PASSWORD).unwrap_err();
    match &err {
        VmwareError::Login {
            user, fault_type, ..
        } => {
            assert_eq!(user, USER);
            assert_eq!(fault_type, "InvalidLogin");
        }
        other => panic!("expected a login error, got {other:?}"),
    }
    let shown = format!("{err} / {err:?}");
    assert!(
        !shown.contains(WRONG_PASSWORD),
        "the password leaked: {shown}"
    );
    assert!(
        shown.contains(USER) && shown.contains("InvalidLogin"),
        "{shown}"
    );

    let session = vc.login(USER, PASSWORD).unwrap();
    assert_eq!(session.user_name, USER);
    assert!(!session.key.is_empty());
    assert!(vc.session_cookie().is_some());

    // The session works, and ends with logout.
    vc.find_vm("DC0_H0_VM0").unwrap();
    vc.logout().unwrap();
    assert!(vc.session_cookie().is_none());
    assert!(vc.find_vm("DC0_H0_VM0").is_err());
}

#[test]
fn finds_vms_by_name() {
    let sim = start();
    let mut vc = logged_in(&sim);

    let vm = vc.find_vm("DC0_H0_VM0").unwrap();
    assert_eq!(vm.kind, "VirtualMachine");
    assert!(vm.value.starts_with("vm-"), "{vm}");

    // A VM in the cluster's resource pool, elsewhere in the inventory.
    let other = vc.find_vm("DC0_C0_RP0_VM1").unwrap();
    assert_ne!(other, vm);

    let err = vc.find_vm("no-such-vm").unwrap_err();
    assert_eq!(
        err,
        VmwareError::NotFound {
            kind: "virtual machine".into(),
            name: "no-such-vm".into()
        }
    );
    assert!(
        err.to_string().contains("\"no-such-vm\" not found"),
        "{err}"
    );
}

#[test]
fn reads_the_inventory_of_a_vm() {
    let sim = start();
    let mut vc = logged_in(&sim);
    let vm = vc.find_vm("DC0_H0_VM0").unwrap();
    let inv = vc.vm_inventory(&vm).unwrap();

    assert_eq!(inv.name, "DC0_H0_VM0");
    assert_eq!(inv.cpus, 1);
    assert_eq!(inv.memory_mib, 32);
    assert_eq!(inv.firmware, "bios");
    assert_eq!(inv.guest_id, "otherGuest");
    assert!(!inv.change_tracking);

    assert_eq!(inv.disks.len(), 1, "{:#?}", inv.disks);
    let disk = &inv.disks[0];
    assert_eq!(disk.capacity_bytes, 1024 * 1024);
    assert_eq!(disk.controller, "scsi0:0");
    assert_eq!(disk.file_name, "[LocalDS_0] DC0_H0_VM0/disk1.vmdk");
    assert!(disk.key > 0);
    assert!(!disk.label.is_empty());
    assert_eq!(disk.change_id, None);

    assert_eq!(inv.nics.len(), 1, "{:#?}", inv.nics);
    let nic = &inv.nics[0];
    assert_eq!(nic.network, "DC0_DVPG0");
    let octets: Vec<&str> = nic.mac.split(':').collect();
    assert_eq!(octets.len(), 6, "MAC {:?}", nic.mac);
    assert!(
        octets
            .iter()
            .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit())),
        "MAC {:?}",
        nic.mac
    );
}

#[test]
fn change_tracking_and_snapshots() {
    let sim = start();
    let mut vc = logged_in(&sim);
    let vm = vc.find_vm("DC0_H0_VM1").unwrap();
    assert!(!vc.vm_inventory(&vm).unwrap().change_tracking);

    vc.enable_change_tracking(&vm).unwrap();
    assert!(vc.vm_inventory(&vm).unwrap().change_tracking);

    // The name has XML markup in it: the request must escape it.
    let snap = vc
        .create_snapshot(&vm, "lifeboat <dr> & \"test\"", true)
        .unwrap();
    assert_eq!(snap.kind, "VirtualMachineSnapshot");
    assert!(!snap.value.is_empty());

    vc.remove_snapshot(&snap).unwrap();
    let err = vc.remove_snapshot(&snap).unwrap_err();
    assert!(
        matches!(&err, VmwareError::Fault { fault_type, .. } if fault_type == "ManagedObjectNotFound"),
        "{err:?}"
    );

    let missing = MoRef::new("VirtualMachine", "vm-does-not-exist");
    assert!(vc.vm_inventory(&missing).is_err());
}
