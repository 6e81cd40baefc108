//! The human form of a plan. Deterministic: no times, no paths but the ones
//! the user typed, maps in declaration order.

use std::fmt::Write;

use serde_json::Value;

use crate::{Disposition, Plan, is_placeholder};

fn value(v: &Value) -> String {
    if is_placeholder(v) {
        return "(known after apply)".into();
    }
    match v {
        Value::Array(a) if a.iter().any(is_placeholder) => {
            format!("[{}]", a.iter().map(value).collect::<Vec<_>>().join(", "))
        }
        Value::Object(m) if m.values().any(is_placeholder) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}: {}", value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

fn short_digest(d: &str) -> &str {
    &d[..d.len().min(12)]
}

/// Render a plan for people.
pub fn render_text(plan: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Plan for workflow `{}` ({})",
        plan.workflow.name, plan.workflow.file
    );
    let _ = writeln!(
        o,
        "  workflow digest {}  contract {}",
        short_digest(&plan.workflow.digest),
        plan.contract
    );
    if !plan.inputs.is_empty() {
        let _ = writeln!(o, "\nInputs:");
        for (k, v) in &plan.inputs {
            let _ = writeln!(o, "  {k} = {}", value(v));
        }
    }
    if !plan.secrets.is_empty() {
        let _ = writeln!(o, "\nSecrets (values never shown):");
        for (k, src) in &plan.secrets {
            let _ = writeln!(o, "  {k} <- {src}");
        }
    }
    if !plan.sites.is_empty() {
        let _ = writeln!(o, "\nSites:");
        for (k, site) in &plan.sites {
            let _ = writeln!(o, "  {k}: {site}");
        }
    }
    if let Some(v) = &plan.vault {
        match &v.transport {
            Some(t) => {
                let _ = writeln!(o, "\nVault: {} (key from {}; {t})", v.url, v.key);
            }
            None => {
                let _ = writeln!(o, "\nVault: {} (key from {})", v.url, v.key);
            }
        }
    }
    let _ = writeln!(o, "\nPlugins:");
    for (alias, p) in &plan.plugins {
        let _ = writeln!(
            o,
            "  {alias}: {} {} from {} (digest {})",
            p.name,
            p.version,
            p.source,
            short_digest(&p.digest)
        );
        let http = if p.grants.http.is_empty() {
            "none".to_string()
        } else if p.grants.insecure_http {
            format!(
                "{} (https, or plain http: NOT ENCRYPTED)",
                p.grants.http.join(", ")
            )
        } else {
            format!("{} (TLS only)", p.grants.http.join(", "))
        };
        let secrets = if p.grants.secrets.is_empty() {
            "none".to_string()
        } else {
            p.grants.secrets.join(", ")
        };
        let mut extra = String::new();
        if !p.grants.sites.is_empty() {
            let sites: Vec<String> = p
                .grants
                .sites
                .iter()
                .map(|(k, a)| format!("{k} ({a})"))
                .collect();
            extra.push_str(&format!("; sites {}", sites.join(", ")));
        }
        if let Some(a) = &p.grants.vault {
            extra.push_str(&format!("; vault ({a})"));
        }
        let _ = writeln!(o, "    grants: http {http}; secrets {secrets}{extra}");
        let _ = writeln!(
            o,
            "    limits: memory {} MiB; timeout {} ms per call",
            p.limits.memory_mib, p.limits.timeout_ms
        );
    }
    let _ = writeln!(o, "\nSteps:");
    for s in &plan.steps {
        let needs = if s.needs.is_empty() {
            String::new()
        } else {
            format!("  (after {})", s.needs.join(", "))
        };
        let _ = writeln!(o, "  {}  {}{needs}", s.id, s.uses);
        match &s.disposition {
            Disposition::Skipped { reason } => {
                let _ = writeln!(o, "    skipped: {reason}");
                continue;
            }
            Disposition::Deferred { waiting_on } => {
                let _ = writeln!(
                    o,
                    "    deferred: planned during apply, once {} is known",
                    waiting_on.join(", ")
                );
            }
            Disposition::Planned => {}
        }
        for (k, v) in &s.inputs {
            let _ = writeln!(o, "    with {k} = {}", value(v));
        }
        for a in &s.actions {
            let _ = writeln!(
                o,
                "    {} {:<8} {}  {}",
                a.kind.sigil(),
                a.kind.as_str(),
                a.resource,
                a.summary
            );
        }
        for (k, v) in &s.outputs {
            let _ = writeln!(o, "    -> {k} = {}", value(v));
        }
        if s.retry.attempts > 1 {
            let _ = writeln!(
                o,
                "    retry: {} attempts, backoff {} ms",
                s.retry.attempts, s.retry.backoff_ms
            );
        }
    }
    let m = &plan.summary;
    let _ = writeln!(
        o,
        "\nSummary: {} to read, {} to create, {} to update, {} to delete, {} to transfer, {} to run; {} deferred, {} skipped",
        m.read, m.create, m.update, m.delete, m.transfer, m.run, m.deferred, m.skipped
    );
    o
}
