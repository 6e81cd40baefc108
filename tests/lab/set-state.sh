#!/usr/bin/env bash
# Rewrite /lifeboat/state inside a lab disk built by make-boot-disk.sh,
# in place, with mtools (no mounts, no root): simulates "the guest's data
# changed" between two recovery points.
#
# Usage: tests/lab/set-state.sh DISK.raw STATE
set -euo pipefail
# shellcheck source=tests/lab/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -eq 2 ]] || die "usage: $LAB_NAME DISK.raw STATE"
disk=$1 state=$2
check_state "$state"
[[ -f $disk ]] || die "disk $disk not found"
need_tools mcopy od

offset=$(part_offset "$disk")
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
printf '%s\n' "$state" > "$tmp"
export MTOOLS_SKIP_CHECK=1
mcopy -o -i "$disk@@$offset" "$tmp" ::/lifeboat/state \
  || die "could not write /lifeboat/state in the FAT partition of $disk (offset $offset)"
echo "$LAB_NAME: $disk: /lifeboat/state = $state"
