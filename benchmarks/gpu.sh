#!/usr/bin/env bash
# The GPU measurements, as one prepared script for a CUDA machine (a few minutes on an H100):
#   bash benchmarks/gpu.sh [data_dir]      (data_dir holds MNIST/raw/; default: data)
# Times our LSTM against cuDNN (fp32 and bf16-mixed, torch.compile included), the 10k one-shot inference's
# torch.cuda.max_memory_allocated beside the tutorial CNN, train.py against a bare loop, and the
# 2,000-step recipe's wall time; writes benchmarks/results-gpu/results.{json,csv,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -m benchmarks.run --device cuda --compile --rounds 20 --data-dir "${1:-data}" --out benchmarks/results-gpu
