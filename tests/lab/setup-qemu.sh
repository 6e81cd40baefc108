#!/usr/bin/env bash
# Install what the recovery lab needs to build its test disk and boot it in
# QEMU (TCG software emulation, no KVM needed), on a Debian bookworm machine.
#
# Idempotent: when everything is already there it only checks and says so.
# Run as root:  bash tests/lab/setup-qemu.sh
#
# QEMU comes from bookworm-backports, for both qemu-utils and
# qemu-system-x86: installing qemu-system-x86 from plain bookworm would
# replace the newer backports qemu-utils. The backports suite is added as a
# deb822 source that reuses the mirror URI and keyring already configured in
# /etc/apt/sources.list.d/debian.sources, so no mirror host is named here.
set -euo pipefail

# depmod, mkfs.fat and sfdisk live in sbin.
PATH=$PATH:/usr/sbin:/sbin

die() { echo "setup-qemu.sh: $*" >&2; exit 1; }

# Commands that the lab needs, and the Debian package that provides each.
# (qemu-system-x86_64 and qemu-img are installed from backports, below.)
declare -A TOOL_PKG=(
  [syslinux]=syslinux
  [mcopy]=mtools
  [mmd]=mtools
  [mkfs.fat]=dosfstools
  [sfdisk]=fdisk
  [cpio]=cpio
  [depmod]=kmod
  [dpkg-deb]=dpkg
  [gzip]=gzip
)
# Files (not commands) the lab needs.
declare -A FILE_PKG=(
  [/bin/busybox]=busybox-static
  [/usr/lib/syslinux/mbr/mbr.bin]=syslinux-common
)
BACKPORTS_PKGS=(qemu-utils qemu-system-x86)
SOURCES=/etc/apt/sources.list.d/debian.sources
BPO_SOURCES=/etc/apt/sources.list.d/lifeboat-backports.sources

have_busybox_static() {
  # busybox (dynamic) also ships /bin/busybox; the initramfs needs the static one.
  dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'
}

missing_pkgs=()
for tool in "${!TOOL_PKG[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing_pkgs+=("${TOOL_PKG[$tool]}")
done
for f in "${!FILE_PKG[@]}"; do
  [[ -e "$f" ]] || missing_pkgs+=("${FILE_PKG[$f]}")
done
have_busybox_static || missing_pkgs+=(busybox-static)

need_qemu=0
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_qemu=1
command -v qemu-img >/dev/null 2>&1 || need_qemu=1

if [[ ${#missing_pkgs[@]} -eq 0 && $need_qemu -eq 0 ]]; then
  echo "setup-qemu.sh: everything is installed:"
  echo "  $(qemu-system-x86_64 --version | head -n1)"
  echo "  $(qemu-img --version | head -n1)"
  echo "  $(syslinux --version 2>&1 | head -n1)"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root to install: ${missing_pkgs[*]} ${BACKPORTS_PKGS[*]}"
export DEBIAN_FRONTEND=noninteractive

if [[ $need_qemu -eq 1 ]]; then
  [[ -f $SOURCES ]] || die "$SOURCES not found: cannot derive the bookworm-backports source"
  # First "URIs:" value and first "Signed-By:" value of the existing deb822 file.
  uri=$(sed -n 's/^[Uu][Rr][Ii][Ss]:[[:space:]]*\([^[:space:]]*\).*/\1/p' "$SOURCES" | head -n1)
  signed_by=$(sed -n 's/^[Ss]igned-[Bb]y:[[:space:]]*\(.*[^[:space:]]\)[[:space:]]*$/\1/p' "$SOURCES" | head -n1)
  [[ -n $uri ]] || die "no URIs: line in $SOURCES"
  want=$(
    echo "# Added by lifeboat tests/lab/setup-qemu.sh (QEMU for the recovery lab)."
    echo "Types: deb"
    echo "URIs: $uri"
    echo "Suites: bookworm-backports"
    echo "Components: main"
    if [[ -n $signed_by ]]; then echo "Signed-By: $signed_by"; fi
  )
  if [[ ! -f $BPO_SOURCES || "$(cat "$BPO_SOURCES")" != "$want" ]]; then
    printf '%s\n' "$want" > "$BPO_SOURCES"
    echo "setup-qemu.sh: wrote $BPO_SOURCES (URIs: $uri)"
  fi
fi

echo "setup-qemu.sh: apt-get update"
apt-get update -q

if [[ $need_qemu -eq 1 ]]; then
  echo "setup-qemu.sh: installing ${BACKPORTS_PKGS[*]} from bookworm-backports"
  apt-get install -y -q --no-install-recommends -t bookworm-backports "${BACKPORTS_PKGS[@]}"
fi
if [[ ${#missing_pkgs[@]} -gt 0 ]]; then
  # shellcheck disable=SC2207
  uniq_pkgs=($(printf '%s\n' "${missing_pkgs[@]}" | sort -u))
  echo "setup-qemu.sh: installing ${uniq_pkgs[*]}"
  apt-get install -y -q --no-install-recommends "${uniq_pkgs[@]}"
fi

# Check again: everything must be there now.
for tool in qemu-system-x86_64 qemu-img "${!TOOL_PKG[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || die "still missing after install: $tool"
done
for f in "${!FILE_PKG[@]}"; do
  [[ -e "$f" ]] || die "still missing after install: $f"
done
have_busybox_static || die "still missing after install: busybox-static"
echo "setup-qemu.sh: done:"
echo "  $(qemu-system-x86_64 --version | head -n1)"
echo "  $(qemu-img --version | head -n1)"
