"""The benchmark suite in smoke mode (tiny sizes, one round), so that it cannot rot; its arithmetic by hand."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from matplotlib.image import imread
from omegaconf import OmegaConf

import mnist_lstm.config  # noqa: F401  (registers train.py's schema and resolvers, for composing its config)
from benchmarks import cell, e2e, plots
from benchmarks.alone import ALLOCATORS, allocator_missing
from benchmarks.clean_env import dependency_closure
from benchmarks.clean_env import make as make_clean_env
from benchmarks.e2e import speed_overrides, steps_per_second
from benchmarks.memory import REPO
from benchmarks.run import default_out, training_flops
from benchmarks.steps import LEVERS, levers
from benchmarks.timing import summary
from benchmarks.trace import busy_and_idle
from mnist_lstm.fast.fused import uniform_dropout
from mnist_lstm.model.lstm import IMPLEMENTATIONS, Implementation, RowLSTMClassifier, lstm_loop

FINE_PHASES = ("startup", "trainer_data", "to_first_step", "training", "validation", "fit_end", "test")
FINE_PHASES += ("test_figures", "exit")


def test_ratio_is_the_median_of_per_round_ratios() -> None:
    # Round 2 is slow for both (a noisy neighbour): per-round ratios are 2, 2, 2, so the ratio is 2,
    # while the ratio of the medians would be 3.0 / 1.0.
    seconds = {"ours": [2.0, 20.0, 3.0, 4.0], "ref": [1.0, 10.0, 1.5, 2.0]}
    rows = summary(seconds, "ref")
    assert rows["ours"]["ratio"] == 2.0 and rows["ref"]["ratio"] == 1.0
    assert rows["ours"]["median_ms"] == pytest.approx(3500.0) and rows["ours"]["rounds"] == 4


def test_steps_per_second_leaves_out_the_warmup() -> None:
    ends = [0.0, 5.0, 5.5, 6.0, 6.5]  # a slow first step, then 0.5 s per step
    assert steps_per_second(ends, warmup=1) == pytest.approx(2.0)
    # A validation of 1 s between two steps is left out; one before the window only in its part inside it.
    assert steps_per_second([0.0, 5.0, 6.5, 7.0, 7.5], warmup=1, pauses=[[5.2, 6.2]]) == pytest.approx(2.0)
    assert steps_per_second([0.0, 5.0, 5.5, 6.0, 6.5], warmup=1, pauses=[[4.0, 5.5], [9.0, 10.0]]) == pytest.approx(3.0)


def test_a_fresh_process_that_did_not_get_the_allocator_asked_for_stops_the_suite(monkeypatch) -> None:
    from benchmarks import alone

    # The raised thresholds' settings left out: the fresh process sees glibc as it comes, and says so.
    monkeypatch.setitem(alone.ALLOCATORS, "glibc, 1 GiB thresholds", {})
    with pytest.raises(RuntimeError, match="asked to run with glibc, 1 GiB thresholds, ran with glibc$"):
        alone.median_seconds_alone("train", "ours", 8, 1, 4, 1, 0, "glibc, 1 GiB thresholds")


def test_training_flops_count_the_gate_matmuls() -> None:
    # One layer: 28 steps of a (batch, 28 + H) x (28 + H, 4H) matmul, plus the classifier, x3 with backward.
    assert training_flops(hidden=4, layers=1, batch=2) == 3 * (2 * 28 * 2 * 16 * 32 + 2 * 2 * 4 * 10)


def test_smoke_run_writes_every_section(mnist_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [sys.executable, "-m", "benchmarks.run", "--smoke", "--threads", "1"]
    result = subprocess.run(
        [*command, "--data-dir", str(mnist_dir), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["torch_threads"] == 1 and results["matmul_gflops"]["fp32"] > 0

    variants = {(r["hidden"], r["layers"], r["variant"]) for r in results["train_step"]}
    assert {(16, 2, "ours"), (16, 2, "nn.LSTM"), (16, 2, "ours, autograd loop"), (16, 1, "ours")} <= variants
    assert (16, 2, "nn.LSTM, oneDNN off") in variants  # on the CPU: PyTorch's LSTM without its fused primitive
    assert {(16, 2, "ours, F.dropout"), (16, 2, "nn.LSTM, F.dropout")} <= variants  # the dropout lever
    assert all(r["median_ms"] > 0 and r["ratio"] > 0 and r["gflops"] > 0 for r in results["train_step"])
    assert {r["ratio"] for r in results["train_step"] if r["variant"] == "nn.LSTM"} == {1.0}

    # Each alone in a fresh process (the C allocator's state not shared), under each allocator installed here
    # (.ci/run installs jemalloc): training step and inference.
    allocators = [name for name in ALLOCATORS if allocator_missing(name) is None]
    assert {"glibc", "glibc, 1 GiB thresholds"} <= set(allocators)
    alone = {(r["allocator"], r["mode"], r["variant"]): r for r in results["alone"]}
    pairs = {(mode, name) for mode in ("train", "infer") for name in ("ours", "nn.LSTM")}
    assert set(alone) == {(allocator, *pair) for allocator in allocators for pair in pairs}
    assert all(r["median_ms"] > 0 and r["rounds"] == 1 for r in alone.values())
    assert alone[("glibc", "infer", "ours")]["batch"] == 64 and alone[("glibc", "train", "nn.LSTM")]["ratio"] == 1.0
    missing = [allocator_missing(name) for name in ALLOCATORS if name not in allocators]
    assert all(f"each alone under {why}" in results["left_out"] for why in missing)

    inference = {r["variant"]: r for r in results["inference"]}
    assert set(inference) == {"ours", "nn.LSTM", "ours-plain", "cnn", "nn.LSTM, oneDNN off"}
    assert all(r["median_ms"] > 0 and r["batch"] == 64 for r in inference.values())
    assert all(r["peak_mib"] >= 0 for name, r in inference.items() if name != "nn.LSTM, oneDNN off")

    e2e = results["e2e"]
    assert e2e["train_py_steps_per_s"] > 0 and e2e["bare_steps_per_s"] > 0
    small = e2e["small"]
    assert (small["hidden"], small["steps"]) == (8, 6) and small["train_py_steps_per_s"] > 0
    assert small["overhead_ms_per_step"] == pytest.approx(
        1e3 / small["train_py_steps_per_s"] - 1e3 / small["bare_steps_per_s"]
    )

    whole = e2e["whole_run"]  # a whole train.py run, test and figures included, split into its phases
    assert whole["steps"] == 6 and min(whole["to_train_start_s"], whole["steps_s"], whole["after_steps_s"]) > 0
    phases = whole["to_train_start_s"] + whole["steps_s"] + whole["after_steps_s"]
    assert whole["wall_s"] == pytest.approx(phases)
    fine = [whole[f"{name}_s"] for name in FINE_PHASES]  # the same wall time, split finer (medians: about)
    assert min(fine) >= 0 and whole["test_figures_s"] > 0 and sum(fine) == pytest.approx(whole["wall_s"], rel=0.1)

    with open(out / "results.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(results["train_step"]) + len(results["alone"]) + len(results["inference"]) + 3
    assert [row["section"] for row in rows[-2:]] == ["e2e_small", "whole_run"]
    table = (out / "results.md").read_text()
    assert "Command: `python -m benchmarks.run --smoke" in table and "| 16 | 2 | 8 | ours |" in table
    assert imread(out / "training-step.png").shape[:2] > (300, 800)  # the figures of the same results
    assert imread(out / "inference.png").shape[0] > 200
    assert "| cnn |" in table and "overhead" in table and "| glibc | training step, batch 8 |" in table
    assert all(f"| {allocator} | inference of 64 |" in table for allocator in allocators)
    assert "ms of overhead per step" in table and "A whole train.py run of the small model (6 steps" in table


def test_trace_profiles_a_window_of_steps_in_train_py_and_the_bare_loop(mnist_dir: Path, tmp_path: Path) -> None:
    """benchmarks/trace.py, dry-run on the CPU (on a GPU it also counts the kernels and the GPU's busy time): the
    bare loop and train.py, each with the forward and backward graphed and with the whole step in one graph."""
    command = [sys.executable, "-m", "benchmarks.trace", "--data-dir", str(mnist_dir), "--out", str(tmp_path)]
    options = ["--start", "2", "--steps", "2", "--triton"]
    result = subprocess.run([*command, *options], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "trace.txt").read_text()
    assert report.startswith("the bare loop and train.py speed.loop=triton, each with the forward and backward")
    headers = [line for line in report.splitlines() if line.startswith("== ")]
    names = ["bare", "bare_whole_step", "train_py", "train_py_step"]
    assert [h.split(":")[0] for h in headers] == [f"== {name}" for name in names], report[:2000]
    assert all("2 steps from step 2" in h for h in headers) and "FusedLSTMLoop" in report
    for name in names:  # each window held whole steps, Adam's included (read from its trace: the report's table
        # shows the 30 operations of most CPU time, and Adam's step is near the 30th, in or out by the machine's load)
        trace = json.loads(gzip.decompress((tmp_path / f"trace-{name}.json.gz").read_bytes()))
        events = {event.get("name") for event in trace["traceEvents"]}
        assert {"aten::addmm", "Optimizer.step#Adam.step"} <= events, name


def test_trace_counts_the_gpus_busy_time_once_and_the_gaps_between_kernels() -> None:
    """Overlapping kernels count once; the idle time is the gaps between the union's intervals."""
    kernels = [(0.0, 2.0), (1.0, 3.0), (3.0, 4.0), (6.5, 7.0), (6.6, 6.8), (10.0, 10.5)]
    busy, idle = busy_and_idle(kernels)
    assert busy == pytest.approx(4.0 + 0.5 + 0.5) and idle == pytest.approx([2.5, 3.0])
    assert busy_and_idle([]) == (0.0, [])


def test_clean_environment_holds_the_dependencies_and_nothing_else(tmp_path: Path) -> None:
    distributions, _ = dependency_closure(["lightning", "matplotlib"])
    names = {d.metadata["Name"].lower() for d in distributions}
    assert {"lightning", "torch", "torchmetrics", "matplotlib", "numpy"} <= names and "pytest" not in names
    python = make_clean_env(tmp_path / "env")
    check = "import importlib.util as u, mnist_lstm.run.train as t; print(u.find_spec('pytest') is None, t.__name__)"
    result = subprocess.run(
        [str(python), "-c", check], cwd=REPO, capture_output=True, text=True, env={"PYTHONPATH": str(REPO)}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "mnist_lstm.run.train"]  # the project imports; pytest is not there


def test_cell_benchmark_times_each_variant_under_the_allocator_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "cell.json"
    allocator = "glibc, 1 GiB thresholds"  # a fresh process with the allocator's settings, that says so
    args = ["--rounds", "2", "--hidden", "8", "--batch", "4", "--steps", "3", "--input-sizes", "5", "--allocators"]
    results = cell.main([*args, allocator, "--out", str(out)])
    assert json.loads(out.read_text()) == results and set(results) == {"machine", "command", allocator}
    (layer,) = results[allocator]["layers"]
    assert layer["input_size"] == 5
    assert set(layer["variants"]) == {f"{who} forward" for who in ("ours", "compiled", "nn.LSTM")} | {
        "ours forward+backward",
        "nn.LSTM forward+backward",
    }
    assert all(row["median_ms"] > 0 and row["rounds"] == 2 for row in layer["variants"].values())
    assert set(layer["ratios"]) == {"ours/nn.LSTM forward", "compiled/ours forward", "ours/nn.LSTM forward+backward"}
    # The profile of our forward: one recurrent matmul and one sigmoid over the four gates per step.
    operations = {row["operation"]: row for row in layer["our_forward_by_operation"]}
    assert operations["aten::addmm_"]["count"] == 3 and operations["aten::sigmoid_"]["count"] == 3


def test_a_fresh_process_gets_the_allocator_asked_for_and_no_other(monkeypatch) -> None:
    from benchmarks import alone

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1")  # this process's setting does not reach the fresh one
    monkeypatch.setenv("LD_PRELOAD", "libjemalloc.so.2")
    glibc = alone.allocator_environment("glibc")
    assert "MALLOC_MMAP_THRESHOLD_" not in glibc and "LD_PRELOAD" not in glibc and glibc["PATH"]
    raised = alone.allocator_environment("glibc, 1 GiB thresholds")
    assert raised["MALLOC_MMAP_THRESHOLD_"] == raised["MALLOC_TRIM_THRESHOLD_"] == str(1 << 30)
    assert "LD_PRELOAD" not in raised


def test_the_compiled_cells_plain_forward_leaves_what_ours_leaves_and_a_difference_is_caught() -> None:
    torch.manual_seed(0)
    x, weight, bias = torch.randn(4, 3, 5), torch.randn(4 * 6, 5 + 6), torch.randn(4 * 6)
    state = (torch.randn(3, 6), torch.randn(3, 6))
    cell.check_same_results(cell.plain_forward, x, weight, bias, *state)  # eager: the same math as ours

    def forget_gate_off(*args):
        *rest, forget = cell.plain_forward(*args)
        return *rest, forget * 0.999

    with pytest.raises(AssertionError, match="forget gates"):
        cell.check_same_results(forget_gate_off, x, weight, bias, *state)


def test_compare_trees_runs_both_checkouts_and_reports_every_phase(mnist_dir: Path, tmp_path: Path) -> None:
    """benchmarks.compare_trees on this checkout against itself, one round of a 10-step run."""
    out = tmp_path / "compare.json"
    command = [sys.executable, "-m", "benchmarks.compare_trees", "--before", str(REPO), "--rounds", "1"]
    command += ["--steps", "10", "--threads", "1", "--data-dir", str(mnist_dir), "--out", str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    for name in ("before", "after"):
        phases = results["medians"][name]
        coarse = ("wall_s", "to_train_start_s", "steps_s", "after_steps_s", "steps_per_s")
        parts = [k for k in phases if k not in coarse]
        assert sum(phases[k] for k in parts) == pytest.approx(phases["wall_s"], rel=1e-6)
        assert phases["test_figures_s"] > 0  # a whole run: the test and its figures included
    assert results["wall_ratio"] > 0 and "wall time, median of per-round ratios" in result.stdout
    assert results["steps_per_s_ratio"] > 0
    assert all(results["medians"][name]["steps_per_s"] > 0 for name in ("before", "after"))


def test_compare_trees_step_times_each_trees_code_alone_under_each_allocator(monkeypatch, tmp_path: Path) -> None:
    """--step: ours from each checkout and nn.LSTM, in fresh processes run in the checkout given. The "before"
    here is a copy whose fresh process reports 0.5 s a step: its figure must be that one."""
    from benchmarks import compare_trees

    before = tmp_path / "before"
    for package in ("benchmarks", "mnist_lstm"):
        shutil.copytree(REPO / package, before / package, ignore=shutil.ignore_patterns("results", "__pycache__"))
    main = before / "benchmarks" / "alone.py"
    main.write_text(main.read_text().split("if __name__")[0] + 'print(0.5, malloc_in_use(), sep="\\t")\n')
    monkeypatch.setattr(compare_trees.alone, "ALLOCATORS", {"glibc": {}})  # one allocator: a short test
    [row] = compare_trees.step_alone(before, REPO, hidden=8, layers=1, rounds=2, calls=1)
    assert row["allocator"] == "glibc" and row["ms"]["ours, before"] == pytest.approx(500.0)
    assert 0 < row["ms"]["ours, after"] < 500 and row["ms"]["nn.LSTM"] > 0
    ratios = [a / b for a, b in zip(row["seconds"]["ours, after"], row["seconds"]["ours, before"], strict=True)]
    assert row["after/before"] == pytest.approx(sum(ratios) / 2)  # the median of two rounds' ratios


def test_adam_comparison_alternates_fused_and_default_adam(mnist_dir: Path, monkeypatch) -> None:
    built = []

    class RecordingAdam(torch.optim.Adam):
        def __init__(self, params, **options) -> None:
            built.append(options.get("fused"))
            super().__init__(params, **options)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    rows = e2e.compare_adam(str(mnist_dir), "cpu", rounds=2, steps=12, hidden_size=4)
    assert [(row["adam"], row["round"]) for row in rows] == [("fused", 1), ("default", 1), ("default", 2), ("fused", 2)]
    assert built == [True, None, None, True]  # train.py's fused Adam, then Adam's own default
    assert all(row["steps_per_s"] > 0 for row in rows)


def test_figures_comparison_alternates_forked_and_in_process_drawing(mnist_dir: Path) -> None:
    rows = e2e.compare_figures(str(mnist_dir), "cpu", rounds=2, steps=4)
    assert [(row["figures"], row["round"]) for row in rows] == [("forked", 1), ("here", 1), ("here", 2), ("forked", 2)]
    for row in rows:
        assert ("callbacks.test_figures.processes=1" in row["overrides"]) == (row["figures"] == "here")
        assert row["test_figures_s"] > 0 and row["wall_s"] > row["test_figures_s"]


def test_the_bare_loops_whole_step_is_its_plain_step() -> None:
    """Op by op here (the GPU tests check its CUDA graph, GraphedStep, against this): the plain step's weights."""
    torch.manual_seed(0)
    images, labels = torch.rand(64, 28, 28), torch.randint(0, 10, (64,))
    whole_net = RowLSTMClassifier(hidden_size=8, layer_num=2, dropout=0.0).use("fused")  # (the bare loop's)
    plain_net = RowLSTMClassifier(hidden_size=8, layer_num=2, dropout=0.0).use("fused")
    plain_net.load_state_dict(whole_net.state_dict())
    whole = e2e.make_whole_step(whole_net, torch.optim.Adam(whole_net.parameters(), lr=1e-3, fused=True))
    initial = whole_net.classifier.weight.detach().clone()
    optimizer = torch.optim.Adam(plain_net.parameters(), lr=1e-3, fused=True)
    for _ in range(3):
        index = torch.randperm(64)[:16]
        logits = plain_net(images[index])
        loss = F.cross_entropy(logits, labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        torch.testing.assert_close(whole(images[index], labels[index]), (loss.detach(), logits.detach()))
    for p, q in zip(whole_net.parameters(), plain_net.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert not torch.equal(whole_net.classifier.weight, initial)  # the steps did train


def test_bare_loop_runs_whole_steps(mnist_dir: Path) -> None:
    assert e2e.bare_loop_steps_per_second(12, 2, str(mnist_dir), "cpu", 4, 1, 32, whole_step=True) > 0


def test_the_levers_change_one_thing_each_and_are_registered_only_while_they_run() -> None:
    """The suite's levers: "ours, autograd loop" is the default ("fused") with autograd's loop, the same dropout
    masks for a seed, so the same numbers; "ours, F.dropout" is the default with F.dropout's masks, the numbers of
    "plain", whose dropout is F.dropout. Outside `levers()` mnist_lstm's registry is as the package left it."""
    before = dict(IMPLEMENTATIONS)
    with levers():
        assert set(IMPLEMENTATIONS) == set(before) | set(LEVERS)
        assert IMPLEMENTATIONS["autograd loop"] == Implementation(lstm_loop, uniform_dropout)
        for lever, same_as in (("autograd loop", "fused"), ("fused, F.dropout", "plain")):
            results = []
            for implementation in (lever, same_as):
                torch.manual_seed(0)
                net = RowLSTMClassifier(hidden_size=6, layer_num=2, dropout=0.5).double().use(implementation)
                logits = net.train()(torch.rand(5, 28, 28, dtype=torch.double))
                logits.sum().backward()
                results.append((logits, [p.grad for p in net.parameters()]))
            torch.testing.assert_close(*results, rtol=0, atol=1e-12)
    assert dict(IMPLEMENTATIONS) == before


def test_speed_overrides_spell_train_pys_speed_settings() -> None:
    """A conf/speed/ preset's name where one is exactly the setting, else the keys that differ from the default."""
    presets = {path.stem: dict(OmegaConf.load(path)) for path in (REPO / "conf" / "speed").glob("*.yaml")}
    assert presets["fused"] == {"loop": "fused", "compile": False, "cuda_graph": "none"}  # the default: no override
    for (cuda_graph, loop), name in e2e.SPEED_PRESETS.items():
        assert presets[name] == {"loop": loop, "compile": False, "cuda_graph": cuda_graph}
    assert speed_overrides() == []
    assert speed_overrides("forward_backward", "triton") == ["speed=graphed"]
    assert speed_overrides("whole_step", "triton") == ["speed=graphed_step"]
    assert speed_overrides("forward_backward") == ["speed.cuda_graph=forward_backward"]
    assert speed_overrides("whole_step", "fused") == ["speed.cuda_graph=whole_step"]
    assert speed_overrides("none", "triton") == ["speed.loop=triton"]


@pytest.mark.parametrize("name", list(e2e.RECIPE_RUNS))
def test_the_recipes_runs_compose_and_are_named_by_their_overrides(name: str) -> None:
    """The recipe runs on a GPU only: here each one's overrides compose train.py's config (no key spelled as it
    was before conf/speed/) into the speed setting its name says, and its name is its command line."""
    overrides = e2e.RECIPE_RUNS[name]
    assert name == " ".join(["train.py", *overrides])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    speeds = {  # (speed.cuda_graph, speed.loop)
        "speed=graphed_step": ("whole_step", "triton"),
        "speed=graphed": ("forward_backward", "triton"),
        "speed.cuda_graph=forward_backward": ("forward_backward", "fused"),
    }
    expected = next((speeds[o] for o in overrides if o in speeds), ("none", "fused"))
    assert (cfg.speed.cuda_graph, cfg.speed.loop, cfg.speed.compile) == (*expected, False)


RESULTS = REPO / "benchmarks" / "results"  # one folder per machine
GPU_RESULTS = RESULTS / "gpu-h100"  # the suite's latest GPU run


def test_the_suite_writes_into_a_folder_per_kind_of_machine() -> None:
    """By default benchmarks/results/cpu/ or gpu/; the kept results lie beside, one folder per machine."""
    assert default_out("cpu") == RESULTS / "cpu" and default_out("cuda") == RESULTS / "gpu"
    kept = {path.name for path in RESULTS.iterdir() if path.is_dir()}
    assert {"cpu-epyc-2core", "gpu-h100", "gpu-h200"} <= kept


def test_training_step_figure_shows_the_results_and_the_goal() -> None:
    """The H100 suite's results: left, every variant at the tutorial's shape, fastest first; right, the ratio of
    each variant measured at every shape, shape by shape, against the GPU goal."""
    results = json.loads((GPU_RESULTS / "results.json").read_text())
    rows = results["train_step"]
    left, right = plots.training_step_figure(results).axes

    tutorial = sorted(r["median_ms"] for r in rows if (r["hidden"], r["layers"]) == (256, 2))
    assert [bar.get_width() for bar in left.patches] == pytest.approx(tutorial)
    assert left.get_yticklabels()[0].get_text() == "nn.LSTM, CUDA graph"  # 2.0 ms, the fastest

    shapes = list(dict.fromkeys((r["hidden"], r["layers"]) for r in rows))
    variants = ["ours", "nn.LSTM", "ours, CUDA graph", "ours, Triton", "ours, Triton, CUDA graph"]
    ratio = {((r["hidden"], r["layers"]), r["variant"]): r["ratio"] for r in rows}
    assert [bar.get_height() for bar in right.patches] == pytest.approx(
        [ratio[shape, variant] for variant in variants for shape in shapes]
    )
    goal = [line for line in right.get_lines() if "goal" in line.get_label()]
    assert [line.get_ydata()[0] for line in goal] == [1.2] and right.get_yscale() == "log"
    low, high = right.get_ylim()  # every bar in view (0.32 to 6.04 on a log scale)
    assert 0 < low < min(ratio.values()) and high > max(ratio.values())


def test_inference_figure_shows_each_models_memory_beside_the_tutorials() -> None:
    """On the GPU, the memory of the 10k one-shot inference per model, then the tutorial's reported 725 and 8,721 MiB,
    against the 150 MiB goal; on the CPU (peak RSS), no goal and no tutorial figures."""
    gpu = json.loads((GPU_RESULTS / "results.json").read_text())
    axes = plots.inference_figure(gpu).axes[0]
    measured = [r["peak_mib"] for r in gpu["inference"] if r["peak_mib"] is not None]
    assert [bar.get_width() for bar in axes.patches] == pytest.approx([*measured, 725.0, 8721.0])
    assert [line.get_xdata()[0] for line in axes.get_lines()] == [150.0]
    assert "68 MiB, 79 ms (3.71×)" in [text.get_text().strip() for text in axes.texts]

    cpu = json.loads((RESULTS / "cpu-epyc-2core" / "results.json").read_text())
    axes = plots.inference_figure(cpu).axes[0]
    assert len(axes.patches) == len([r for r in cpu["inference"] if r["peak_mib"] is not None]) == 4
    assert not axes.get_lines() and "peak RSS added" in axes.get_xlabel()


def test_recipe_figure_adds_up_each_runs_phases_against_the_goal(tmp_path: Path) -> None:
    rows = json.loads((RESULTS / "gpu-h200" / "recipe-h200.json").read_text())
    runs = [r for r in rows if "training_s" in r]
    axes = plots.recipe_figure(rows, "H200").axes[0]
    ends = {}  # bar row -> where its last phase ends
    for bar in axes.patches:
        y = round(bar.get_y() + bar.get_height() / 2)
        ends[y] = max(ends.get(y, 0.0), bar.get_x() + bar.get_width())
    assert [ends[y] for y in range(len(runs))] == pytest.approx([r["wall_s"] for r in runs], abs=1e-9)
    assert [line.get_xdata()[0] for line in axes.get_lines()] == [15.0]
    assert "bare loop, CUDA graph, Triton: 540 steps/s" in axes.get_title()
    failed = {"run": "bare loop, the whole step in one CUDA graph, Triton", "error": "RuntimeError('capture')"}
    title = plots.recipe_figure([failed, *rows], "H200").axes[0].get_title()
    assert "the whole step in one CUDA graph, Triton: failed" in title and "540 steps/s" in title

    # benchmarks.e2e draws it beside the rows it wrote (the recipe itself takes a GPU; its rows here are the H200's).
    out = tmp_path / "recipe.json"

    def recipe(*args: object, out: Path, **kwargs: object) -> list[dict]:
        out.write_text(json.dumps(rows))
        return rows

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(e2e, "recipe", recipe)
        e2e.main(["--out", str(out)])
    assert imread(tmp_path / "recipe.png").shape[0] > 200


@pytest.mark.slow  # an export and 10,000 images a few times over: half a minute
def test_onnx_inference_benchmark_times_both_and_measures_their_memory(tmp_path: Path) -> None:
    out = tmp_path / "onnx.json"
    command = [sys.executable, "-m", "benchmarks.onnx_inference", "--rounds", "2", "--memory-rounds", "1"]
    result = subprocess.run([*command, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["time"]["pytorch"]["ratio"] == 1.0 and results["time"]["onnxruntime"]["ratio"] > 0
    assert all(len(peaks) == 1 and peaks[0] > 0 for peaks in results["peak_mib"].values())
    assert results["max_abs_logit_difference"] < 1e-4
