//! Valid workflows: parse, validate, dependency order, inputs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use indexmap::IndexMap;
use lifeboat_workflow::{FieldType, PluginSource, Template, WorkflowError};
use serde_json::json;

#[test]
fn valid_fixtures_validate() {
    let files = common::fixtures("valid");
    assert!(!files.is_empty());
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        if let Err(d) = common::load(&path.display().to_string(), &text) {
            panic!("{} should be valid:\n{}", path.display(), d.render());
        }
    }
}

fn quickstart() -> lifeboat_workflow::Workflow {
    let text = include_str!("fixtures/valid/quickstart.yaml");
    common::load("quickstart.yaml", text).unwrap_or_else(|d| panic!("{}", d.render()))
}

#[test]
fn quickstart_model() {
    let wf = quickstart();
    assert_eq!(wf.name, "quickstart");
    assert_eq!(wf.description.as_deref(), Some("Fail over the demo site"));

    let kind = &wf.inputs["kind"];
    assert_eq!(kind.ty, FieldType::String);
    assert_eq!(kind.default, Some(json!("test")));
    assert_eq!(kind.doc, "test | planned | unplanned");
    assert!(!kind.required);
    assert!(wf.inputs["site"].required);
    assert_eq!(wf.inputs["count"].ty, FieldType::Integer);
    assert_eq!(
        wf.inputs.keys().collect::<Vec<_>>(),
        ["kind", "site", "count"]
    );

    assert!(matches!(wf.vars["prefix"], Template::Interpolate(_)));
    assert_eq!(wf.secrets["api_token"].env, "DEMO_API_TOKEN");

    let demo = &wf.plugins["demo"];
    assert_eq!(demo.alias, "demo");
    assert_eq!(demo.source, PluginSource::Builtin("demo".into()));
    assert_eq!(demo.grants.http, ["127.0.0.1:8080", "*.example.com"]);
    assert_eq!(demo.grants.secrets, ["api_token"]);
    assert_eq!(demo.limits.memory, Some(64 * 1024 * 1024));
    assert_eq!(
        demo.limits.timeout,
        Some(std::time::Duration::from_secs(30))
    );

    let ids: Vec<&str> = wf.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["discover", "failover", "verify"]);
    let discover = &wf.steps[0];
    assert_eq!(
        (discover.plugin.as_str(), discover.step.as_str()),
        ("demo", "inventory")
    );
    assert_eq!(discover.retry.attempts, 3);
    assert_eq!(discover.retry.backoff, std::time::Duration::from_secs(2));
    assert!(discover.needs.is_empty());
    assert!(discover.condition.is_none());

    let failover = &wf.steps[1];
    // implicit need from for_each's `steps.discover.outputs.vms`
    assert_eq!(failover.needs, ["discover"]);
    assert!(matches!(failover.for_each, Some(Template::Expr(_))));
    assert_eq!(
        failover.condition.as_ref().map(|c| c.text()),
        Some("inputs.kind != 'unplanned' && item != 'skip-me'")
    );
    assert_eq!(failover.timeout, Some(std::time::Duration::from_secs(10)));
    assert_eq!(failover.retry.attempts, 2);
    assert_eq!(failover.retry.backoff, lifeboat_workflow::DEFAULT_BACKOFF);

    let verify = &wf.steps[2];
    // explicit `failover` + implicit `discover`, sorted and deduplicated
    assert_eq!(verify.needs, ["discover", "failover"]);
    // `$${{` is a literal `${{`
    assert_eq!(
        verify.with["note"],
        Template::Literal(json!("cost ${{ not an expression }}"))
    );

    // Step.span is the id value
    let text = &wf.source.text;
    let span = verify.span;
    assert_eq!(&text[span.offset()..span.offset() + span.len()], "verify");
}

#[test]
fn digest_is_blake3_of_the_text() {
    let wf = quickstart();
    let d = wf.digest();
    assert_eq!(d.len(), 64);
    assert_eq!(
        d,
        blake3::hash(wf.source.text.as_bytes()).to_hex().to_string()
    );
    let other = common::load("x.yaml", &format!("{}\n# changed\n", wf.source.text)).expect("valid");
    assert_ne!(other.digest(), d);
}

#[test]
fn plugin_sources_in_file_order_with_spans() {
    let text = "name: x\nplugins:\n  b: { source: ./plugins/b.wasm }\n  a: { source: builtin:demo }\nsteps:\n  - { id: s, uses: a/inventory, with: { site: x } }\n";
    let doc = lifeboat_workflow::parse(common::source("x.yaml", text)).expect("parses");
    assert_eq!(doc.name(), "x");
    assert_eq!(doc.source().name, "x.yaml");
    let sources = doc.plugin_sources();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0].0, "b");
    // paths are kept as written, not resolved
    assert_eq!(sources[0].1, PluginSource::Path("./plugins/b.wasm".into()));
    let span = sources[0].2;
    assert_eq!(
        &text[span.offset()..span.offset() + span.len()],
        "./plugins/b.wasm"
    );
    assert_eq!(sources[1].0, "a");
    assert_eq!(sources[1].1, PluginSource::Builtin("demo".into()));
    let span = sources[1].2;
    assert_eq!(
        &text[span.offset()..span.offset() + span.len()],
        "builtin:demo"
    );
}

fn wf_with_steps(steps: &str) -> lifeboat_workflow::Workflow {
    let text =
        format!("name: order\nplugins:\n  demo: {{ source: builtin:demo }}\nsteps:\n{steps}");
    common::load("order.yaml", &text).unwrap_or_else(|d| panic!("{}", d.render()))
}

fn order(wf: &lifeboat_workflow::Workflow) -> Vec<&str> {
    wf.topo_order().iter().map(|s| s.id.as_str()).collect()
}

#[test]
fn topo_order_puts_needs_first_and_keeps_file_order() {
    let wf = wf_with_steps(
        "  - { id: c, uses: demo/verify, needs: [b], with: { vm_id: x } }\n\
         \x20 - { id: a, uses: demo/inventory, with: { site: x } }\n\
         \x20 - { id: b, uses: demo/failover, with: { vm: \"${{ steps.a.outputs.vms[0] }}\" } }\n\
         \x20 - { id: d, uses: demo/verify, with: { vm_id: y } }\n",
    );
    assert_eq!(wf.steps[2].needs, ["a"]);
    assert_eq!(order(&wf), ["a", "b", "c", "d"]);

    let wf = wf_with_steps(
        "  - { id: z, uses: demo/verify, with: { vm_id: x } }\n\
         \x20 - { id: y, uses: demo/verify, with: { vm_id: x } }\n\
         \x20 - { id: x, uses: demo/verify, with: { vm_id: x } }\n",
    );
    assert_eq!(order(&wf), ["z", "y", "x"]);

    let wf = wf_with_steps(
        "  - { id: last, uses: demo/verify, with: { vm_id: \"${{ steps.mid.outputs.vm_id }}\" }, if: \"${{ steps.first.outputs.count == 1 }}\" }\n\
         \x20 - { id: mid, uses: demo/failover, with: { vm: v } }\n\
         \x20 - { id: first, uses: demo/inventory, with: { site: s } }\n",
    );
    assert_eq!(wf.steps[0].needs, ["first", "mid"]);
    assert_eq!(order(&wf), ["mid", "first", "last"]);
}

#[test]
fn topo_order_of_a_hand_built_cycle_keeps_every_step() {
    let mut wf = wf_with_steps(
        "  - { id: a, uses: demo/verify, with: { vm_id: x } }\n\
         \x20 - { id: b, uses: demo/verify, with: { vm_id: x } }\n",
    );
    wf.steps[0].needs = vec!["b".into()];
    wf.steps[1].needs = vec!["a".into()];
    assert_eq!(order(&wf), ["a", "b"]);
}

fn given(pairs: &[(&str, &str)]) -> IndexMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn bind_inputs_fills_defaults_and_parses_types() {
    let text = r#"
name: inputs
inputs:
  site: { required: true }
  kind: { type: string, default: test }
  count: { type: integer, default: 2 }
  ratio: { type: number }
  dry: { type: boolean, default: false }
  vms: { type: list }
  tags: { type: object }
  extra: { type: any }
  code: { type: string }
plugins:
  demo: { source: builtin:demo }
steps:
  - { id: s, uses: demo/inventory, with: { site: "${{ inputs.site }}" } }
"#;
    let wf = common::load("inputs.yaml", text).unwrap_or_else(|d| panic!("{}", d.render()));

    let bound = wf.bind_inputs(&given(&[("site", "dc1")])).expect("binds");
    assert_eq!(
        serde_json::to_value(&bound).expect("json"),
        json!({"site": "dc1", "kind": "test", "count": 2, "ratio": null, "dry": false,
               "vms": null, "tags": null, "extra": null, "code": null})
    );
    // declaration order, whatever the order given
    assert_eq!(bound.keys().next().map(String::as_str), Some("site"));

    let bound = wf
        .bind_inputs(&given(&[
            ("count", "7"),
            ("site", "dc2"),
            ("ratio", "0.5"),
            ("dry", "true"),
            ("vms", "[web-1, \"db-1\"]"),
            ("tags", "{\"tier\": 1}"),
            ("extra", "yes"),
            ("code", "007"),
        ]))
        .expect("binds");
    assert_eq!(bound["count"], json!(7));
    assert_eq!(bound["site"], json!("dc2"));
    assert_eq!(bound["ratio"], json!(0.5));
    assert_eq!(bound["dry"], json!(true));
    assert_eq!(bound["vms"], json!(["web-1", "db-1"]));
    assert_eq!(bound["tags"], json!({"tier": 1}));
    assert_eq!(bound["extra"], json!("yes"));
    // strings are taken verbatim
    assert_eq!(bound["code"], json!("007"));
    // an integer is also a number
    let bound = wf
        .bind_inputs(&given(&[("site", "x"), ("ratio", "3")]))
        .expect("binds");
    assert_eq!(bound["ratio"], json!(3));
}

#[test]
fn bind_inputs_errors() {
    let text = "name: inputs\ninputs:\n  site: { required: true }\n  count: { type: integer, default: 2 }\n  dry: { type: boolean }\nplugins:\n  demo: { source: builtin:demo }\nsteps:\n  - { id: s, uses: demo/inventory, with: { site: x } }\n";
    let wf = common::load("inputs.yaml", text).expect("valid");

    let e = wf.bind_inputs(&given(&[])).expect_err("missing");
    assert!(
        matches!(&e, WorkflowError::MissingInput { name, .. } if name == "site"),
        "{e:?}"
    );
    assert!(e.to_string().contains("--input site=VALUE"), "{e}");

    let e = wf
        .bind_inputs(&given(&[("site", "a"), ("cuont", "3")]))
        .expect_err("unknown");
    assert!(
        matches!(&e, WorkflowError::UnknownInput { name, suggestion: Some(s), .. } if name == "cuont" && s == "count"),
        "{e:?}"
    );
    assert!(e.to_string().contains("did you mean `count`?"), "{e}");
    assert!(e.to_string().contains("`site`, `count`, `dry`"), "{e}");

    let e = wf
        .bind_inputs(&given(&[("site", "a"), ("count", "many")]))
        .expect_err("type");
    assert_eq!(
        e,
        WorkflowError::InputType {
            name: "count".into(),
            expected: FieldType::Integer,
            given: "many".into(),
            found: "a string".into(),
        }
    );
    assert_eq!(
        e.to_string(),
        "input `count` must be an integer, but `many` is a string"
    );

    let e = wf
        .bind_inputs(&given(&[("site", "a"), ("count", "1.5")]))
        .expect_err("type");
    assert!(matches!(e, WorkflowError::InputType { .. }));
    // YAML 1.1 booleans are not booleans
    let e = wf
        .bind_inputs(&given(&[("site", "a"), ("dry", "yes")]))
        .expect_err("type");
    assert!(matches!(e, WorkflowError::InputType { .. }));
    let e = wf
        .bind_inputs(&given(&[("site", "a"), ("dry", "")]))
        .expect_err("empty");
    assert!(e.to_string().contains("is empty"), "{e}");
}

#[test]
fn hashmap_is_a_catalog() {
    let mut catalog = std::collections::HashMap::new();
    catalog.insert("demo".to_owned(), common::demo());
    let text = "name: x\nplugins:\n  demo: { source: builtin:demo }\n  other: { source: builtin:other }\nsteps:\n  - { id: s, uses: demo/inventory, with: { site: x } }\n";
    let doc = lifeboat_workflow::parse(common::source("x.yaml", text)).expect("parses");
    let err = lifeboat_workflow::validate(doc, &catalog).expect_err("other is missing");
    assert_eq!(err.codes(), ["lifeboat::workflow::plugin-load-failed"]);
    assert!(err.items()[0].message.contains("`other`"));
}

#[test]
fn diagnostics_are_miette_reports_with_related() {
    use miette::Diagnostic as _;
    let text = "name: X\nsteps:\n  - id: A\n    uses: nope\n";
    let err = lifeboat_workflow::parse(common::source("bad.yaml", text)).expect_err("invalid");
    assert_eq!(
        err.codes(),
        [
            "lifeboat::workflow::bad-name",
            "lifeboat::workflow::bad-step-id",
            "lifeboat::workflow::bad-uses"
        ]
    );
    assert_eq!(err.len(), 3);
    assert_eq!(err.related().map(Iterator::count), Some(2));
    assert_eq!(
        err.code().map(|c| c.to_string()).as_deref(),
        Some("lifeboat::workflow::bad-name")
    );
    assert!(err.to_string().contains("(and 2 more problems)"));
    let first = &err.items()[0];
    assert_eq!(first.line_col(), (1, 7));
    assert_eq!(first.source().name, "bad.yaml");
    // the whole report renders through miette's own report type too
    let report = miette::Report::new(err.clone());
    assert!(format!("{report:?}").contains("bad-step-id"));
    let rendered = err.render();
    assert!(rendered.contains("bad.yaml:4:11"), "{rendered}");
    assert!(rendered.ends_with("3 problems in bad.yaml\n"), "{rendered}");
}

#[test]
fn problems_are_sorted_by_position_and_all_reported() {
    let text = "name: x\nplugins:\n  demo: { source: builtin:demo }\nsteps:\n  - { id: b, uses: demo/verify, needs: [zz], with: { vm_id: \"${{ inputs.nope }}\" } }\n  - { id: a, uses: demo/verify, needs: [yy] }\n";
    let err = lifeboat_workflow::parse(common::source("x.yaml", text)).expect_err("invalid");
    let offsets: Vec<usize> = err.items().iter().map(|d| d.span.offset()).collect();
    let mut sorted = offsets.clone();
    sorted.sort();
    assert_eq!(offsets, sorted);
    assert_eq!(
        err.codes(),
        [
            "lifeboat::workflow::unknown-need",
            "lifeboat::workflow::undefined-input",
            "lifeboat::workflow::unknown-need"
        ]
    );
}

#[test]
fn huge_files_are_refused() {
    let mut text = String::from("name: big\nsteps:\n");
    let line = "  - { id: s, uses: demo/verify, with: { vm_id: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx } }\n";
    while text.len() <= 4 * 1024 * 1024 {
        text.push_str(line);
    }
    let err = lifeboat_workflow::parse(common::source("big.yaml", &text)).expect_err("too big");
    assert_eq!(err.codes(), ["lifeboat::workflow::too-large"]);
}

#[test]
fn deep_nesting_is_refused_without_crashing() {
    let text = format!(
        "name: deep\nvars:\n  v: {}{}\nsteps: []\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let err = lifeboat_workflow::parse(common::source("deep.yaml", &text)).expect_err("too deep");
    assert!(!err.is_empty());
    let expr = format!(
        "name: deep\nvars:\n  v: \"${{{{ {}true{} }}}}\"\nsteps: []\n",
        "(".repeat(500),
        ")".repeat(500)
    );
    let err = lifeboat_workflow::parse(common::source("deep.yaml", &expr)).expect_err("too deep");
    assert!(
        err.codes().contains(&"lifeboat::workflow::expr-syntax"),
        "{:?}",
        err.codes()
    );
    for long in [
        format!("true{}", " && true".repeat(2000)),
        format!("item{}", ".a".repeat(5000)),
        format!("item{}", "[0]".repeat(5000)),
    ] {
        let text = format!(
            "name: deep\nplugins:\n  demo: {{ source: builtin:demo }}\nsteps:\n  - {{ id: s, uses: demo/verify, for_each: [1], with: {{ vm_id: \"${{{{ {long} }}}}\" }} }}\n"
        );
        let err =
            lifeboat_workflow::parse(common::source("deep.yaml", &text)).expect_err("too long");
        assert_eq!(err.codes(), ["lifeboat::workflow::expr-syntax"]);
        assert!(
            err.items()[0].message.contains("too long"),
            "{}",
            err.items()[0].message
        );
    }
    // just under the limit still parses and evaluates
    let e =
        lifeboat_workflow::Expr::parse(&format!("true{}", " && true".repeat(190))).expect("parses");
    struct Empty;
    impl lifeboat_workflow::Scope for Empty {
        fn lookup(&self, _: &str, _: &[String]) -> Option<lifeboat_workflow::Val> {
            None
        }
    }
    assert_eq!(
        e.eval(&Empty).expect("evaluates"),
        lifeboat_workflow::Val::Known(json!(true))
    );
    let nots = format!(
        "name: deep\nvars:\n  v: \"${{{{ {}true }}}}\"\nsteps: []\n",
        "!".repeat(5000)
    );
    let err = lifeboat_workflow::parse(common::source("deep.yaml", &nots)).expect_err("too deep");
    assert!(
        err.codes().contains(&"lifeboat::workflow::expr-syntax"),
        "{:?}",
        err.codes()
    );
}

#[test]
fn the_documented_example_is_valid() {
    let doc = include_str!("../../../docs/workflow-format.md");
    let start = doc.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + doc[start..].find("```").expect("closed");
    let wf = common::load("docs-example.yaml", &doc[start..end])
        .unwrap_or_else(|d| panic!("{}", d.render()));
    assert_eq!(wf.name, "quickstart");
    assert_eq!(wf.steps[1].needs, ["discover"]);
}

#[test]
fn less_common_forms() {
    let text = include_str!("fixtures/valid/features.yaml");
    let wf = common::load("features.yaml", text).unwrap_or_else(|d| panic!("{}", d.render()));
    assert_eq!(
        wf.description.as_deref(),
        Some("A folded description over two lines.\n")
    );
    assert_eq!(wf.inputs["region"].ty, FieldType::String);
    assert_eq!(wf.inputs["vms"].default, Some(json!(["web-1", "db-1"])));
    assert_eq!(wf.vars["empty"], Template::Literal(json!(null)));
    assert!(matches!(&wf.vars["nested"], Template::Object(_)));
    let demo = &wf.plugins["demo"];
    assert_eq!(
        demo.grants.http,
        ["[::1]:8080", "localhost", "vcenter.example.com:443"]
    );
    assert_eq!(demo.limits.memory, Some(512 * 1024));
    assert_eq!(
        demo.limits.timeout,
        Some(std::time::Duration::from_secs(90))
    );
    assert_eq!(wf.plugins["local"].grants, Default::default());
    // merge keys are expanded
    assert_eq!(wf.steps[0].with["site"], Template::Literal(json!("dc1")));
    assert_eq!(
        wf.steps[0].condition.as_ref().and_then(|c| c.as_literal()),
        Some(&json!(true))
    );
    // `needs: discover` (a single id)
    assert_eq!(wf.steps[1].needs, ["discover"]);
    assert!(matches!(&wf.steps[1].for_each, Some(Template::List(_))));
    let Template::Interpolate(parts) = &wf.steps[1].with["kind"] else {
        panic!("{:?}", wf.steps[1].with["kind"]);
    };
    assert_eq!(parts.len(), 3);
    assert_eq!(wf.steps[2].needs, ["fail_over-2"]);
    assert_eq!(
        wf.topo_order()
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["discover", "fail_over-2", "verify"]
    );
}

#[test]
fn long_dependency_chains_are_fast() {
    let n = 3000;
    let mut text =
        String::from("name: chain\nplugins:\n  demo: { source: builtin:demo }\nsteps:\n");
    for i in 0..n {
        if i + 1 < n {
            text.push_str(&format!(
                "  - {{ id: s{i}, uses: demo/verify, with: {{ vm_id: x, label: \"h=${{{{ steps.s{}.outputs.healthy }}}}\" }} }}\n",
                i + 1
            ));
        } else {
            text.push_str(&format!(
                "  - {{ id: s{i}, uses: demo/verify, with: {{ vm_id: x }} }}\n"
            ));
        }
    }
    let started = std::time::Instant::now();
    let wf = common::load("chain.yaml", &text).unwrap_or_else(|d| panic!("{}", d.render()));
    let order = wf.topo_order();
    assert_eq!(order.len(), n);
    assert_eq!(order[0].id, format!("s{}", n - 1));
    assert_eq!(order[n - 1].id, "s0");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
