#!/usr/bin/env bash
# The tools `lifeboat plugin build` uses for Python and JavaScript plugins,
# installed under target/tools (idempotent):
#   target/tools/componentize-py/bin/componentize-py   (PyPI componentize-py)
#   target/tools/js/node_modules/.bin/componentize-js  (npm @bytecodealliance/componentize-js)
# The tests put both bin folders on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
CPY_VERSION=0.25.1
CJS_VERSION=0.23.0

py=target/tools/componentize-py
if ! "$py/bin/componentize-py" --version 2>/dev/null | grep -q "$CPY_VERSION"; then
  echo "setup-plugin-tools: componentize-py $CPY_VERSION into $py"
  python3 -m venv "$py"
  "$py/bin/pip" install -q "componentize-py==$CPY_VERSION"
fi

js=target/tools/js
if [ ! -x "$js/node_modules/.bin/componentize-js" ] \
  || ! grep -q "\"version\": \"$CJS_VERSION\"" "$js/node_modules/@bytecodealliance/componentize-js/package.json" 2>/dev/null; then
  echo "setup-plugin-tools: @bytecodealliance/componentize-js $CJS_VERSION into $js"
  mkdir -p "$js"
  npm install --silent --no-audit --no-fund --prefix "$js" "@bytecodealliance/componentize-js@$CJS_VERSION"
fi
"$py/bin/componentize-py" --version
echo "componentize-js $(node -p "require('./$js/node_modules/@bytecodealliance/componentize-js/package.json').version")"
