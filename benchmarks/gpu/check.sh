#!/usr/bin/env bash
# GPU check (issue 14): on a machine with a CUDA GPU, train on `cuda` (1 process) and, with 2+ GPUs,
# run 2-process DDP over NCCL; print the training throughput (rows/s) of each. On a machine without one
# it says so and exits 0 without doing anything.
#
#   benchmarks/gpu/check.sh            (PYTHON=... to use another interpreter; default .venv/bin/python)
#
# Needs a CUDA build of torch 2.13.0 on that machine (the project pins torch==2.13.0: on Linux with a
# GPU, `pip install torch==2.13.0` from PyPI is the CUDA build) and data/processed (`make featurize`;
# it runs it when missing). Results: benchmarks/gpu/results-<host>.json, and this script's output.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu/check.sh: skipped: torch sees no CUDA device here ($("$PY" -c 'import torch; print("torch", torch.__version__, "cuda build:", torch.version.cuda)' 2>/dev/null || echo 'torch not importable'))"
  exit 0
fi

gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
"$PY" -c 'import torch; [print(f"gpu {i}: {torch.cuda.get_device_name(i)}") for i in range(torch.cuda.device_count())]; print("torch", torch.__version__, "cuda", torch.version.cuda, "nccl", ".".join(map(str, torch.cuda.nccl.version())))'
[ -f data/processed/train.parquet ] || PATH="$(dirname "$PY"):$PATH" dvc repro featurize

out="benchmarks/gpu/results-$(hostname -s).json"
if [ "$gpus" -ge 2 ]; then
  nprocs=1,2   # 2 ranks, one GPU each, NCCL
else
  nprocs=1
  echo "gpu/check.sh: one GPU: NCCL DDP needs one GPU per rank, so only the single-GPU run is done"
fi
"$PY" benchmarks/scale/ddp.py --device cuda --nprocs "$nprocs" --repeats 3 --epochs 20 --out "$out"
echo "gpu/check.sh: results in $out"
