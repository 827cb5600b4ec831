#!/bin/sh
# Install the bench's anchors (uWebSockets.js and Node ws) into bench/.anchors/, and the
# Node gRPC echo service's packages (@grpc/grpc-js, @grpc/reflection) into bench/.anchors/grpc/,
# exactly as pinned in the package-lock.json files, then check that the
# uWebSockets.js native addon loads (never the package's pure-JS fallback).
#
#   sh bench/anchors/install.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/../.anchors"
mkdir -p "$dest"
cp "$here/package.json" "$here/package-lock.json" "$dest/"
cd "$dest"
# No install scripts: the only ones are the optional native helpers of the
# package's fallback (bufferutil, utf-8-validate), which ship prebuilt binaries.
npm ci --no-audit --no-fund --ignore-scripts
node "$here/check.mjs" "$dest"
# The Node gRPC echo service of bench/procedures.py (bench/anchors/grpc_echo.mjs).
mkdir -p "$dest/grpc"
cp "$here/grpc/package.json" "$here/grpc/package-lock.json" "$dest/grpc/"
cd "$dest/grpc"
npm ci --no-audit --no-fund --ignore-scripts
