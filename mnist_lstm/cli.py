"""What every script shares: its command line checked before Hydra runs it, and every mistake said in one line.

Hydra reports an unknown key or a missing config in several lines, and it makes the run's directory before the task
could refuse anything. So the config is composed here first, with Hydra's public compose API, and checked (its keys,
every value a sweep will try, the run directory, the checkpoint to resume, and for train.py the objects built once
by the dry run): every mistake ends in one line, exit status 1, with nothing written.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, OverrideType, QuotedString
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import mnist_lstm.config  # noqa: F401  (the YAML files' resolvers)
from mnist_lstm.config import schema
from mnist_lstm.errors import UserError
from mnist_lstm.quiet import drop_known_chatter

CONF = Path(__file__).resolve().parents[1] / "conf"

# Keys earlier versions spelled otherwise (the speed switches were model.* keys before conf/speed/): a run started
# then resumes with its overrides translated, and a user who types one is told the new key. None: today's default.
RENAMED: dict[str, str | None] = {
    "model.fused=true": None,
    "model.fused=false": "speed.loop=plain",
    "model.triton=false": None,
    "model.triton=true": "speed.loop=triton",
    "model.compile=false": None,
    "model.compile=true": "speed.compile=true",
    "model.cuda_graph=false": None,
    "model.cuda_graph=true": "speed.cuda_graph=forward_backward",
    "model.cuda_graph=step": "speed.cuda_graph=whole_step",
}

# Hydra's own flags, only to tell the overrides from them (Hydra reads them again itself).
FLAGS = argparse.ArgumentParser(add_help=False)
FLAGS.add_argument("overrides", nargs="*")
for _names in (["--help", "-h"], ["--hydra-help"], ["--version"], ["--resolve"], ["--multirun", "-m"], ["--run", "-r"],
               ["--shell-completion", "-sc"]):  # fmt: skip
    FLAGS.add_argument(*_names, action="store_true")
for _names in (["--cfg", "-c"], ["--package", "-p"], ["--config-path", "-cp"], ["--config-name", "-cn"],
               ["--config-dir", "-cd"], ["--experimental-rerun"]):  # fmt: skip
    FLAGS.add_argument(*_names)
FLAGS.add_argument("--info", "-i", nargs="?", const="all")


def main(config_name: str, task: Callable[[DictConfig], Any], resumable: bool = False) -> None:
    """Run `task` as the Hydra app of conf/<config_name>.yaml, after `check_command_line`. Ctrl-C outside of
    training ends with status 130 and one line instead of a traceback."""
    app = hydra.main(version_base="1.3", config_path=str(CONF), config_name=config_name)(reports_user_errors(task))
    # The libraries imported by now are hundreds of thousands of long-lived objects: frozen, the collector's full
    # passes never scan them again (measured in docs/speed.md, "Start-up").
    gc.freeze()
    drop_known_chatter()
    try:
        sys.argv[1:] = check_command_line(config_name, sys.argv[1:], resumable)
        app()
    except UserError as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)


def reports_user_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """A UserError inside `task` ends the run with `error: <message>` and exit status 1, and removes the run
    directory if Hydra's own files are all it holds. In a multirun it is re-raised: Hydra records that job as
    failed and the sweep goes on with the others."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except UserError as err:
            if HydraConfig.initialized():
                _discard_if_empty(Path(HydraConfig.get().runtime.output_dir))
                if HydraConfig.get().mode == RunMode.MULTIRUN:
                    raise
            sys.exit(f"error: {err}")

    return wrapper


def _discard_if_empty(output_dir: Path) -> None:
    if not output_dir.is_dir() or output_dir.resolve() == Path.cwd().resolve():
        return  # the scripts that only read a checkpoint run in the current directory: never remove it
    if all(p.name == ".hydra" or p.suffix == ".log" for p in output_dir.iterdir()):
        shutil.rmtree(output_dir, ignore_errors=True)
        # and the folders Hydra made for it (logs/train/runs/), when nothing else is in them
        parent, here = output_dir.parent.resolve(), Path.cwd().resolve()
        while parent != here and parent.is_relative_to(here) and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def check_command_line(config_name: str, argv: list[str], resumable: bool = False) -> list[str]:
    """Check a script's arguments `argv` for conf/<config_name>.yaml; return them as Hydra is to read them (values
    with letters beyond ASCII quoted; when `resumable`, `ckpt_path=<run>/checkpoints/<x>.ckpt` completed to
    continue that run). Raises UserError, one line, for anything Hydra or the run would refuse later."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return argv  # a DDP worker started by Lightning: the main process checked this command line
    args, _ = FLAGS.parse_known_intermixed_args(argv)
    if args.help or args.hydra_help or args.version or args.info or args.shell_completion:
        return argv
    typed = list(args.overrides)
    overrides = [_quoted(line) for line in typed]
    parsed = [_parse(line) for line in overrides]
    settings = {o.key_or_group: o for o in parsed}

    # Lightning restores the weights, the optimiser, the schedule, the counters and the callbacks (the data order:
    # mnist_lstm.data.ResumableShuffle; dropout's RNG: callbacks.RestoreRNG). The run itself is ours: a checkpoint
    # in <run>/checkpoints/ continues that run, with the overrides it was started with (in today's spelling) and
    # then the new ones, so its config, checkpoints and TensorBoard curves go on in one place.
    ckpt_path = _plain_value(settings.get("ckpt_path"))
    run_dir = None
    if resumable and ckpt_path and isinstance(ckpt_path, str) and not args.multirun:
        checkpoints = Path(ckpt_path).resolve().parent
        if checkpoints.name == "checkpoints" and (checkpoints.parent / ".hydra" / "overrides.yaml").is_file():
            run_dir = checkpoints.parent
    explicit_dir = _plain_value(settings.get("hydra.run.dir"))
    resuming = run_dir is not None and (explicit_dir is None or Path(explicit_dir).resolve() == run_dir)
    if resuming:
        kept = []
        for line in map(str, OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")):
            key, _, value = line.partition("=")
            line = RENAMED.get(f"{key.lstrip('+~')}={value.strip().lower()}", line)  # (an unknown old value: kept)
            if line and line.partition("=")[0].lstrip("+~") not in {*settings, "ckpt_path"}:
                kept.append(line)
        overrides = [_quoted(line) for line in [*kept, *overrides, f"hydra.run.dir={run_dir}"]]
        parsed = [_parse(line) for line in overrides]

    cfg = compose_config(config_name, parsed)
    job = as_one_job(cfg)
    values = OmegaConf.to_container(job)
    schema.validate(values, config_name, typed=[o.key_or_group for o in parsed])
    # Every value a sweep will try (its first is in `job`), a sweeper's search space too (hparams_search=optuna).
    declared = schema.knobs(schema.SCHEMAS[config_name])
    searched = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    for override in [*parsed, *(_parse(f"{key}={value}") for key, value in searched.items())]:
        if override.key_or_group in declared and override.is_sweep_override():
            for value in _sweep_values(override):
                trial = OmegaConf.create(values)
                OmegaConf.update(trial, override.key_or_group, value, merge=False)
                schema.validate(OmegaConf.to_container(trial), config_name)
    printing = bool(args.cfg)  # --cfg only prints the config
    if not printing:
        check_output_dir(cfg, args.multirun, run_dir if resuming else None)
    if config_name == "train":
        from mnist_lstm.run.dry_run import check_rules, dry_run  # (imports Lightning)

        check_rules(job)
        if resumable and ckpt_path:
            check_resume(job, ckpt_path)
        if not printing:
            dry_run(job)  # what Lightning and torch refuse, and a run too large, before anything is written
    if overrides == typed:
        return argv
    return [*(arg for arg in argv if arg not in typed), *overrides]


def compose_config(config_name: str, parsed: list[Override]) -> DictConfig:
    """The config one job of this command line gets (a sweep's first value), Hydra's errors made one line."""
    lines = [_single_job(o) for o in parsed]
    try:
        return _compose(config_name, lines)
    except MissingConfigException as err:
        group, _, choice = (err.missing_cfg_file or "").rpartition("/")
        if err.options and group:
            raise UserError(
                f"{group}={choice} is not a config of group {group!r}: choose one of {', '.join(err.options)} "
                f"(the files in conf/{group}/)"
            ) from None
        raise UserError(str(err).splitlines()[0]) from None
    except ConfigCompositionException as err:
        first = str(err).splitlines()[0]
        override = next((o for o in parsed if f"'{o.key_or_group}'" in first), None)
        if override is None or not first.startswith("Could not override"):
            raise UserError("; ".join(line.strip() for line in str(err).splitlines() if line.strip())) from None
        key, value = override.key_or_group, override.input_line.partition("=")[2]
        unknown = f"unknown key {key!r} in {override.input_line!r}"
        if new := [v for k, v in RENAMED.items() if v and k.partition("=")[0] == key]:
            where = " or ".join(sorted({v.partition("=")[0] for v in new}))
            fix = f"{key} is now a run setting, {where} (e.g. {', '.join(new)}; conf/speed/)"
            raise UserError(f"{unknown}: {fix}") from None
        try:  # the keys the config has without this override (another override may be wrong too)
            others = [line for line, o in zip(lines, parsed, strict=True) if o is not override]
            known = OmegaConf.to_container(_compose(config_name, others))
        except (ConfigCompositionException, MissingConfigException):
            known = {}
        close = " or ".join(f"{c}={value}" for c in schema.near(key, known))
        fix = f"did you mean {close}?" if close else "no key of the config is close."
        raise UserError(f"{unknown}: {fix} (--cfg job prints every key)") from None
    except (ValueError, TypeError, HydraException) as err:  # e.g. a config group given numbers: callbacks=0
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot compose the config from this command line: {reason}") from None


def as_one_job(cfg: DictConfig) -> DictConfig:
    """`cfg` as one job sees it, resolved before Hydra runs: without Hydra's own settings, and with a placeholder
    for the run's directory, which Hydra has not made yet (and which nothing here creates)."""
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    if "paths" in job and "output_dir" in job.paths and OmegaConf.is_interpolation(job.paths, "output_dir"):
        job.paths.output_dir = str(Path(tempfile.gettempdir()) / "mnist-lstm-not-a-run")
    try:
        OmegaConf.resolve(job)  # every ${...} now: a reference to nothing is said here, in one line
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "a value"
        reason = str(err).strip().splitlines()[0]
        raise UserError(f"{key} cannot be resolved ({reason}); check its ${{...}} references") from None
    return job


def check_output_dir(cfg: DictConfig, multirun: bool, resuming: Path | None) -> None:
    """An existing run directory is never written into again, except by the resume of its own run."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        out = Path(OmegaConf.select(cfg, key))
        subdir = OmegaConf.select(cfg, "hydra.output_subdir")
    except OmegaConfBaseException:  # an interpolation only Hydra's runtime can resolve: nothing to check
        return
    marker = out / "multirun.yaml" if multirun else (out / subdir if subdir else None)
    if marker is None or not marker.exists() or (resuming is not None and out.resolve() == resuming):
        return
    hint = "" if multirun else f", or continue that run with ckpt_path={out}/checkpoints/last.ckpt"
    raise UserError(
        f"{out} already holds a run and is never overwritten: leave {key} out for a new timestamped "
        f"directory or give another {key}=<dir>{hint}"
    )


def check_resume(job: DictConfig, ckpt_path: str) -> None:
    """The checkpoint can continue the run the config describes: readable, same architecture, steps left."""
    from mnist_lstm.checkpoint import load_checkpoint  # imports Lightning: only when there is a checkpoint

    checkpoint = load_checkpoint(ckpt_path)
    hparams = checkpoint["hyper_parameters"]
    differ = {
        key: (hparams[name], OmegaConf.select(job, key))
        for key in schema.architecture()
        if (name := key.rpartition(".")[2]) in hparams and hparams[name] != OmegaConf.select(job, key)
    }
    if differ:
        found = ", ".join(f"{k}={a!r} in the checkpoint but {b!r} in the config" for k, (a, b) in differ.items())
        fix = " ".join(f"{k}={a}" for k, (a, _) in differ.items())
        raise UserError(f"{ckpt_path} holds a model of another architecture: {found}; resume it with {fix}")
    step = int(checkpoint.get("global_step", 0))
    if OmegaConf.select(job, "trainer.fast_dev_run"):
        raise UserError(f"debug=fdr (trainer.fast_dev_run) saves nothing and cannot resume {ckpt_path}: drop one")
    if job.max_steps <= step:
        raise UserError(
            f"{ckpt_path} is at step {step}, which already reaches max_steps={job.max_steps}: "
            f"raise max_steps (e.g. max_steps={2 * step}) to train further"
        )


# ---------------------------------------------------------------- Hydra's overrides


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=True)


def _quoted(line: str) -> str:
    """`key=value` with the value quoted where Hydra's grammar needs it and a user would not think to: a path
    with letters beyond ASCII (data.data_dir=/srv/données)."""
    key, sep, value = line.partition("=")
    plain = value.isascii() or value[:1] in "'\"" or any(c in value for c in "'\"\\,[]{}()")
    return line if not sep or plain else f"{key}='{value}'"


def _parse(line: str) -> Override:
    try:
        return OverridesParser.create().parse_override(line)
    except HydraException as err:  # OverrideParseException, or a bare HydraException for some syntax errors
        reason = str(err).splitlines()[0]
        raise UserError(
            f"cannot read the override {line!r} ({reason}); write key=value, e.g. layer_num=3, and quote a value "
            "with spaces or special characters: 'key=\"my value\"'"
        ) from None


def _plain_value(override: Override | None) -> Any:
    if override is None or override.is_sweep_override() or override.type == OverrideType.DEL:
        return None
    return override.value()


def _sweep_values(override: Override) -> list[Any]:
    value = override.value()
    if isinstance(value, IntervalSweep):
        return [value.start, value.end]
    return [v.text if isinstance(v, QuotedString) else v for v in override.sweep_iterator()]


def _single_job(override: Override) -> str:
    """A sweep override with its first value (an interval: its start), as one job would see it."""
    if not override.is_sweep_override():
        return override.input_line
    value = override.value()
    first = value.start if isinstance(value, IntervalSweep) else next(override.sweep_string_iterator())
    prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++"}.get(override.type, "")
    return f"{prefix}{override.get_key_element()}={first}"
