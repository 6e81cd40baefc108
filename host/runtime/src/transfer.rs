//! Host side of the `transfer` interface: converts between the generated
//! bindings and [`lifeboat_contract::transfer`], refuses writing calls while
//! planning, and answers `not-granted` when the workflow granted nothing.
//!
//! Errors the host implementation returns go back to the plugin as a
//! `step-error` (the plugin decides what to do); only a host bug would trap.

use lifeboat_contract::StepError;
use lifeboat_contract::transfer as c;

use crate::bindings::lifeboat::plugin::transfer as w;
use crate::bindings::lifeboat::plugin::types as wit;
use crate::sandbox::{HostState, Phase};

type R<T> = wasmtime::Result<Result<T, wit::StepError>>;

fn err(e: StepError) -> wit::StepError {
    wit::StepError {
        code: e.code,
        message: e.message,
        retryable: e.retryable,
    }
}

fn extent_in(e: w::Extent) -> c::Extent {
    c::Extent {
        offset: e.offset,
        length: e.length,
        kind: match e.kind {
            w::ExtentKind::Data => c::ExtentKind::Data,
            w::ExtentKind::Cleared => c::ExtentKind::Cleared,
        },
    }
}

fn extent_out(e: c::Extent) -> w::Extent {
    w::Extent {
        offset: e.offset,
        length: e.length,
        kind: match e.kind {
            c::ExtentKind::Data => w::ExtentKind::Data,
            c::ExtentKind::Cleared => w::ExtentKind::Cleared,
        },
    }
}

fn point_out(p: c::PointInfo) -> w::PointInfo {
    w::PointInfo {
        id: p.id,
        vm: p.vm,
        created: p.created,
        consistency: p.consistency,
        parent: p.parent,
        meta: p.meta.to_string(),
        disks: p
            .disks
            .into_iter()
            .map(|d| w::PointDisk {
                name: d.name,
                virtual_size: d.virtual_size,
                data_bytes: d.data_bytes,
                changes: d.changes,
            })
            .collect(),
    }
}

impl HostState {
    /// The granted implementation, or the `not-granted` error naming what to add.
    fn transfer(&self, what: &str) -> Result<std::sync::Arc<dyn c::Transfer>, wit::StepError> {
        self.transfer.clone().ok_or_else(|| wit::StepError {
            code: "not-granted".into(),
            message: format!(
                "plugin `{}` called transfer.{what}, but the workflow grants it no sites and no vault; add `grants: {{ sites: {{ NAME: read }}, vault: write }}` to the plugin",
                self.plugin
            ),
            retryable: false,
        })
    }

    /// Writing calls are refused while planning.
    fn writing(&self, what: &str) -> Result<(), wit::StepError> {
        if self.phase == Phase::Apply {
            return Ok(());
        }
        Err(wit::StepError {
            code: "denied".into(),
            message: format!(
                "transfer.{what} changes the world and is refused during {}; plan an action and call it from apply",
                self.phase.as_str()
            ),
            retryable: false,
        })
    }
}

impl w::Host for HostState {
    async fn read_file(&mut self, site: String, path: String) -> R<String> {
        let t = match self.transfer("read-file") {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(t.read_file(&site, &path).await.map_err(err))
    }

    async fn list_dir(&mut self, site: String, path: String) -> R<Vec<String>> {
        let t = match self.transfer("list-dir") {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(t.list_dir(&site, &path).await.map_err(err))
    }

    async fn write_file(&mut self, site: String, path: String, contents: String) -> R<()> {
        let t = match self
            .writing("write-file")
            .and_then(|()| self.transfer("write-file"))
        {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(t.write_file(&site, &path, contents).await.map_err(err))
    }

    async fn inspect_disk(&mut self, site: String, path: String) -> R<w::DiskInfo> {
        let t = match self.transfer("inspect-disk") {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(t.inspect_disk(&site, &path)
            .await
            .map(|d| w::DiskInfo {
                format: d.format,
                virtual_size: d.virtual_size,
                allocated: d.allocated,
            })
            .map_err(err))
    }

    async fn allocated_extents(&mut self, site: String, path: String) -> R<Vec<w::Extent>> {
        let t = match self.transfer("allocated-extents") {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(t.allocated_extents(&site, &path)
            .await
            .map(|v| v.into_iter().map(extent_out).collect())
            .map_err(err))
    }

    async fn points(&mut self, vm: String) -> R<Vec<w::PointInfo>> {
        let t = match self.transfer("points") {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(t.points(&vm)
            .await
            .map(|v| v.into_iter().map(point_out).collect())
            .map_err(err))
    }

    async fn ship(&mut self, request: w::ShipRequest) -> R<w::ShipResult> {
        let t = match self.writing("ship").and_then(|()| self.transfer("ship")) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let req = c::ShipRequest {
            vm: request.vm,
            disk: request.disk,
            site: request.site,
            path: request.path,
            changes: match request.changes {
                w::Changes::Full => c::Changes::Full,
                w::Changes::Extents(l) => {
                    c::Changes::Extents(l.into_iter().map(extent_in).collect())
                }
                w::Changes::HashCompare => c::Changes::HashCompare,
                w::Changes::Bitmap(b) => c::Changes::Bitmap(b),
            },
        };
        Ok(t.ship(req)
            .await
            .map(|r| w::ShipResult {
                staged: r.staged,
                virtual_size: r.virtual_size,
                bytes_read: r.bytes_read,
                bytes_new: r.bytes_new,
                bytes_stored: r.bytes_stored,
                extents: r.extents,
            })
            .map_err(err))
    }

    async fn seal(
        &mut self,
        vm: String,
        staged: Vec<String>,
        consistency: String,
        meta: String,
    ) -> R<w::PointInfo> {
        let t = match self.writing("seal").and_then(|()| self.transfer("seal")) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let meta = match meta.trim() {
            "" => serde_json::Value::Object(Default::default()),
            m => match serde_json::from_str::<serde_json::Value>(m) {
                Ok(v @ serde_json::Value::Object(_)) => v,
                _ => {
                    return Ok(Err(wit::StepError {
                        code: "invalid-input".into(),
                        message: "transfer.seal: `meta` must be a JSON object".into(),
                        retryable: false,
                    }));
                }
            },
        };
        Ok(t.seal(&vm, staged, &consistency, meta)
            .await
            .map(point_out)
            .map_err(err))
    }

    async fn prune(&mut self, vm: String, keep_last: u32) -> R<w::PruneResult> {
        let t = match self.writing("prune").and_then(|()| self.transfer("prune")) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(t.prune(&vm, keep_last)
            .await
            .map(|r| w::PruneResult {
                removed: r.removed,
                kept: r.kept,
                bytes_before: r.bytes_before,
                bytes_after: r.bytes_after,
            })
            .map_err(err))
    }

    async fn snapshot_disk(&mut self, site: String, path: String) -> R<String> {
        let t = match self
            .writing("snapshot-disk")
            .and_then(|()| self.transfer("snapshot-disk"))
        {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(t.snapshot_disk(&site, &path).await.map_err(err))
    }

    async fn changed_extents(
        &mut self,
        site: String,
        path: String,
        since: String,
    ) -> R<Vec<w::Extent>> {
        let t = match self.transfer("changed-extents") {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(t.changed_extents(&site, &path, &since)
            .await
            .map(|v| v.into_iter().map(extent_out).collect())
            .map_err(err))
    }

    async fn delete_snapshot(&mut self, site: String, path: String, snapshot: String) -> R<()> {
        let t = match self
            .writing("delete-snapshot")
            .and_then(|()| self.transfer("delete-snapshot"))
        {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(t.delete_snapshot(&site, &path, &snapshot)
            .await
            .map_err(err))
    }

    async fn boot_check(
        &mut self,
        site: String,
        path: String,
        format: String,
        marker: String,
        timeout_ms: u32,
    ) -> R<w::BootReport> {
        let t = match self
            .writing("boot-check")
            .and_then(|()| self.transfer("boot-check"))
        {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let timeout = std::time::Duration::from_millis(u64::from(timeout_ms));
        Ok(t.boot_check(&site, &path, &format, &marker, timeout)
            .await
            .map(|r| w::BootReport {
                line: r.line,
                seconds: r.seconds,
            })
            .map_err(err))
    }

    async fn restore(&mut self, request: w::RestoreRequest) -> R<w::RestoreResult> {
        let t = match self
            .writing("restore")
            .and_then(|()| self.transfer("restore"))
        {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let req = c::RestoreRequest {
            vm: request.vm,
            point: request.point,
            disk: request.disk,
            site: request.site,
            path: request.path,
            format: request.format,
        };
        Ok(t.restore(req)
            .await
            .map(|r| w::RestoreResult {
                point: r.point,
                virtual_size: r.virtual_size,
                file_size: r.file_size,
                bytes_written: r.bytes_written,
            })
            .map_err(err))
    }
}
