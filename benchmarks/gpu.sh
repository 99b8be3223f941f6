#!/usr/bin/env bash
# The GPU measurements, as one prepared script for a CUDA machine:
#   bash benchmarks/gpu.sh [data_dir] [out_dir] [parts]     (data_dir holds MNIST/raw/; default: data)
# out_dir's default: benchmarks/results/gpu/ (the kept results lie in one folder per machine: results/gpu-h100/, ...)
# parts (default "tests suite"), run in the order given:
#   pycache  where the installed modules have no compiled bytecode beside them (a read-only image), compile them
#            once into a cache of their own, as pip does at installation: otherwise every train.py run's start-up
#            compiles them again
#   tests    the GPU tests (pytest -m gpu): cuDNN parity, the Triton kernels, CUDA graphs, train.py on the GPU
#   suite    python -m benchmarks.run on the GPU: the training step against cuDNN, the 10,000-image inference's
#            memory, train.py against a bare loop, and the 2,000-step recipe -> <out_dir>/results.{json,md}, *.png
#   steps    the training step alone at the tutorial's shape, every GPU variant, 20 rounds -> <out_dir>/steps/
#   compile  the same with torch.compile's training step -> <out_dir>/compile/
# A machine without this project's packages (e.g. torch and lightning but no Hydra): copy site-packages/{hydra,
# omegaconf,antlr4} into an ignored folder of the checkout, carry it, and put it on PYTHONPATH before running this.
set -uo pipefail
cd "$(dirname "$0")/.."
data_dir="${1:-data}"
out="${2:-benchmarks/results/gpu}"
parts="${3:-tests suite}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MNIST_LSTM_DATA="$data_dir"
py="$(command -v python3 || command -v python)"
start=$SECONDS
for part in $parts; do
  echo "== $part at $((SECONDS - start)) s"
  case "$part" in
    pycache)
      if ! "$py" -c "import glob, os, sys, torch
sys.exit(not glob.glob(f'{os.path.dirname(torch.__file__)}/__pycache__/*.{sys.implementation.cache_tag}.pyc'))"; then
        export PYTHONPYCACHEPREFIX=/tmp/mnist-lstm-pycache && unset PYTHONDONTWRITEBYTECODE
        "$py" -c "import mnist_lstm.run.train, benchmarks.e2e"
        echo "no compiled modules beside torch's: from here on compiled once into $PYTHONPYCACHEPREFIX"
      fi ;;
    tests)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
      timeout 240 "$py" -m pytest -m gpu -q -p no:cacheprovider --durations=5 tests/test_gpu.py 2>&1 \
        | tee "$out/tests.log" | tail -25 ;;
    suite)
      timeout 450 "$py" -m benchmarks.run --device cuda --rounds "${GPU_ROUNDS:-15}" --data-dir "$data_dir" \
        --out "$out" 2>&1 | tee "$out/suite.log" | tail -60 ;;
    steps)
      timeout 150 "$py" -m benchmarks.run --device cuda --train-step-only --rounds 20 --data-dir "$data_dir" \
        --out "$out/steps" 2>&1 | grep -E "^(train step|left out)" ;;
    compile)
      timeout 100 "$py" -m benchmarks.run --device cuda --compile --train-step-only --rounds 20 \
        --data-dir "$data_dir" --out "$out/compile" 2>&1 | tail -30 ;;
    *) echo "unknown part: $part (pycache, tests, suite, steps, compile)" >&2
       exit 2 ;;
  esac
done
echo "all done at $((SECONDS - start)) s"
