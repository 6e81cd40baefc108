# Shared helpers for the recovery-lab scripts (sourced, not run).
# shellcheck shell=bash

LAB_SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_REPO=$(cd "$LAB_SCRIPT_DIR/../.." && pwd)
# shellcheck disable=SC2034  # used by the scripts that source this file
LAB_CACHE=${LIFEBOAT_LAB_CACHE:-$LAB_REPO/target/tools/lab}
LAB_NAME=$(basename "$0")
# mkfs.fat, sfdisk, depmod live in sbin, which a non-root PATH may lack.
PATH=$PATH:/usr/sbin:/sbin

die() {
  echo "$LAB_NAME: error: $*" >&2
  exit 1
}

# need_tools CMD... : fail naming every missing command and the fix.
need_tools() {
  local missing=() t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    die "missing tool(s): ${missing[*]}; install them with: sudo bash tests/lab/setup-qemu.sh"
  fi
}

# need_file PATH WHAT : fail naming a missing file and the fix.
need_file() {
  [[ -e $1 ]] || die "missing $2 ($1); install it with: sudo bash tests/lab/setup-qemu.sh"
}

# part_offset DISK : byte offset of the first MBR partition of a raw disk.
part_offset() {
  local disk=$1 sig lba
  sig=$(od -An -tx1 -j510 -N2 "$disk" | tr -d ' \n')
  [[ $sig == 55aa ]] || die "$disk has no MBR partition table (boot signature is '$sig', not 55aa)"
  lba=$(od -An -tu4 -j454 -N4 "$disk" | tr -d ' \n')
  [[ -n $lba && $lba -gt 0 ]] || die "$disk: first MBR partition has no start sector"
  echo $((lba * 512))
}

# check_state STATE : the state must be one non-empty line.
check_state() {
  [[ -n $1 ]] || die "STATE must not be empty"
  [[ $1 != *$'\n'* && $1 != *$'\r'* ]] || die "STATE must be a single line"
}
