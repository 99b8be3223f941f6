"""What a Hydra multirun adds to single runs: a record of every failed job, and the sweep summary. (Each job's
TensorBoard run name: mnist_lstm/config/resolvers.py.)

The summary is built from the sweep directory alone (each job's `.hydra/overrides.yaml`, `metrics.yaml`
and, for a failed job, `error.yaml`), so the Hydra callback below writes it when the multirun ends and
`scripts/summarize_sweep.py` rebuilds it later, whatever sweeper or launcher ran the jobs:

    summary.csv   every job: rank, its swept values, all its metrics, all its overrides, its error
    summary.md    the same sorted best-first, val/test metrics only, failed jobs listed with their error
    summary.png   the optimised metric against each swept parameter
"""

from __future__ import annotations

import atexit
import csv
import math
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from collections.abc import Callable

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ERROR_FILE = "error.yaml"  # written into a failed job's directory by SweepSummary.on_job_end
UNFINISHED = "no metrics.yaml and no error.yaml: killed, timed out or still running (see its log)"


@dataclass
class JobResult:
    """One job of a sweep, as its directory tells it."""

    name: str  # the job's directory in the sweep (its job number)
    overrides: dict[str, str]  # key -> value, as the sweeper passed them
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # None: the job finished

    @property
    def failed(self) -> bool:
        return self.error is not None


def _split_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def read_job(job_dir: Path) -> JobResult | None:
    """The job in `job_dir`, or None if the directory is not a Hydra job."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    metrics_file, error_file = job_dir / "metrics.yaml", job_dir / ERROR_FILE
    if not (overrides_file.is_file() or error_file.is_file()):
        return None
    record = OmegaConf.to_container(OmegaConf.load(error_file)) if error_file.is_file() else {}
    raw = record.get("overrides") or (
        OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    )
    overrides = dict(_split_override(str(item)) for item in raw)
    if record:
        return JobResult(job_dir.name, overrides, error=str(record.get("error", "failed")))
    if not metrics_file.is_file():
        # on_job_end never ran: the process was killed (timeout, out of memory) or is still running.
        return JobResult(job_dir.name, overrides, error=UNFINISHED)
    metrics = {str(k): float(v) for k, v in OmegaConf.to_container(OmegaConf.load(metrics_file)).items()}
    return JobResult(job_dir.name, overrides, metrics)


def _job_order(path: Path) -> tuple[int, int, str]:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def read_sweep(sweep_dir: Path) -> list[JobResult]:
    """Every job under `sweep_dir`, in job-number order."""
    dirs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_job_order)
    return [job for job in map(read_job, dirs) if job is not None]


def declared_sweeps(sweep_dir: Path) -> list[Override]:
    """The sweep overrides of the command line and of `hydra.sweeper.params` (e.g. Optuna's search space), as
    recorded in `multirun.yaml` (Hydra's basic sweeper writes it) or else in a job's `.hydra/hydra.yaml`."""
    multirun = sweep_dir / "multirun.yaml"
    source = multirun if multirun.is_file() else next(iter(sorted(sweep_dir.glob("*/.hydra/hydra.yaml"))), None)
    if source is None:
        return []
    hydra_cfg = OmegaConf.to_container(OmegaConf.load(source).hydra, resolve=False)
    params = (hydra_cfg.get("sweeper") or {}).get("params") or {}
    typed = [f"{k}={v}" for k, v in params.items()]
    if source == multirun:  # a job's own hydra.yaml holds that job's overrides, not the sweep's
        typed += list((hydra_cfg.get("overrides") or {}).get("task") or [])
    return [o for o in OverridesParser.create().parse_overrides(typed) if o.is_sweep_override()]


def declared_sweep_keys(sweep_dir: Path) -> list[str]:
    """The keys of `declared_sweeps`."""
    return [o.key_or_group for o in declared_sweeps(sweep_dir)]


def log_scaled_keys(sweep_dir: Path) -> set[str]:
    """The keys searched on a log scale (`tag(log, interval(...))`, as conf/hparams_search/optuna.yaml's lr)."""
    return {o.key_or_group for o in declared_sweeps(sweep_dir) if "log" in getattr(o.value(), "tags", ())}


def sweep_metric(sweep_dir: Path, default: str = "val/acc_best") -> str:
    """The metric the sweep optimised (`optimized_metric` of its config), or `default`."""
    configs = [sweep_dir / "multirun.yaml", *sorted(sweep_dir.glob("*/.hydra/config.yaml"))]
    for path in configs:
        if path.is_file():
            metric = OmegaConf.load(path).get("optimized_metric")
            if metric:
                return str(metric)
    return default


def swept_keys(jobs: list[JobResult], declared: list[str] = ()) -> list[str]:
    """The keys that tell the jobs apart: declared sweep keys and any key whose value differs between jobs."""
    keys = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    varying = [key for key in keys if len({job.overrides.get(key) for job in jobs}) > 1]
    return [key for key in keys if key in declared or key in varying]


def rank(jobs: list[JobResult], metric: str, mode: str = "max") -> list[JobResult]:
    """Best first on `metric`; finished jobs without the metric next; failed jobs last."""
    sign = -1.0 if mode == "max" else 1.0

    def key(job: JobResult) -> tuple[int, float]:
        value = job.metrics.get(metric, math.nan)
        if job.failed:
            return (2, 0.0)
        return (1, 0.0) if math.isnan(value) else (0, sign * value)

    return sorted(jobs, key=key)  # stable: ties keep job order


def _metric_columns(jobs: list[JobResult], metric: str, prefixes: tuple[str, ...] = ()) -> list[str]:
    names = {k for job in jobs for k in job.metrics if not prefixes or k.startswith(prefixes)} - {metric}
    return [metric, *sorted(names, key=lambda k: (not k.startswith("val/"), k))]  # val/ before test/


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def plot_metric(jobs: list[JobResult], keys: list[str], metric: str, log_scaled: set[str] = frozenset()) -> Figure:
    """One panel per swept parameter: each finished job's `metric` against that parameter's value.

    Numeric values on a numeric axis, log-scaled for the keys in `log_scaled` (searched on a log scale) and for
    values that span two decades; the values themselves as ticks when there are few (a grid) and they fit, a few
    round ticks otherwise, as many as fit without overlapping. Other values as categories.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # here: a training run imports this module but never plots

    done = [job for job in jobs if not job.failed and not math.isnan(job.metrics.get(metric, math.nan))]
    keys = keys or ["job"]
    fig = Figure(figsize=(4.0 * len(keys), 3.4), layout="constrained")
    FigureCanvasAgg(fig)  # (draws it, to see whether tick labels overlap)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    best = rank(done, metric)[0] if done else None
    tickings = []
    for ax, key in zip(axes, keys, strict=True):
        values = [job.name if key == "job" else job.overrides.get(key, "") for job in done]
        numbers = [_number(v) for v in values]
        if numbers and all(n is not None for n in numbers):
            xs: list[Any] = numbers
            log = min(numbers) > 0 and (key in log_scaled or max(numbers) / min(numbers) >= 100)
            if log:
                ax.set_xscale("log")
            tickings.append((ax, _tickings(sorted(set(numbers)), log)))
        else:
            categories = list(dict.fromkeys(values))
            xs = [categories.index(v) for v in values]
            ax.set_xticks(range(len(categories)), categories)
        ys = [job.metrics[metric] for job in done]
        ax.scatter(xs, ys, color="tab:blue", alpha=0.8)
        if best is not None:
            i = done.index(best)
            ax.scatter([xs[i]], [ys[i]], marker="*", s=200, color="tab:orange", label=f"best (job {best.name})")
            ax.legend(loc="best", fontsize="small")
        ax.set_xlabel(key + (" (log scale)" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    failed = sum(job.failed for job in jobs)
    fig.suptitle(f"{metric}: {len(done)} jobs" + (f" ({failed} failed, not shown)" if failed else ""))
    for ax, options in tickings:  # the most detailed ticks whose labels do not overlap
        for apply in options:
            apply(ax)
            fig.canvas.draw()
            if not _overlapping(ax, fig.canvas.get_renderer()):
                break
    return fig


def _tickings(distinct: list[float], log: bool) -> list[Callable[[Axes], None]]:
    """Ways to tick a numeric axis, from the most detailed: each value tried (a grid of few values), then round
    values, fewer and fewer; every label written as %g (0.001, 256)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullLocator

    def ticking(locator: Any) -> Callable[[Axes], None]:
        def apply(ax: Axes) -> None:
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_locator(NullLocator())

        return apply

    options = [ticking(FixedLocator(distinct))] if len(distinct) <= 6 else []
    if log:
        return options + [ticking(LogLocator(subs=subs)) for subs in ((1.0, 2.0, 5.0), (1.0, 3.0), (1.0,))]
    return options + [ticking(MaxNLocator(nbins=n)) for n in (6, 4, 3, 2)]


def _overlapping(ax: Axes, renderer: Any) -> bool:
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def tick_labels_overlap(fig: Figure) -> bool:
    """Whether any two x tick labels of any panel of `fig` overlap, as drawn."""
    fig.canvas.draw()
    return any(_overlapping(ax, fig.canvas.get_renderer()) for ax in fig.axes)


def _fmt(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def _swept_values(job: JobResult, keys: list[str]) -> str:
    return " ".join(f"{k}={job.overrides[k]}" for k in keys if k in job.overrides)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Summary:
    markdown: str
    paths: list[Path]


def _write_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def summarize(sweep_dir: str | Path, metric: str = "val/acc_best", mode: str = "max") -> Summary:
    """Write summary.csv, summary.md and summary.png into `sweep_dir`; return the Markdown and the paths."""
    sweep_dir = Path(sweep_dir)
    jobs = read_sweep(sweep_dir)
    keys = swept_keys(jobs, declared_sweep_keys(sweep_dir))
    ranked = rank(jobs, metric, mode)
    common = {k: v for k, v in (jobs[0].overrides.items() if jobs else []) if k not in keys}
    common = {k: v for k, v in common.items() if all(job.overrides.get(k) == v for job in jobs)}

    all_metrics = _metric_columns(jobs, metric)
    csv_path = sweep_dir / "summary.csv"

    def write_csv(path: Path) -> None:
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["rank", "job", "status", *keys, *all_metrics, "overrides", "error"])
            for i, job in enumerate(ranked, 1):
                status = "failed" if job.failed else "ok"
                overrides = " ".join(f"{k}={v}" for k, v in job.overrides.items())
                values = [_fmt(job.metrics.get(m)) for m in all_metrics]
                row = [i, job.name, status, *(job.overrides.get(k, "") for k in keys), *values, overrides]
                writer.writerow([*row, job.error or ""])

    _write_atomically(csv_path, write_csv)

    shown = _metric_columns(jobs, metric, ("val/", "test/"))
    finished = [job for job in ranked if not job.failed]
    failed = [job for job in ranked if job.failed]
    rows = [
        [str(i), job.name, *(job.overrides.get(k, "") for k in keys), *(_fmt(job.metrics.get(m)) for m in shown)]
        for i, job in enumerate(finished, 1)
    ]
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"{len(jobs)} jobs: {len(finished)} finished, {len(failed)} failed. Sorted by {metric} ({mode}), best first.",
    ]
    if common:
        lines += ["", "Common to all jobs: " + " ".join(f"`{k}={v}`" for k, v in common.items())]
    lines += ["", _markdown_table(["rank", "job", *keys, *shown], rows)]
    if finished and not math.isnan(finished[0].metrics.get(metric, math.nan)):
        best = finished[0]
        lines += [
            "",
            f"Best: job {best.name} ({_swept_values(best, keys)}): {metric}={_fmt(best.metrics[metric])}, "
            f"in {sweep_dir / best.name}",
        ]
    if failed:
        lines += ["", "## Failed jobs", ""]
        lines += [f"- job {job.name} ({_swept_values(job, keys)}): {job.error}" for job in failed]
    lines += ["", f"![{metric} against each swept parameter](summary.png)", ""]
    markdown = "\n".join(lines)
    md_path = sweep_dir / "summary.md"
    _write_atomically(md_path, lambda p: p.write_text(markdown))

    png_path = sweep_dir / "summary.png"
    figure = plot_metric(jobs, keys, metric, log_scaled_keys(sweep_dir))
    _write_atomically(png_path, lambda p: figure.savefig(p, format="png", dpi=100))
    return Summary(markdown, [csv_path, md_path, png_path])


def record_failure(job_dir: Path, job_return: JobReturn) -> None:
    """Write `error.yaml` (overrides, one-line error, traceback) into a failed job's directory.

    The directory may have been removed (a refused run leaves nothing behind, see cli.py): it is made
    again so the sweep keeps a trace of the job."""
    err = job_return._return_value
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    record = {
        "overrides": list(job_return.overrides or []),
        "error": f"{type(err).__name__}: {message}" if message else type(err).__name__,
        "traceback": "".join(traceback.format_exception(err)) if isinstance(err, BaseException) else "",
    }
    job_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(record), job_dir / ERROR_FILE)


class SweepSummary(Callback):
    """Hydra callback (registered in conf/hydra/default.yaml) that records failed jobs and writes
    the summary when a multirun ends.

    Hydra's sweepers re-raise the first failed job's error after its batch of jobs, which skips
    `on_multirun_end`; the summary is then written at interpreter exit instead, so a sweep with a
    failed job still ends with its summary (the failed job listed with its error).
    """

    def __init__(self, metric: str = "val/acc_best", mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        self.metric = metric
        self.mode = mode
        self._pending_sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._pending_sweep_dir = Path(str(config.hydra.sweep.dir))
        atexit.register(self._write_pending)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        # Runs where the job ran (a joblib worker, a SLURM node): the record lands beside the job's outputs.
        if config.hydra.mode == RunMode.MULTIRUN and job_return.status == JobStatus.FAILED:
            record_failure(Path(config.hydra.runtime.output_dir), job_return)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write_pending()

    def _write_pending(self) -> None:
        sweep_dir, self._pending_sweep_dir = self._pending_sweep_dir, None
        if sweep_dir is None or not sweep_dir.is_dir():
            return
        summary = summarize(sweep_dir, self.metric, self.mode)
        print(f"\n{summary.markdown}\nSummary written to {', '.join(str(p) for p in summary.paths)}", flush=True)
