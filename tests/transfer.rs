//! The `transfer` interface end to end through `lifeboat run`: a plugin ships a
//! disk of a granted site into the workflow's vault, seals a point with the VM's
//! configuration, and restores it into another site — checked with qemu-img.
//! Also what the sandbox refuses: writing calls while planning, sites and vault
//! not granted, read-only sites, paths leading out of a site. And plugins built
//! against contracts 0.1.0 and 0.1.1 (kept in tests/fixtures) still run on this host.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{lifeboat, sh, testkit_wasm, text};

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A lab: `src/` with a qcow2 disk, `dst/`, an initialised vault.
fn lab() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("src/vm1")).unwrap();
    std::fs::create_dir_all(d.path().join("dst")).unwrap();
    std::fs::write(d.path().join("src/vm1/vm1.vmx"), "displayName = \"vm1\"\n").unwrap();
    let img = d.path().join("src/vm1/disk0.qcow2");
    sh(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("16M"));
    sh(Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 0x5a 1M 2M",
            "-c",
            "write -P 0x11 9M 64k",
        ])
        .arg(&img));
    let out = lifeboat()
        .env("LIFEBOAT_VAULT_KEY", KEY)
        .args(["vault", "init"])
        .arg(d.path().join("vault"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn run(dir: &Path, name: &str, body: &str) -> Output {
    run_with(dir, name, body, &testkit_wasm())
}

/// `run` with the plugin `KIT` stands for.
fn run_with(dir: &Path, name: &str, body: &str, kit: &Path) -> Output {
    let wf = dir.join(format!("{name}.yaml"));
    let text = format!(
        "name: {name}\nsites:\n  src: {{ path: ./src }}\n  dst: {{ path: ./dst }}\nvault:\n  url: ./vault\n{body}",
    )
    .replace("KIT", &kit.display().to_string());
    std::fs::write(&wf, text).unwrap();
    lifeboat()
        .env("LIFEBOAT_VAULT_KEY", KEY)
        .args(["run", "--state-dir"])
        .arg(dir.join(format!("state-{name}")))
        .arg(&wf)
        .output()
        .unwrap()
}

#[test]
fn ship_seal_and_restore_through_a_plugin() {
    let d = lab();
    let out = run(
        d.path(),
        "replicate",
        r#"plugins:
  kit:
    source: KIT
    grants: { sites: { src: read, dst: write }, vault: write }
steps:
  - id: look
    uses: kit/transfer
    with: { op: inspect-disk, when: plan, args: { site: src, path: vm1/disk0.qcow2 } }
  - id: ship
    uses: kit/transfer
    with: { op: ship, args: { vm: vm1, disk: disk0, site: src, path: vm1/disk0.qcow2 } }
  - id: seal
    uses: kit/transfer
    with:
      op: seal
      args:
        vm: vm1
        staged: ["${{ steps.ship.outputs.result.staged }}"]
        consistency: app
        meta: { cpus: 2, memory_mib: 2048 }
  - id: restore
    uses: kit/transfer
    with:
      op: restore
      args: { vm: vm1, point: "${{ steps.seal.outputs.result.id }}", disk: disk0, site: dst, path: out/vm1.vhd, format: vhd }
"#,
    );
    assert!(out.status.success(), "{}", text(&out));
    // the restored fixed VHD equals the source disk, per qemu-img
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "vpc"])
        .arg(d.path().join("src/vm1/disk0.qcow2"))
        .arg(d.path().join("dst/out/vm1.vhd"))
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    assert!(!d.path().join("dst/out/vm1.vhd.lifeboat-partial").exists());
    // one point, app-consistent, with the VM's configuration
    let pts = lifeboat()
        .env("LIFEBOAT_VAULT_KEY", KEY)
        .args(["vault", "points", "--json"])
        .arg(d.path().join("vault"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&pts.stdout).unwrap();
    let pts = v.as_array().unwrap();
    assert_eq!(pts.len(), 1, "{v}");
    assert_eq!(pts[0]["consistency"], "app");
    assert_eq!(pts[0]["disks"][0]["name"], "disk0");
    // the plan shows the sites, the vault and the grants
    let plan = lifeboat()
        .env("LIFEBOAT_VAULT_KEY", KEY)
        .arg("plan")
        .arg(d.path().join("replicate.yaml"))
        .output()
        .unwrap();
    let p = text(&plan);
    assert!(p.contains("Sites:\n  src: ./src\n  dst: ./dst"), "{p}");
    assert!(
        p.contains("Vault: ./vault (key from env:LIFEBOAT_VAULT_KEY)"),
        "{p}"
    );
    assert!(
        p.contains("sites src (read), dst (write); vault (write)"),
        "{p}"
    );
    assert!(
        p.contains("\"virtual_size\": 16777216") || p.contains("16777216"),
        "{p}"
    );
    assert!(!p.contains(KEY));
}

#[test]
fn the_sandbox_refuses_what_was_not_granted() {
    let d = lab();
    let step = |op: &str, when: &str, args: &str| {
        format!(
            "steps:\n  - id: s\n    uses: kit/transfer\n    with: {{ op: {op}, when: {when}, args: {args} }}\n"
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "ship-in-plan",
            format!(
                "plugins:\n  kit: {{ source: KIT, grants: {{ sites: {{ src: read }}, vault: write }} }}\n{}",
                step(
                    "ship",
                    "plan",
                    "{ vm: vm1, disk: d, site: src, path: vm1/disk0.qcow2 }"
                )
            ),
            "denied: transfer.ship changes the world and is refused during plan",
        ),
        (
            "nothing-granted",
            format!(
                "plugins:\n  kit: {{ source: KIT }}\n{}",
                step("read-file", "plan", "{ site: src, path: vm1/vm1.vmx }")
            ),
            "not-granted: plugin `kit` called transfer.read-file, but the workflow grants it no sites and no vault",
        ),
        (
            "other-site",
            format!(
                "plugins:\n  kit: {{ source: KIT, grants: {{ sites: {{ dst: read }} }} }}\n{}",
                step("read-file", "plan", "{ site: src, path: vm1/vm1.vmx }")
            ),
            "not-granted: plugin `kit` is not granted site `src`",
        ),
        (
            "escape",
            format!(
                "plugins:\n  kit: {{ source: KIT, grants: {{ sites: {{ src: read }} }} }}\n{}",
                step("read-file", "plan", "{ site: src, path: ../vault/config }")
            ),
            "must be relative to the site and stay inside it",
        ),
        (
            "read-only-site",
            format!(
                "plugins:\n  kit: {{ source: KIT, grants: {{ sites: {{ src: read }} }} }}\n{}",
                step(
                    "write-file",
                    "apply",
                    "{ site: src, path: x.txt, contents: hi }"
                )
            ),
            "may only read site `src`",
        ),
        (
            "prune-in-plan",
            format!(
                "plugins:\n  kit: {{ source: KIT, grants: {{ vault: write }} }}\n{}",
                step("prune", "plan", "{ vm: vm1, keep_last: 1 }")
            ),
            "denied: transfer.prune changes the world and is refused during plan",
        ),
        (
            "prune-read-only",
            format!(
                "plugins:\n  kit: {{ source: KIT, grants: {{ vault: read }} }}\n{}",
                step("prune", "apply", "{ vm: vm1, keep_last: 1 }")
            ),
            "may only read the vault; prune needs `grants.vault: write`",
        ),
        (
            "prune-keep-none",
            format!(
                "plugins:\n  kit: {{ source: KIT, grants: {{ vault: write }} }}\n{}",
                step("prune", "apply", "{ vm: vm1, keep_last: 0 }")
            ),
            "keep-last must be at least 1",
        ),
        (
            "vault-read-only",
            format!(
                "plugins:\n  kit: {{ source: KIT, grants: {{ sites: {{ src: read }}, vault: read }} }}\n{}",
                step(
                    "ship",
                    "apply",
                    "{ vm: vm1, disk: d, site: src, path: vm1/disk0.qcow2 }"
                )
            ),
            "may only read the vault; ship needs `grants.vault: write`",
        ),
    ];
    // a symlink inside a site that leads out of it
    std::os::unix::fs::symlink(d.path().join("vault"), d.path().join("src/out")).unwrap();
    let mut cases = cases;
    cases.push((
        "symlink",
        format!(
            "plugins:\n  kit: {{ source: KIT, grants: {{ sites: {{ src: read }} }} }}\n{}",
            step("list-dir", "plan", "{ site: src, path: out }")
        ),
        "leads outside the site",
    ));
    // a write through a symlink out of a write-granted site creates nothing outside
    std::fs::create_dir_all(d.path().join("outside")).unwrap();
    std::os::unix::fs::symlink(d.path().join("outside"), d.path().join("dst/esc")).unwrap();
    cases.push((
        "write-escape",
        format!(
            "plugins:\n  kit: {{ source: KIT, grants: {{ sites: {{ dst: write }} }} }}\n{}",
            step(
                "write-file",
                "apply",
                "{ site: dst, path: esc/made/by/x.txt, contents: hi }"
            )
        ),
        "leads outside the site",
    ));
    for (name, body, want) in cases {
        let out = run(d.path(), name, &body);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {t}");
        assert!(t.contains(want), "{name}: expected {want:?} in:\n{t}");
    }
    // nothing was written into the read-only site, nothing shipped
    assert!(!d.path().join("src/x.txt").exists());
    assert!(!d.path().join("outside/made").exists());
    assert_eq!(
        std::fs::read_dir(d.path().join("vault/points"))
            .map(|r| r.count())
            .unwrap_or(0),
        0
    );
}

#[test]
fn a_plugin_built_against_contract_0_1_0_still_runs() {
    let d = tempfile::tempdir().unwrap();
    let fixture = common::root().join("tests/fixtures/plugins/demo-contract-0.1.0.wasm");
    let wf = d.path().join("old.yaml");
    std::fs::write(
        &wf,
        format!(
            "name: old\nplugins:\n  demo: {{ source: {} }}\nsteps:\n  - id: inventory\n    uses: demo/inventory\n    with: {{ site: dc1 }}\n",
            fixture.display()
        ),
    )
    .unwrap();
    let out = lifeboat()
        .args(["run", "--state-dir"])
        .arg(d.path().join("state"))
        .arg(&wf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let inspect = lifeboat()
        .args(["plugin", "inspect"])
        .arg(&fixture)
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", text(&inspect));
    assert!(
        text(&inspect).contains("contract: lifeboat:plugin@0.1.0 (this host implements 0.1.3)"),
        "{}",
        text(&inspect)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_an_azure_blob_site_makes_a_page_blob() {
    let az = common::azurite::Azurite::start();
    let d = lab();
    let url = az.container_url("recovery");
    let wf = d.path().join("blob.yaml");
    std::fs::write(
        &wf,
        format!(
            r#"name: blob
secrets:
  storage_key: {{ env: TEST_STORAGE_KEY }}
sites:
  src: {{ path: ./src }}
  azure: {{ url: "{url}", key: storage_key, insecure_http: true }}
vault:
  url: ./vault
plugins:
  kit:
    source: {kit}
    grants: {{ sites: {{ src: read, azure: write }}, vault: write }}
steps:
  - id: ship
    uses: kit/transfer
    with: {{ op: ship, args: {{ vm: vm1, disk: disk0, site: src, path: vm1/disk0.qcow2 }} }}
  - id: seal
    uses: kit/transfer
    with: {{ op: seal, args: {{ vm: vm1, staged: ["${{{{ steps.ship.outputs.result.staged }}}}"] }} }}
  - id: restore
    uses: kit/transfer
    with:
      op: restore
      args: {{ vm: vm1, point: "${{{{ steps.seal.outputs.result.id }}}}", disk: disk0, site: azure, path: vhds/vm1-disk0.vhd, format: vhd }}
  - id: note
    uses: kit/transfer
    needs: [restore]
    with: {{ op: write-file, args: {{ site: azure, path: deployments/vm1.json, contents: "{{}}" }} }}
  - id: list
    uses: kit/transfer
    needs: [note]
    with: {{ op: list-dir, args: {{ site: azure, path: . }} }}
"#,
            kit = testkit_wasm().display()
        ),
    )
    .unwrap();
    let out = lifeboat()
        .env("LIFEBOAT_VAULT_KEY", KEY)
        .env("TEST_STORAGE_KEY", common::azurite::KEY)
        .args(["run", "--state-dir"])
        .arg(d.path().join("state"))
        .arg(&wf)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(r#"result = ["deployments/","vhds/"]"#), "{t}");
    assert!(
        !t.contains(common::azurite::KEY),
        "the storage key leaked:\n{t}"
    );
    // the page blob, downloaded, is the source disk as a fixed VHD
    let c =
        lifeboat_caps::azblob::AzBlob::new(&url, common::azurite::ACCOUNT, common::azurite::KEY)
            .unwrap();
    let props = c.properties("vhds/vm1-disk0.vhd").await.unwrap().unwrap();
    assert_eq!(props.blob_type, lifeboat_caps::azblob::BlobType::Page);
    assert_eq!(
        props.size % (1 << 20),
        512,
        "fixed VHD: 1 MiB multiple + footer"
    );
    let back = d.path().join("back.vhd");
    c.download_to_file("vhds/vm1-disk0.vhd", &back)
        .await
        .unwrap();
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "vpc"])
        .arg(d.path().join("src/vm1/disk0.qcow2"))
        .arg(&back)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
}

/// `transfer` grew `prune` in 0.1.2: a plugin built against 0.1.1 imports the
/// interface without it, and its ship → seal → restore still runs. The current
/// testkit prunes through the new function; a second prune deletes nothing.
#[test]
fn transfer_0_1_1_plugins_still_run_and_prune_is_retention() {
    let d = lab();
    let old = common::root().join("tests/fixtures/plugins/testkit-contract-0.1.1.wasm");
    let body = |vm: &str| {
        format!(
            r#"plugins:
  kit:
    source: KIT
    grants: {{ sites: {{ src: read, dst: write }}, vault: write }}
steps:
  - id: ship
    uses: kit/transfer
    with: {{ op: ship, args: {{ vm: {vm}, disk: disk0, site: src, path: vm1/disk0.qcow2 }} }}
  - id: seal
    uses: kit/transfer
    with: {{ op: seal, args: {{ vm: {vm}, staged: ["${{{{ steps.ship.outputs.result.staged }}}}"] }} }}
  - id: restore
    uses: kit/transfer
    with:
      op: restore
      args: {{ vm: {vm}, point: "${{{{ steps.seal.outputs.result.id }}}}", disk: disk0, site: dst, path: {vm}.raw, format: raw }}
"#
        )
    };
    let inspect = lifeboat()
        .args(["plugin", "inspect"])
        .arg(&old)
        .output()
        .unwrap();
    assert!(
        text(&inspect).contains("contract: lifeboat:plugin@0.1.1"),
        "{}",
        text(&inspect)
    );
    // three points of vm1 (the disk changes between them) and one of vm2, by the old plugin
    for round in 0..3 {
        sh(Command::new("qemu-io")
            .args(["-f", "qcow2", "-c"])
            .arg(format!("write -P {} 4M 64k", 0x10 + round))
            .arg(d.path().join("src/vm1/disk0.qcow2")));
        let out = run_with(d.path(), &format!("old{round}"), &body("vm1"), &old);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = run_with(d.path(), "other", &body("vm2"), &old);
    assert!(out.status.success(), "{}", text(&out));
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "raw"])
        .arg(d.path().join("src/vm1/disk0.qcow2"))
        .arg(d.path().join("dst/vm1.raw"))
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );

    let points = |vm: &str| -> Vec<String> {
        let o = lifeboat()
            .env("LIFEBOAT_VAULT_KEY", KEY)
            .args(["vault", "points", "--json", "--vm", vm])
            .arg(d.path().join("vault"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    let before = points("vm1");
    assert_eq!(before.len(), 3, "{before:?}");
    let prune = "plugins:\n  kit: { source: KIT, grants: { vault: write } }\nsteps:\n  - id: p\n    uses: kit/transfer\n    with: { op: prune, args: { vm: vm1, keep_last: 2 } }\n";
    let out = run(d.path(), "prune", prune);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!("\"removed\":[\"{}\"]", before[0])),
        "{t}"
    );
    assert!(t.contains("\"kept\":2"), "{t}");
    assert_eq!(points("vm1"), before[1..].to_vec());
    assert_eq!(points("vm2").len(), 1, "another VM's point is never pruned");
    let out = run(d.path(), "prune-again", prune);
    let t = text(&out);
    assert!(out.status.success() && t.contains("\"removed\":[]"), "{t}");
    // what is left restores and checks clean
    let c = lifeboat()
        .env("LIFEBOAT_VAULT_KEY", KEY)
        .args(["vault", "check", "--read-data"])
        .arg(d.path().join("vault"))
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", text(&c));
}

/// Encryption in transit: an HTTPS Azurite whose certificate is signed by a CA
/// made for the test. Trusted through the workflow's `ca_file`, a restore
/// lands as a page blob and the plan says TLS; without it, the untrusted
/// certificate is a clear error naming the fix; plain http without the opt-in
/// is refused before anything runs, and the opt-in only covers 127.0.0.1.
#[test]
fn blob_sites_need_tls_and_trust_only_what_the_workflow_says() {
    let az = common::azurite::Azurite::start_https();
    let d = lab();
    let wf = |name: &str, site: &str| {
        let p = d.path().join(format!("{name}.yaml"));
        std::fs::write(
            &p,
            format!(
                r#"name: {name}
secrets:
  storage_key: {{ env: TEST_STORAGE_KEY }}
sites:
  src: {{ path: ./src }}
  azure: {site}
vault:
  url: ./vault
plugins:
  kit:
    source: {kit}
    grants: {{ sites: {{ src: read, azure: write }}, vault: write }}
steps:
  - id: ship
    uses: kit/transfer
    with: {{ op: ship, args: {{ vm: vm1, disk: disk0, site: src, path: vm1/disk0.qcow2 }} }}
  - id: seal
    uses: kit/transfer
    with: {{ op: seal, args: {{ vm: vm1, staged: ["${{{{ steps.ship.outputs.result.staged }}}}"] }} }}
  - id: restore
    uses: kit/transfer
    with:
      op: restore
      args: {{ vm: vm1, point: "${{{{ steps.seal.outputs.result.id }}}}", disk: disk0, site: azure, path: vhds/vm1.vhd, format: vhd }}
"#,
                kit = testkit_wasm().display()
            ),
        )
        .unwrap();
        p
    };
    let go = |cmd: &str, p: &Path| {
        let mut c = lifeboat();
        c.env("LIFEBOAT_VAULT_KEY", KEY)
            .env("TEST_STORAGE_KEY", common::azurite::KEY)
            .arg(cmd);
        if cmd == "run" {
            c.arg("--state-dir").arg(d.path().join(format!(
                "state-{}",
                p.file_stem().unwrap().to_string_lossy()
            )));
        }
        c.arg(p).output().unwrap()
    };
    let url = az.container_url("tls");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // trusted through the workflow: works, and the plan says how
    let trusted = wf(
        "trusted",
        &format!(
            "{{ url: \"{url}\", key: storage_key, ca_file: \"{}\" }}",
            az.ca_file().display()
        ),
    );
    let plan = text(&go("plan", &trusted));
    assert!(
        plan.contains(&format!("azure: {url} (Azure Blob; TLS, also trusting the CA in {}; key from secret storage_key)", az.ca_file().display())),
        "{plan}"
    );
    let o = go("run", &trusted);
    assert!(o.status.success(), "{}", text(&o));
    let c = lifeboat_caps::azblob::AzBlob::with_ca(
        &url,
        common::azurite::ACCOUNT,
        common::azurite::KEY,
        Some(&std::fs::read(az.ca_file()).unwrap()),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let props = rt.block_on(c.properties("vhds/vm1.vhd")).unwrap().unwrap();
    assert_eq!(props.blob_type, lifeboat_caps::azblob::BlobType::Page);

    // the same endpoint without the CA: the certificate is not trusted
    let untrusted = wf(
        "untrusted",
        &format!("{{ url: \"{url}\", key: storage_key }}"),
    );
    let o = go("run", &untrusted);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("not signed by a trusted CA: give the site its CA with `ca_file: ca.pem`"),
        "{t}"
    );

    // plain http: refused unless opted in, and the opt-in is for 127.0.0.1 only
    let plain = wf(
        "plain",
        "{ url: \"http://127.0.0.1:1/devstoreaccount1/x\", key: storage_key }",
    );
    let o = go("plan", &plain);
    let t = text(&o);
    assert_ne!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("is plain http: the storage traffic and its signed requests would travel unencrypted; use https://"), "{t}");
    let remote = wf(
        "remote",
        "{ url: \"http://storage.example.com/acct/x\", key: storage_key, insecure_http: true }",
    );
    let t = text(&go("plan", &remote));
    assert!(
        t.contains("`insecure_http` only allows plain http to 127.0.0.1"),
        "{t}"
    );
    let optin = wf(
        "optin",
        "{ url: \"http://127.0.0.1:1/devstoreaccount1/x\", key: storage_key, insecure_http: true }",
    );
    let t = text(&go("plan", &optin));
    assert!(
        t.contains("NOT ENCRYPTED: plain http, allowed by insecure_http"),
        "{t}"
    );
    assert!(!t.contains(common::azurite::KEY), "the storage key leaked");
}
