//! The run journal: one JSON record per line, appended and fsynced before
//! and after every action, so a killed run can be resumed without redoing
//! finished work. A torn last line (killed mid-write) is ignored.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use lifeboat_contract::Action;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::EngineError;

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Record {
    RunStarted {
        plan_digest: String,
    },
    /// A deferred instance was planned during apply.
    StepPlanned {
        step: String,
        actions: Vec<Action>,
        outputs: IndexMap<String, Value>,
    },
    ActionStarted {
        step: String,
        action: usize,
        attempt: u32,
    },
    ActionDone {
        step: String,
        action: usize,
        outputs: IndexMap<String, Value>,
    },
    ActionFailed {
        step: String,
        action: usize,
        attempt: u32,
        error: String,
    },
    StepSkipped {
        step: String,
        reason: String,
    },
    RunFinished {
        ok: bool,
    },
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Open (or create) for appending.
    pub fn open(path: &Path) -> Result<Journal, EngineError> {
        let mut opts = OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(path).map_err(|e| EngineError::io(path, e))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Append one record durably.
    pub fn write(&mut self, r: &Record) -> Result<(), EngineError> {
        let mut line = serde_json::to_string(r).map_err(|e| EngineError::Journal(e.to_string()))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| EngineError::io(&self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| EngineError::io(&self.path, e))
    }

    /// Read every complete record.
    pub fn read(path: &Path) -> Result<Vec<Record>, EngineError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(EngineError::io(path, e)),
        };
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(r) => out.push(r),
                // Only the last line may be torn by a kill.
                Err(_) if i + 1 == lines.len() => break,
                Err(e) => {
                    return Err(EngineError::Journal(format!(
                        "{}:{}: unreadable journal record: {e}",
                        path.display(),
                        i + 1
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// What a journal says about earlier attempts of this run.
#[derive(Debug, Default, Clone)]
pub struct Replay {
    pub planned: IndexMap<String, (Vec<Action>, IndexMap<String, Value>)>,
    pub done: IndexMap<(String, usize), IndexMap<String, Value>>,
    pub finished: Option<bool>,
    pub plan_digest: Option<String>,
}

impl Replay {
    pub fn from_records(records: &[Record]) -> Replay {
        let mut r = Replay::default();
        for rec in records {
            match rec {
                Record::RunStarted { plan_digest } => r.plan_digest = Some(plan_digest.clone()),
                Record::StepPlanned {
                    step,
                    actions,
                    outputs,
                } => {
                    r.planned
                        .insert(step.clone(), (actions.clone(), outputs.clone()));
                }
                Record::ActionDone {
                    step,
                    action,
                    outputs,
                } => {
                    r.done.insert((step.clone(), *action), outputs.clone());
                }
                Record::RunFinished { ok } => r.finished = Some(*ok),
                _ => {}
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_ignored_but_torn_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        let mut j = Journal::open(&p).unwrap();
        j.write(&Record::RunStarted {
            plan_digest: "d".into(),
        })
        .unwrap();
        j.write(&Record::ActionDone {
            step: "a".into(),
            action: 0,
            outputs: IndexMap::new(),
        })
        .unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"event\":\"action-do").unwrap();
        let recs = Journal::read(&p).unwrap();
        assert_eq!(recs.len(), 2);
        let replay = Replay::from_records(&recs);
        assert!(replay.done.contains_key(&("a".to_string(), 0)));
        f.write_all(b"\n{\"event\":\"run-finished\",\"ok\":true}\n")
            .unwrap();
        assert!(Journal::read(&p).is_err());
    }
}
