"""A multirun's summary.csv, summary.md and summary.png (docs/sweeps.md), built from the job directories alone
(.hydra/overrides.yaml, metrics.yaml or error.yaml), whatever sweeper or launcher ran the jobs."""

import atexit
import contextlib
import io
import traceback
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter
from omegaconf import DictConfig, OmegaConf

ERROR_FILE = "error.yaml"  # written into a failed job's directory by SweepSummary.on_job_end
UNFINISHED = "no metrics.yaml and no error.yaml: killed, timed out or still running (see its log)"


class Sweep(NamedTuple):  # one row per job, indexed by its directory's name, in job order
    overrides: pd.DataFrame  # a column per overridden key: the value as typed (NaN where a job lacks the key)
    metrics: pd.DataFrame  # a column per metric of metrics.yaml (NaN: failed or unfinished)
    jobs: pd.DataFrame  # status (ok or failed), overrides (all, as typed), error


def _load(path: Path) -> Any:
    return OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else None


def read_sweep(sweep_dir: str | Path) -> Sweep:
    names, overrides, metrics, jobs = [], [], [], []
    for job_dir in sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir()), key=lambda p: p.name.zfill(9)):
        failure = _load(job_dir / ERROR_FILE) or {}  # holds the overrides too: a refused job leaves no .hydra/
        typed = failure.get("overrides") or _load(job_dir / ".hydra" / "overrides.yaml")
        if typed is None:
            continue  # not a job (e.g. submitit's .submitit/)
        names.append(job_dir.name)
        overrides.append(dict(str(o).lstrip("+~").partition("=")[::2] for o in typed))  # ~key (deleted): ""
        metrics.append(_load(job_dir / "metrics.yaml"))
        # Neither file: on_job_end never ran; the job was killed (timeout, out of memory) or is still running.
        error = failure.get("error", "failed") if failure else None if metrics[-1] is not None else UNFINISHED
        jobs.append({"status": "failed" if error else "ok", "overrides": " ".join(map(str, typed)), "error": error})
    metrics = pd.DataFrame([m or {} for m in metrics], names, dtype=float)
    return Sweep(pd.DataFrame(overrides, names), metrics, pd.DataFrame(jobs, names))


def declared_sweeps(sweep_dir: Path) -> dict[str, bool]:
    """The keys the sweep declared (command line, `hydra.sweeper.params`), each with whether it is searched on a log
    scale: from multirun.yaml, else a job's .hydra/hydra.yaml (whose command-line overrides are that job's own)."""
    multirun = sweep_dir / "multirun.yaml"
    source = multirun if multirun.is_file() else next(iter(sorted(sweep_dir.glob("*/.hydra/hydra.yaml"))), None)
    if source is None:
        return {}
    hydra = OmegaConf.to_container(OmegaConf.load(source).hydra, resolve=False)
    typed = [f"{k}={v}" for k, v in ((hydra.get("sweeper") or {}).get("params") or {}).items()]
    typed += hydra["overrides"]["task"] if source == multirun else []
    sweeps = [o for o in OverridesParser.create().parse_overrides(typed) if o.is_sweep_override()]
    return {o.key_or_group: "log" in getattr(o.value(), "tags", ()) for o in sweeps}


def swept_keys(sweep: Sweep, declared: Any = ()) -> list[str]:
    """The keys that tell the jobs apart: the declared ones, even with a single value, and any that differs."""
    return [key for key, values in sweep.overrides.items() if key in declared or values.nunique(dropna=False) > 1]


def plot_metric(sweep: Sweep, keys: list[str], metric: str, mode: str = "max", log_scaled: Any = ()) -> Figure:
    """One axes per swept key: each finished job's `metric` against the key's value, the best starred."""
    y = sweep.metrics.get(metric, pd.Series(dtype=float)).dropna()
    best = (y.idxmax() if mode == "max" else y.idxmin()) if len(y) else None
    done, keys = sweep.overrides.loc[y.index].assign(job=y.index), keys or ["job"]
    fig = Figure(figsize=(4.0 * len(keys), 3.4), layout="constrained")
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys, strict=True):
        x = pd.to_numeric(done[key], errors="coerce")
        if x.isna().any():  # not numbers: categories, a long one (a path) cut to its end
            x = done[key].map(str).map(lambda v: v if len(v) <= 24 else "…" + v[-23:])
        elif len(x):  # (none when every job failed: an empty panel)
            values = x.drop_duplicates().sort_values()
            low, high = values.iloc[0], values.iloc[-1]
            if low > 0 and (key in log_scaled or high >= 100 * low):
                ax.set_xscale("log")  # ticks at 1, 2 and 5 of each decade over a short span, else decades
                ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5) if high < 100 * low else (1,)))
            elif len(values) <= 6 and (values.diff().dropna() >= (high - low) / 8).all():
                ax.set_xticks(values)  # a grid: its own values, when they are apart
            ax.xaxis.set_major_formatter("{x:.4g}")  # as a user types them: 0.001, 256 (not 10^-3, no offset)
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.scatter(x, y, color="tab:blue", alpha=0.7)
        if best is not None:
            ax.scatter(x[[best]], y[[best]], marker="*", s=250, color="tab:orange", zorder=3)
        ax.set(xlabel=key + (" (log scale)" if ax.get_xscale() == "log" else ""), ylabel=metric)
        ax.margins(x=0.1)  # room for the star at either end
        ax.grid(alpha=0.3)
    fig.autofmt_xdate(rotation=30)  # long values (paths, 0.0001234) side by side would overlap
    title = f"{metric} of the finished jobs" + (f" (best: job {best}, the star)" if best is not None else "")
    hidden = f"\nnot shown: {len(sweep.jobs) - len(y)} failed or unfinished" if len(sweep.jobs) > len(y) else ""
    fig.suptitle(title + hidden, fontsize="medium")  # on two lines: a single axes is 4 inches wide
    return fig


def summarize(sweep_dir: str | Path, metric: str = "val/acc_best", mode: str = "max") -> str:
    """Write summary.csv, summary.md and summary.png into `sweep_dir`; return the Markdown."""
    sweep_dir = Path(sweep_dir)
    sweep, declared = read_sweep(sweep_dir), declared_sweeps(sweep_dir)
    keys = swept_keys(sweep, declared)
    metrics = sorted(sweep.metrics, key=lambda m: (m != metric, not m.startswith("val/"), m))  # then test/, train/
    table = pd.concat(
        [sweep.jobs.status, sweep.overrides[keys], sweep.metrics[metrics], sweep.jobs.iloc[:, 1:]], axis=1
    )
    # Best first, then the finished jobs without the metric, then the failed ones; ties in job order (a stable sort).
    table["_value"] = sweep.metrics.get(metric)
    table = table.sort_values(["status", "_value"], ascending=[False, mode == "min"]).drop(columns="_value")
    table[metrics] = table[metrics].map("{:.4f}".format, na_action="ignore")
    table.insert(0, "job", table.index)
    table.insert(0, "rank", range(1, len(table) + 1))
    table.to_csv(sweep_dir / "summary.csv", index=False)

    finished, failed = table[table.status == "ok"], table[table.status == "failed"]
    shown = ["rank", "job", *keys, *(m for m in metrics if m == metric or m.startswith(("val/", "test/")))]
    common = " ".join(f"`{k}={v.iloc[0]}`" for k, v in sweep.overrides.drop(columns=keys).items())  # not swept

    def about(job: pd.Series) -> str:  # job 3 (lr=0.01 hidden_size=16)
        return f"job {job.job} (" + " ".join(f"{k}={job[k]}" for k in keys if pd.notna(job[k])) + ")"

    rows = [shown, ["---"] * len(shown), *finished[shown].fillna("").astype(str).to_numpy()]
    best = table.iloc[0] if sweep.metrics.get(metric, pd.Series()).notna().any() else None
    failures = [f"- {about(job)}: {job.error}" for _, job in failed.iterrows()]
    paragraphs = [
        f"# Sweep summary: {sweep_dir}",
        f"{len(table)} jobs: {len(finished)} finished, {len(failed)} failed. Sorted by {metric} ({mode}), best first.",
        common and f"Common to all jobs: {common}",
        "\n".join("| " + " | ".join(str(cell).replace("|", r"\|") for cell in row) + " |" for row in rows),
        best is not None and f"Best: {about(best)}: {metric}={best[metric]}, in {sweep_dir / best.job}",
        failures and "## Failed jobs\n\n" + "\n".join(failures),
        f"![{metric} against each swept parameter](summary.png)",
    ]
    markdown = "\n\n".join(p for p in paragraphs if p) + "\n"
    (sweep_dir / "summary.md").write_text(markdown)
    log_scaled = {key for key, log in declared.items() if log}
    plot_metric(sweep, keys, metric, mode, log_scaled).savefig(sweep_dir / "summary.png", dpi=100)
    return markdown


class SweepSummary(Callback):
    """Hydra callback (conf/hydra/default.yaml): records each failed job, writes the summary when a multirun ends.
    Hydra's sweepers raise a failed job's error after its batch, which skips `on_multirun_end`: the summary is then
    written at interpreter exit, so that a sweep with a failed job still ends with it."""

    def __init__(self, metric: str = "val/acc_best", mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        self.metric, self.mode = metric, mode
        self._sweep_dir: Path | None = None  # a summary still to write

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        atexit.register(self.on_multirun_end, config)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """error.yaml (overrides, one-line error, traceback) into a failed job's directory, where the job ran (a
        joblib worker, a SLURM node); made again if the run removed it (a refused run leaves nothing behind)."""
        if config.hydra.mode != RunMode.MULTIRUN or job_return.status != JobStatus.FAILED:
            return
        try:  # Hydra's public way to a failed job's exception: return_value raises it (and says which job
            with contextlib.redirect_stderr(io.StringIO()):  # failed, as Hydra itself says at the sweep's end)
                _ = job_return.return_value
        except Exception as err:
            error = ": ".join([type(err).__name__, *str(err).strip().splitlines()[:1]])  # the rest: in the traceback
            record = {"overrides": list(job_return.overrides or []), "error": error}
            job_dir = Path(config.hydra.runtime.output_dir)
            job_dir.mkdir(parents=True, exist_ok=True)
            record["traceback"] = "".join(traceback.format_exception(err))
            OmegaConf.save(OmegaConf.create(record), job_dir / ERROR_FILE)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir, self._sweep_dir = self._sweep_dir, None  # once: here, or at exit after a failed job
        if sweep_dir is not None and sweep_dir.is_dir() and len(read_sweep(sweep_dir).jobs):
            markdown = summarize(sweep_dir, self.metric, self.mode)
            print(f"\n{markdown}\nSummary written to {sweep_dir}/summary.{{csv,md,png}}", flush=True)
