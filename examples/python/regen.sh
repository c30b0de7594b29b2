#!/usr/bin/env bash
# Regenerates the committed Python stubs in gen/ from their .proto sources:
#
#   backend.proto                 sdk/proto/ (the mypt backend protocol)
#   grpc_controller.proto         go-plugin's internal/plugin/, from the Go module
#   grpc_stdio.proto              cache at the version go.mod requires
#   health.proto                  proto/ (the part of grpc.health.v1 go-plugin calls)
#
# Tools, all from Debian 12 (bookworm): python3-grpc-tools 1.14.1-6, whose
# bundled protoc is libprotoc 3.5.1, run by /usr/bin/python3 (3.11). The output
# is byte-for-byte what is committed only with that protoc; the script refuses
# another one unless REGEN_ANY_PROTOC=1 (the stubs it makes then work, they
# just differ textually). The plugin itself needs only python3-grpcio,
# python3-protobuf and python3-numpy, not grpc-tools.
#
#   apt-get install -y python3-grpc-tools
#   examples/python/regen.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-/usr/bin/python3}
want_protoc="libprotoc 3.5.1"

have_protoc=$("$python" -m grpc_tools.protoc --version 2>/dev/null) || {
	echo "regen.sh: $python cannot run grpc_tools.protoc; install Debian's python3-grpc-tools" >&2
	exit 1
}
if [ "$have_protoc" != "$want_protoc" ] && [ "${REGEN_ANY_PROTOC:-}" != 1 ]; then
	echo "regen.sh: grpc_tools bundles $have_protoc, the committed stubs come from $want_protoc" >&2
	echo "          (Debian 12's python3-grpc-tools 1.14.1); set REGEN_ANY_PROTOC=1 to use it anyway" >&2
	exit 1
fi

goplugin=$(cd "$root" && go list -m -f '{{.Dir}}' github.com/hashicorp/go-plugin)
# google/protobuf/empty.proto, which grpc_stdio.proto imports, ships with grpc_tools.
wkt=$("$python" -c 'import os, grpc_tools; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')

out="$here/gen"
rm -f "$out"/*_pb2.py "$out"/*_pb2_grpc.py
protoc() { "$python" -m grpc_tools.protoc --python_out="$out" --grpc_python_out="$out" "$@"; }
protoc -I "$root/sdk/proto" backend.proto
protoc -I "$goplugin/internal/plugin" -I "$wkt" grpc_controller.proto grpc_stdio.proto
protoc -I "$here/proto" health.proto
echo "regenerated $(ls "$out" | wc -l) files in $out with $have_protoc ($(basename "$goplugin"))"
