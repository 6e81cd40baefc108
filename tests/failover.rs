//! VMware → Azure failover end to end, through the bundled azure plugin and
//! the demo lab: replicate, then fail over. Each disk of the point becomes a
//! fixed VHD page blob identical to its source VMDK (qemu-img), the ARM
//! deployment passes Microsoft's SDK models (tests/oracle), an older point
//! gives the older disks, bad input is a clear error before anything is
//! written, and with `arm.endpoint` the deployment is submitted to a local
//! stand-in of ARM answering with recorded answers (tests/recordings/arm).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{lifeboat, ok, root, text};
use serde_json::Value;

const REPLICATE: &str = "workflows/vmware-to-azure/replicate.yaml";
const FAILOVER: &str = "workflows/vmware-to-azure/failover.yaml";
const SUB: &str = "6a1c2f0e-4b7d-4f3a-9c2e-1d5b8e7f0a11";
const MIB: u64 = 1 << 20;

fn demo_init(lab: &Path) {
    ok(&lifeboat().args(["demo", "init"]).arg(lab).output().unwrap());
}

fn run(wf: &Path, lab: &Path, state: &Path, inputs: &[&str]) -> Output {
    let mut c = lifeboat();
    c.args(["run", "--state-dir"]).arg(state).arg(wf);
    c.arg("--input").arg(format!("lab={}", lab.display()));
    for i in inputs {
        c.args(["--input", i]);
    }
    c.output().unwrap()
}

fn replicate(lab: &Path, state: &Path) -> String {
    ok(&run(&root().join(REPLICATE), lab, state, &[]))
}

fn failover(lab: &Path, state: &Path, inputs: &[&str]) -> Output {
    run(&root().join(FAILOVER), lab, state, inputs)
}

/// Whether a VMDK and a VHD hold the same guest-visible bytes (qemu-img compare).
fn same(vmdk: &Path, vhd: &Path) -> bool {
    compare(vmdk, vhd, "vpc")
}

fn compare(vmdk: &Path, other: &Path, format: &str) -> bool {
    let o = Command::new("qemu-img")
        .args(["compare", "-f", "vmdk", "-F", format])
        .arg(vmdk)
        .arg(other)
        .output()
        .unwrap();
    match o.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("qemu-img compare failed: {}", text(&o)),
    }
}

/// `qemu-img info` of a VHD: (format, virtual size).
fn vhd_info(vhd: &Path) -> (String, u64) {
    let o = Command::new("qemu-img")
        .args(["info", "--output", "json", "-f", "vpc"])
        .arg(vhd)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    (
        v["format"].as_str().unwrap().to_string(),
        v["virtual-size"].as_u64().unwrap(),
    )
}

/// Check each VHD of a failover of `web01` named `name` against its source.
fn check_vhds(azure: &Path, name: &str, sources: &[PathBuf; 2]) {
    for (disk, src) in ["scsi0-0", "scsi0-1"].iter().zip(sources) {
        let vhd = azure.join(format!("vhds/{name}-{disk}.vhd"));
        assert!(vhd.is_file(), "no {}", vhd.display());
        let (format, size) = vhd_info(&vhd);
        assert_eq!(format, "vpc", "{}", vhd.display());
        assert!(size > 0 && size % MIB == 0, "{}: {size}", vhd.display());
        assert!(
            same(src, &vhd),
            "{} differs from {}",
            vhd.display(),
            src.display()
        );
    }
}

fn deployment(azure: &Path, name: &str) -> (PathBuf, Value) {
    let p = azure.join(format!("deployments/lifeboat-failover-{name}.json"));
    let doc = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    (p, doc)
}

fn resources(doc: &Value) -> &Vec<Value> {
    doc["properties"]["template"]["resources"]
        .as_array()
        .unwrap()
}

fn resource<'a>(doc: &'a Value, ty: &str, name: &str) -> &'a Value {
    resources(doc)
        .iter()
        .find(|r| r["type"] == ty && r["name"] == name)
        .unwrap_or_else(|| panic!("no {ty} {name} in {doc:#}"))
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn failover_materialises_the_point_and_a_valid_deployment() {
    let d = tempfile::tempdir().unwrap();
    let lab = d.path().join("lab");
    demo_init(&lab);
    let vm = lab.join("vmware/web01");
    let azure = lab.join("azure");
    let gen1 = d.path().join("gen1");
    std::fs::create_dir_all(&gen1).unwrap();
    for f in ["web01.vmdk", "web01_1.vmdk"] {
        std::fs::copy(vm.join(f), gen1.join(f)).unwrap();
    }
    let gen1 = [gen1.join("web01.vmdk"), gen1.join("web01_1.vmdk")];
    let current = [vm.join("web01.vmdk"), vm.join("web01_1.vmdk")];

    replicate(&lab, &d.path().join("r1"));
    let p1 = common::lab::point_ids(&lab, None).pop().unwrap();

    // a test failover of the latest (only) point
    let out = ok(&failover(&lab, &d.path().join("f1"), &[]));
    assert!(out.contains("\nResult: ok"), "{out}");
    assert!(
        out.contains(&format!(
            "materialise scsi0:0 of point {p1} as fixed VHD page blob vhds/web01-test-scsi0-0.vhd (OS disk), 64.0 MiB"
        )),
        "{out}"
    );
    assert!(
        out.contains("ethernet1 (Backend) → isolated test subnet lifeboat-test-web01/isolated 10.20.0.0/24 (production: prod-vnet/backend), IP 10.20.0.15 kept"),
        "{out}"
    );
    check_vhds(&azure, "web01-test", &current);
    assert_eq!(
        vhd_info(&azure.join("vhds/web01-test-scsi0-0.vhd")).1,
        64 * MIB
    );
    assert_eq!(
        vhd_info(&azure.join("vhds/web01-test-scsi0-1.vhd")).1,
        32 * MIB
    );
    let (test_file, doc) = deployment(&azure, "web01-test");
    let vnet = resource(
        &doc,
        "Microsoft.Network/virtualNetworks",
        "lifeboat-test-web01",
    );
    assert_eq!(
        vnet["properties"]["subnets"][0]["properties"]["addressPrefix"],
        "10.20.0.0/24"
    );
    let os = resource(&doc, "Microsoft.Compute/disks", "web01-test-scsi0-0");
    assert_eq!(os["properties"]["hyperVGeneration"], "V2", "UEFI → gen 2");
    assert_eq!(os["properties"]["osType"], "Linux");
    assert_eq!(
        os["properties"]["creationData"]["sourceUri"],
        "https://lbdrcache01.blob.core.windows.net/vhds/web01-test-scsi0-0.vhd"
    );
    assert_eq!(os["tags"]["lifeboat-recovery-point"], p1.as_str());
    let nic = resource(
        &doc,
        "Microsoft.Network/networkInterfaces",
        "web01-test-ethernet1",
    );
    let ipc = &nic["properties"]["ipConfigurations"][0]["properties"];
    assert_eq!(ipc["privateIPAddress"], "10.20.0.15");
    assert_eq!(
        ipc["subnet"]["id"],
        "[resourceId('Microsoft.Network/virtualNetworks/subnets', 'lifeboat-test-web01', 'isolated')]",
        "a test failover never touches the production subnet"
    );
    let vmr = resource(&doc, "Microsoft.Compute/virtualMachines", "web01-test");
    assert_eq!(
        vmr["properties"]["hardwareProfile"]["vmSize"],
        "Standard_B2s"
    );
    assert_eq!(
        vmr["properties"]["storageProfile"]["dataDisks"][0]["lun"],
        0
    );
    assert_eq!(
        vmr["properties"]["diagnosticsProfile"]["bootDiagnostics"]["enabled"],
        true
    );
    // applying again overwrites, byte for byte the same document
    let first = std::fs::read(&test_file).unwrap();
    ok(&failover(&lab, &d.path().join("f1b"), &[]));
    assert_eq!(std::fs::read(&test_file).unwrap(), first);

    // the guest changes its disks; a second point
    ok(&lifeboat()
        .args(["demo", "change"])
        .arg(&lab)
        .output()
        .unwrap());
    replicate(&lab, &d.path().join("r2"));
    let ids = common::lab::point_ids(&lab, None);
    assert_eq!(ids.len(), 2);
    let p2 = ids[1].clone();
    assert!(
        !compare(&gen1[0], &current[0], "vmdk"),
        "the guest change must change the first disk, or this test proves nothing"
    );

    // the first point (by id) gives the first disks, `latest` the second:
    // a planned failover of the first, a test failover of the latest
    ok(&failover(
        &lab,
        &d.path().join("f2"),
        &["kind=planned", &format!("point={p1}")],
    ));
    check_vhds(&azure, "web01", &gen1);
    ok(&failover(&lab, &d.path().join("f3"), &["point=latest"]));
    check_vhds(&azure, "web01-test", &current);
    let (_, doc) = deployment(&azure, "web01-test");
    let os = resource(&doc, "Microsoft.Compute/disks", "web01-test-scsi0-0");
    assert_eq!(os["tags"]["lifeboat-recovery-point"], p2.as_str());

    // planned: production subnets, no test network, static IP kept
    let (planned_file, doc) = deployment(&azure, "web01");
    assert!(
        resources(&doc)
            .iter()
            .all(|r| r["type"] != "Microsoft.Network/virtualNetworks")
    );
    let nic = resource(
        &doc,
        "Microsoft.Network/networkInterfaces",
        "web01-ethernet1",
    );
    let ipc = &nic["properties"]["ipConfigurations"][0]["properties"];
    assert_eq!(ipc["privateIPAllocationMethod"], "Static");
    assert_eq!(
        ipc["subnet"]["id"],
        format!(
            "/subscriptions/{SUB}/resourceGroups/lifeboat-dr/providers/Microsoft.Network/virtualNetworks/prod-vnet/subnets/backend"
        )
    );
    assert_eq!(
        resource(&doc, "Microsoft.Compute/disks", "web01-scsi0-0")["tags"]["lifeboat-recovery-point"],
        p1.as_str()
    );

    let test_file = azure.join("deployments/lifeboat-failover-web01-test.json");
    let (passed, report) = common::lab::arm_oracle(&[&test_file, &planned_file]);
    assert!(passed, "the oracle rejected a deployment:\n{report}");
    assert!(
        report.contains("2 file(s)") && report.contains("0 problem(s)"),
        "{report}"
    );
}

#[test]
fn bad_input_is_a_clear_error_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let lab = d.path().join("lab");
    demo_init(&lab);
    let azure = lab.join("azure");
    let fails = |name: &str, wf: &Path, inputs: &[&str], want: &str| {
        let o = run(wf, &lab, &d.path().join(name), inputs);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {t}");
        assert!(t.contains(want), "{name}: expected {want:?} in:\n{t}");
        assert!(
            files_under(&azure).is_empty(),
            "{name}: wrote {:?}",
            files_under(&azure)
        );
    };
    let wf = root().join(FAILOVER);

    fails(
        "no-points",
        &wf,
        &[],
        "VM \"web01\" has no recovery points in the vault: run its replication first",
    );
    replicate(&lab, &d.path().join("r1"));
    let p1 = common::lab::point_ids(&lab, None).pop().unwrap();
    fails(
        "no-such-point",
        &wf,
        &["point=ffffffff"],
        &format!(
            "VM \"web01\" has no recovery point \"ffffffff\"; its points, oldest first: {p1} ("
        ),
    );
    fails(
        "bad-kind",
        &wf,
        &["kind=drill"],
        "kind \"drill\" is not one of test, planned, unplanned",
    );

    // the workflow maps only one of the VM's two networks
    let yaml = std::fs::read_to_string(&wf).unwrap();
    let line = "        Backend: \"${{ vars.subnets }}/backend\"\n";
    assert!(yaml.contains(line));
    let unmapped = d.path().join("failover-unmapped.yaml");
    std::fs::write(&unmapped, yaml.replace(line, "")).unwrap();
    let o = run(&unmapped, &lab, &d.path().join("unmapped"), &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("`network_map` does not map the network of NIC ethernet1 (\"Backend\") of VM web01; it maps \"VM Network\""),
        "{t}"
    );
    assert!(files_under(&azure).is_empty(), "{:?}", files_under(&azure));
}

// ---------------------------------------------------------------- ARM stand-in

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
    at: std::time::Instant,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A stand-in for ARM on 127.0.0.1: answers `PUT` with one recorded answer
/// and each `GET` with the next of a list (the last one repeats), records
/// every request, and stops when dropped.
struct ArmStandIn {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Answer = (u16, &'static str);

fn recording(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/recordings/arm").join(name)).unwrap()
}

impl ArmStandIn {
    fn start(put: Answer, gets: Vec<Answer>) -> ArmStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut get_index = 0;
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let Some(req) = read_request(&conn) else {
                    continue;
                };
                let (status, file) = if req.method == "PUT" {
                    put
                } else {
                    let a = gets[get_index.min(gets.len() - 1)];
                    get_index += 1;
                    a
                };
                s.lock().unwrap().push(req);
                let body = recording(file);
                let reason = match status {
                    200 => "OK",
                    201 => "Created",
                    401 => "Unauthorized",
                    409 => "Conflict",
                    _ => "Status",
                };
                let mut conn = conn;
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        ArmStandIn {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ArmStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // wake the accept loop so it sees the flag
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(conn: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let mut parts = first.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = vec![];
    let (mut chunked, mut length) = (false, 0usize);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let (k, v) = line.trim_end().split_once(':')?;
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
            chunked = true;
        }
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse().unwrap_or(0);
        }
        headers.push((k, v));
    }
    let mut body = vec![];
    if chunked {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            if reader.read_exact(&mut chunk).is_err() || n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if length > 0 {
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some(Seen {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: std::time::Instant::now(),
    })
}

/// failover.yaml, submitting to `endpoint` with the token from `ARM_TEST_TOKEN`.
fn arm_workflow(dir: &Path, endpoint: &str, port: u16) -> PathBuf {
    let text = std::fs::read_to_string(root().join(FAILOVER)).unwrap();
    let grants = "      sites: { azure: write }\n";
    let storage = "      storage_account: ${{ inputs.storage_account }}\n";
    assert!(text.contains(grants) && text.contains(storage));
    let text = text
        .replace(
            grants,
            &format!("{grants}      http: [\"127.0.0.1:{port}\"]\n      insecure_http: true\n      secrets: [arm_token]\n"),
        )
        .replace(
            storage,
            &format!("{storage}      arm: {{ endpoint: \"{endpoint}\", token: \"${{{{ secrets.arm_token }}}}\", poll_seconds: 0.2, wait_seconds: 30 }}\n"),
        )
        + "\nsecrets:\n  arm_token: { env: ARM_TEST_TOKEN }\n";
    let wf = dir.join("failover-arm.yaml");
    std::fs::write(&wf, text).unwrap();
    wf
}

const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.lifeboat-test-token.c2lnbmF0dXJl";

#[test]
fn arm_endpoint_gets_the_deployment_and_never_the_token_in_plans() {
    let d = tempfile::tempdir().unwrap();
    let lab = d.path().join("lab");
    demo_init(&lab);
    replicate(&lab, &d.path().join("r1"));
    let azure = lab.join("azure");

    let arm = ArmStandIn::start(
        (201, "put-created.json"),
        vec![(200, "get-running.json"), (200, "get-succeeded.json")],
    );
    let wf = arm_workflow(d.path(), &arm.endpoint(), arm.port);

    // the plan names the endpoint, never the token
    for format in ["text", "json"] {
        let o = lifeboat()
            .env("ARM_TEST_TOKEN", TOKEN)
            .args(["plan", "--format", format])
            .arg(&wf)
            .arg("--input")
            .arg(format!("lab={}", lab.display()))
            .output()
            .unwrap();
        let t = ok(&o);
        assert!(
            !t.contains(TOKEN) && !t.contains("lifeboat-test-token"),
            "{t}"
        );
        assert!(
            t.contains(&format!("submit to ARM at {}", arm.endpoint())),
            "{t}"
        );
    }
    assert!(arm.seen().is_empty(), "planning must not call ARM");

    let o = lifeboat()
        .env("ARM_TEST_TOKEN", TOKEN)
        .args(["run", "--state-dir"])
        .arg(d.path().join("s1"))
        .arg(&wf)
        .arg("--input")
        .arg(format!("lab={}", lab.display()))
        .output()
        .unwrap();
    let out = ok(&o);
    assert!(
        !out.contains(TOKEN) && !out.contains("lifeboat-test-token"),
        "{out}"
    );
    assert!(out.contains("\nResult: ok"), "{out}");

    let seen = arm.seen();
    let url = format!(
        "/subscriptions/{SUB}/resourcegroups/lifeboat-dr/providers/Microsoft.Resources/deployments/lifeboat-failover-web01-test?api-version=2021-04-01"
    );
    let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["PUT", "GET", "GET"], "{seen:#?}");
    for s in &seen {
        assert_eq!(s.path, url);
        assert_eq!(
            s.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    for w in seen.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= std::time::Duration::from_millis(150),
            "polls {gap:?} apart; arm.poll_seconds is 0.2"
        );
    }
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["properties"]["mode"], "Incremental");
    let sent = d.path().join("sent.json");
    std::fs::write(&sent, &seen[0].body).unwrap();
    let (passed, report) = common::lab::arm_oracle(&[&sent]);
    assert!(passed, "the oracle rejected the submitted body:\n{report}");

    // the blobs are in the site, the deployment went to ARM only
    assert_eq!(
        files_under(&azure),
        ["vhds/web01-test-scsi0-0.vhd", "vhds/web01-test-scsi0-1.vhd"]
    );
    drop(arm);

    // ARM says the deployment failed: the step fails with ARM's reason
    let arm = ArmStandIn::start((201, "put-created.json"), vec![(200, "get-failed.json")]);
    let wf = arm_workflow(d.path(), &arm.endpoint(), arm.port);
    let o = lifeboat()
        .env("ARM_TEST_TOKEN", TOKEN)
        .args(["run", "--state-dir"])
        .arg(d.path().join("s3"))
        .arg(&wf)
        .arg("--input")
        .arg(format!("lab={}", lab.display()))
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("ARM deployment lifeboat-failover-web01-test failed: DeploymentFailed")
            && t.contains("OperationNotAllowed: Operation could not be completed as it results in exceeding approved standardBSFamily Cores quota"),
        "{t}"
    );
    assert!(!t.contains(TOKEN), "{t}");
}
