use super::*;

fn wit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit")
}

fn contract() -> String {
    render(&wit_dir()).expect("wit/ renders")
}

/// Renders in-memory WIT files (in the given order) as one package.
fn sample(files: &[(&str, &str)]) -> Result<String, WitdocError> {
    let main = files
        .iter()
        .map(|(name, text)| Source {
            path: PathBuf::from(name),
            text: text.to_string(),
        })
        .collect();
    render_sources(Path::new("sample"), main, Vec::new())
}

/// The part of the page from the heading with `anchor` up to the next heading
/// of the same or a higher level.
fn section<'a>(page: &'a str, anchor: &str) -> &'a str {
    let marker = format!("<a id=\"{anchor}\"></a>");
    let mut start = None;
    let mut level = 0;
    let mut offset = 0;
    for line in page.split_inclusive('\n') {
        let hashes = line.bytes().take_while(|b| *b == b'#').count();
        let is_heading = hashes > 0 && line[hashes..].starts_with(' ');
        match start {
            None if is_heading && line.contains(&marker) => {
                start = Some(offset);
                level = hashes;
            }
            Some(s) if is_heading && hashes <= level => return &page[s..offset],
            _ => {}
        }
        offset += line.len();
    }
    let s = start.unwrap_or_else(|| panic!("no heading with anchor {anchor}"));
    &page[s..]
}

/// Every `<a id="…">` of the page, with the line it is on.
fn anchors(page: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in page.lines() {
        let mut rest = line;
        while let Some(i) = rest.find("<a id=\"") {
            let after = &rest[i + 7..];
            let end = after.find('"').expect("closed id");
            out.push((after[..end].to_string(), line.to_string()));
            rest = &after[end..];
        }
    }
    out
}

/// Every in-page link target `](#…)` of the page.
fn link_targets(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(i) = rest.find("](#") {
        let after = &rest[i + 3..];
        let end = after.find(')').expect("closed link");
        out.push(after[..end].to_string());
        rest = &after[end..];
    }
    out
}

#[test]
fn prune_signature_and_doc() {
    let page = contract();
    let sec = section(&page, "transfer.prune");
    assert!(
        sec.starts_with("#### <a id=\"transfer.prune\"></a>`prune`\n"),
        "{sec}"
    );
    assert!(
        sec.contains(
            "```wit\nprune: func(vm: string, keep-last: u32) -> result<prune-result, step-error>;\n```"
        ),
        "{sec}"
    );
    assert!(
        sec.contains("Retention (apply only, vault granted `write`; since 0.1.2): keep the newest"),
        "{sec}"
    );
    assert!(
        sec.contains(
            "Types in the signature: [`prune-result`](#transfer.prune-result), [`step-error`](#types.step-error)"
        ),
        "{sec}"
    );
}

#[test]
fn record_fields_and_variant_cases() {
    let page = contract();
    let sec = section(&page, "types.field");
    assert!(
        sec.starts_with("#### <a id=\"types.field\"></a>record `field`\n"),
        "{sec}"
    );
    for line in [
        "- `name`: `string`\n",
        "- `type`: [`field-type`](#types.field-type)\n",
        "- `required`: `bool` — Inputs only: the workflow must set it.\n",
        "- `sensitive`: `bool` — Secret values are redacted by the host in plans, logs and snapshots.\n",
        "- `doc`: `string` — One line of documentation, shown by `lifeboat plugin inspect`.\n",
    ] {
        assert!(sec.contains(line), "missing {line:?} in\n{sec}");
    }
    let sec = section(&page, "types.step-info");
    assert!(
        sec.contains("- `inputs`: `list<`[`field`](#types.field)`>`\n"),
        "{sec}"
    );

    let sec = section(&page, "transfer.changes");
    assert!(sec.starts_with("#### <a id=\"transfer.changes\"></a>variant `changes`\n"));
    assert!(sec.contains("- `full` — The whole allocation map (the first copy).\n"));
    // A doc comment of two lines stays inside its list item.
    assert!(sec.contains(
        "- `extents(list<`[`extent`](#transfer.extent)`>)` — Changed extents the platform reported (VMware CBT, Hyper-V RCT,\n  Azure page-range diffs)"
    ));
    assert!(sec.contains("- `bitmap(string)` — A qcow2 persistent dirty bitmap"));

    // Enum cases are shown by name (`%string` in the WIT source).
    let sec = section(&page, "types.field-type");
    assert!(sec.contains("- `string`\n- `integer`\n"), "{sec}");
}

#[test]
fn every_link_resolves_to_a_heading() {
    let page = contract();
    let ids = anchors(&page);
    let mut seen = BTreeSet::new();
    for (id, line) in &ids {
        assert!(
            line.starts_with('#'),
            "anchor {id} outside a heading: {line}"
        );
        assert!(seen.insert(id.as_str()), "anchor {id} is defined twice");
    }
    let targets = link_targets(&page);
    assert!(
        targets.len() > 50,
        "expected many links, got {}",
        targets.len()
    );
    for target in &targets {
        assert!(
            seen.contains(target.as_str()),
            "link to #{target} has no anchor"
        );
    }

    // A `use`d type links to where it is defined, not to the using interface.
    let uses = section(&page, "interface-transfer");
    assert!(uses.contains(
        "### Uses\n\n- [`step-error`](#types.step-error) from interface [`types`](#interface-types)\n"
    ));
    assert!(page.contains("#### <a id=\"types.step-error\"></a>record `step-error`\n"));
    assert!(!seen.contains("transfer.step-error"));
}

#[test]
fn every_item_of_the_wit_is_on_the_page() {
    let page = contract();
    let ids: BTreeSet<String> = anchors(&page).into_iter().map(|(id, _)| id).collect();
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve.push_dir(wit_dir()).expect("wit/ parses");
    let mut functions = 0;
    for (iface_name, iface) in &resolve.packages[pkg].interfaces {
        assert!(ids.contains(&format!("interface-{iface_name}")));
        let iface = &resolve.interfaces[*iface];
        for (name, ty) in &iface.types {
            let ty = &resolve.types[*ty];
            let is_use = matches!(ty.kind, TypeDefKind::Type(Type::Id(t)) if resolve.types[t].owner != ty.owner);
            let anchor = format!("{iface_name}.{name}");
            assert_eq!(ids.contains(&anchor), !is_use, "{anchor}");
        }
        for (name, f) in &iface.functions {
            functions += 1;
            let sec = section(&page, &format!("{iface_name}.{name}"));
            let doc = f
                .docs
                .contents
                .as_deref()
                .expect("every function has a doc");
            let first = doc.lines().next().unwrap_or_default();
            assert!(
                sec.contains(first),
                "{iface_name}.{name}: doc missing in\n{sec}"
            );
            assert!(sec.contains(&format!("```wit\n{name}: func(")), "{sec}");
        }
    }
    assert_eq!(functions, 18);
    assert_eq!(page.matches("```wit\n").count(), functions);
}

#[test]
fn header_package_and_file_order() {
    let page = contract();
    assert!(page.starts_with("<!-- Generated by lifeboat-witdoc"));
    assert!(page.contains("# WIT contract reference: `lifeboat:plugin@0.1.3`\n"));
    assert!(page.contains("- Package: `lifeboat:plugin`\n- Version: `0.1.3`\n"));
    assert!(
        page.contains("\nThe lifeboat plugin contract.\n\nA plugin is a WebAssembly component")
    );
    let at = |anchor: &str| {
        page.find(&format!("<a id=\"{anchor}\">"))
            .unwrap_or_else(|| panic!("{anchor}"))
    };
    // Interfaces, types and functions in the order of wit/plugin.wit.
    assert!(at("interface-types") < at("interface-log"));
    assert!(at("interface-log") < at("interface-transfer"));
    assert!(at("interface-transfer") < at("interface-steps"));
    assert!(at("interface-steps") < at("world-plugin"));
    assert!(at("transfer.restore-result") < at("transfer.prune-result"));
    assert!(at("transfer.prune-result") < at("transfer.boot-report"));
    assert!(at("transfer.seal") < at("transfer.restore"));
    assert!(at("transfer.restore") < at("transfer.prune"));
    assert!(at("transfer.prune") < at("transfer.boot-check"));
    assert!(page.ends_with("\n") && !page.ends_with("\n\n"));
    assert!(
        page.lines().all(|l| l == l.trim_end()),
        "trailing whitespace"
    );
}

#[test]
fn world_imports_and_exports() {
    let page = contract();
    let sec = section(&page, "world-plugin");
    assert!(sec.contains("The world every plugin implements."));
    assert!(sec.contains("- Interface [`log`](#interface-log) (`lifeboat:plugin/log@0.1.3`)\n"));
    assert!(sec.contains(
        "- Interface [`types`](#interface-types) (`lifeboat:plugin/types@0.1.3`), *implied*: used by [`transfer`](#interface-transfer), [`steps`](#interface-steps)\n"
    ));
    assert!(sec.contains(
        "- Interface [`transfer`](#interface-transfer) (`lifeboat:plugin/transfer@0.1.3`)\n"
    ));
    let exports = &sec[sec.find("### Exports").expect("exports")..];
    assert!(
        exports.contains("- Interface [`steps`](#interface-steps) (`lifeboat:plugin/steps@0.1.3`)")
    );
    assert!(!exports.contains("transfer"));
    assert!(
        section(&page, "interface-steps")
            .contains("`lifeboat:plugin/steps@0.1.3`, exported by world [`plugin`](#world-plugin)")
    );
}

#[test]
fn deterministic() {
    let a = contract();
    let b = contract();
    assert_eq!(a, b);
}

#[test]
fn stale_message_names_the_fix() {
    assert_eq!(
        stale_message(DEFAULT_OUT, "wit/plugin.wit"),
        "docs/reference/contract.md is out of date with wit/plugin.wit; run `cargo run -p lifeboat-witdoc`"
    );
}

const SYNTHETIC: &str = r#"package demo:kit@1.0.0;

interface base {
    /// A thing.
    resource thing {
        /// Make one.
        constructor(size: u32);
        /// Its size.
        size: func() -> u32;
        /// A static.
        make: static func(%type: string) -> thing;
    }
    flags perms {
        /// may read
        read,
        write,
    }
    type bytes = list<u8>;
    record pair { a: tuple<u8, string>, b: option<result<_, string>> }
}

interface user {
    use base.{thing, perms as rights, bytes};
    /// Borrow it.
    look: func(t: borrow<thing>, r: rights, b: bytes) -> result;
    wait: async func() -> future<u32>;
    %list: func(x: list<u8, 4>) -> stream<u8>;
}

world w {
    use base.{pair};
    type local = list<pair>;
    /// Run it.
    export run: func(p: local) -> u32;
    import user;
    export named: interface {
        /// Ping.
        ping: func();
    }
}
"#;

#[test]
fn synthetic_package() {
    let page = sample(&[("a.wit", SYNTHETIC)]).expect("renders");
    // Resources with their constructor, methods (no `self`) and statics.
    let sec = section(&page, "base.thing");
    assert!(sec.starts_with("#### <a id=\"base.thing\"></a>resource `thing`\n\nA thing.\n"));
    assert!(sec.contains("##### <a id=\"base.thing.constructor\"></a>`constructor`\n\n```wit\nconstructor(size: u32);\n```\n\nMake one.\n"));
    assert!(sec.contains("```wit\nsize: func() -> u32;\n```\n\nIts size."));
    // Keywords are escaped in WIT signatures.
    assert!(sec.contains("```wit\nmake: static func(%type: string) -> thing;\n```"));
    assert!(page.contains("```wit\n%list: func(x: list<u8, 4>) -> stream<u8>;\n```"));
    // Flags, aliases and anonymous types.
    assert!(section(&page, "base.perms").contains("- `read` — may read\n- `write`\n"));
    assert!(section(&page, "base.bytes").contains("\n`type bytes = list<u8>;`\n"));
    let sec = section(&page, "base.pair");
    assert!(sec.contains("- `a`: `tuple<u8, string>`\n- `b`: `option<result<_, string>>`\n"));
    // A renamed use shows its local name and links to the definition.
    let sec = section(&page, "interface-user");
    assert!(
        sec.contains(
            "- `rights`: [`perms`](#base.perms) from interface [`base`](#interface-base)\n"
        )
    );
    assert!(
        sec.contains("```wit\nlook: func(t: borrow<thing>, r: rights, b: bytes) -> result;\n```")
    );
    assert!(sec.contains("Types in the signature: [`thing`](#base.thing), [`rights`](#base.perms), [`bytes`](#base.bytes)"));
    assert!(sec.contains("```wit\nwait: async func() -> future<u32>;\n```"));
    // World: its own types, functions and inline interfaces.
    let sec = section(&page, "world-w");
    assert!(sec.contains("*implied*: used by [`user`](#interface-user)"));
    assert!(sec.contains("- Type [`pair`](#base.pair) from interface [`base`](#interface-base)\n"));
    assert!(sec.contains("- Function `run: func(p: `[`local`](#w.local)`) -> u32;` — Run it.\n"));
    assert!(sec.contains("- `named`: inline interface\n  - `ping: func();` — Ping.\n"));
    assert!(sec.contains(
        "#### <a id=\"w.local\"></a>type `local`\n\n`type local = list<`[`pair`](#base.pair)`>;`\n"
    ));
    // Every link resolves here too.
    let ids: BTreeSet<String> = anchors(&page).into_iter().map(|(id, _)| id).collect();
    for target in link_targets(&page) {
        assert!(ids.contains(&target), "#{target}");
    }
}

#[test]
fn files_of_a_package_render_in_the_order_given() {
    // `wit_files` sorts by name; `render_sources` keeps that order.
    let page = sample(&[
        ("a.wit", "package demo:two;\ninterface zed { z: func(); }\n"),
        (
            "b.wit",
            "package demo:two;\ninterface alpha { a: func(); }\n",
        ),
    ])
    .expect("renders");
    assert!(
        page.find("interface-zed").expect("zed") < page.find("interface-alpha").expect("alpha")
    );
    assert!(page.contains("WIT sources (`a.wit`, `b.wit`)"));
    assert!(page.contains("- Version: none\n"));
}

#[test]
fn errors_name_the_problem() {
    let err = sample(&[(
        "broken.wit",
        "package demo:x;\ninterface i {\n  f: func() -> nope;\n}\n",
    )])
    .expect_err("unknown type");
    let WitdocError::Wit { message, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(message.contains("nope"), "{message}");
    assert!(message.contains("broken.wit:3"), "{message}");

    let err = sample(&[("syntax.wit", "package demo:x;\ninterface {\n")]).expect_err("syntax");
    assert!(matches!(err, WitdocError::Wit { .. }), "{err:?}");

    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert!(matches!(render(&src), Err(WitdocError::NoWitFiles(_))));
    let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-dir");
    assert!(matches!(render(&missing), Err(WitdocError::ReadDir { .. })));
}
