#!/usr/bin/env bash
# Build a tiny bootable Linux disk for the recovery lab, without root mounts
# or loop devices.
#
# Usage: tests/lab/make-boot-disk.sh OUT.raw STATE
#
# The disk is a raw image (64 MiB by default; LIFEBOAT_LAB_DISK_MIB) with an
# MBR (syslinux's mbr.bin) and one active FAT32 partition holding syslinux, a
# Debian kernel, a busybox-static initramfs and the file /lifeboat/state
# (= STATE). Booted with a serial console, the initramfs loads the disk and
# filesystem modules, mounts that partition read-only and prints exactly one
# line on ttyS0:
#
#   LIFEBOAT-HEALTH ok state=<first line of /lifeboat/state>
#
# then powers off. tests/lab/set-state.sh changes the state in place.
#
# The kernel is a Debian package fetched with `apt-get download` (never
# installed), unpacked with `dpkg-deb -x`; the .deb, the kernel image and the
# few modules needed are cached under target/tools/lab, so later runs need no
# network. Pick the kernel with LIFEBOAT_LAB_KERNEL=6.1.0-NN-amd64; by default
# the first run takes the one that linux-image-amd64 depends on, and later
# runs reuse it.
set -euo pipefail
# shellcheck source=tests/lab/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -eq 2 ]] || die "usage: $LAB_NAME OUT.raw STATE"
out=$1 state=$2
check_state "$state"
disk_mib=${LIFEBOAT_LAB_DISK_MIB:-64}
[[ $disk_mib =~ ^[0-9]+$ && $disk_mib -ge 48 ]] || die "LIFEBOAT_LAB_DISK_MIB must be a number >= 48"

BUSYBOX=/bin/busybox
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
# Modules the initramfs loads (with their dependencies, in order): IDE (PIIX)
# and virtio disks, FAT with its default code page (437) and I/O charset (ascii), plus utf8.
MODULES=(ata_piix sd_mod virtio_pci virtio_blk vfat nls_cp437 nls_ascii nls_utf8)

need_tools cpio gzip mkfs.fat syslinux mcopy mmd sfdisk dd truncate flock od
need_file "$BUSYBOX" "busybox (package busybox-static)"
need_file "$MBR_BIN" "syslinux MBR (package syslinux-common)"
if command -v dpkg-query >/dev/null 2>&1 \
  && ! dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
  die "missing package busybox-static (the initramfs needs a static busybox); install it with: sudo bash tests/lab/setup-qemu.sh"
fi

# Temporary files and directories, removed on exit (also on failure).
cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT
work=$(mktemp -d)
cleanup+=("$work")

mkdir -p "$LAB_CACHE"
# One builder at a time prepares the cached kernel (tests run in parallel).
exec 9>"$LAB_CACHE/.lock"
flock 9

# --- the kernel -----------------------------------------------------------
kver=${LIFEBOAT_LAB_KERNEL:-}
if [[ -z $kver && -s $LAB_CACHE/kernel-version ]]; then
  kver=$(<"$LAB_CACHE/kernel-version")
fi
if [[ -z $kver ]]; then
  need_tools apt-cache
  kver=$(apt-cache depends linux-image-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*-amd64\)$/\1/p' | head -n1)
  [[ -n $kver ]] || die "cannot tell which Debian kernel to use: apt-cache knows no linux-image-amd64 (run apt-get update, or set LIFEBOAT_LAB_KERNEL=6.1.0-NN-amd64)"
fi
[[ $kver =~ ^[0-9][A-Za-z0-9.+-]*-amd64$ ]] || die "bad kernel version '$kver' (want e.g. 6.1.0-56-amd64)"

kdir=$LAB_CACHE/kernel-$kver
want_modules="${MODULES[*]}"
if [[ ! -f $kdir/.complete || "$(cat "$kdir/modules.want" 2>/dev/null)" != "$want_modules" ]]; then
  shopt -s nullglob
  debs=("$LAB_CACHE"/linux-image-"$kver"_*.deb)
  shopt -u nullglob
  if [[ ${#debs[@]} -eq 0 ]]; then
    need_tools apt-get
    echo "$LAB_NAME: downloading linux-image-$kver (once; cached in $LAB_CACHE)" >&2
    apt_opts=()
    [[ $(id -u) -eq 0 ]] && apt_opts=(-o APT::Sandbox::User=root)
    (cd "$LAB_CACHE" && apt-get download -q "${apt_opts[@]}" "linux-image-$kver" >&2) \
      || die "apt-get download linux-image-$kver failed (run apt-get update; or set LIFEBOAT_LAB_KERNEL to an available version)"
    debs=("$LAB_CACHE"/linux-image-"$kver"_*.deb)
    [[ -f ${debs[0]} ]] || die "apt-get download left no linux-image-${kver}_*.deb in $LAB_CACHE"
  fi
  deb=${debs[0]}
  need_tools dpkg-deb depmod modprobe
  echo "$LAB_NAME: unpacking $(basename "$deb")" >&2
  rm -rf "$kdir" "$kdir.tmp" "$LAB_CACHE"/unpack.*
  unpack=$(mktemp -d "$LAB_CACHE/unpack.XXXXXX")
  cleanup+=("$unpack" "$kdir.tmp")
  dpkg-deb -x "$deb" "$unpack"
  [[ -f $unpack/boot/vmlinuz-$kver ]] || die "$deb has no boot/vmlinuz-$kver"
  depmod -b "$unpack" "$kver"
  mkdir -p "$kdir.tmp/modules"
  cp "$unpack/boot/vmlinuz-$kver" "$kdir.tmp/vmlinuz"
  : > "$kdir.tmp/load.list"
  for m in "${MODULES[@]}"; do
    modprobe -d "$unpack" -S "$kver" --show-depends "$m" \
      || die "module $m not found in $deb"
  done | awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++' | while read -r ko; do
    name=$(basename "$ko")
    [[ -e $kdir.tmp/modules/$name ]] && die "two modules named $name"
    cp "$ko" "$kdir.tmp/modules/$name"
    echo "$name" >> "$kdir.tmp/load.list"
  done
  [[ -s $kdir.tmp/load.list ]] || die "no module to load was found in $deb"
  echo "$want_modules" > "$kdir.tmp/modules.want"
  rm -rf "$unpack"
  touch "$kdir.tmp/.complete"
  mv "$kdir.tmp" "$kdir"
fi
echo "$kver" > "$LAB_CACHE/kernel-version"
flock -u 9

# --- the initramfs --------------------------------------------------------
root=$work/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,mnt,lib/modules}
cp "$BUSYBOX" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$kdir"/modules/*.ko "$kdir/load.list" "$root/lib/modules/"
cat > "$root/init" <<'INIT'
#!/bin/sh
# lifeboat lab health check: runs as PID 1 from the initramfs.
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /lib/modules/load.list); do
  insmod "/lib/modules/$m" 2>/dev/null
done

found=
tries=0
while [ -z "$found" ] && [ $tries -lt 120 ]; do
  for dev in /dev/sd?1 /dev/vd?1 /dev/hd?1; do
    [ -b "$dev" ] || continue
    if mount -t vfat -o ro "$dev" /mnt 2>/dev/null; then
      if [ -f /mnt/lifeboat/state ]; then found=$dev; break; fi
      umount /mnt
    fi
  done
  [ -n "$found" ] || { sleep 0.5; tries=$((tries + 1)); }
done

if [ -n "$found" ]; then
  state=
  IFS= read -r state < /mnt/lifeboat/state || true
  state=$(printf '%s' "$state" | tr -d '\r')
  echo "LIFEBOAT-HEALTH ok state=$state"
  umount /mnt
else
  echo "lifeboat-lab: no FAT partition with /lifeboat/state found; block devices:"
  ls /sys/class/block
fi
sync
sleep 1
poweroff -f
reboot -f
INIT
chmod 755 "$root/init"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) \
  | gzip -9 > "$work/initrd.gz"

# --- the FAT32 partition --------------------------------------------------
start_sector=2048
part_bytes=$(( (disk_mib - 1) * 1024 * 1024 ))
part=$work/part.img
truncate -s "$part_bytes" "$part"
mkfs.fat -F 32 -s 1 -S 512 -h "$start_sector" -n LIFEBOAT -i 4c424f54 "$part" >/dev/null
cat > "$work/syslinux.cfg" <<'CFG'
SERIAL 0 115200
DEFAULT lifeboat
PROMPT 0
TIMEOUT 0
LABEL lifeboat
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0,115200 quiet panic=1
CFG
printf '%s\n' "$state" > "$work/state"
export MTOOLS_SKIP_CHECK=1
syslinux --install "$part"
mcopy -i "$part" "$work/syslinux.cfg" "$kdir/vmlinuz" "$work/initrd.gz" ::/
mmd -i "$part" ::/lifeboat
mcopy -i "$part" "$work/state" ::/lifeboat/state

# --- the disk: MBR + partition table + partition --------------------------
tmp_out=$out.tmp.$$
cleanup+=("$tmp_out")
rm -f "$tmp_out"
truncate -s "${disk_mib}M" "$tmp_out"
printf 'label: dos\nstart=%s, type=c, bootable\n' "$start_sector" \
  | sfdisk -q --no-reread --no-tell-kernel "$tmp_out" >/dev/null
dd if="$MBR_BIN" of="$tmp_out" bs=440 count=1 conv=notrunc status=none
dd if="$part" of="$tmp_out" bs=1M seek=1 conv=notrunc,sparse status=none
mv -f "$tmp_out" "$out"
echo "$LAB_NAME: wrote $out (${disk_mib} MiB, kernel $kver, state=$state)" >&2
