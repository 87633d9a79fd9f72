#!/usr/bin/env bash
# Prepares .device/ (git-ignored) for a run of the GPU figures on a lent machine that reaches no package index:
# the wheels its image lacks (it has Python 3.12 with torch, Lightning, torchmetrics, ONNX Runtime, matplotlib,
# TensorBoard...; see /work/.library/device/KINDS.md) at the versions requirements.lock pins, and the MNIST files
# gzipped (the call carries at most 64 MiB). Run it here, then benchmarks/device/README.md's call.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
data=${MNIST_DATA_DIR:-data}/MNIST/raw
out=.device
rm -rf "$out" && mkdir -p "$out/wheels" "$out/mnist"

# pinned versions, for CPython 3.12 on Linux, of what serve, Hydra and the prediction log need there
pins=$("$python" - <<'PY'
import re
from packaging.markers import Marker
wanted = """hydra-core omegaconf fastapi starlette pydantic pydantic-core annotated-types typing-inspection uvicorn
httptools python-multipart limits deprecated sqlalchemy greenlet alembic mako""".split()
environment = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
               "platform_machine": "x86_64", "platform_python_implementation": "CPython", "implementation_name": "cpython"}
for line in open("requirements.lock"):
    requirement, _, marker = line.strip().partition(" ; ")
    name, _, version = requirement.partition("==")
    if name.lower() in wanted and (not marker or Marker(marker).evaluate(environment)):
        print(f"{name}=={version}")
PY
)
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform any)
# shellcheck disable=SC2086
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$out/wheels" $pins
# Hydra's grammar runtime comes as source only: a pure-Python wheel built here runs there
"$python" -m pip wheel -q --no-deps -w "$out/wheels" "$(grep '^antlr4-python3-runtime==' requirements.lock)"

for file in "$data"/*-ubyte; do gzip -9 -c "$file" > "$out/mnist/$(basename "$file").gz"; done
ls "$out/wheels"
du -sh "$out"
