//! Choosing the recovery point to fail over to.

use lifeboat_plugin_sdk::StepError;
use lifeboat_plugin_sdk::transfer::PointInfo;
use serde::{Deserialize, Serialize};

use crate::source::SourceVm;

/// A disk of the chosen point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChosenDisk {
    pub name: String,
    pub virtual_size: u64,
}

/// The `point` output of `recovery-point` (and input of `create-vm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chosen {
    pub id: String,
    pub created: String,
    pub consistency: String,
    pub disks: Vec<ChosenDisk>,
    /// The VM's configuration recorded with the point.
    pub vm: serde_json::Value,
}

fn listing(points: &[PointInfo]) -> String {
    points
        .iter()
        .map(|p| format!("{} ({}, {})", p.id, p.created, p.consistency))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The point `want` names among `points` (oldest first): `latest` (or
/// empty), an id, or a unique prefix of one.
pub fn choose<'a>(
    vm: &str,
    points: &'a [PointInfo],
    want: &str,
) -> Result<&'a PointInfo, StepError> {
    let Some(last) = points.last() else {
        return Err(StepError::new(
            "not-found",
            format!(
                "VM {vm:?} has no recovery points in the vault: run its replication first \
                 (e.g. `lifeboat run workflows/vmware-to-azure/replicate.yaml`), or check the `vm` input"
            ),
        ));
    };
    let want = want.trim();
    if want.is_empty() || want == "latest" {
        return Ok(last);
    }
    if let Some(p) = points.iter().find(|p| p.id == want) {
        return Ok(p);
    }
    let hits: Vec<&PointInfo> = points.iter().filter(|p| p.id.starts_with(want)).collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(StepError::new(
            "not-found",
            format!(
                "VM {vm:?} has no recovery point {want:?}; its points, oldest first: {}; \
                 set `point` to one of these ids (or a unique prefix), or `latest`",
                listing(points)
            ),
        )),
        many => Err(StepError::invalid_input(format!(
            "point {want:?} is ambiguous: it starts {} ids of VM {vm:?} ({}); give more characters",
            many.len(),
            many.iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The step's output for a point, checking that it carries the VM's
/// configuration a failover needs.
pub fn chosen(p: &PointInfo) -> Result<Chosen, StepError> {
    let vm =
        SourceVm::from_value(&format!("the `meta` of point {}", p.id), &p.meta).map_err(|e| {
            StepError::invalid_input(format!(
                "{}; the point was sealed without the VM's configuration, which a failover needs \
                 to rebuild the VM (the source plugin's `snapshot` records it)",
                e.message
            ))
        })?;
    if vm.name != p.vm {
        return Err(StepError::invalid_input(format!(
            "point {} belongs to VM {:?} but records the configuration of {:?}",
            p.id, p.vm, vm.name
        )));
    }
    // The VM's controller order (a point lists its disks in no set order),
    // then any disk the configuration does not name, by name.
    let mut disks: Vec<ChosenDisk> = p
        .disks
        .iter()
        .map(|d| ChosenDisk {
            name: d.name.clone(),
            virtual_size: d.virtual_size,
        })
        .collect();
    let rank = |name: &str| vm.disks.iter().position(|d| d.name == name);
    disks.sort_by(|a, b| {
        (rank(&a.name).unwrap_or(usize::MAX), &a.name)
            .cmp(&(rank(&b.name).unwrap_or(usize::MAX), &b.name))
    });
    Ok(Chosen {
        id: p.id.clone(),
        created: p.created.clone(),
        consistency: p.consistency.clone(),
        disks,
        vm: p.meta.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_plugin_sdk::transfer::PointDisk;

    fn point(id: &str, created: &str) -> PointInfo {
        PointInfo {
            id: id.into(),
            vm: "web01".into(),
            created: created.into(),
            consistency: "crash".into(),
            parent: None,
            disks: vec![PointDisk {
                name: "scsi0:0".into(),
                virtual_size: 64 << 20,
                data_bytes: 1,
                changes: "full".into(),
            }],
            meta: serde_json::json!({"name": "web01", "cpus": 2, "memory_mib": 4096,
                "disks": [{"name": "scsi0:0", "size_bytes": 67108864}], "nics": []}),
        }
    }

    #[test]
    fn latest_id_and_prefix() {
        let pts = vec![
            point("aa11", "2025-01-01T00:00:00Z"),
            point("ab22", "2025-01-02T00:00:00Z"),
        ];
        assert_eq!(choose("web01", &pts, "latest").unwrap().id, "ab22");
        assert_eq!(choose("web01", &pts, "").unwrap().id, "ab22");
        assert_eq!(choose("web01", &pts, "aa11").unwrap().id, "aa11");
        assert_eq!(choose("web01", &pts, "aa").unwrap().id, "aa11");
        let e = choose("web01", &pts, "a").unwrap_err();
        assert_eq!(e.code, "invalid-input");
        assert!(
            e.message.contains("ambiguous") && e.message.contains("aa11, ab22"),
            "{e}"
        );
        let e = choose("web01", &pts, "ff").unwrap_err();
        assert_eq!(e.code, "not-found");
        assert!(
            e.message.contains("no recovery point \"ff\"")
                && e.message
                    .contains("aa11 (2025-01-01T00:00:00Z, crash), ab22"),
            "{e}"
        );
        let e = choose("web01", &[], "latest").unwrap_err();
        assert_eq!(e.code, "not-found");
        assert!(e.message.contains("has no recovery points"), "{e}");
        assert!(e.message.contains("replication first"), "{e}");
    }

    #[test]
    fn chosen_lists_disks_in_controller_order() {
        let mut p = point("aa11", "t");
        let disk = |name: &str| PointDisk {
            name: name.into(),
            virtual_size: 1 << 20,
            data_bytes: 0,
            changes: "full".into(),
        };
        p.disks = vec![disk("zz"), disk("scsi0:1"), disk("aa"), disk("scsi0:0")];
        p.meta["disks"] = serde_json::json!([{"name": "scsi0:0"}, {"name": "scsi0:1"}]);
        let names: Vec<String> = chosen(&p)
            .unwrap()
            .disks
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["scsi0:0", "scsi0:1", "aa", "zz"]);
    }

    #[test]
    fn chosen_needs_the_configuration() {
        let p = point("aa11", "t");
        let c = chosen(&p).unwrap();
        assert_eq!(c.disks[0].virtual_size, 64 << 20);
        assert_eq!(c.vm["cpus"], 2);
        let mut bare = p.clone();
        bare.meta = serde_json::json!({});
        let e = chosen(&bare).unwrap_err();
        assert!(
            e.message.contains("sealed without the VM's configuration"),
            "{e}"
        );
        let mut other = p;
        other.vm = "db01".into();
        assert!(chosen(&other).unwrap_err().message.contains("\"db01\""));
    }
}
