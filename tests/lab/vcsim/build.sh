#!/usr/bin/env bash
# Builds the vCenter simulator used by lifeboat-vmware-api's tests into
# <repo>/target/tools/vcsim/vcsim, offline, from Debian's packages:
#   golang-go (Go 1.19) and golang-github-vmware-govmomi-dev (govmomi 0.24.2).
# Idempotent: installs the packages with apt-get only when they are missing and
# skips the build when the binary is newer than main.go and this script.
# Prints the path of the binary as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out_dir="$repo/target/tools/vcsim"
bin="$out_dir/vcsim"
gocode=/usr/share/gocode
govmomi="$gocode/src/github.com/vmware/govmomi/simulator"

if [ -x "$bin" ] && [ "$bin" -nt "$here/main.go" ] && [ "$bin" -nt "$here/build.sh" ]; then
    echo "vcsim/build.sh: $bin is up to date" >&2
    echo "$bin"
    exit 0
fi

if ! command -v go >/dev/null 2>&1 || [ ! -d "$govmomi" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "vcsim/build.sh: Go and govmomi's simulator library are missing and apt-get is not available;" >&2
        echo "  install Go >= 1.19 and github.com/vmware/govmomi 0.24 into GOPATH=$gocode" >&2
        exit 1
    fi
    echo "vcsim/build.sh: installing golang-go and golang-github-vmware-govmomi-dev" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "vcsim/build.sh: need root to apt-get install golang-go golang-github-vmware-govmomi-dev" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends golang-go golang-github-vmware-govmomi-dev >&2; then
        apt-get update >&2
        apt-get install -y --no-install-recommends golang-go golang-github-vmware-govmomi-dev >&2
    fi
fi

mkdir -p "$out_dir"
# Build from a copy outside GOPATH so that GOPATH mode does not treat the
# repository as a package path; the go cache lives under target/ as well.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/main.go" "$work/main.go"
echo "vcsim/build.sh: building $bin (offline, GOPATH=$gocode)" >&2
(
    cd "$work"
    GOPATH="$gocode" GO111MODULE=off GOPROXY=off GOFLAGS= \
        GOCACHE="${GOCACHE:-$repo/target/tools/vcsim/go-cache}" \
        go build -o "$bin.tmp" ./main.go
)
mv -f "$bin.tmp" "$bin"
echo "$bin"
