#!/usr/bin/env bash
# Builds the containerd runner (tools/compare/go/main.go) into .compare/go/containerd-runner
# from Debian's packaged Go sources: golang-go and golang-github-containerd-containerd-dev,
# installed with apt-get when missing and this runs as root. GOPATH mode with GOPROXY=off:
# nothing is ever downloaded from a module proxy. When it cannot build, it says why and exits
# 0; the containerd cells then say n/a.
set -uo pipefail
cd "$(dirname "$0")/../../.."
GOCODE=/usr/share/gocode
CONTAINERD="$GOCODE/src/github.com/containerd/containerd"
OUT=.compare/go/containerd-runner

warn() {
  echo "warning: the containerd runner was not built ($1); its cells will say n/a" >&2
  exit 0
}

if ! command -v go >/dev/null 2>&1 || [ ! -d "$CONTAINERD/remotes/docker" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    packages=(golang-go golang-github-containerd-containerd-dev)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; } \
      || warn "apt-get install ${packages[*]} failed"
  else
    warn "needs apt-get install golang-go golang-github-containerd-containerd-dev"
  fi
fi
command -v go >/dev/null 2>&1 || warn "no go command"
[ -d "$CONTAINERD/remotes/docker" ] || warn "no containerd sources in $GOCODE"

mkdir -p .compare/go
# The build cache stays in .compare/ (gitignored), not in the user's home.
GO111MODULE=off GOPATH="$GOCODE" GOPROXY=off GOFLAGS= GOCACHE="$PWD/.compare/go/cache" \
  go build -o "$OUT.new" ./tools/compare/go \
  || warn "go build failed, see above"
mv -f "$OUT.new" "$OUT"
