#!/usr/bin/env bash
# run.sh — the vault benchmark on the standard workload, with restic, borg and rsync anchors.
#
#   host/vault/bench/run.sh [BASE.img INCR.img CHANGED-EXTENTS.txt]
#
# Without arguments it uses $OUT (default $TMPDIR/lifeboat-bench), building the workload with
# shared/bench/make-workload.sh when it is missing (2 GiB image, 3 % churn, true changed
# extents). Installs the anchors (restic, borgbackup, rsync, GNU time) from Debian if needed,
# builds the bench binary in release mode and prints one table. The workload is never committed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
OUT=${OUT:-${TMPDIR:-/tmp}/lifeboat-bench}

if [ $# -ge 3 ]; then
  BASE=$1 INCR=$2 CHANGED=$3
else
  BASE=$OUT/base.img INCR=$OUT/incr.img CHANGED=$OUT/changed-extents.txt
  if [ ! -f "$CHANGED" ]; then
    MW=""
    for c in "${LIFEBOAT_WORKLOAD_SCRIPT:-}" "$ROOT/../shared/bench/make-workload.sh" /work/shared/bench/make-workload.sh; do
      if [ -n "$c" ] && [ -f "$c" ]; then MW=$c; break; fi
    done
    [ -n "$MW" ] || { echo "make-workload.sh not found: set LIFEBOAT_WORKLOAD_SCRIPT" >&2; exit 2; }
    command -v zstd >/dev/null || apt-get install -y -q zstd >/dev/null
    OUT=$OUT bash "$MW"
  fi
fi

need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
command -v rsync >/dev/null || need+=(rsync)
[ -x /usr/bin/time ] || need+=(time)
command -v qemu-img >/dev/null || need+=(qemu-utils)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

cd "$ROOT"
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target} cargo build -q --release -p lifeboat-vault --bin lifeboat-vault-bench
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/lifeboat-vault-bench
echo "restic $(restic version 2>/dev/null | awk '{print $2}'), $(borg --version 2>/dev/null), $(rsync --version | head -1 | awk '{print $1, $3}')"
exec "$BIN" bench "$BASE" "$INCR" "$CHANGED" --work "$(dirname "$BASE")/vault-bench-work"
