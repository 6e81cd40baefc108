//! Writing a plugin: `lifeboat plugin new` → `plugin build` → `plugin test`
//! passes out of the box and the plugin runs in a workflow; the harness's
//! snapshot flow (a change fails with a diff, `--review`, `--accept`); the
//! harness catches broken plugins (a plan that drifts, an apply that is not
//! idempotent, a `read` that writes, undeclared outputs, missing inputs); and
//! the first-party plugins pass their own harness cases.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{lifeboat, ok, root, testkit_wasm, text};

/// Cargo's target folder for generated Rust projects, shared between runs so
/// that only the first build is cold.
fn plugin_target() -> PathBuf {
    root().join("target").join("plugin-new")
}

fn plugin(args: &[&str], cwd: &Path) -> Output {
    lifeboat()
        .current_dir(cwd)
        .env("CARGO_TARGET_DIR", plugin_target())
        .arg("plugin")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn rust_plugin_new_build_test_run_and_the_snapshot_flow() {
    let d = tempfile::tempdir().unwrap();
    let made = ok(&plugin(&["new", "my-probe"], d.path()));
    assert!(made.contains("made plugin project my-probe"), "{made}");
    let proj = d.path().join("my-probe");
    for f in [
        "Cargo.toml",
        "src/lib.rs",
        "README.md",
        "lifeboat-plugin.yaml",
        "wit/plugin.wit",
        "sdk/src/lib.rs",
        "tests/check.yaml",
        "tests/snapshots/check.snap",
    ] {
        assert!(proj.join(f).is_file(), "{f} missing");
    }
    // the project's contract is this host's
    assert_eq!(
        std::fs::read_to_string(proj.join("wit/plugin.wit")).unwrap(),
        std::fs::read_to_string(root().join("wit/plugin.wit")).unwrap()
    );

    // out of the box: builds, and its cases pass
    let t = ok(&plugin(&["test"], &proj));
    assert!(
        t.contains("plugin my-probe 0.1.0 (contract lifeboat:plugin@0.1.3), 2 case(s)"),
        "{t}"
    );
    assert!(
        t.contains("  check ... ok") && t.contains("2 passed, 0 failed"),
        "{t}"
    );
    let b = ok(&plugin(&["build"], &proj));
    assert!(
        b.contains("built target/plugin.wasm") && b.contains("plugin my-probe 0.1.0"),
        "{b}"
    );

    // and runs in a workflow
    std::fs::write(
        d.path().join("try.yaml"),
        "name: try\nplugins:\n  probe: { source: ./my-probe/target/plugin.wasm }\nsteps:\n  - id: check\n    uses: probe/check\n    with: { target: example }\n",
    )
    .unwrap();
    let r = lifeboat()
        .args(["run", "--state-dir"])
        .arg(d.path().join("state"))
        .arg(d.path().join("try.yaml"))
        .output()
        .unwrap();
    let r = ok(&r);
    assert!(
        r.contains("ok = true") && r.contains("target = \"example\""),
        "{r}"
    );

    // the plugin changes: the case fails with a diff and leaves .snap.new
    let lib = proj.join("src/lib.rs");
    let src = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(
        &lib,
        src.replace(
            "format!(\"check {}\", i.target)",
            "format!(\"probe {}\", i.target)",
        ),
    )
    .unwrap();
    let o = plugin(&["test"], &proj);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("  check ... FAILED"), "{t}");
    assert!(t.contains("-   0: * check/example  check example"), "{t}");
    assert!(t.contains("+   0: * check/example  probe example"), "{t}");
    assert!(t.contains("1 passed, 1 failed"), "{t}");
    assert!(proj.join("tests/snapshots/check.snap.new").is_file());
    let rv = plugin(&["test", "--review"], &proj);
    assert_eq!(rv.status.code(), Some(1), "{}", text(&rv));
    assert!(
        text(&rv).contains("1 snapshot(s) to review"),
        "{}",
        text(&rv)
    );
    ok(&plugin(&["test", "--accept"], &proj));
    assert!(!proj.join("tests/snapshots/check.snap.new").exists());
    let t = ok(&plugin(&["test"], &proj));
    assert!(t.contains("2 passed, 0 failed"), "{t}");
    let snap = std::fs::read_to_string(proj.join("tests/snapshots/check.snap")).unwrap();
    assert!(snap.contains("probe example"), "{snap}");

    // a project folder is never overwritten; names are checked
    let o = plugin(&["new", "my-probe"], d.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("already exists and is not empty; nothing was written"),
        "{}",
        text(&o)
    );
    let o = plugin(&["new", "My_Probe"], d.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is not a plugin name"), "{}", text(&o));
    // not a project
    let o = plugin(&["build"], d.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is not a plugin project"), "{}", text(&o));
}

/// PATH with the Python and JavaScript plugin tools that
/// tests/lab/setup-plugin-tools.sh installs (`.ci/setup` runs it).
fn lang_tools_path() -> std::ffi::OsString {
    let tools = root().join("target/tools");
    let bins = [
        tools.join("componentize-py/bin"),
        tools.join("js/node_modules/.bin"),
    ];
    for (b, tool) in bins.iter().zip(["componentize-py", "componentize-js"]) {
        assert!(
            b.join(tool).is_file(),
            "{tool} is not installed in {}: run `bash tests/lab/setup-plugin-tools.sh`",
            b.display()
        );
    }
    let mut paths: Vec<PathBuf> = bins.to_vec();
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// Python (componentize-py) and JavaScript (componentize-js): `plugin new` →
/// `plugin test` passes out of the box (the same cases and snapshots as the
/// Rust template), and the plugin runs in a workflow. Prints build times and
/// sizes (run with --nocapture).
#[test]
fn python_and_js_plugins_new_test_and_run() {
    let path = lang_tools_path();
    let d = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    for (lang, name) in [("python", "py-probe"), ("js", "js-probe")] {
        let run_in = |args: &[&str], cwd: &Path| {
            lifeboat()
                .current_dir(cwd)
                .env("PATH", &path)
                .args(args)
                .output()
                .unwrap()
        };
        let made = ok(&run_in(&["plugin", "new", name, "--lang", lang], d.path()));
        assert!(
            made.contains(&format!("made plugin project {name} ({lang})")),
            "{made}"
        );
        let proj = d.path().join(name);
        let t0 = std::time::Instant::now();
        let t = ok(&run_in(&["plugin", "test"], &proj));
        let first = t0.elapsed().as_secs_f64();
        assert!(
            t.contains(&format!(
                "plugin {name} 0.1.0 (contract lifeboat:plugin@0.1.3), 2 case(s)"
            )),
            "{t}"
        );
        assert!(t.contains("2 passed, 0 failed"), "{lang}: {t}");
        let size = std::fs::metadata(proj.join("target/plugin.wasm"))
            .unwrap()
            .len();
        std::fs::write(
            d.path().join(format!("{name}.yaml")),
            // next to a Rust plugin: the bundled demo's output feeds the step
            format!("name: try-{lang}\nplugins:\n  demo: {{ source: \"builtin:demo\" }}\n  p: {{ source: ./{name}/target/plugin.wasm }}\nsteps:\n  - id: inv\n    uses: demo/inventory\n    with: {{ site: dc1, vms: [{{ name: web-01 }}] }}\n  - id: check\n    uses: p/check\n    with: {{ target: \"${{{{ steps.inv.outputs.vms[0] }}}}\" }}\n"),
        )
        .unwrap();
        let r = ok(&run_in(
            &[
                "run",
                "--state-dir",
                &format!("state-{lang}"),
                &format!("{name}.yaml"),
            ],
            d.path(),
        ));
        assert!(
            r.contains("ok = true") && r.contains("target = \"web-01\""),
            "{lang}: {r}"
        );
        // a bad input is the plugin's clean step error, not a crash
        std::fs::write(
            d.path().join(format!("{name}-bad.yaml")),
            format!("name: bad-{lang}\nplugins:\n  p: {{ source: ./{name}/target/plugin.wasm }}\nsteps:\n  - id: check\n    uses: p/check\n    with: {{ target: \"\" }}\n"),
        )
        .unwrap();
        let o = run_in(&["plan", &format!("{name}-bad.yaml")], d.path());
        assert!(
            text(&o).contains("invalid-input: `target` must not be empty"),
            "{lang}: {}",
            text(&o)
        );
        report.push(format!(
            "{lang}: new → passing test {first:.1} s, component {size} bytes"
        ));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn the_harness_catches_broken_plugins() {
    let d = tempfile::tempdir().unwrap();
    let cases = d.path().join("tests");
    std::fs::create_dir_all(&cases).unwrap();
    for (name, body) in [
        (
            "plan-drift",
            "step: broken\nwith: { target: plan-drift }\nphase: plan\n",
        ),
        (
            "apply-drift",
            "step: broken\nwith: { target: apply-drift }\n",
        ),
        (
            "sneaky-read",
            "step: broken\nwith: { target: sneaky-read }\n",
        ),
        ("undeclared", "step: broken\nwith: { target: undeclared }\n"),
        (
            "missing-input",
            "step: broken\nwith: { colour: blue }\nphase: plan\n",
        ),
        ("fine", "step: broken\nwith: { target: fine }\n"),
    ] {
        std::fs::write(cases.join(format!("{name}.yaml")), body).unwrap();
    }
    let kit = testkit_wasm();
    let kit = kit.to_str().unwrap();
    // accept first: whatever the snapshots say, the rules still fail
    let o = plugin(
        &["test", kit, "--cases", cases.to_str().unwrap(), "--accept"],
        d.path(),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    for want in [
        "  plan-drift ... FAILED\n    plan is not deterministic: the same inputs gave two different plans",
        "  apply-drift ... FAILED\n    apply is not idempotent: action 0 (broken/apply-drift) returned different outputs when applied again",
        "  sneaky-read ... FAILED\n    action 0 (broken/sneaky-read) was planned as `read`, but apply changed the world: transfer.write-file(dst, note.txt, 7 bytes \"written\")",
        "  undeclared ... FAILED\n    apply of action 0 sets output `extra`, which step `broken` does not declare",
        "  missing-input ... FAILED\n    input `target` is required by step `broken` but the case does not set it\n    input `colour` is not declared by step `broken`",
        "  fine ... ok",
        "1 passed, 5 failed",
    ] {
        assert!(t.contains(want), "expected {want:?} in:\n{t}");
    }
    // a case naming a step the plugin lacks is a clear error
    std::fs::write(cases.join("zz.yaml"), "step: nope\nwith: {}\n").unwrap();
    let o = plugin(&["test", kit, "--cases", cases.to_str().unwrap()], d.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("zz.yaml: plugin `testkit` has no step `nope`"),
        "{}",
        text(&o)
    );
}

#[test]
fn first_party_plugins_pass_their_harness_cases() {
    for p in ["demo", "vmware", "hyperv", "azure", "http-health-probe"] {
        let cases = root().join("plugins").join(p).join("tests");
        let o = lifeboat()
            .env("CI", "true")
            .args(["plugin", "test", &format!("builtin:{p}"), "--cases"])
            .arg(&cases)
            .output()
            .unwrap();
        let t = ok(&o);
        assert!(t.contains(", 0 failed"), "{p}: {t}");
        let left: Vec<_> = std::fs::read_dir(cases.join("snapshots"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().to_string_lossy().ends_with(".new"))
            .collect();
        assert!(left.is_empty(), "{p}: {left:?}");
    }
}

/// `lifeboat plugin lock` pins digests: a changed byte is refused by plan and
/// run, naming the plugin and both digests; locking again takes the change.
#[test]
fn the_lockfile_refuses_a_changed_plugin() {
    let d = tempfile::tempdir().unwrap();
    let kit = d.path().join("kit.wasm");
    std::fs::copy(testkit_wasm(), &kit).unwrap();
    let wf = d.path().join("wf.yaml");
    std::fs::write(
        &wf,
        "name: locked\nplugins:\n  kit: { source: ./kit.wasm }\n  demo: { source: \"builtin:demo\" }\nsteps:\n  - id: b\n    uses: kit/broken\n    with: { target: fine }\n",
    )
    .unwrap();
    let l = ok(&lifeboat()
        .args(["plugin", "lock"])
        .arg(&wf)
        .output()
        .unwrap());
    assert!(l.contains("locked 2 plugin(s)"), "{l}");
    let lock = std::fs::read_to_string(d.path().join("wf.lock")).unwrap();
    assert!(
        lock.contains("\"source\": \"./kit.wasm\"") && lock.contains("\"digest\": \"blake3:"),
        "{lock}"
    );
    assert!(
        lock.contains("\"contract\": \"lifeboat:plugin@0.1.3\""),
        "{lock}"
    );
    ok(&lifeboat().arg("plan").arg(&wf).output().unwrap());

    // one more byte (a custom section: the component still loads) → refused
    let mut bytes = std::fs::read(&kit).unwrap();
    bytes.extend_from_slice(&[0x00, 0x05, 0x04, b'l', b'o', b'c', b'k']);
    std::fs::write(&kit, &bytes).unwrap();
    let insp = ok(&lifeboat()
        .args(["plugin", "inspect"])
        .arg(&kit)
        .output()
        .unwrap());
    assert!(insp.contains("step broken"), "{insp}");
    for cmd in ["plan", "run"] {
        let mut c = lifeboat();
        c.arg(cmd);
        if cmd == "run" {
            c.arg("--state-dir").arg(d.path().join("state"));
        }
        let o = c.arg(&wf).output().unwrap();
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {t}");
        assert!(t.contains("wf.lock does not match the plugins of"), "{t}");
        assert!(
            t.contains("plugin `kit` (./kit.wasm) changed: its digest is blake3:"),
            "{t}"
        );
        assert!(t.contains("nothing was planned or applied"), "{t}");
    }
    assert!(
        !d.path().join("state").exists()
            || std::fs::read_dir(d.path().join("state")).unwrap().count() == 0
    );
    ok(&lifeboat()
        .args(["plugin", "lock"])
        .arg(&wf)
        .output()
        .unwrap());
    ok(&lifeboat().arg("plan").arg(&wf).output().unwrap());
}

/// A plugin of another major contract version is refused when loaded, with
/// the plugin, its world and both versions named. (Built from the testkit by
/// renaming its contract version, same length: `0.1.3` → `0.2.0`.)
#[test]
fn a_plugin_for_another_major_version_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(testkit_wasm()).unwrap();
    let (from, to) = (
        b"lifeboat:plugin/steps@0.1.3",
        b"lifeboat:plugin/steps@0.2.0",
    );
    let mut out = bytes.clone();
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            n += 1;
        }
        i += 1;
    }
    assert!(n > 0, "no steps export found");
    let kit = d.path().join("future.wasm");
    std::fs::write(&kit, &out).unwrap();
    let o = lifeboat()
        .args(["plugin", "inspect"])
        .arg(&kit)
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("plugin `future` targets world `lifeboat:plugin/plugin@0.2.0`, but this host supports lifeboat:plugin@0.1.3; rebuild the plugin against lifeboat:plugin@0.1.3"),
        "{t}"
    );
}

/// The files docs/tutorial-http-health-probe.md gives, by the path in the
/// `<!-- file: PATH -->` line before each code block.
fn tutorial_files() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(root().join("docs/tutorial-http-health-probe.md")).unwrap();
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(l) = lines.next() {
        let Some(path) = l
            .strip_prefix("<!-- file: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap();
        assert!(
            fence.starts_with("```"),
            "{path}: no code block after the marker"
        );
        let mut body = String::new();
        for l in lines.by_ref() {
            if l == "```" {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        out.push((path.to_string(), body));
    }
    out
}

/// The tutorial's plugin is exactly what the tutorial says: its code blocks are
/// the bundled plugin's files, and following it — `plugin new`, replace the
/// files, `plugin test`, `plugin build`, run the workflow — works.
#[test]
fn the_tutorial_builds_and_runs_what_it_says() {
    let files = tutorial_files();
    assert_eq!(
        files.len(),
        6,
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let bundled = root().join("plugins/http-health-probe");
    for (path, body) in &files {
        if !path.starts_with("../") {
            assert_eq!(
                &std::fs::read_to_string(bundled.join(path)).unwrap(),
                body,
                "{path} in the tutorial differs from plugins/http-health-probe/{path}"
            );
        }
    }

    let d = tempfile::tempdir().unwrap();
    ok(&plugin(&["new", "http-health-probe"], d.path()));
    let proj = d.path().join("http-health-probe");
    for f in [
        "tests/check.yaml",
        "tests/bad-input.yaml",
        "tests/snapshots/check.snap",
        "tests/snapshots/bad-input.snap",
    ] {
        std::fs::remove_file(proj.join(f)).unwrap();
    }
    for (path, body) in &files {
        let p = proj.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    // healthy.snap is in the tutorial; the other two are recorded with --accept
    let t = ok(&plugin(&["test", "--accept"], &proj));
    assert!(t.contains("3 passed, 0 failed"), "{t}");
    let t = ok(&plugin(&["test"], &proj));
    assert!(t.contains("3 passed, 0 failed"), "{t}");
    ok(&plugin(&["build"], &proj));

    let server = common::Server::start();
    let o = lifeboat()
        .current_dir(d.path())
        .args(["run", "--state-dir", "state", "probe.yaml", "--input"])
        .arg(format!("url={}/health", server.url()))
        .output()
        .unwrap();
    let r = ok(&o);
    assert!(
        r.contains("healthy = true") && r.contains("attempt = 1"),
        "{r}"
    );
    assert!(server.count("/health") >= 1);
    // the workflow's grants hold: another host is refused by the sandbox
    let o = lifeboat()
        .current_dir(d.path())
        .args([
            "run",
            "--state-dir",
            "state2",
            "probe.yaml",
            "--input",
            "url=http://example.com/health",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("is not granted to this plugin"),
        "{}",
        text(&o)
    );
}
