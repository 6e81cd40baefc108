//! Secrets never appear in plans: every string is scrubbed of secret values,
//! and inputs a plugin marks `sensitive` are hidden entirely.

use indexmap::IndexMap;
use lifeboat_contract::StepInfo;
use serde_json::Value;

/// Replaces secret values with `(secret NAME)`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<(String, String)>,
}

impl Redactor {
    pub fn new(secrets: &IndexMap<String, String>) -> Self {
        let mut secrets: Vec<(String, String)> = secrets
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        secrets.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        Redactor { secrets }
    }

    pub fn redact_str(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (name, value) in &self.secrets {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("(secret {name})"));
            }
        }
        out
    }

    pub fn redact(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.redact_str(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.redact(x)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (self.redact_str(k), self.redact(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Inputs for display: sensitive fields hidden, secrets scrubbed.
    pub fn redact_inputs(
        &self,
        inputs: &IndexMap<String, Value>,
        info: Option<&StepInfo>,
    ) -> IndexMap<String, Value> {
        inputs
            .iter()
            .map(|(k, v)| {
                let sensitive = info.and_then(|i| i.input(k)).is_some_and(|f| f.sensitive);
                let shown = if sensitive {
                    Value::String("(sensitive)".into())
                } else {
                    self.redact(v)
                };
                (k.clone(), shown)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_everywhere() {
        let mut s = IndexMap::new();
        s.insert("token".to_string(), "hunter2".to_string());
        s.insert("long".to_string(), "hunter2-and-more".to_string());
        let r = Redactor::new(&s);
        let v = serde_json::json!({"a": "x hunter2-and-more y", "b": ["hunter2"], "hunter2": 1});
        let out = r.redact(&v).to_string();
        assert!(!out.contains("hunter2-"), "{out}");
        assert!(!out.contains("\"hunter2\""), "{out}");
        assert!(out.contains("(secret long)"));
        assert!(out.contains("(secret token)"));
    }
}
