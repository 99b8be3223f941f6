#!/usr/bin/env bash
# The GPU measurements, as one prepared script for a CUDA machine:
#   bash benchmarks/gpu.sh [data_dir] [out_dir] [parts]     (data_dir holds MNIST/raw/; default: data)
# out_dir's default: benchmarks/results/gpu/ (the kept results lie in one folder per machine: results/gpu-h100/, ...)
# parts (default "tests suite"), run in the order given (a short lease: "clean pycache tests steps recipe"):
#   imports  how long importing train.py's modules takes, and python -X importtime's list
#            -> <out_dir>/importtime[-clean].txt (seconds)
#   clean    from here on, run in a virtual environment holding only this project's dependencies, linked from
#            this Python's (benchmarks/clean_env.py): what `pip install -e .` gives, without the other packages
#            of a shared machine's Python that torchmetrics imports at start-up (and pytest, for `tests`)
#   pycache  where the installed modules have no compiled bytecode beside them (a read-only image), from here on
#            compile them once into a cache of their own, as pip does at installation
#   tests    the GPU tests (pytest -m gpu): cuDNN parity, the Triton kernels = the fused loop, CUDA graphs (the
#            forward and backward, the whole step) = eager steps, in Lightning too, no wait for the GPU between
#            graphed steps, data on the device, train.py on the GPU (~2 minutes)
#   trace    torch.profiler over 20 CUDA-graphed steps (with speed.loop=triton) in the bare loop and in train.py,
#            each with the forward and backward graphed and with the whole step in one graph
#            (speed.cuda_graph=whole_step; the bare loop's: the GPU time a step cannot go below)
#            -> <out_dir>/trace.txt, trace-*.json.gz (~2 min)
#   recipe   the 2,000-step recipe's first three runs (speed=graphed_step and speed=graphed, both with the Triton
#            kernels; and graphed_step with the metrics logged every 50 steps, not 10) alone, split into their
#            phases, after the bare loop's (the forward and backward graphed, with and without Triton, and the
#            whole step in one graph); twice, ABC CBA -> <out_dir>/recipe.json (~2.5 minutes)
#   profile  the same after one run under Lightning's SimpleProfiler -> <out_dir>/{fit,test}-profile.txt
#   adam     the bare loop's 2,000 steps (CUDA graph, Triton) with Adam fused (train.py's) and Adam's default
#            (for-each), interleaved, 2 rounds -> <out_dir>/adam.json (about half a minute)
#   figures  whole train.py runs of a small model (100 steps, test, figures), the test figures drawn in forked
#            processes and in the run's own process, 3 rounds ABBA -> <out_dir>/figures.json (about a minute)
#   suite    the suite on the GPU: our LSTM against cuDNN (fp32, bf16-mixed, CUDA graph), the 10k one-shot
#            inference's torch.cuda.max_memory_allocated beside the tutorial CNN, train.py against a bare loop,
#            and the recipe -> <out_dir>/results.{json,csv,md} (about 5 minutes; GPU_ROUNDS=15 rounds)
#   steps    the training step alone at the tutorial's shape, every GPU variant (speed.loop=triton's too), 20 rounds
#            -> <out_dir>/steps/train_step.json (about a minute)
#   compile  torch.compile's training step at the tutorial's shape -> <out_dir>/compile/ (about a minute)
# A machine without this project's packages (the lent H100s have torch, lightning, torchmetrics, tensorboard and
# matplotlib, not Hydra): copy site-packages/{hydra,omegaconf,antlr4} into an ignored folder of the checkout,
# carry it, and put it on PYTHONPATH before running this.
set -uo pipefail
cd "$(dirname "$0")/.."
data_dir="${1:-data}"
out="${2:-benchmarks/results/gpu}"
parts="${3:-tests suite}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MNIST_LSTM_DATA="$data_dir"
py="$(command -v python3 || command -v python)"  # (on the lent machines python3 is the one with torch)
start=$SECONDS
tag=""
for part in $parts; do
  echo "== $part at $((SECONDS - start)) s"
  case "$part" in
    imports)
      "$py" -c "import glob, os, sys, torch
folder = os.path.dirname(torch.__file__)
print('bytecode written:', not sys.flags.dont_write_bytecode, 'prefix:', sys.pycache_prefix,
      'site-packages writable:', os.access(folder, os.W_OK), 'compiled modules beside torch:',
      len(glob.glob(f'{folder}/__pycache__/*.{sys.implementation.cache_tag}.pyc')))"
      modules="import mnist_lstm.run.train, mnist_lstm.use.tensorboard_figures"
      "$py" -X importtime -c "$modules" 2> "$out/importtime$tag.txt"
      "$py" -c "import time; t = time.perf_counter(); $modules; print(f'import$tag: {time.perf_counter() - t:.2f} s')"
      "$py" -c "import time, torch; t = time.perf_counter(); torch.zeros(1, device='cuda')
print(f'CUDA initialisation: {time.perf_counter() - t:.2f} s')" ;;
    clean)
      "$py" -m benchmarks.clean_env /tmp/mnist-lstm-clean --extra pytest && py=/tmp/mnist-lstm-clean/bin/python && tag="-clean" ;;
    pycache)  # a Python whose installed modules have no compiled bytecode beside them compiles them at each start
      if ! "$py" -c "import glob, os, sys, torch
sys.exit(not glob.glob(f'{os.path.dirname(torch.__file__)}/__pycache__/*.{sys.implementation.cache_tag}.pyc'))"; then
        export PYTHONPYCACHEPREFIX=/tmp/mnist-lstm-pycache && unset PYTHONDONTWRITEBYTECODE
        "$py" -c "import mnist_lstm.run.train, mnist_lstm.use.tensorboard_figures, benchmarks.e2e"
        echo "no compiled modules beside torch's: from here on compiled once into $PYTHONPYCACHEPREFIX"
      fi ;;
    tests)
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
      "$py" -c "import torch, lightning, hydra
print('torch', torch.__version__, 'lightning', lightning.__version__, 'hydra', hydra.__version__)"
      timeout 240 "$py" -m pytest -m gpu -q -p no:cacheprovider --durations=5 tests/test_gpu.py 2>&1 \
        | tee "$out/tests.log" | tail -25 ;;
    trace)
      timeout 200 "$py" -m benchmarks.trace --data-dir "$data_dir" --out "$out" --triton ;;
    recipe)
      timeout 300 "$py" -m benchmarks.e2e --data-dir "$data_dir" --out "$out/recipe$tag.json" --runs 3 --rounds 2 ;;
    profile)
      timeout 240 "$py" -m benchmarks.e2e --data-dir "$data_dir" --out "$out/recipe$tag.json" --profile "$out" \
        --runs 2 ;;
    adam)
      timeout 120 "$py" -m benchmarks.e2e --data-dir "$data_dir" --out "$out/adam.json" --adam-rounds 2 ;;
    figures)
      timeout 150 "$py" -m benchmarks.e2e --data-dir "$data_dir" --out "$out/figures$tag.json" --figures-rounds 3 ;;
    suite)
      timeout 450 "$py" -m benchmarks.run --device cuda --rounds "${GPU_ROUNDS:-15}" --data-dir "$data_dir" --out "$out" 2>&1 \
        | tee "$out/suite.log" | tail -60 ;;
    steps)
      timeout 150 "$py" -m benchmarks.run --device cuda --train-step-only --rounds 20 --data-dir "$data_dir" \
        --out "$out/steps" 2>&1 | grep -E "^(train step|left out)" ;;
    compile)
      timeout 100 "$py" -m benchmarks.run --device cuda --compile --train-step-only --rounds 20 \
        --data-dir "$data_dir" --out "$out/compile" 2>&1 | tail -30 ;;
    *) echo "unknown part: $part (imports, clean, pycache, tests, trace, recipe, profile, adam, suite, steps, compile)" >&2
       exit 2 ;;
  esac
done
echo "all done at $((SECONDS - start)) s"
