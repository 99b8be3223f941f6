"""Sweeps: the summary of a multirun (from made-up and from real sweep directories), the sweep configs,
and real sweeps through Hydra's basic, joblib, Optuna and submitit launchers (the last three marked slow)."""

from __future__ import annotations

import csv
import itertools
import math
import random
from pathlib import Path

import pytest
from hydra.types import RunMode
from hydra.utils import instantiate
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread
from omegaconf import OmegaConf

from mnist_lstm.run.sweep import (
    ERROR_FILE,
    UNFINISHED,
    SweepSummary,
    declared_sweeps,
    plot_metric,
    read_sweep,
    summarize,
    swept_keys,
)
from tests.helpers import compose_train, run_script

# A real job, as small as it gets: 4 steps, one validation and one test batch of 1,000 images.
TINY = ["max_steps=4", "val_every=4", "trainer.num_sanity_val_steps=0"]
TINY += ["+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "callbacks.progress_bar.refresh_rate=0"]
TINY += ["~callbacks.test_figures"]  # the figures of the test digits take longer than the whole tiny run


def make_job(sweep: Path, name: str, overrides: dict, metrics: dict | None = None, error: str | None = None) -> None:
    """A job directory as a multirun leaves it: Hydra's overrides, then metrics.yaml or error.yaml (or neither)."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    typed = [f"{k}={v}" for k, v in overrides.items()]
    OmegaConf.save(OmegaConf.create(typed), job / ".hydra" / "overrides.yaml")
    if metrics is not None:
        OmegaConf.save(OmegaConf.create(metrics), job / "metrics.yaml")
    if error is not None:
        OmegaConf.save(OmegaConf.create({"overrides": typed, "error": error}), job / ERROR_FILE)


@pytest.fixture
def made_up_sweep(tmp_path: Path) -> Path:
    """lr x hidden_size, common max_steps; job 3 failed, job 4 never finished."""
    sweep = tmp_path / "sweep"
    common = {"max_steps": 5}
    make_job(sweep, "0", {"lr": 1e-4, "hidden_size": 16, **common}, {"val/acc_best": 0.50, "test/acc": 0.48})
    make_job(sweep, "1", {"lr": 1e-2, "hidden_size": 16, **common}, {"val/acc_best": 0.90, "test/acc": 0.88})
    make_job(sweep, "2", {"lr": 1e-3, "hidden_size": 32, **common}, {"val/acc_best": 0.70, "test/acc": 0.71})
    make_job(sweep, "3", {"lr": -1, "hidden_size": 32, **common}, error="UserError: lr=-1 is out of range")
    make_job(sweep, "4", {"lr": 1e-2, "hidden_size": 32, **common})
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_summary_ranks_best_first_and_lists_failed_jobs(made_up_sweep: Path) -> None:
    md = summarize(made_up_sweep, "val/acc_best", "max")
    assert sorted(p.name for p in made_up_sweep.glob("summary.*")) == ["summary.csv", "summary.md", "summary.png"]

    rows = read_csv(made_up_sweep / "summary.csv")
    assert [r["job"] for r in rows] == ["1", "2", "0", "3", "4"]  # best first, then failed and unfinished
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed", "failed"]
    assert [r["lr"] for r in rows[:3]] == ["0.01", "0.001", "0.0001"] and rows[0]["hidden_size"] == "16"
    assert rows[0]["val/acc_best"] == "0.9000" and rows[0]["test/acc"] == "0.8800" and rows[3]["test/acc"] == ""
    assert rows[3]["error"] == "UserError: lr=-1 is out of range" and rows[4]["error"] == UNFINISHED
    assert rows[0]["error"] == ""
    assert "max_steps" not in rows[0]  # the same in every job: not a column
    assert rows[0]["overrides"] == "lr=0.01 hidden_size=16 max_steps=5"

    assert md == (made_up_sweep / "summary.md").read_text()
    assert "5 jobs: 3 finished, 2 failed" in md and "Common to all jobs: `max_steps=5`" in md
    assert "| rank | job | lr | hidden_size | val/acc_best | test/acc |" in md
    assert "| 1 | 1 | 0.01 | 16 | 0.9000 | 0.8800 |" in md
    table = [line for line in md.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [line.split(" | ")[1] for line in table] == ["1", "2", "0"]  # the finished jobs only
    assert "- job 3 (lr=-1 hidden_size=32): UserError: lr=-1 is out of range" in md
    assert f"- job 4 (lr=0.01 hidden_size=32): {UNFINISHED}" in md
    assert "Best: job 1 (lr=0.01 hidden_size=16): val/acc_best=0.9000" in md

    # The PNG: one 4 x 3.4 inch axes per swept parameter, at 100 dpi.
    assert imread(made_up_sweep / "summary.png").shape[:2] == (340, 800)


def test_summary_can_rank_on_a_metric_to_minimise(made_up_sweep: Path) -> None:
    md = summarize(made_up_sweep, "test/acc", "min")
    rows = read_csv(made_up_sweep / "summary.csv")
    assert [r["job"] for r in rows[:3]] == ["0", "2", "1"]
    assert list(rows[0])[3:6] == ["lr", "hidden_size", "test/acc"]  # the ranking metric first
    assert "Sorted by test/acc (min)" in md and "Best: job 0 (lr=0.0001 hidden_size=16): test/acc=0.4800" in md


def test_jobs_with_equal_results_keep_their_order(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for i in range(12):  # job 10 after job 2: numbers, not names, order the jobs
        make_job(sweep, str(i), {"seed": i}, {"val/acc_best": 0.5 if i % 2 else 0.75})
    summarize(sweep)
    evens_then_odds = [str(i) for i in range(0, 12, 2)] + [str(i) for i in range(1, 12, 2)]
    assert [r["job"] for r in read_csv(sweep / "summary.csv")] == evens_then_odds


def test_plot_has_the_metric_against_each_swept_parameter(made_up_sweep: Path) -> None:
    sweep = read_sweep(made_up_sweep)
    keys = swept_keys(sweep)
    assert keys == ["lr", "hidden_size"]
    figure = plot_metric(sweep, keys, "val/acc_best")
    assert len(figure.axes) == 2
    lr_axis, hidden_axis = figure.axes
    assert (lr_axis.get_xlabel(), hidden_axis.get_xlabel()) == ("lr (log scale)", "hidden_size")
    assert lr_axis.get_ylabel() == hidden_axis.get_ylabel() == "val/acc_best"
    assert lr_axis.get_xscale() == "log" and hidden_axis.get_xscale() == "linear"  # lr spans two decades
    points = lr_axis.collections[0].get_offsets()  # the finished jobs only
    assert sorted(map(tuple, points.tolist())) == [(1e-4, 0.5), (1e-3, 0.7), (1e-2, 0.9)]
    assert lr_axis.collections[1].get_offsets().tolist() == [[1e-2, 0.9]]  # the best, starred
    title = "val/acc_best of the finished jobs (best: job 1, the star)\nnot shown: 2 failed or unfinished"
    assert figure.get_suptitle() == title

    lowest = plot_metric(sweep, keys, "val/acc_best", mode="min")
    assert lowest.axes[0].collections[1].get_offsets().tolist() == [[1e-4, 0.5]]


def optuna_like_sweep(sweep: Path, n: int, seed: int = 0) -> Path:
    """`n` finished jobs as Optuna's TPE gives them: lr drawn on a log scale within one decade and a half, hidden
    sizes from a choice, dropout from an interval, and the data folder as a long path."""
    generator = random.Random(seed)
    for k in range(n):
        overrides = {
            "lr": f"{10 ** generator.uniform(-3.6, -2.1):.6g}",
            "hidden_size": generator.choice([64, 128, 256]),
            "dropout": f"{generator.uniform(0.0, 0.6):.4g}",
            "data.data_dir": f"/home/someone/experiments/mnist-lstm/data/copy{k % 3}",
        }
        make_job(sweep, str(k), overrides, {"val/acc_best": generator.uniform(0.9, 0.99)})
    return sweep


def overlapping_tick_labels(figure: Figure) -> list[tuple[str, str]]:
    """The pairs of x tick labels of one axes that overlap as drawn. Labels slanted alike (right-aligned to their
    ticks) lie in parallel strips, apart by their ticks' distance times the sine of the slant: they overlap if that
    is less than a line of text, though their upright bounding boxes may overlap without them touching."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    pairs = []
    for ax in figure.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        boxes = {t: t.get_window_extent(canvas.get_renderer()) for t in labels}
        for a, b in itertools.combinations(labels, 2):
            apart = abs(boxes[a].x1 - boxes[b].x1) * math.sin(math.radians(a.get_rotation()))
            if boxes[a].overlaps(boxes[b]) and apart < 1.2 * a.get_size() * figure.dpi / 72:
                pairs.append((a.get_text(), b.get_text()))
    return pairs


@pytest.mark.parametrize("n", [3, 40])
def test_the_plot_is_readable_for_a_few_jobs_and_for_many(tmp_path: Path, n: int) -> None:
    """One labelled axes per swept parameter; a key searched on a log scale gets a log axis though its values span
    less than two decades; a few ticks on each axis, a grid's own values as ticks, and no two labels overlapping,
    with 3 jobs or 40."""
    sweep = read_sweep(optuna_like_sweep(tmp_path / "sweep", n))
    keys = swept_keys(sweep)
    assert keys == ["lr", "hidden_size", "dropout", "data.data_dir"]
    figure = plot_metric(sweep, keys, "val/acc_best", log_scaled={"lr"})
    assert [ax.get_xlabel() for ax in figure.axes] == ["lr (log scale)", "hidden_size", "dropout", "data.data_dir"]
    assert all(ax.get_ylabel() == "val/acc_best" for ax in figure.axes)
    lr_axis, hidden_axis, dropout_axis, data_axis = figure.axes
    assert lr_axis.get_xscale() == "log" and dropout_axis.get_xscale() == "linear"
    assert overlapping_tick_labels(figure) == []
    for axis in (lr_axis, dropout_axis):
        low, high = axis.get_xlim()
        ticks = [t for t in axis.get_xticks() if low <= t <= high]
        assert 2 <= len(ticks) <= 8, (axis.get_xlabel(), ticks)
    hidden_sizes = {int(size) for size in sweep.overrides["hidden_size"]}
    assert {int(t.get_text()) for t in hidden_axis.get_xticklabels()} == hidden_sizes
    paths = {t.get_text() for t in data_axis.get_xticklabels()}  # long: cut to the end that tells them apart
    assert {path[-5:] for path in paths} == {"copy0", "copy1", "copy2"} and all(len(path) <= 24 for path in paths)


def test_a_sweep_remembers_which_keys_it_searched_on_a_log_scale(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_job(sweep, "0", {"lr": 0.002, "dropout": 0.1}, {"val/acc_best": 0.5})
    params = {"lr": "tag(log, interval(1e-4, 1e-2))", "dropout": "interval(0, 0.5)"}
    OmegaConf.save(OmegaConf.create({"hydra": {"sweeper": {"params": params}}}), sweep / "0" / ".hydra" / "hydra.yaml")
    assert declared_sweeps(sweep) == {"lr": True, "dropout": False}


def test_a_single_swept_value_is_still_a_column_when_declared(tmp_path: Path) -> None:
    """Keys swept on the command line (multirun.yaml) or by the sweeper's params are columns even if equal."""
    sweep = tmp_path / "sweep"
    for i, seed in enumerate([1, 2]):
        make_job(sweep, str(i), {"layer_num": 2, "seed": seed}, {"val/acc_best": 0.5 + i / 10})
    multirun = {"hydra": {"overrides": {"task": ["layer_num=2", "seed=1,2"]}, "sweeper": {"params": None}}}
    OmegaConf.save(OmegaConf.create(multirun), sweep / "multirun.yaml")
    assert swept_keys(read_sweep(sweep), declared_sweeps(sweep)) == ["seed"]
    assert "| rank | job | seed |" in summarize(sweep)
    multirun["hydra"]["sweeper"]["params"] = {"layer_num": "2,3"}
    OmegaConf.save(OmegaConf.create(multirun), sweep / "multirun.yaml")
    assert "| rank | job | layer_num | seed |" in summarize(sweep)


def test_summarize_sweep_script_rebuilds_the_summary(made_up_sweep: Path, tmp_path: Path) -> None:
    result = run_script("summarize_sweep.py", str(made_up_sweep))
    assert result.returncode == 0, result.stderr
    assert "| 1 | 1 | 0.01 | 16 | 0.9000 | 0.8800 |" in result.stdout
    assert {p.name for p in made_up_sweep.glob("summary.*")} == {"summary.csv", "summary.md", "summary.png"}

    result = run_script("summarize_sweep.py", str(tmp_path / "nothing"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: ") and "holds no sweep jobs" in result.stderr


def test_the_summary_callback_is_registered_with_the_optimised_metric() -> None:
    cfg = compose_train("optimized_metric=val/loss", "hydra.callbacks.sweep_summary.mode=min")
    callback = instantiate(cfg.hydra.callbacks.sweep_summary)
    assert isinstance(callback, SweepSummary) and (callback.metric, callback.mode) == ("val/loss", "min")


def test_optuna_search_space() -> None:
    cfg = compose_train("hparams_search=optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.hydra.mode == RunMode.MULTIRUN and cfg.optimized_metric == "val/acc_best"
    assert dict(sweeper.params) == {
        "lr": "tag(log, interval(1e-4, 1e-2))",
        "hidden_size": "choice(64, 128, 256)",
        "layer_num": "choice(1, 2, 3)",
        "dropout": "interval(0.0, 0.6)",
    }
    assert sweeper.storage is None  # in memory: optuna 2.10 with the installed SQLAlchemy needs no database


def test_launcher_configs() -> None:
    joblib = compose_train("hydra/launcher=joblib").hydra.launcher
    assert joblib._target_.endswith("JoblibLauncher") and joblib.n_jobs == -1
    slurm = compose_train("hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4", "hydra.launcher.partition=gpu")
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 4, 4)
    assert launcher.timeout_min == 60 and launcher.submitit_folder.endswith("/.submitit/%j")


def multirun(sweep_dir: Path, mnist_dir: Path, *overrides: str) -> tuple[int, str, str]:
    data = [] if any(o.startswith("data.data_dir=") for o in overrides) else [f"data.data_dir={mnist_dir}"]
    result = run_script("train.py", "-m", *overrides, *TINY, *data, f"hydra.sweep.dir={sweep_dir}")
    return result.returncode, result.stdout, result.stderr


def check_finished_jobs(sweep: Path, rows: list[dict[str, str]]) -> None:
    """Each row's metrics are its job's metrics.yaml, the rows best-first."""
    for row in rows:
        metrics = OmegaConf.load(sweep / row["job"] / "metrics.yaml")
        assert row["status"] == "ok" and float(row["val/acc_best"]) == pytest.approx(metrics["val/acc_best"], abs=1e-4)
        assert float(row["test/acc"]) == pytest.approx(metrics["test/acc"], abs=1e-4)
    values = [float(r["val/acc_best"]) for r in rows]
    assert values == sorted(values, reverse=True)


def test_grid_multirun_ends_with_its_summary(mnist_dir: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "grid"
    code, out, err = multirun(sweep, mnist_dir, "layer_num=1,2", "hidden_size=16,24")
    assert code == 0, err[-3000:]
    assert f"# Sweep summary: {sweep}" in out and "4 jobs: 4 finished, 0 failed" in out

    rows = read_csv(sweep / "summary.csv")
    grid = sorted((r["layer_num"], r["hidden_size"]) for r in rows)
    assert grid == [("1", "16"), ("1", "24"), ("2", "16"), ("2", "24")]
    check_finished_jobs(sweep, rows)
    assert imread(sweep / "summary.png").shape[:2] == (340, 800)  # layer_num and hidden_size panels

    # Every job has its own TensorBoard run, named by its overrides.
    for row in rows:
        (run,) = (sweep / row["job"] / "tensorboard").iterdir()
        assert f"hidden_size={row['hidden_size']}" in run.name and f"layer_num={row['layer_num']}" in run.name
        assert "data.data_dir" not in run.name and any(run.glob("events.out.tfevents.*"))


def test_a_sweep_over_experiments_keeps_its_jobs_in_one_folder(mnist_dir: Path, tmp_path: Path) -> None:
    """Each experiment names its own task (logs/<task>/runs/ for a single run), yet the jobs of one multirun stay
    together under logs/train/multiruns/<date>/, where its summary finds them (the ablation's command)."""
    logs = tmp_path / "logs"
    result = run_script("train.py", "-m", "experiment=tutorial,ablation/tutorial+clip", *TINY,
                        f"data.data_dir={mnist_dir}", f"paths.log_dir={logs}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (logs / "train" / "multiruns").iterdir()
    assert sorted(p.name for p in logs.iterdir()) == ["train"]
    assert "2 jobs: 2 finished, 0 failed" in result.stdout
    rows = read_csv(sweep / "summary.csv")
    assert sorted(r["experiment"] for r in rows) == ["ablation/tutorial+clip", "tutorial"]
    check_finished_jobs(sweep, rows)


def test_a_failed_job_is_listed_and_loses_no_other_result(mnist_dir: Path, tmp_path: Path) -> None:
    """The second job finds no MNIST in its data dir (a value no check before the sweep can refuse)."""
    sweep, empty = tmp_path / "failing", tmp_path / "empty"
    code, out, err = multirun(
        sweep, mnist_dir, "hidden_size=16", "data.download=false", f"data.data_dir={mnist_dir},{empty}"
    )
    assert code == 1  # Hydra reports the failed job...
    assert f"MNIST is not in {empty}" in err
    assert "2 jobs: 1 finished, 1 failed" in out  # ...and the summary is still written and printed
    ok, failed = read_csv(sweep / "summary.csv")
    check_finished_jobs(sweep, [ok])
    assert (ok["data.data_dir"], failed["data.data_dir"], failed["status"]) == (str(mnist_dir), str(empty), "failed")
    assert failed["error"].startswith(f"UserError: MNIST is not in {empty}")
    assert "Traceback" in OmegaConf.load(sweep / failed["job"] / ERROR_FILE).traceback


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_processes(mnist_dir: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "joblib"
    code, out, err = multirun(sweep, mnist_dir, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hidden_size=16,24")
    assert code == 0, err[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in err + out
    rows = read_csv(sweep / "summary.csv")
    assert sorted(r["hidden_size"] for r in rows) == ["16", "24"]
    check_finished_jobs(sweep, rows)


@pytest.mark.slow
def test_optuna_search_is_summarised(mnist_dir: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "optuna"
    space = ["hidden_size=choice(16,24)", "layer_num=choice(1,2)"]  # on the command line: replaces those ranges
    code, out, err = multirun(sweep, mnist_dir, "hparams_search=optuna", "hydra.sweeper.n_trials=3", *space)
    assert code == 0, err[-3000:]
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == 3
    check_finished_jobs(sweep, rows)
    for row in rows:
        assert 1e-4 <= float(row["lr"]) <= 1e-2 and 0.0 <= float(row["dropout"]) <= 0.6
        assert row["hidden_size"] in ("16", "24") and row["layer_num"] in ("1", "2")
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(float(rows[0]["val/acc_best"]), abs=1e-4)


@pytest.mark.slow
def test_submitit_local_runs_the_cluster_path(mnist_dir: Path, tmp_path: Path) -> None:
    """The submitit launcher that submits to SLURM, with its local executor: jobs in their own processes."""
    sweep = tmp_path / "submitit"
    code, out, err = multirun(
        sweep, mnist_dir, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "hidden_size=16,24"
    )
    assert code == 0, err[-3000:]
    rows = read_csv(sweep / "summary.csv")
    assert sorted(r["hidden_size"] for r in rows) == ["16", "24"]
    check_finished_jobs(sweep, rows)
    assert any((sweep / ".submitit").iterdir())  # submitit's own job folders


def test_a_sweep_whose_every_job_failed_is_still_summarised(tmp_path: Path) -> None:
    sweep = tmp_path / "all-failed"
    for i, hidden in enumerate([8, 16]):
        make_job(sweep, str(i), {"hidden_size": hidden}, error=f"MNIST is not in nodata ({i})")
    md = summarize(sweep, "val/acc_best", "max")
    assert "MNIST is not in nodata (0)" in md and "MNIST is not in nodata (1)" in md
    assert all((sweep / name).is_file() for name in ("summary.csv", "summary.md", "summary.png"))
