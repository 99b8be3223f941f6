#!/usr/bin/env bash
# The GPU measurements, as one prepared script for a CUDA machine (about 8 minutes on an H100):
#   bash benchmarks/gpu.sh [data_dir] [out_dir]     (data_dir holds MNIST/raw/; default: data)
# 1. the GPU tests (pytest -m gpu): cuDNN parity, CUDA graph = eager step, data on the device, train.py on the GPU;
# 2. the suite on the GPU: our LSTM against cuDNN (fp32, bf16-mixed, CUDA graph), the 10k one-shot inference's
#    torch.cuda.max_memory_allocated beside the tutorial CNN, train.py against a bare loop, and the 2,000-step
#    recipe's wall time -> <out_dir>/results.{json,csv,md} (default: benchmarks/results-gpu);
# 3. with GPU_COMPILE=1, torch.compile's training step too (about a minute more): <out_dir>/compile/.
# A machine without this project's packages (the lent H100s have torch, lightning, torchmetrics, tensorboard and
# matplotlib, not Hydra): copy site-packages/{hydra,omegaconf,antlr4} into an ignored folder of the checkout,
# carry it, and put it on PYTHONPATH before running this.
set -uo pipefail
cd "$(dirname "$0")/.."
data_dir="${1:-data}"
out="${2:-benchmarks/results-gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MNIST_LSTM_SHARED_DATA="$data_dir"
py="$(command -v python3 || command -v python)"  # (on the lent machines python3 is the one with torch)
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
"$py" -c "import torch, lightning, hydra; print('torch', torch.__version__, 'lightning', lightning.__version__, 'hydra', hydra.__version__)"
start=$SECONDS
timeout 120 "$py" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/tests.log" | tail -15
echo "gpu tests: $((SECONDS - start)) s"
timeout 450 "$py" -m benchmarks.run --device cuda --rounds 15 --data-dir "$data_dir" --out "$out" 2>&1 | tee "$out/suite.log" | tail -60
echo "suite done at $((SECONDS - start)) s"
if [[ "${GPU_COMPILE:-0}" == 1 ]]; then
  timeout 100 "$py" -m benchmarks.run --device cuda --compile --train-step-only --rounds 20 --data-dir "$data_dir" \
    --out "$out/compile" 2>&1 | tail -30
fi
echo "all done at $((SECONDS - start)) s"
