#!/usr/bin/env bash
# Regenerates runtime_pb2.py / runtime_pb2_grpc.py from runtime.proto (needs grpcio-tools:
# .venv/bin/pip install grpcio-tools). The generated modules are committed; pyproject.toml's test
# extras pin a protobuf runtime at least as new as the generator that wrote them.
set -euo pipefail
cd "$(dirname "$0")"
py="${PYTHON:-../../../.venv/bin/python}"
"$py" -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. runtime.proto
# grpc's generator imports the message module as a top-level module; make it package-relative
sed -i 's/^import runtime_pb2 as runtime__pb2$/from . import runtime_pb2 as runtime__pb2/' runtime_pb2_grpc.py
