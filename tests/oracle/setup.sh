#!/usr/bin/env bash
# Install the ARM oracle: Microsoft's Python SDK models at versions that still
# use strict AutoRest (msrest-style) models, in a venv at
# <repo>/target/tools/arm-oracle. Idempotent: a second run only checks.
#
# The pins matter: newer releases of these packages accept any dict and check
# nothing, which would make arm_check.py pass everything.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/target/tools/arm-oracle"
pins=(azure-mgmt-compute==33.0.0 azure-mgmt-network==28.0.0 azure-mgmt-resource==23.2.0)
stamp="$venv/.lifeboat-pins"
want="${pins[*]}"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
  && "$venv/bin/python" -c 'import azure.mgmt.compute, azure.mgmt.network, azure.mgmt.resource' 2>/dev/null; then
  echo "arm-oracle: ok ($venv)"
  exit 0
fi

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "arm-oracle: need root to run: $*" >&2; exit 1; fi
}

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
# Debian splits venv/ensurepip out of python3 itself.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then need_apt+=(python3-venv); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "arm-oracle: missing ${need_apt[*]} and no apt-get to install them" >&2
    exit 1
  fi
  echo "arm-oracle: apt-get install ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "arm-oracle: creating venv $venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
fi
echo "arm-oracle: pip install ${pins[*]}"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
"$venv/bin/python" -c 'import azure.mgmt.compute, azure.mgmt.network, azure.mgmt.resource'
printf '%s' "$want" >"$stamp"
echo "arm-oracle: ok ($venv)"
