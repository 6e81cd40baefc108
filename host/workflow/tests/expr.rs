//! Expression and template evaluation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use lifeboat_workflow::{Expr, Scope, Template, Val, WorkflowError};
use serde_json::{Value, json};

/// A scope over plain values; `steps.create.*` is unknown (only known after apply).
struct TestScope {
    values: HashMap<String, Value>,
}

impl TestScope {
    fn new() -> TestScope {
        let mut values = HashMap::new();
        for (k, v) in [
            ("inputs.kind", json!("test")),
            ("inputs.count", json!(3)),
            ("inputs.ratio", json!(3.0)),
            ("inputs.list", json!(["a", 1, true])),
            ("inputs.obj", json!({"b": 1, "a": [null]})),
            ("inputs.flag", json!(true)),
            ("inputs.empty", json!(null)),
            ("vars.prefix", json!("dr-test")),
            ("secrets.token", json!("s3cret")),
            (
                "steps.discover.outputs.vms",
                json!([{"name": "web-1", "cpus": 2}, {"name": "db-1", "cpus": 4}]),
            ),
            ("item", json!({"name": "web-1", "tags": ["x"]})),
            ("index", json!(0)),
        ] {
            values.insert(k.to_owned(), v);
        }
        TestScope { values }
    }
}

impl Scope for TestScope {
    fn lookup(&self, root: &str, path: &[String]) -> Option<Val> {
        let key = std::iter::once(root.to_owned())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join(".");
        if root == "steps" && path.first().map(String::as_str) == Some("create") {
            return Some(Val::Unknown(key));
        }
        self.values.get(&key).cloned().map(Val::Known)
    }
}

fn eval(text: &str) -> Result<Val, WorkflowError> {
    Expr::parse(text).expect("parses").eval(&TestScope::new())
}

fn known(text: &str) -> Value {
    match eval(text) {
        Ok(Val::Known(v)) => v,
        other => panic!("{text}: {other:?}"),
    }
}

fn template(text: &str) -> Result<Val, WorkflowError> {
    Template::parse_str(text)
        .expect("parses")
        .eval(&TestScope::new())
}

#[test]
fn literals() {
    assert_eq!(known("'it''s'"), json!("it's"));
    assert_eq!(known("42"), json!(42));
    assert_eq!(known("-7"), json!(-7));
    assert_eq!(known("2.5"), json!(2.5));
    assert_eq!(known("1e3"), json!(1000.0));
    assert_eq!(known("true"), json!(true));
    assert_eq!(known("false"), json!(false));
    assert_eq!(known("null"), json!(null));
}

#[test]
fn references_and_paths() {
    assert_eq!(known("inputs.kind"), json!("test"));
    assert_eq!(known("vars.prefix"), json!("dr-test"));
    assert_eq!(known("secrets.token"), json!("s3cret"));
    assert_eq!(known("item"), json!({"name": "web-1", "tags": ["x"]}));
    assert_eq!(known("item.name"), json!("web-1"));
    assert_eq!(known("item.tags[0]"), json!("x"));
    assert_eq!(known("item['name']"), json!("web-1"));
    assert_eq!(known("index"), json!(0));
    assert_eq!(known("steps.discover.outputs.vms[1].name"), json!("db-1"));
    assert_eq!(known("steps.discover.outputs.vms[-1].cpus"), json!(4));
    assert_eq!(known("inputs.list[index]"), json!("a"));
    let e = Expr::parse("steps.discover.outputs.vms[item.tags[0] == 'x' && index == 0] ")
        .expect("parses");
    assert_eq!(
        e.references(),
        vec![
            vec![
                "steps".to_owned(),
                "discover".into(),
                "outputs".into(),
                "vms".into()
            ],
            vec!["item".to_owned()],
            vec!["index".to_owned()],
        ]
    );
    assert_eq!(
        e.text(),
        "steps.discover.outputs.vms[item.tags[0] == 'x' && index == 0]"
    );
}

#[test]
fn operators() {
    assert_eq!(known("inputs.kind == 'test'"), json!(true));
    assert_eq!(known("inputs.kind != 'test'"), json!(false));
    assert_eq!(known("inputs.count == 3"), json!(true));
    // numbers compare by value
    assert_eq!(known("inputs.ratio == inputs.count"), json!(true));
    assert_eq!(known("inputs.count == '3'"), json!(false));
    assert_eq!(known("inputs.list == inputs.list"), json!(true));
    assert_eq!(known("inputs.obj == inputs.obj"), json!(true));
    assert_eq!(known("inputs.empty == null"), json!(true));
    assert_eq!(known("!inputs.flag"), json!(false));
    assert_eq!(known("!!inputs.flag"), json!(true));
    assert_eq!(known("true && false"), json!(false));
    assert_eq!(known("false || true"), json!(true));
    // && binds tighter than ||
    assert_eq!(known("true || false && false"), json!(true));
    assert_eq!(known("(true || false) && false"), json!(false));
    assert_eq!(
        known("!(inputs.kind == 'prod') && inputs.count != 0"),
        json!(true)
    );
}

#[test]
fn unknown_propagates() {
    let u = Val::Unknown("steps.create.outputs.vm_id".into());
    assert_eq!(eval("steps.create.outputs.vm_id").expect("ok"), u);
    assert_eq!(eval("steps.create.outputs.vm_id == 'x'").expect("ok"), u);
    assert_eq!(eval("'x' != steps.create.outputs.vm_id").expect("ok"), u);
    assert_eq!(eval("!steps.create.outputs.vm_id").expect("ok"), u);
    assert_eq!(eval("steps.create.outputs.vm_id.name").expect("ok"), u);
    assert_eq!(eval("steps.create.outputs.vm_id[0]").expect("ok"), u);
    assert_eq!(
        eval("inputs.list[steps.create.outputs.vm_id]").expect("ok"),
        u
    );
    assert_eq!(eval("true && steps.create.outputs.vm_id").expect("ok"), u);
    assert_eq!(eval("steps.create.outputs.vm_id || false").expect("ok"), u);
    // the first unknown is carried
    assert_eq!(
        eval("steps.create.outputs.a == steps.create.outputs.b").expect("ok"),
        Val::Unknown("steps.create.outputs.a".into())
    );
    // short circuit: the right side is not needed
    assert_eq!(
        eval("false && steps.create.outputs.ok").expect("ok"),
        Val::Known(json!(false))
    );
    assert_eq!(
        eval("true || steps.create.outputs.ok").expect("ok"),
        Val::Known(json!(true))
    );
}

#[test]
fn evaluation_errors() {
    assert_eq!(
        eval("inputs.missing"),
        Err(WorkflowError::Undefined {
            reference: "inputs.missing".into()
        })
    );
    assert_eq!(
        eval("steps.other.outputs.x == 1"),
        Err(WorkflowError::Undefined {
            reference: "steps.other.outputs.x".into()
        })
    );
    let e = eval("!inputs.kind").expect_err("not boolean");
    assert!(
        matches!(&e, WorkflowError::NotBoolean { op: "!", .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "`!` needs a boolean, but `inputs.kind` is a string (\"test\")"
    );
    assert!(matches!(
        eval("inputs.count && true"),
        Err(WorkflowError::NotBoolean { op: "&&", .. })
    ));
    assert!(matches!(
        eval("true && inputs.count"),
        Err(WorkflowError::NotBoolean { op: "&&", .. })
    ));
    assert!(matches!(
        eval("false || 'x'"),
        Err(WorkflowError::NotBoolean { op: "||", .. })
    ));
    // an unknown left side does not hide a type error on the right
    assert!(matches!(
        eval("steps.create.outputs.ok && 'x'"),
        Err(WorkflowError::NotBoolean { .. })
    ));
    assert_eq!(
        eval("item.nmae"),
        Err(WorkflowError::NoField {
            target: "item".into(),
            field: "nmae".into()
        })
    );
    assert!(matches!(
        eval("inputs.kind.x"),
        Err(WorkflowError::NotAnObject { .. })
    ));
    assert_eq!(
        eval("inputs.list[3]"),
        Err(WorkflowError::IndexOutOfRange {
            target: "inputs.list".into(),
            index: 3,
            len: 3
        })
    );
    assert!(matches!(
        eval("inputs.list[-4]"),
        Err(WorkflowError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        eval("inputs.list['a']"),
        Err(WorkflowError::BadIndex { .. })
    ));
    assert!(matches!(
        eval("inputs.kind[0]"),
        Err(WorkflowError::BadIndex { .. })
    ));
    assert!(matches!(
        eval("inputs.list[1.5]"),
        Err(WorkflowError::BadIndex { .. })
    ));
}

#[test]
fn syntax_errors() {
    for (text, offset) in [
        ("inputs.kind = 'x'", 12),
        ("inputs", 6),
        ("inputs.", 7),
        ("steps.a.output.x", 8),
        ("steps.a.outputs", 15),
        ("foo.bar", 0),
        ("'open", 0),
        ("(true", 5),
        ("true false", 5),
        ("inputs.a & inputs.b", 9),
        ("inputs.x[0", 10),
        ("\"x\"", 0),
        ("1x", 0),
        ("", 0),
        ("#", 0),
    ] {
        match Expr::parse(text) {
            Err(WorkflowError::Syntax { offset: o, .. }) => assert_eq!(o, offset, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    match Template::parse_str("abc ${{ inputs.x") {
        Err(WorkflowError::Syntax { offset, message }) => {
            assert_eq!(offset, 4);
            assert!(message.contains("unterminated"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn templates() {
    // exactly one expression keeps its type
    assert_eq!(
        template("${{ inputs.count }}").expect("ok"),
        Val::Known(json!(3))
    );
    assert_eq!(
        template("${{inputs.list}}").expect("ok"),
        Val::Known(json!(["a", 1, true]))
    );
    // otherwise: interpolation, non-strings as compact JSON
    assert_eq!(
        template("n=${{ inputs.count }} k=${{ inputs.kind }} l=${{ inputs.list }} o=${{ inputs.obj }} b=${{ true }} z=${{ null }} f=${{ 2.5 }}")
            .expect("ok"),
        Val::Known(json!(r#"n=3 k=test l=["a",1,true] o={"b":1,"a":[null]} b=true z=null f=2.5"#))
    );
    assert_eq!(
        template(" ${{ inputs.count }}").expect("ok"),
        Val::Known(json!(" 3"))
    );
    assert_eq!(template("plain").expect("ok"), Val::Known(json!("plain")));
    assert_eq!(
        template("a $${{ b }} c").expect("ok"),
        Val::Known(json!("a ${{ b }} c"))
    );
    // `}}` inside a string literal does not end the expression
    assert_eq!(
        template("${{ 'a}}b' }}").expect("ok"),
        Val::Known(json!("a}}b"))
    );
    assert_eq!(
        template("id-${{ steps.create.outputs.vm_id }}").expect("ok"),
        Val::Unknown("steps.create.outputs.vm_id".into())
    );
    assert!(matches!(
        template("x ${{ inputs.nope }}"),
        Err(WorkflowError::Undefined { .. })
    ));
}

#[test]
fn structured_templates() {
    let e = |s: &str| Template::Expr(Expr::parse(s).expect("parses"));
    let list = Template::List(vec![Template::Literal(json!(1)), e("inputs.kind")]);
    assert_eq!(
        list.eval(&TestScope::new()).expect("ok"),
        Val::Known(json!([1, "test"]))
    );
    let obj = Template::Object(
        [
            ("a".to_owned(), list.clone()),
            ("b".to_owned(), e("steps.create.outputs.x")),
        ]
        .into_iter()
        .collect(),
    );
    // an unknown anywhere makes the whole value unknown
    assert_eq!(
        obj.eval(&TestScope::new()).expect("ok"),
        Val::Unknown("steps.create.outputs.x".into())
    );
    assert_eq!(
        obj.references(),
        vec![
            vec!["inputs".to_owned(), "kind".into()],
            vec![
                "steps".to_owned(),
                "create".into(),
                "outputs".into(),
                "x".into()
            ],
        ]
    );
    // errors win over unknowns
    let bad = Template::List(vec![e("steps.create.outputs.x"), e("inputs.nope")]);
    assert!(matches!(
        bad.eval(&TestScope::new()),
        Err(WorkflowError::Undefined { .. })
    ));
    // the source form round-trips expressions and escapes
    let t = Template::parse_str("a $${{ x }} ${{ inputs.kind }}").expect("parses");
    assert_eq!(t.to_source(), json!("a $${{ x }} ${{ inputs.kind }}"));
    assert_eq!(
        serde_json::to_value(&obj).expect("json"),
        json!({"a": [1, "${{ inputs.kind }}"], "b": "${{ steps.create.outputs.x }}"})
    );
}

#[test]
fn templates_from_a_workflow_keep_structure() {
    let text = "name: t\nvars:\n  lit: [1, {a: b}]\n  mixed: [1, \"${{ inputs.n }}\", {k: \"x-${{ inputs.n }}\"}]\ninputs:\n  n: { type: integer, default: 1 }\nsteps:\n  - { id: s, uses: demo/verify, with: { vm_id: x } }\nplugins:\n  demo: { source: builtin:demo }\n";
    let doc = lifeboat_workflow::parse(lifeboat_workflow::SourceFile::new("t.yaml", text))
        .expect("parses");
    let vars = &doc.workflow().vars;
    assert_eq!(vars["lit"], Template::Literal(json!([1, {"a": "b"}])));
    let Template::List(items) = &vars["mixed"] else {
        panic!("{:?}", vars["mixed"]);
    };
    assert_eq!(items[0], Template::Literal(json!(1)));
    assert!(matches!(items[1], Template::Expr(_)));
    assert!(matches!(&items[2], Template::Object(m) if matches!(m["k"], Template::Interpolate(_))));
    // expression spans point into the file
    let Template::Expr(e) = &items[1] else {
        panic!()
    };
    let span = e.span();
    assert_eq!(&text[span.offset()..span.offset() + span.len()], "inputs.n");
}
