//! The vCenter site of the vmware plugin, end to end against a real vCenter
//! simulator: `workflows/vmware-to-azure/replicate-vcenter.yaml` reads a VM's
//! inventory from vcsim, turns changed-block tracking on, takes and removes a
//! replication snapshot, and ships the VM's disk from a folder site laid out
//! like vcsim's datastore (`LocalDS_0/DC0_H0_VM0/disk1.vmdk`, a VMDK made
//! with qemu-img). A second run, after a guest write, asks vcsim for the
//! changed areas, is told the method does not exist, falls back to hash
//! comparison, and restores identical to the changed disk; a third run, with
//! no changeId to ask about, compares hashes and makes an app-consistent
//! point from a quiesced snapshot. A wrong password is a clear error that
//! never shows the password, and neither does a plan.
//!
//! vcsim is built by `tests/lab/vcsim/build.sh` (Go and govmomi's simulator
//! library) and started by each test on 127.0.0.1, stopped by its PID when
//! the test ends or panics. The tests fail, never skip, when it cannot be had.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::vcsim::Vcsim;
use common::{lifeboat, ok, root};

const WF: &str = "workflows/vmware-to-azure/replicate-vcenter.yaml";
const USER: &str = "lifeboat";
/// XML markup in it: requests must escape it, and no output may show it in
/// either form.
const PASSWORD: &str = "Lb-vc&pw<7>\"q'";
const PASSWORD_ESCAPED: &str = "Lb-vc&amp;pw&lt;7&gt;";
const WRONG_PASSWORD: &str = "Wr0ng-Passw0rd-77";
const VM: &str = "DC0_H0_VM0";
/// Where vcsim keeps the VM's only disk, and its capacity (1 MiB).
const DATASTORE_PATH: &str = "LocalDS_0/DC0_H0_VM0/disk1.vmdk";
const CAPACITY: &str = "1M";

// ---------------------------------------------------------------------------
// Asking vcsim directly: a few raw SOAP calls over one-shot HTTP/1.1.

struct Soap {
    url: String,
    cookie: Option<String>,
}

impl Soap {
    fn login(url: &str) -> Soap {
        let mut s = Soap {
            url: url.to_string(),
            cookie: None,
        };
        let (status, body) = s.call(
            "Login",
            r#"<_this type="SessionManager">SessionManager</_this>"#,
            &format!(
                "<userName>{USER}</userName><password>{}</password>",
                PASSWORD
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;")
                    .replace('\'', "&apos;")
            ),
        );
        assert_eq!(status, 200, "login to vcsim: {body}");
        assert!(s.cookie.is_some(), "vcsim set no session cookie");
        s
    }

    fn call(&mut self, method: &str, this: &str, params: &str) -> (u16, String) {
        let body = format!(
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
                r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
                r#"<soapenv:Body><{m} xmlns="urn:vim25">{this}{params}</{m}></soapenv:Body></soapenv:Envelope>"#
            ),
            m = method,
            this = this,
            params = params
        );
        let rest = self.url.strip_prefix("http://").unwrap();
        let (authority, path) = rest.split_at(rest.find('/').unwrap());
        let addr = authority.to_socket_addrs().unwrap().next().unwrap();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
             Content-Type: text/xml; charset=utf-8\r\nSOAPAction: urn:vim25/6.5\r\n\
             Content-Length: {}\r\n",
            body.len()
        );
        if let Some(c) = &self.cookie {
            req.push_str(&format!("Cookie: vmware_soap_session={c}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        stream.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, payload) = raw.split_once("\r\n\r\n").unwrap();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap();
        for line in head.lines() {
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("set-cookie")
                && let Some(v) = value.trim().strip_prefix("vmware_soap_session=")
            {
                self.cookie = Some(v.split(';').next().unwrap().to_string());
            }
        }
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(payload)
        } else {
            payload.to_string()
        };
        (status, body)
    }

    /// The managed object id of a VM of datacenter DC0.
    fn find_vm(&mut self, name: &str) -> String {
        let (status, body) = self.call(
            "FindByInventoryPath",
            r#"<_this type="SearchIndex">SearchIndex</_this>"#,
            &format!("<inventoryPath>DC0/vm/{name}</inventoryPath>"),
        );
        assert_eq!(status, 200, "{body}");
        let start = body
            .find(r#"<returnval type="VirtualMachine">"#)
            .unwrap_or_else(|| panic!("no VM {name}: {body}"));
        let rest = &body[start..];
        let value = &rest[rest.find('>').unwrap() + 1..rest.find("</returnval>").unwrap()];
        value.to_string()
    }

    /// The answer of `RetrievePropertiesEx` for these paths of a VM.
    fn vm_properties(&mut self, moref: &str, paths: &[&str]) -> String {
        let paths: String = paths
            .iter()
            .map(|p| format!("<pathSet>{p}</pathSet>"))
            .collect();
        let (status, body) = self.call(
            "RetrievePropertiesEx",
            r#"<_this type="PropertyCollector">propertyCollector</_this>"#,
            &format!(
                "<specSet><propSet><type>VirtualMachine</type>{paths}</propSet>\
                 <objectSet><obj type=\"VirtualMachine\">{moref}</obj><skip>false</skip></objectSet>\
                 </specSet><options></options>"
            ),
        );
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn dechunk(mut data: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = data.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        data = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------
// The lab: a vault and its key (`lifeboat demo init`), and the datastore site

fn tool(cmd: &str, args: &[&str]) {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (install qemu-utils): {e}"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A lab whose `datastores/` site holds vcsim's VM disk, with data in it.
fn lab(dir: &Path) -> PathBuf {
    let lab = dir.join("lab");
    ok(&lifeboat()
        .args(["demo", "init"])
        .arg(&lab)
        .output()
        .unwrap());
    let disk = lab.join("datastores").join(DATASTORE_PATH);
    std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
    let d = disk.to_str().unwrap();
    tool("qemu-img", &["create", "-q", "-f", "vmdk", d, CAPACITY]);
    for (pattern, at, len) in [("0xa1", "0", "64k"), ("0xb2", "256k", "128k")] {
        tool(
            "qemu-io",
            &[
                "-f",
                "vmdk",
                "-c",
                &format!("write -P {pattern} {at} {len}"),
                d,
            ],
        );
    }
    lab
}

fn run_workflow(wf: &Path, lab: &Path, state: &Path, url: &str, password: &str) -> Output {
    run_with(wf, lab, state, url, password, &[])
}

fn run_with(
    wf: &Path,
    lab: &Path,
    state: &Path,
    url: &str,
    password: &str,
    inputs: &[&str],
) -> Output {
    let mut cmd = lifeboat();
    cmd.env("VCENTER_PASSWORD", password)
        .args(["run", "--state-dir"])
        .arg(state)
        .arg(wf)
        .arg("--input")
        .arg(format!("lab={}", lab.display()))
        .arg("--input")
        .arg(format!("vcenter_url={url}"))
        .arg("--input")
        .arg(format!("vcenter_user={USER}"));
    for i in inputs {
        cmd.arg("--input").arg(i);
    }
    cmd.output().unwrap()
}

/// The value of the output line `    NAME = VALUE` of the step `step` in the
/// result of a run.
fn output<'a>(run: &'a str, step: &str, name: &str) -> &'a str {
    let key = format!("    {name} = ");
    let result = run
        .find("\nResult: ")
        .unwrap_or_else(|| panic!("no result in:\n{run}"));
    let start = run[result..]
        .find(&format!("\n  {step}: "))
        .unwrap_or_else(|| panic!("no step {step} in the result of:\n{run}"));
    run[result + start + 1..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no output {name} of {step} in:\n{run}"))
}

fn json_output(run: &str, step: &str, name: &str) -> serde_json::Value {
    let text = output(run, step, name);
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{step}.{name} = {text}: {e}"))
}

fn restore_and_compare(lab: &Path, point: &str, want: &Path) {
    let out = lab.join(format!("restored-{point}.vhdx"));
    ok(&lifeboat()
        .args([
            "vault",
            "restore",
            "--vm",
            VM,
            "--point",
            point,
            "--disk-name",
            "scsi0:0",
            "--format",
            "vhdx",
            "--out",
        ])
        .arg(&out)
        .arg("--key-file")
        .arg(lab.join("vault.key"))
        .arg(lab.join("vault"))
        .output()
        .unwrap());
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "vmdk", "-F", "vhdx"])
        .arg(want)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "point {point} differs from {}: {}{}",
        want.display(),
        String::from_utf8_lossy(&cmp.stdout),
        String::from_utf8_lossy(&cmp.stderr)
    );
}

fn assert_no_password(what: &str, text: &str) {
    for p in [PASSWORD, PASSWORD_ESCAPED, WRONG_PASSWORD, "Lb-vc&"] {
        assert!(!text.contains(p), "{what} shows the password:\n{text}");
    }
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn replicates_a_vm_from_vcenter_then_falls_back_to_hash_comparison() {
    let t0 = Instant::now();
    let sim = Vcsim::start(USER, PASSWORD);
    let d = tempfile::tempdir().unwrap();
    let lab = lab(d.path());
    let disk = lab.join("datastores").join(DATASTORE_PATH);
    let keep = d.path().join("gen1.vmdk");
    std::fs::copy(&disk, &keep).unwrap();

    // Planning needs no vCenter (reading it is a POST, only done in apply);
    // the plan never shows the password.
    for format in ["text", "json"] {
        let o = lifeboat()
            .env("VCENTER_PASSWORD", PASSWORD)
            .args(["plan", "--format", format, WF])
            .arg("--input")
            .arg(format!("lab={}", lab.display()))
            .arg("--input")
            .arg(format!("vcenter_url={}", sim.url))
            .output()
            .unwrap();
        let text = ok(&o);
        assert_no_password("the plan", &text);
        assert!(text.contains("(sensitive)"), "{text}");
        assert!(
            text.contains(&format!(
                "read the inventory of VM {VM} from vCenter {}",
                sim.url
            )),
            "{text}"
        );
    }

    // The first run. vcsim reports no changeIds, so the workflow is given
    // one for the disk, as a real vCenter would have reported it: the
    // second run then asks vcsim what changed since it.
    let wf_text = std::fs::read_to_string(root().join(WF)).unwrap();
    let pass_captured = "      captured: ${{ steps.capture.outputs.disks }}\n";
    assert!(
        wf_text.contains(pass_captured),
        "{WF} changed: update this test"
    );
    let with_change_id = wf_text.replace(
        pass_captured,
        concat!(
            "      captured:\n",
            "        - name: ${{ steps.capture.outputs.disks[0].name }}\n",
            "          path: ${{ steps.capture.outputs.disks[0].path }}\n",
            "          changes: ${{ steps.capture.outputs.disks[0].changes }}\n",
            "          bytes: ${{ steps.capture.outputs.disks[0].bytes }}\n",
            "          source: ${{ steps.capture.outputs.disks[0].source }}\n",
            "          snapshot: ${{ steps.capture.outputs.disks[0].snapshot }}\n",
            "          change_id: \"52 1d 8a 3c 44 21 90 6e-2a 6b 1f 33 0c 7e 9d 45/17\"\n",
        ),
    );
    let wf1 = d.path().join("replicate-vcenter-changeid.yaml");
    std::fs::write(&wf1, with_change_id).unwrap();

    let t_run1 = Instant::now();
    let first = run_workflow(&wf1, &lab, &d.path().join("s1"), &sim.url, PASSWORD);
    let first = ok(&first);
    let run1_secs = t_run1.elapsed().as_secs_f64();
    assert_no_password("the first run", &first);

    // the inventory, as vcsim describes DC0_H0_VM0
    let vm = json_output(&first, "discover", "vm");
    assert_eq!(vm["name"], VM, "{vm}");
    assert_eq!(vm["cpus"], 1, "{vm}");
    assert_eq!(vm["memory_mib"], 32, "{vm}");
    assert_eq!(vm["firmware"], "bios", "{vm}");
    assert_eq!(vm["guest_os"], "otherGuest", "{vm}");
    assert_eq!(vm["vcenter"]["change_tracking"], false, "{vm}");
    let moref = vm["vcenter"]["moref"].as_str().unwrap().to_string();
    assert!(moref.starts_with("vm-"), "{vm}");
    let disks = vm["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "{vm}");
    assert_eq!(disks[0]["name"], "scsi0:0");
    assert_eq!(disks[0]["path"], DATASTORE_PATH);
    assert_eq!(
        disks[0]["datastore_path"],
        "[LocalDS_0] DC0_H0_VM0/disk1.vmdk"
    );
    assert_eq!(disks[0]["size_bytes"], 1 << 20);
    assert!(disks[0]["key"].as_i64().unwrap() > 0, "{vm}");
    let nics = vm["nics"].as_array().unwrap();
    assert_eq!(nics.len(), 1, "{vm}");
    assert_eq!(nics[0]["name"], "ethernet0");
    assert_eq!(nics[0]["network"], "DC0_DVPG0");
    let mac = nics[0]["mac"].as_str().unwrap();
    assert!(
        mac.len() == 17
            && mac.split(':').count() == 6
            && mac
                .chars()
                .all(|c| c == ':' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "MAC {mac:?}"
    );

    // tracking turned on, the snapshot taken, the first copy from the
    // allocation map, then the snapshot removed after sealing
    assert!(
        first.contains("planned  capture: 2 action(s), deferred until now"),
        "{first}"
    );
    let order = [
        format!("applied  capture  ~ vm/{VM}/change-tracking"),
        format!("applied  capture  + vm/{VM}/snapshot/lifeboat-1"),
        format!("applied  ship  > vault/{VM}"),
        format!("applied  snapshot  + point/{VM}"),
        format!("applied  snapshot  - vm/{VM}/snapshot/lifeboat-1"),
    ];
    let mut at = 0;
    for line in &order {
        let found = first[at..]
            .find(line.as_str())
            .unwrap_or_else(|| panic!("no {line:?} (in this order) in:\n{first}"));
        at += found + line.len();
    }
    let captured = json_output(&first, "capture", "disks");
    assert_eq!(
        captured[0]["source"], "first copy: allocation map",
        "{captured}"
    );
    let snapshot = &captured[0]["snapshot"];
    assert_eq!(snapshot["name"], "lifeboat-1");
    assert_eq!(snapshot["vm"], moref.as_str());
    let snap_moref = snapshot["moref"].as_str().unwrap().to_string();

    // vcsim agrees: tracking is on, the VM has no snapshot left, and the
    // snapshot the run took is gone
    let mut soap = Soap::login(&sim.url);
    assert_eq!(soap.find_vm(VM), moref);
    let props = soap.vm_properties(&moref, &["config.changeTrackingEnabled", "snapshot"]);
    assert!(
        props.contains("<name>config.changeTrackingEnabled</name>")
            && props.contains(">true</val>"),
        "change tracking is not on: {props}"
    );
    assert!(
        !props.contains("<name>snapshot</name>"),
        "the VM still has a snapshot: {props}"
    );
    let (status, body) = soap.call(
        "RemoveSnapshot_Task",
        &format!(r#"<_this type="VirtualMachineSnapshot">{snap_moref}</_this>"#),
        "<removeChildren>false</removeChildren>",
    );
    assert!(
        status == 500 && body.contains("ManagedObjectNotFound"),
        "snapshot {snap_moref} still exists: {status} {body}"
    );

    // one point, holding the disk and the changeId given to it
    let pts = common::lab::points(&lab, None);
    assert_eq!(pts.len(), 1, "{pts:?}");
    let p1 = pts[0]["id"].as_str().unwrap().to_string();
    assert_eq!(pts[0]["vm"], VM);
    let pdisks = pts[0]["disks"].as_array().unwrap();
    assert_eq!(pdisks.len(), 1, "{pts:?}");
    assert_eq!(pdisks[0]["name"], "scsi0:0");
    assert_eq!(pdisks[0]["virtual_size"], 1 << 20);
    restore_and_compare(&lab, &p1, &keep);

    // The guest writes: 64 KiB over old data, 64 KiB where nothing was.
    let d_str = disk.to_str().unwrap();
    tool(
        "qemu-io",
        &["-f", "vmdk", "-c", "write -P 0xc3 0 64k", d_str],
    );
    tool(
        "qemu-io",
        &["-f", "vmdk", "-c", "write -P 0xd4 640k 64k", d_str],
    );

    // The second run, with the workflow as it is: vcsim has no
    // QueryChangedDiskAreas, so capture falls back to hash comparison and
    // says so.
    let t_run2 = Instant::now();
    let second = run_workflow(
        &root().join(WF),
        &lab,
        &d.path().join("s2"),
        &sim.url,
        PASSWORD,
    );
    let second = ok(&second);
    let run2_secs = t_run2.elapsed().as_secs_f64();
    assert_no_password("the second run", &second);
    let vm2 = json_output(&second, "discover", "vm");
    assert_eq!(vm2["vcenter"]["change_tracking"], true, "{vm2}");
    assert!(
        !second.contains("/change-tracking"),
        "tracking was already on: {second}"
    );
    for line in [
        format!("applied  capture  + vm/{VM}/snapshot/lifeboat-2"),
        format!("applied  snapshot  - vm/{VM}/snapshot/lifeboat-2"),
    ] {
        assert!(second.contains(&line), "no {line:?} in:\n{second}");
    }
    let captured = json_output(&second, "capture", "disks");
    assert_eq!(
        captured[0]["source"],
        format!(
            "vCenter cannot answer QueryChangedDiskAreas (MethodNotFound): hash comparison with point {p1}"
        )
        .as_str(),
        "{captured}"
    );
    assert_eq!(captured[0]["changes"]["source"], "hash-compare");
    // only the two changed chunks are new to the vault
    assert_eq!(output(&second, "ship", "bytes_new"), "131072", "{second}");
    let props = soap.vm_properties(&moref, &["snapshot"]);
    assert!(!props.contains("<name>snapshot</name>"), "{props}");

    let pts = common::lab::points(&lab, None);
    assert_eq!(pts.len(), 2, "{pts:?}");
    let p2 = pts[1]["id"].as_str().unwrap().to_string();
    assert_eq!(pts[1]["parent"], p1.as_str());
    assert_eq!(pts[1]["disks"][0]["changes"], "since-point", "{pts:?}");
    restore_and_compare(&lab, &p2, &disk);
    restore_and_compare(&lab, &p1, &keep);

    // A third run: point 2 recorded no changeId (vcsim reports none), so
    // there is nothing to ask vCenter; nothing changed, nothing is new.
    // It asks for an app-consistent point: a quiesced snapshot.
    let third = run_with(
        &root().join(WF),
        &lab,
        &d.path().join("s3"),
        &sim.url,
        PASSWORD,
        &["consistency=app"],
    );
    let third = ok(&third);
    assert!(
        third.contains("applied  capture  + vm/DC0_H0_VM0/snapshot/lifeboat-3"),
        "{third}"
    );
    let captured = json_output(&third, "capture", "disks");
    assert_eq!(
        captured[0]["source"],
        format!("no changeId recorded with point {p2}: hash comparison with point {p2}").as_str(),
        "{captured}"
    );
    assert_eq!(output(&third, "ship", "bytes_new"), "0", "{third}");
    let pts = common::lab::points(&lab, None);
    assert_eq!(pts.len(), 3);
    assert_eq!(pts[2]["consistency"], "app", "{pts:?}");
    assert_eq!(pts[1]["consistency"], "crash", "{pts:?}");

    eprintln!(
        "vcenter e2e: first run {run1_secs:.1} s, second run {run2_secs:.1} s, whole test {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_wrong_password_or_a_missing_disk_is_a_clear_error() {
    let sim = Vcsim::start(USER, PASSWORD);
    let d = tempfile::tempdir().unwrap();
    let lab = lab(d.path());

    let o = run_workflow(
        &root().join(WF),
        &lab,
        &d.path().join("s1"),
        &sim.url,
        WRONG_PASSWORD,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "vCenter at {} refused the login of \"{USER}\" (InvalidLogin",
            sim.url
        )),
        "{text}"
    );
    assert_no_password("a failed login", &text);
    assert!(common::lab::points(&lab, None).is_empty());

    // the datastore site does not hold the VM's disk
    std::fs::remove_file(lab.join("datastores").join(DATASTORE_PATH)).unwrap();
    let o = run_workflow(
        &root().join(WF),
        &lab,
        &d.path().join("s2"),
        &sim.url,
        PASSWORD,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[LocalDS_0] DC0_H0_VM0/disk1.vmdk")
            && text.contains("DATASTORE/folder/file.vmdk"),
        "{text}"
    );
    assert_no_password("a failed discovery", &text);
    assert!(common::lab::points(&lab, None).is_empty());

    // nothing was left behind in vCenter
    let mut soap = Soap::login(&sim.url);
    let moref = soap.find_vm(VM);
    let props = soap.vm_properties(&moref, &["name", "snapshot"]);
    assert!(!props.contains("<name>snapshot</name>"), "{props}");
}
