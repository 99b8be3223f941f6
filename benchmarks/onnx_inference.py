"""The 10,000 official test images in one call: an ONNX export run by onnxruntime (CPU) against PyTorch (the
model's "fused" implementation, what predict.py and eval.py use), interleaved; and the peak memory each call adds.

    python -m benchmarks.onnx_inference --rounds 10 --out benchmarks/results/<machine>/onnx-inference.json
    python -m benchmarks.onnx_inference --ckpt <run>/checkpoints/last.ckpt ...    # a trained model (default: random
                                                                                  # weights of the 2 x 256 shape)

Time: the median of per-round ratios to PyTorch, rounds alternating which goes first, both at the same number of
threads. Memory: the peak resident set size the first call of 10,000 adds, each variant in a fresh process that has
run the model on one image first (onnxruntime: in a session of its own, so the measured call is its session's
first; a second call would hide its peak in memory the C allocator or onnxruntime's arena kept from the first),
as benchmarks/memory.py measures the models.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.memory import REPO, MiB, _rss_bytes
from benchmarks.timing import interleaved, matmul_gflops, summary
from mnist_lstm.checkpoint import load_model
from mnist_lstm.model.lstm import RowLSTMClassifier
from mnist_lstm.use.models import OnnxModel
from mnist_lstm.use.onnx_export import RowReader, write_onnx

VARIANTS = ("pytorch", "onnxruntime")


def model(ckpt: str | None) -> RowLSTMClassifier:
    """The classifier measured: a checkpoint's, or the tutorial's shape with random weights (speed does not depend
    on them), computing with "fused"."""
    if ckpt:
        return load_model(ckpt, "cpu").net
    torch.manual_seed(0)
    import mnist_lstm.fast  # noqa: F401  (registers "fused")

    return RowLSTMClassifier(hidden_size=256, layer_num=2).use("fused").eval()


def export(net: RowLSTMClassifier, folder: Path) -> Path:
    """The export scripts/export.py writes (the plain loop, per-row logits too), into `folder`."""
    path = folder / "model.onnx"
    net.use("plain")
    try:
        write_onnx(RowReader(net), path)
    finally:
        net.use("fused")
    return path


def callers(net: RowLSTMClassifier, onnx_path: Path, images: torch.Tensor) -> dict:
    runtime = OnnxModel(onnx_path)

    def pytorch() -> None:
        with torch.inference_mode():
            net(images)

    def onnxruntime() -> None:
        runtime(images)

    return {"pytorch": pytorch, "onnxruntime": onnxruntime}


def _peak_in_this_process(variant: str, ckpt: str, onnx_path: str, threads: int) -> float:
    torch.set_num_threads(threads)
    images = torch.rand(10_000, 28, 28, generator=torch.Generator().manual_seed(0))
    net, onnx_path = model(ckpt or None), Path(onnx_path)
    callers(net, onnx_path, images[:1])[variant]()  # the libraries' code loaded, on one image, before measuring
    call = callers(net, onnx_path, images)[variant]
    before = _rss_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    call()
    return (_rss_bytes("VmHWM") - before) / MiB


def peak_mib(variant: str, ckpt: str | None, onnx_path: Path) -> float:
    command = [sys.executable, "-m", "benchmarks.onnx_inference", "--peak", variant, ckpt or "", str(onnx_path)]
    command += [str(torch.get_num_threads())]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="a checkpoint (default: random weights of the tutorial's shape)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--memory-rounds", type=int, default=3, help="fresh processes per variant for the memory")
    parser.add_argument("--out", type=Path, help="the results, as JSON")
    args = parser.parse_args(argv)
    images = torch.rand(10_000, 28, 28, generator=torch.Generator().manual_seed(0))
    net = model(args.ckpt)
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = export(net, Path(folder))
        seconds = interleaved(callers(net, onnx_path, images), args.rounds, torch.device("cpu"))
        peaks = {v: [peak_mib(v, args.ckpt, onnx_path) for _ in range(args.memory_rounds)] for v in VARIANTS}
        with torch.inference_mode():
            difference = float((OnnxModel(onnx_path)(images) - net(images)).abs().max())
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "matmul_gflops": matmul_gflops(2048, 5, torch.device("cpu")),
        "images": 10_000,
        "model": args.ckpt or "random weights, hidden 256, 2 layers",
        "time": summary(seconds, "pytorch"),
        "peak_mib": peaks,
        "max_abs_logit_difference": difference,
        "command": " ".join(["python -m benchmarks.onnx_inference", *(argv if argv is not None else sys.argv[1:])]),
    }
    for variant, row in results["time"].items():
        print(f"{variant:12s} median {row['median_ms']:8.1f} ms  ratio {row['ratio']:.2f}  "
              f"peak added {statistics.median(peaks[variant]):.0f} MiB (median)")  # fmt: skip
    print(f"largest |logit difference| over the 10,000: {difference:.2e}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--peak":  # the fresh process of peak_mib
        variant, ckpt, onnx_path, threads = sys.argv[2:]
        print(_peak_in_this_process(variant, ckpt, onnx_path, int(threads)))
    else:
        main()
