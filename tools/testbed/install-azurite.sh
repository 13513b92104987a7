#!/usr/bin/env bash
# Installs Azurite (Microsoft's Azure Storage emulator, the storage behind the testbed's ACR
# deployment) into tools/testbed/azurite/node_modules, at the version package-lock.json pins.
# Node and npm come from Debian (as root) when they are missing. A second run with the same
# lock file does nothing.
set -euo pipefail
cd "$(dirname "$0")/azurite"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  else
    echo "error: node and npm are needed for Azurite (Debian: apt-get install nodejs npm)." >&2
    exit 1
  fi
fi
stamp=node_modules/.acr-blob-installed
wanted=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -x node_modules/.bin/azurite-blob ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  exit 0
fi
npm ci --no-audit --no-fund --silent
echo "$wanted" > "$stamp"
