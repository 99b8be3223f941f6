"""The speed suite, one command:  python -m benchmarks.run  (--smoke: tiny sizes, one round).

What it measures, on the CPU or, on a CUDA machine, the GPU: our LSTM's training step against nn.LSTM (oneDNN,
cuDNN) at five shapes, with the variants that show where the time goes; the 10,000 test images in one call (time
and the memory it adds, beside the tutorial's CNN); scripts/train.py against a bare PyTorch loop; on a GPU the
2,000-step recipe end to end. Variants are timed interleaved in one process (benchmarks/timing.py) and compared by
the median of per-round ratios, beside the machine's matmul throughput measured in the same run.

Writes results.json (everything), results.md (the tables) and the figures (benchmarks/plots.py) into --out: by
default benchmarks/results/cpu/ or gpu/. The results kept in the repository lie in one folder per machine,
benchmarks/results/<kind>-<machine>/ (docs/speed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from benchmarks import e2e, memory, plots
from benchmarks.timing import interleaved, matmul_gflops, summary
from mnist_lstm.fast import IMPLEMENTATIONS
from mnist_lstm.fast.cuda_graph import GraphedTraining
from mnist_lstm.fast.fused import fused_loop, uniform_dropout
from mnist_lstm.fast.nvml import skip_the_nvml_check_without_nvml
from mnist_lstm.model.lstm import PLAIN, Implementation, RowLSTMClassifier, lstm_loop

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "nn.LSTM"
NO_ONEDNN = "oneDNN off"
# Each changes one of the default's ("fused") two parts, to show what that part is worth.
AUTOGRAD_LOOP = Implementation(lstm_loop, uniform_dropout)  # the plain loop, differentiated by autograd
F_DROPOUT = Implementation(fused_loop, F.dropout)  # F.dropout's mask (bernoulli, element by element on the CPU)
# train.py against the bare loop on a GPU, beside eager: (key, speed.cuda_graph, speed.loop)
GPU_SETTINGS = (
    ("cuda_graph", "forward_backward", "fused"),
    ("triton", "forward_backward", "triton"),
    ("whole_step", "whole_step", "triton"),
)


class Sizes(NamedTuple):
    """What a run measures: the full suite, or the smoke mode the tests run."""

    shapes: tuple  # (hidden_size, layer_num) each; the first, the tutorial's, is measured with every variant
    batch: int
    matmul_n: int
    inference_batch: int
    e2e: tuple[int, int, int]  # train.py against the bare loop at the first shape: steps, warm-up steps, rounds
    small: tuple[int, int, int, int]  # on the CPU, a model whose short step shows the framework's cost per step:
    # hidden_size, layer_num, batch_size, steps; and a whole train.py run of it shows its fixed costs
    whole_run_steps: int


FULL = Sizes(((256, 2), (128, 2), (512, 2), (256, 1), (256, 3)), 128, 2048, 10_000, (40, 8, 2), (8, 1, 128, 1200), 100)
SMOKE = Sizes(((16, 2), (16, 1)), 8, 128, 64, (6, 2, 1), (8, 1, 16, 6), 6)


def machine(device: torch.device) -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    info = {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device.type,
        "load_average_start": os.getloadavg()[0],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def training_flops(hidden: int, layers: int, batch: int, steps: int = 28, inputs: int = 28) -> float:
    """Matmul FLOPs of one training step: the forward's gate matmuls and classifier, x3 with the backward."""
    sizes = [inputs] + [hidden] * (layers - 1)
    forward = sum(2 * steps * batch * 4 * hidden * (size + hidden) for size in sizes) + 2 * batch * hidden * 10
    return 3.0 * forward


def train_step(
    model: torch.nn.Module, batch: int, device: torch.device, bf16: bool = False, cuda_graph: bool = False
) -> Callable[[], None]:
    """One optimiser step (forward, backward, Adam) on a fixed random batch, as train.py takes it."""
    images = torch.rand(batch, 28, 28, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as conf/model/lstm.yaml
    model.train()
    net = GraphedTraining(model) if cuda_graph else model

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def train_variants(hidden: int, layers: int, sizes: Sizes, device: torch.device, args) -> dict[str, Callable]:
    """Each variant's training step. "ours" is train.py's default (speed=fused); nn.LSTM computes its own loop,
    and the implementation it is handed picks only the dropout on its output (the default's: the same as ours)."""

    def model(cell: str = "custom", implementation: Implementation = IMPLEMENTATIONS["fused"]) -> torch.nn.Module:
        torch.manual_seed(0)
        net = RowLSTMClassifier(hidden_size=hidden, layer_num=layers, dropout=0.5, cell=cell).use(implementation)
        return net.to(device)

    def step(*options, **graph_or_bf16) -> Callable[[], None]:
        return train_step(model(*options), sizes.batch, device, **graph_or_bf16)

    cpu, tutorial = device.type == "cpu", (hidden, layers) == sizes.shapes[0]
    variants = {"ours": step(), REFERENCE: step("torch")}
    if not cpu:
        triton = IMPLEMENTATIONS["triton"]
        variants["ours, CUDA graph"] = step(cuda_graph=True)
        variants["ours, Triton"] = step("custom", triton)
        variants["ours, Triton, CUDA graph"] = step("custom", triton, cuda_graph=True)
    if tutorial:
        variants["ours, autograd loop"] = step("custom", AUTOGRAD_LOOP)
    if tutorial and args.compile:
        compiled = model()
        compiled.lstm.compile()
        variants["ours, torch.compile"] = train_step(compiled, sizes.batch, device)
    if tutorial and cpu:
        # PyTorch's own op-by-op LSTM, for scale; and both wrappers' dropout back on F.dropout
        variants[f"{REFERENCE}, {NO_ONEDNN}"] = without_onednn(step("torch"))
        variants["ours, F.dropout"] = step("custom", F_DROPOUT)
        variants[f"{REFERENCE}, F.dropout"] = step("torch", PLAIN)
    if tutorial and not cpu:
        variants["ours, bf16-mixed"] = step(bf16=True)
        variants[f"{REFERENCE}, bf16-mixed"] = step("torch", bf16=True)
        variants[f"{REFERENCE}, CUDA graph"] = step("torch", cuda_graph=True)
    return variants


def without_onednn(call: Callable[[], None]) -> Callable[[], None]:
    def call_without() -> None:
        with torch.backends.mkldnn.flags(enabled=False):
            call()

    return call_without


def working(variants: dict[str, Callable], failures: list[str]) -> dict[str, Callable]:
    """The variants whose first call succeeds; each one that fails is noted in `failures` and left out, so that
    one variant that does not run on a machine cannot cost the rest of the results."""
    kept = {}
    for name, call in variants.items():
        try:
            call()
        except Exception as err:  # noqa: BLE001  (reported, not fatal)
            if name == REFERENCE:
                raise
            failures.append(f"{name}: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}")
            print(f"left out {failures[-1]}", flush=True)
            continue
        kept[name] = call
    return kept


def run(args: argparse.Namespace) -> dict[str, object]:
    sizes, rounds = (SMOKE, 1) if args.smoke else (FULL, args.rounds)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, object] = {"command": " ".join(["python -m benchmarks.run", *sys.argv[1:]])}
    results["machine"] = machine(device)
    started = time.time()

    peak = matmul_gflops(sizes.matmul_n, max(rounds, 3), device)
    results["matmul_gflops"] = {"n": sizes.matmul_n, "fp32": peak}
    if device.type == "cuda":
        results["matmul_gflops"]["bf16"] = matmul_gflops(sizes.matmul_n, max(rounds, 3), device, torch.bfloat16)
    print(f"matmul {sizes.matmul_n}^3 fp32: {peak:.0f} GFLOP/s", flush=True)

    results["train_step"], results["left_out"] = [], []
    for hidden, layers in sizes.shapes[:1] if args.train_step_only else sizes.shapes:
        variants = working(train_variants(hidden, layers, sizes, device, args), results["left_out"])
        flops = training_flops(hidden, layers, sizes.batch)
        for name, row in summary(interleaved(variants, rounds, device), REFERENCE).items():
            row.update(hidden=hidden, layers=layers, batch=sizes.batch, variant=name)
            row["gflops"] = flops / row["median_ms"] / 1e6
            row["percent_of_matmul"] = 100 * row["gflops"] / peak
            results["train_step"].append(row)
            print(f"train step h={hidden} L={layers} {name}: {row['median_ms']:.1f} ms x{row['ratio']:.2f}", flush=True)
        save_so_far(results, args.out)
    if args.train_step_only:
        return results
    results["inference"] = inference(sizes, rounds, device)
    save_so_far(results, args.out)
    results["e2e"] = end_to_end(sizes, args, device)
    save_so_far(results, args.out)
    if device.type == "cuda" and not args.smoke:
        results["recipe"] = e2e.recipe(args.data_dir)
    results["machine"]["load_average_end"] = os.getloadavg()[0]
    results["seconds"] = time.time() - started
    return results


def save_so_far(results: dict[str, object], out: Path) -> None:
    """The sections measured so far, in case a later one fails or the run is stopped."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "partial.json").write_text(json.dumps(results, indent=2))


def inference(sizes: Sizes, rounds: int, device: torch.device) -> list[dict[str, object]]:
    """All test images in one call: time against nn.LSTM, and the peak memory the call adds."""
    hidden, layers = sizes.shapes[0]
    images = torch.rand(sizes.inference_batch, 28, 28, device=device)
    models = {}
    for name in memory.MODELS:
        torch.manual_seed(0)
        models[name] = memory.build(name, hidden, layers).to(device).eval()

    def call(name: str) -> Callable[[], None]:
        def forward() -> None:
            with torch.inference_mode():
                models[name](images)

        return forward

    calls = {name: call(name) for name in models}
    if device.type == "cpu":
        calls[f"{REFERENCE}, {NO_ONEDNN}"] = without_onednn(call(REFERENCE))
    rows = []
    # (at most 3 rounds: a call of 10,000 takes seconds on a CPU)
    for name, row in summary(interleaved(calls, min(rounds, 3), device), REFERENCE).items():
        if name not in models:  # the same model as another row: its memory is that row's
            row["peak_mib"] = None
        elif device.type == "cuda":
            row["peak_mib"] = memory.cuda_peak_mib(models[name], images)
            row["memory"] = "torch.cuda.max_memory_allocated"
        else:
            row["peak_mib"] = memory.cpu_peak_mib(name, hidden, layers, sizes.inference_batch)
            row["memory"] = "peak RSS added"
        row.update(variant=name, batch=sizes.inference_batch, hidden=hidden, layers=layers)
        rows.append(row)
        print(f"inference {name}: {row['median_ms']:.0f} ms x{row['ratio']:.2f}, {row['peak_mib']} MiB", flush=True)
    return rows


def end_to_end(sizes: Sizes, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """train.py against a bare loop, interleaved run by run, at the tutorial's shape (on a GPU also with each CUDA
    graph setting); on the CPU then a small model, whose short step shows the framework's cost per step, and where
    a whole run of it spends its time: its fixed costs, the same for any model."""
    model, (steps, warmup, rounds) = (*sizes.shapes[0], sizes.batch), sizes.e2e
    if device.type == "cuda" and not args.smoke:  # milliseconds a step: time more of them
        steps, warmup = 400, 50
    row: dict[str, object] = {"steps": steps, "hidden": model[0], "layers": model[1], "batch": model[2]}
    row |= script_against_bare(args.data_dir, device.type, model, steps, warmup, rounds)
    print(f"end to end: {row}", flush=True)
    for key, cuda_graph, loop in GPU_SETTINGS if device.type == "cuda" else ():
        try:
            row[key] = script_against_bare(args.data_dir, "cuda", model, steps, warmup, rounds, cuda_graph, loop)
        except Exception as err:  # noqa: BLE001  (a setting that fails must not cost the others)
            row[key] = {"error": repr(err)[-1500:]}
        print(f"end to end, {' '.join(e2e.speed_overrides(cuda_graph, loop))}: {row[key]}", flush=True)
    if device.type == "cpu":
        *small, steps = sizes.small
        rounds = rounds if args.smoke else 2 * rounds  # its differences are a millisecond: more rounds
        pair = script_against_bare(args.data_dir, "cpu", tuple(small), steps, min(50, steps // 3), rounds)
        row["small"] = {"hidden": small[0], "layers": small[1], "batch": small[2], "steps": steps, **pair}
        steps, options = sizes.whole_run_steps, [f"val_every={sizes.whole_run_steps}", *e2e.model_overrides(small)]
        runs = [e2e.run_train_script(steps, args.data_dir, "cpu", *options)[0] for _ in range(rounds)]
        row["whole_run"] = {"steps": steps, "rounds": rounds}
        row["whole_run"] |= {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"end to end, small model: {row['small']}; a whole run: {row['whole_run']}", flush=True)
    return row


def script_against_bare(
    data_dir: str, device: str, model: tuple, steps: int, warmup: int, rounds: int, *speed: str
) -> dict[str, float]:
    """train.py and the bare loop, alternately, `rounds` times each, with speed.cuda_graph and speed.loop `speed`:
    median steps per second, and the median over rounds of train.py's overhead, in percent and in ms per step."""
    options = [*e2e.model_overrides(model), *e2e.speed_overrides(*speed)]
    script, bare = [], []
    for _ in range(rounds):
        script.append(e2e.train_script_steps_per_second(steps, warmup, data_dir, device, *options))
        bare.append(e2e.bare_loop_steps_per_second(steps, warmup, data_dir, device, model, *speed))
    pairs = list(zip(bare, script, strict=True))
    return {
        "train_py_steps_per_s": statistics.median(script),
        "bare_steps_per_s": statistics.median(bare),
        "overhead_percent": 100 * statistics.median(b / s - 1 for b, s in pairs),
        "overhead_ms_per_step": 1e3 * statistics.median(1 / s - 1 / b for b, s in pairs),
    }


def markdown(results: dict[str, object]) -> str:
    m, e = results["machine"], results["e2e"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads"
    lines = [
        f"Machine: {where}; torch {m['torch']}; matmul {results['matmul_gflops']['n']}^3 fp32: "
        f"{results['matmul_gflops']['fp32']:.0f} GFLOP/s; load average {m['load_average_start']:.1f} at the start, "
        f"{m['load_average_end']:.1f} at the end.  ",
        f"Command: `{results['command']}` ({results['seconds']:.0f} s).",
        "",
        "Training step (forward, backward, Adam; 28 steps x 28 inputs, dropout 0.5), ratio = median of per-round "
        "ratios to nn.LSTM:",
        "",
        "| hidden | layers | batch | variant | median ms | ratio | GFLOP/s | % of matmul |",
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results["train_step"]:
        lines.append(
            f"| {r['hidden']} | {r['layers']} | {r['batch']} | {r['variant']} | {r['median_ms']:.1f} | "
            f"{r['ratio']:.2f} | {r['gflops']:.0f} | {r['percent_of_matmul']:.0f} |"
        )
    first = results["inference"][0]
    lines += [
        "",
        f"Inference of {first['batch']:,} images in one call (hidden {first['hidden']}, {first['layers']} layers; "
        f"memory: {first['memory']}):",
        "",
        "| model | median ms | ratio | peak MiB |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in results["inference"]:
        peak = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(f"| {r['variant']} | {r['median_ms']:.0f} | {r['ratio']:.2f} | {peak} |")

    def pair(p: dict) -> str:
        if "error" in p:
            return f"failed ({p['error'][:200]})"
        return (
            f"train.py {p['train_py_steps_per_s']:.2f} steps/s, bare loop {p['bare_steps_per_s']:.2f} steps/s: "
            f"overhead {p['overhead_percent']:.1f}% ({p['overhead_ms_per_step']:.2f} ms per step)"
        )

    lines += [
        "",
        f"End to end ({e['steps']} steps, hidden {e['hidden']}, {e['layers']} layers, batch {e['batch']}): {pair(e)}.",
    ]
    for key, cuda_graph, loop in GPU_SETTINGS:
        if key in e:
            lines[-1] += f" With {' '.join(e2e.speed_overrides(cuda_graph, loop))}: {pair(e[key])}."
    if "small" in e:
        s = e["small"]
        lines[-1] += (
            f" A small model, whose step is short enough for the framework's cost to show (hidden "
            f"{s['hidden']}, {s['layers']} layer, batch {s['batch']}, {s['steps']} steps): {pair(s)}."
        )
    if "whole_run" in e:
        w = e["whole_run"]
        start = w["startup_s"] + w["trainer_data_s"] + w["to_first_step_s"]
        lines += [
            "",
            f"A whole train.py run of the small model ({w['steps']} steps; validation, the test of 10,000 "
            f"images and its figures; median of {w['rounds']}): {w['wall_s']:.1f} s from start to exit: start-up "
            f"(imports, data, model) {start:.1f} s, the steps {w['training_s'] + w['validation_s']:.1f} s, the "
            f"test and its figures {w['fit_end_s'] + w['test_s'] + w['test_figures_s']:.1f} s, exit "
            f"{w['exit_s']:.1f} s.",
        ]
    if "recipe" in results:
        lines += [
            "",
            "The 2,000-step tutorial recipe. train.py start to exit in its phases (benchmarks/e2e.py: phases); "
            "the bare loop: training only, data on the device:",
            "",
            "| run | wall s | start-up s | set-up s | training s | validation s | test s | figures s | exit s "
            "| steps/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in results["recipe"]:
            if "error" in r or "startup_s" not in r:  # failed, or the bare loop: training only
                wall, rate = ("failed", "") if "error" in r else (f"{r['wall_s']:.1f}", f"{r['steps_per_s']:.0f}")
                lines.append(f"| {r['run']} | {wall} | | | | | | | | {rate} |")
                continue
            phases = [r["startup_s"], r["trainer_data_s"] + r["to_first_step_s"], r["training_s"], r["validation_s"]]
            phases += [r["fit_end_s"] + r["test_s"], r["test_figures_s"], r["exit_s"]]
            cells = " | ".join(f"{v:.1f}" for v in phases)
            lines.append(f"| {r['run']} | {r['wall_s']:.1f} | {cells} | {r['steps_per_s']:.0f} |")
    if results.get("left_out"):
        lines += ["", "Left out (failed on this machine): " + "; ".join(results["left_out"])]
    return "\n".join(lines) + "\n"


def write(results: dict[str, object], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    plots.draw(out / "results.json")
    (out / "partial.json").unlink(missing_ok=True)


def default_out(device: str) -> Path:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return RESULTS / ("gpu" if device == "cuda" else "cpu")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round: does everything run?")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds of the timings")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile on CPU)")
    parser.add_argument(
        "--train-step-only",
        action="store_true",
        help="only the training step at the tutorial's shape, into train_step.json (e.g. with --compile)",
    )
    parser.add_argument("--data-dir", default="data", help="holds MNIST/raw/ (for the end-to-end runs)")
    parser.add_argument("--out", type=Path, help="where the results go (default: benchmarks/results/cpu/ or gpu/)")
    args = parser.parse_args(argv)
    args.out = args.out or default_out(args.device)
    skip_the_nvml_check_without_nvml()  # the training steps timed as train.py runs them
    results = run(args)
    if args.train_step_only:  # a partial run: its JSON only, beside the tables of the last full run
        (args.out / "train_step.json").write_text(json.dumps(results, indent=2))
        (args.out / "partial.json").unlink(missing_ok=True)
        print(json.dumps(results["train_step"], indent=1))
        return
    write(results, args.out)
    print(markdown(results))
    print(f"wrote {args.out}/results.json, results.md and the figures")


if __name__ == "__main__":
    main()
