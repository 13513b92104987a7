#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo run: the real registry server, skopeo
# for the tests of OCI image layouts, and xfsprogs for the test of reflinked cache hits.
# As root on Debian it installs them; anywhere else it says what is missing and fails.
set -euo pipefail
packages=()
command -v docker-registry >/dev/null 2>&1 || packages+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || packages+=(skopeo)
command -v mkfs.xfs >/dev/null 2>&1 || packages+=(xfsprogs)
[ ${#packages[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  exit 0
fi
echo "error: missing Debian package(s): ${packages[*]}." >&2
echo "       Install them (as root: apt-get install ${packages[*]}), then run make again." >&2
exit 1
