#!/bin/sh
# Build the Go NATS echo service (bench/anchors/nats_echo.go) into
# bench/.anchors/nats-go/nats_echo. bench/procedures.py runs this on first use (and when a
# source is newer than the binary); it needs Debian's Go and nats.go sources, and builds
# offline against them (GOPATH mode, no module proxy):
#   apt-get install -y golang-go golang-github-nats-io-go-nats-dev
#
#   sh bench/anchors/build_nats_echo.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/../.anchors/nats-go"
gopath=${NATS_ECHO_GOPATH:-/usr/share/gocode}
mkdir -p "$dest"
command -v go >/dev/null || { echo "build_nats_echo: go not found" >&2; exit 1; }
[ -d "$gopath/src/github.com/nats-io/nats.go" ] ||
  { echo "build_nats_echo: no nats.go under $gopath/src" >&2; exit 1; }
GO111MODULE=off GOPATH="$gopath" GOCACHE="$dest/gocache" GOFLAGS= \
  go build -trimpath -o "$dest/nats_echo.tmp" "$here/nats_echo.go"
mv "$dest/nats_echo.tmp" "$dest/nats_echo"
echo "build_nats_echo: built $dest/nats_echo"
