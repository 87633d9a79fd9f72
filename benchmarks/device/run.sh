#!/usr/bin/env bash
# On a lent GPU machine, in the repository's root, with .device/ carried (benchmarks/device/prepare.sh made it):
# installs what the image lacks, unpacks MNIST, and runs the GPU figures (benchmarks/gpu.py) into $OUT/gpu.
set -euo pipefail
export PYTHONUNBUFFERED=1 MNIST_DATA_DIR=/tmp/mnist
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .device/wheels/*.whl
# the project itself, editable: conf/ is the package mnist_lightning.conf only in an installed project
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
mkdir -p "$MNIST_DATA_DIR/MNIST/raw"
for file in .device/mnist/*.gz; do gunzip -c "$file" > "$MNIST_DATA_DIR/MNIST/raw/$(basename "$file" .gz)"; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
python3 -m benchmarks.run --only gpu --repeats 3 --out "$OUT/gpu" 2>&1 | tee "$OUT/gpu.log"
