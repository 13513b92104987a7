#!/usr/bin/env bash
# Installs the other clients `make compare` runs: Python peers in .compare/venv, the JavaScript
# SDK in tools/compare/js/node_modules, skopeo from Debian, and the containerd runner built from
# Debian's Go sources (tools/compare/go/build.sh). What cannot be installed is reported;
# those clients' cells then say so (n/a) instead of failing the run.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .compare/venv/bin/python ]; then
  "$PYTHON" -m venv .compare/venv
fi
.compare/venv/bin/pip install -q --disable-pip-version-check -r tools/compare/peers-requirements.txt \
  || echo "warning: the Python peers did not install; their cells will say n/a" >&2
if command -v npm >/dev/null 2>&1; then
  npm ci --prefix tools/compare/js --no-audit --no-fund --silent \
    || echo "warning: @azure/container-registry did not install" >&2
else
  echo "warning: npm not found; @azure/container-registry will be n/a" >&2
fi
if ! command -v skopeo >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends skopeo >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo >/dev/null; } \
      || echo "warning: skopeo did not install" >&2
  else
    echo "warning: skopeo missing (apt-get install skopeo); it will be n/a" >&2
  fi
fi
tools/compare/go/build.sh
exit 0
