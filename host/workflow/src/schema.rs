//! JSON Schema of the workflow format, for editors (yaml-language-server
//! and others). Hand-written so it can say exactly what the checker accepts;
//! a test keeps `docs/workflow.schema.json` equal to it.

use serde_json::{Value, json};

use crate::model::DEFAULT_BACKOFF;
use crate::parse::MAX_ATTEMPTS;

/// The JSON Schema (draft-07) of a workflow file.
pub fn json_schema() -> Value {
    let expr = r"^\$\{\{.*\}\}$";
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "lifeboat workflow",
        "description": "A lifeboat recovery workflow: plugins, and the steps that run them. See docs/workflow-format.md.",
        "type": "object",
        "additionalProperties": false,
        "patternProperties": {
            "^x-": {
                "description": "Ignored: a place for YAML anchors shared by several steps."
            }
        },
        "required": ["name", "steps"],
        "properties": {
            "name": {
                "description": "The workflow's name: lower-case letters, digits and `-`.",
                "type": "string",
                "pattern": "^[a-z0-9][a-z0-9-]*$"
            },
            "description": {
                "description": "What the workflow does.",
                "type": "string"
            },
            "inputs": {
                "description": "Values given on the command line as `--input NAME=VALUE`; read as `${{ inputs.NAME }}`.",
                "type": ["object", "null"],
                "propertyNames": { "$ref": "#/definitions/identifier" },
                "additionalProperties": { "$ref": "#/definitions/input" }
            },
            "vars": {
                "description": "Named values computed from inputs and earlier vars; read as `${{ vars.NAME }}`.",
                "type": ["object", "null"],
                "propertyNames": { "$ref": "#/definitions/identifier" },
                "additionalProperties": { "$ref": "#/definitions/template" }
            },
            "secrets": {
                "description": "Secrets, read from environment variables at run time; read as `${{ secrets.NAME }}` by steps whose plugin is granted them.",
                "type": ["object", "null"],
                "propertyNames": { "$ref": "#/definitions/identifier" },
                "additionalProperties": { "$ref": "#/definitions/secret" }
            },
            "plugins": {
                "description": "Plugin aliases: where each plugin comes from and what it may use.",
                "type": ["object", "null"],
                "propertyNames": { "$ref": "#/definitions/stepId" },
                "additionalProperties": { "$ref": "#/definitions/plugin" }
            },
            "sites": {
                "description": "Named places plugins work on when granted: folders holding a platform's files (a VMware VM's `.vmx` and VMDKs, a storage account laid out as folders) or Azure Blob Storage containers.",
                "type": ["object", "null"],
                "propertyNames": { "$ref": "#/definitions/stepId" },
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": false,
                    "oneOf": [
                        { "required": ["path"], "not": { "anyOf": [{ "required": ["url"] }, { "required": ["key"] }, { "required": ["ca_file"] }, { "required": ["insecure_http"] }] } },
                        { "required": ["url", "key"], "not": { "required": ["path"] } }
                    ],
                    "properties": {
                        "path": {
                            "description": "A folder, relative to the workflow file; may use `${{ inputs.NAME }}` and `${{ vars.NAME }}`.",
                            "type": "string"
                        },
                        "url": {
                            "description": "An Azure Blob container: `https://ACCOUNT.blob.core.windows.net/CONTAINER` (Azurite: `https://127.0.0.1:PORT/ACCOUNT/CONTAINER`; plain http:// only with `insecure_http`); may use inputs and vars.",
                            "type": "string"
                        },
                        "key": {
                            "description": "With `url`: the declared secret holding the storage account key.",
                            "$ref": "#/definitions/identifier"
                        },
                        "ca_file": {
                            "description": "With `url`: a PEM file of CA certificates to trust for the endpoint besides the system's (relative to the workflow file).",
                            "type": "string"
                        },
                        "insecure_http": {
                            "description": "With `url`: allow a plain http:// endpoint; only for an emulator on 127.0.0.1 (default false: https:// is required).",
                            "type": "boolean"
                        },
                        "doc": { "description": "What the site is.", "type": "string" }
                    }
                }
            },
            "vault": {
                "description": "Where recovery points are kept: encrypted, deduplicated (docs/vault-format.md).",
                "type": "object",
                "additionalProperties": false,
                "required": ["url"],
                "properties": {
                    "url": {
                        "description": "A folder (relative to the workflow file), `s3://bucket/prefix?endpoint=…` or `azblob://container/prefix?endpoint=…`; may use inputs and vars.",
                        "type": "string"
                    },
                    "key": {
                        "description": "A declared secret holding the vault key. With neither `key` nor `key_file`: LIFEBOAT_VAULT_KEY or LIFEBOAT_VAULT_KEY_FILE.",
                        "$ref": "#/definitions/identifier"
                    },
                    "key_file": {
                        "description": "A file holding the vault key, relative to the workflow file; may use inputs and vars.",
                        "type": "string"
                    }
                }
            },
            "steps": {
                "description": "The steps, in file order; they run after everything they need.",
                "type": "array",
                "minItems": 1,
                "items": { "$ref": "#/definitions/step" }
            }
        },
        "definitions": {
            "identifier": {
                "type": "string",
                "pattern": "^[A-Za-z_][A-Za-z0-9_-]*$"
            },
            "stepId": {
                "type": "string",
                "pattern": "^[a-z][a-z0-9_-]*$"
            },
            "expression": {
                "description": "A single `${{ … }}` expression.",
                "type": "string",
                "pattern": expr
            },
            "template": {
                "description": "Any value; strings may hold `${{ … }}` expressions (`$${{` for a literal `${{`)."
            },
            "duration": {
                "description": "A duration: a number and a unit, e.g. `500ms`, `30s`, `5m`, `1h 30m`.",
                "type": "string",
                "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zµ]+(\s*[0-9]+(\.[0-9]+)?\s*[a-zµ]+)*\s*$"
            },
            "memory": {
                "description": "A memory size: a whole number and a unit (B, KiB, MiB, GiB), e.g. `64MiB`.",
                "type": "string",
                "pattern": r"^[0-9]+ ?(B|KiB|MiB|GiB)$"
            },
            "input": {
                "type": ["object", "null"],
                "additionalProperties": false,
                "properties": {
                    "type": {
                        "description": "The input's type (default `string`).",
                        "enum": ["string", "integer", "number", "boolean", "list", "object", "any"]
                    },
                    "required": {
                        "description": "Whether the input must be given (then it has no default).",
                        "type": "boolean"
                    },
                    "default": {
                        "description": "Value when the input is not given; a literal of the input's type."
                    },
                    "doc": {
                        "description": "What the input is for.",
                        "type": "string"
                    }
                }
            },
            "secret": {
                "type": "object",
                "additionalProperties": false,
                "required": ["env"],
                "properties": {
                    "env": {
                        "description": "The environment variable holding the secret at run time.",
                        "type": "string",
                        "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"
                    }
                }
            },
            "plugin": plugin(),
            "step": step()
        }
    })
}

fn plugin() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["source"],
        "properties": {
            "source": {
                "description": "`builtin:NAME` for a bundled plugin, or the path of a `.wasm` component relative to the workflow file.",
                "type": "string",
                "pattern": r"^(builtin:[A-Za-z0-9_-]+|.*\.wasm)$"
            },
            "grants": {
                "description": "What the plugin may use; nothing is granted by default.",
                "type": ["object", "null"],
                "additionalProperties": false,
                "properties": {
                    "http": {
                        "description": "Hosts the plugin may call: `host`, `host:port`, `*.domain`, `*.domain:port`.",
                        "type": "array",
                        "items": {
                            "type": "string",
                            "pattern": r"^(\*\.)?([A-Za-z0-9-]+\.)*[A-Za-z0-9-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$"
                        }
                    },
                    "insecure_http": {
                        "description": "Allow plain http:// (not encrypted) to the granted hosts, which must all be this machine (127.0.0.1, ::1, localhost): for an emulator. Without it every request must be https://.",
                        "type": "boolean"
                    },
                    "secrets": {
                        "description": "Declared secrets the plugin's steps may receive.",
                        "type": "array",
                        "items": { "$ref": "#/definitions/identifier" }
                    },
                    "sites": {
                        "description": "Declared sites the plugin may use: `read` (files, disks) or `write` (also write files and restored images).",
                        "type": "object",
                        "propertyNames": { "$ref": "#/definitions/stepId" },
                        "additionalProperties": { "enum": ["read", "write"] }
                    },
                    "vault": {
                        "description": "The workflow's vault: `read` (list points, restore them) or `write` (also ship and seal).",
                        "enum": ["read", "write"]
                    }
                }
            },
            "limits": {
                "description": "Resource limits of the plugin's sandbox.",
                "type": ["object", "null"],
                "additionalProperties": false,
                "properties": {
                    "memory": { "$ref": "#/definitions/memory" },
                    "timeout": {
                        "description": "Default deadline of one plugin call.",
                        "$ref": "#/definitions/duration"
                    }
                }
            }
        }
    })
}

fn step() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["id", "uses"],
        "properties": {
            "id": {
                "description": "Unique id of the step; other steps read its outputs as `${{ steps.ID.outputs.NAME }}`.",
                "$ref": "#/definitions/stepId"
            },
            "uses": {
                "description": "`ALIAS/STEP`: a plugin alias declared under `plugins:` and one of its steps.",
                "type": "string",
                "pattern": "^[a-z][a-z0-9_-]*/[^/\\s]+$"
            },
            "with": {
                "description": "Inputs of the plugin step.",
                "type": ["object", "null"],
                "additionalProperties": { "$ref": "#/definitions/template" }
            },
            "needs": {
                "description": "Steps that must finish first (references to `steps.ID` add dependencies by themselves).",
                "oneOf": [
                    { "$ref": "#/definitions/stepId" },
                    { "type": "array", "items": { "$ref": "#/definitions/stepId" } }
                ]
            },
            "if": {
                "description": "Run the step (or, with `for_each`, the item) only when this is true.",
                "oneOf": [
                    { "type": "boolean" },
                    { "$ref": "#/definitions/expression" }
                ]
            },
            "for_each": {
                "description": "Run the step once per item of a list; `item` and `index` are bound.",
                "oneOf": [
                    { "type": "array" },
                    { "$ref": "#/definitions/expression" }
                ]
            },
            "timeout": {
                "description": "Deadline of each plugin call of this step (overrides the plugin's limit).",
                "$ref": "#/definitions/duration"
            },
            "retry": {
                "description": "Retry policy: a number of attempts, or attempts and backoff.",
                "oneOf": [
                    { "type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS },
                    {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "attempts": { "type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS },
                            "backoff": {
                                "description": format!("Wait before the first retry (default {}s); doubles for each further attempt.", DEFAULT_BACKOFF.as_secs()),
                                "$ref": "#/definitions/duration"
                            }
                        }
                    }
                ]
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::parse::{
        GRANT_FIELDS, INPUT_FIELDS, LIMIT_FIELDS, PLUGIN_FIELDS, RETRY_FIELDS, SECRET_FIELDS,
        STEP_FIELDS, TOP_FIELDS, TYPE_NAMES,
    };

    fn keys(v: &Value) -> Vec<String> {
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The schema and the checker accept exactly the same field names.
    #[test]
    fn fields_match_the_checker() {
        let s = json_schema();
        let d = &s["definitions"];
        let cases: [(&[&str], &Value); 8] = [
            (TOP_FIELDS, &s["properties"]),
            (INPUT_FIELDS, &d["input"]["properties"]),
            (SECRET_FIELDS, &d["secret"]["properties"]),
            (PLUGIN_FIELDS, &d["plugin"]["properties"]),
            (
                GRANT_FIELDS,
                &d["plugin"]["properties"]["grants"]["properties"],
            ),
            (
                LIMIT_FIELDS,
                &d["plugin"]["properties"]["limits"]["properties"],
            ),
            (STEP_FIELDS, &d["step"]["properties"]),
            (
                RETRY_FIELDS,
                &d["step"]["properties"]["retry"]["oneOf"][1]["properties"],
            ),
        ];
        for (fields, props) in cases {
            assert_eq!(keys(props), fields.to_vec(), "{props}");
        }
        let types: Vec<&str> = d["input"]["properties"]["type"]["enum"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(types, TYPE_NAMES);
    }
}
