#!/bin/sh
# Build the C++ gRPC echo service (bench/anchors/grpc_echo.cc, with server reflection) into
# bench/.anchors/grpc-cpp/grpc_echo. bench/procedures.py runs this on first use (and when a
# source is newer than the binary); it needs Debian's libgrpc++-dev, protobuf-compiler-grpc
# and libprotobuf-dev (apt-get install -y libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev).
#
#   sh bench/anchors/build_grpc_echo.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/../.anchors/grpc-cpp"
mkdir -p "$dest"
for tool in protoc grpc_cpp_plugin g++ pkg-config; do
  command -v "$tool" >/dev/null || { echo "build_grpc_echo: $tool not found" >&2; exit 1; }
done
protoc -I "$here" --cpp_out="$dest" --grpc_out="$dest" \
  --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "$here/echo.proto"
# shellcheck disable=SC2046  # pkg-config's flags are words
g++ -O2 -std=c++17 -I "$dest" -o "$dest/grpc_echo.tmp" "$here/grpc_echo.cc" \
  "$dest/echo.pb.cc" "$dest/echo.grpc.pb.cc" \
  -Wl,--no-as-needed -lgrpc++_reflection -Wl,--as-needed $(pkg-config --cflags --libs grpc++ protobuf)
mv "$dest/grpc_echo.tmp" "$dest/grpc_echo"
echo "build_grpc_echo: built $dest/grpc_echo"
