#!/usr/bin/env bash
# setup-servers.sh — install the object-store servers the vault tests start, idempotently,
# into target/tools/ (or $LIFEBOAT_TOOLS):
#   S3:         moto server (PyPI `moto[server]`) in a venv  -> target/tools/venv/bin/moto_server
#   Azure Blob: Azurite (npm `azurite`)                    -> target/tools/node_modules/.bin/azurite-blob
# The venv also gets boto3 and azure-storage-blob, which the tests use to create the bucket and
# the container. Servers are started by the tests on 127.0.0.1 and stopped by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
TOOLS=${LIFEBOAT_TOOLS:-$ROOT/target/tools}
mkdir -p "$TOOLS"

if [ ! -x "$TOOLS/venv/bin/moto_server" ] || ! "$TOOLS/venv/bin/python" -c 'import boto3, azure.storage.blob' 2>/dev/null; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5.1,<6' boto3 'azure-storage-blob>=12.20,<13'
fi
"$TOOLS/venv/bin/moto_server" --help >/dev/null

if [ ! -x "$TOOLS/node_modules/.bin/azurite-blob" ]; then
  npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error 'azurite@^3.35'
fi
"$TOOLS/node_modules/.bin/azurite-blob" --version >/dev/null
echo "setup-servers: moto and Azurite ready in $TOOLS"
