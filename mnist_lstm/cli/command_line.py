"""The command line, checked against the composed config before Hydra runs it.

Hydra reports an unknown key or a missing config with a multi-line message, and it writes the run's `.hydra/`
before the task could refuse anything. Composing the config here first (Hydra's public compose API) lets every
mistake end in one line with nothing written: unknown keys (with a "did you mean"), unknown config choices,
values of the wrong type or out of range (every value a sweep will try too), an existing run directory, and a
checkpoint that cannot be resumed. A checkpoint inside a run (`<run>/checkpoints/*.ckpt`) is resumed into that
run, with its own overrides. What is checked, and the messages, come from the schema (mnist_lstm/config/).
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

# The parser hydra.main itself reads sys.argv with: Hydra has no public one, and reading the command line as
# hydra.main will is the point (hydra-core is pinned below 1.4).
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, OverrideType
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_lstm.config import checks, renamed
from mnist_lstm.config.schema import SCHEMAS, TrainConfig
from mnist_lstm.errors import UserError
from mnist_lstm.run.dry_run import dry_run
from mnist_lstm.run.resume import resume_overrides, run_of_checkpoint


def prepare_command_line(config_dir: Path, config_name: str, argv: list[str], resumable: bool = False) -> list[str]:
    """Check a script's arguments `argv` for the config `config_name`; return them, completed to continue
    the checkpoint's run when `resumable` and `ckpt_path=<run>/checkpoints/<x>.ckpt` is given.

    Raises UserError with one line for anything Hydra or the run would refuse later.
    """
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return argv  # a DDP worker started by Lightning: the main process checked this command line
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return argv
    overrides = list(args.overrides)
    parsed = [_parse(line) for line in overrides]
    settings = {o.key_or_group: o for o in parsed}
    ckpt_path = _plain_value(settings.get("ckpt_path"))

    run_dir = run_of_checkpoint(ckpt_path) if resumable and ckpt_path and not args.multirun else None
    explicit_dir = _plain_value(settings.get("hydra.run.dir"))
    resuming = run_dir is not None and (explicit_dir is None or Path(explicit_dir).resolve() == run_dir)
    if resuming:
        overrides = resume_overrides(run_dir, overrides, list(settings))
        parsed = [_parse(line) for line in overrides]

    schema = SCHEMAS[config_name]
    cfg = compose_config(config_dir, config_name, parsed)
    _refuse_wiring(config_dir, config_name, parsed)
    knobs = checks.knobs(schema)
    # The values as typed (a sweep's: each one a job will run with), then the whole config, the YAML's values too.
    for override in [*parsed, *_sweeper_params(cfg)]:
        if override.key_or_group in knobs and override.type != OverrideType.DEL:
            for value in _sweep_values(override) if override.is_sweep_override() else [override.value()]:
                checks.check_value(override.key_or_group, value, knobs[override.key_or_group])
    job = as_one_job(cfg)
    checks.check(job, schema)
    if not args.cfg:  # --cfg only prints the config
        check_output_dir(cfg, args.multirun, run_dir if resuming else None)
    if resumable and ckpt_path:
        check_resume(cfg, ckpt_path)
    if schema is TrainConfig and not args.cfg:
        dry_run(job)  # what Lightning and torch refuse, and a run too large, before anything is written
    if overrides == list(args.overrides):
        return argv
    return [arg for arg in argv if arg not in args.overrides] + overrides


def compose_config(config_dir: Path, config_name: str, parsed: list[Override]) -> DictConfig:
    """The config one job of this command line gets (a sweep's first value), Hydra's errors made one line."""
    lines = [_single_job(o) for o in parsed]
    try:
        return _compose(config_dir, config_name, lines)
    except MissingConfigException as err:
        raise UserError(_missing_config_message(err)) from err
    except ConfigCompositionException as err:
        cause = err.__cause__
        key = getattr(cause, "full_key", None) or getattr(cause, "key", None)
        override = next((o for o in parsed if o.key_or_group == key), None)
        if override is not None and str(err).startswith("Error merging override"):  # a value of the wrong type
            raise UserError(_wrong_type_message(config_name, override)) from err
        override = next((o for o in parsed if f"'{o.key_or_group}'" in str(err).splitlines()[0]), override)
        if override is not None and str(err).startswith("Could not override"):
            others = [line for line, o in zip(lines, parsed, strict=True) if o is not override]
            try:
                known = _compose(config_dir, config_name, others)
            except (ConfigCompositionException, MissingConfigException):  # another override is wrong too
                known = None
            raise UserError(_unknown_key_message(override, known)) from err
        raise UserError("; ".join(line.strip() for line in str(err).splitlines() if line.strip())) from err
    except (ValueError, TypeError, HydraException) as err:  # e.g. a config group given numbers: callbacks=0
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot compose the config from this command line: {reason}") from err


def as_one_job(cfg: DictConfig) -> DictConfig:
    """`cfg` as one job sees it, resolvable before Hydra runs: without Hydra's own settings, and with a
    placeholder for the run's directory, which Hydra has not made yet (and which nothing here creates)."""
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    if "paths" in job and "output_dir" in job.paths:
        job.paths.output_dir = str(Path(tempfile.gettempdir()) / "mnist-lstm-not-a-run")
    try:
        OmegaConf.resolve(job)  # every ${...} now: a reference to nothing is said here, in one line
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "a value"
        reason = str(err).strip().splitlines()[0]
        raise UserError(f"{key} cannot be resolved ({reason}); check its ${{...}} references") from err
    return job


def check_output_dir(cfg: DictConfig, multirun: bool, resuming: Path | None) -> None:
    """An existing run directory is never written into again, except by the resume of its own run."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        out = Path(OmegaConf.select(cfg, key))
        subdir = OmegaConf.select(cfg, "hydra.output_subdir")
    except Exception:  # an interpolation only Hydra's runtime can resolve: nothing to check
        return
    marker = out / "multirun.yaml" if multirun else (out / subdir if subdir else None)
    if marker is None or not marker.exists() or (resuming is not None and out.resolve() == resuming):
        return
    hint = "" if multirun else f", or continue that run with ckpt_path={out}/checkpoints/last.ckpt"
    raise UserError(
        f"{out} already holds a run and is never overwritten: leave {key} out for a new timestamped "
        f"directory or give another {key}=<dir>{hint}"
    )


def check_resume(cfg: DictConfig, ckpt_path: str) -> None:
    """The checkpoint can continue the run the config describes: readable, same architecture, steps left."""
    from mnist_lstm.checkpoint import load_checkpoint  # imports Lightning: only when there is a checkpoint

    checkpoint = load_checkpoint(ckpt_path)
    hparams = checkpoint["hyper_parameters"]
    differ = {
        field: (hparams[field], cfg.model[field])
        for field in checks.architecture()
        if field in hparams and field in cfg.model and hparams[field] != cfg.model[field]
    }
    if differ:
        spelling = {nested.removeprefix("model."): knob for nested, knob in checks.wiring(cfg).items()}
        found = ", ".join(
            f"{f}={old!r} in the checkpoint but {new!r} in the config" for f, (old, new) in differ.items()
        )
        fix = " ".join(f"{spelling.get(f, f'model.{f}')}={ckpt}" for f, (ckpt, _) in differ.items())
        raise UserError(f"{ckpt_path} holds a model of another architecture: {found}; resume it with {fix}")
    step = int(checkpoint.get("global_step", 0))
    if OmegaConf.select(cfg, "trainer.fast_dev_run"):
        raise UserError(f"debug=fdr (trainer.fast_dev_run) saves nothing and cannot resume {ckpt_path}: drop one")
    if cfg.max_steps <= step:
        raise UserError(
            f"{ckpt_path} is at step {step}, which already reaches max_steps={cfg.max_steps}: "
            f"raise max_steps (e.g. max_steps={2 * step}) to train further"
        )


def _refuse_wiring(config_dir: Path, config_name: str, parsed: list[Override]) -> None:
    """`model.layer_num=3` would set what `layer_num` sets: one spelling per knob, the top-level one."""
    nested = [o for o in parsed if "." in o.key_or_group and not o.key_or_group.startswith("hydra.")]
    if not nested:
        return
    # What the nested keys are before these overrides set them.
    wired = checks.wiring(_compose(config_dir, config_name, [_single_job(o) for o in parsed if o not in nested]))
    for override in nested:
        knob = wired.get(override.key_or_group)
        if knob is not None:
            value = override.input_line.partition("=")[2]
            raise UserError(
                f"{override.key_or_group} is set from {knob}, the key to set: write {knob}={value} "
                f"instead of {override.input_line!r}"
            )


def _sweeper_params(cfg: DictConfig) -> list[Override]:
    """The search space a sweeper draws from (`hydra.sweeper.params`, e.g. conf/hparams_search/optuna.yaml)."""
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return [_parse(f"{key}={value}") for key, value in params.items()]


def _compose(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=True)


def _parse(line: str) -> Override:
    try:
        return OverridesParser.create().parse_override(line)
    except HydraException as err:  # OverrideParseException, or a bare HydraException for some syntax errors
        reason = str(err).splitlines()[0]
        raise UserError(f"cannot read the override {line!r} ({reason}); write key=value, e.g. layer_num=3") from err


def _plain_value(override: Override | None) -> Any:
    if override is None or override.is_sweep_override() or override.type == OverrideType.DEL:
        return None
    return override.value()


def _sweep_values(override: Override) -> list[Any]:
    value = override.value()
    if isinstance(value, IntervalSweep):
        return [value.start, value.end]
    return list(override.sweep_iterator())


def _single_job(override: Override) -> str:
    """A sweep override with its first value (an interval: its start), as one job would see it."""
    if not override.is_sweep_override():
        return override.input_line
    value = override.value()
    first = value.start if isinstance(value, IntervalSweep) else next(override.sweep_string_iterator())
    prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++"}.get(override.type, "")
    return f"{prefix}{override.get_key_element()}={first}"


def _wrong_type_message(config_name: str, override: Override) -> str:
    key = override.key_or_group
    knob = checks.knobs(SCHEMAS[config_name]).get(key)
    value = _plain_value(override)
    if knob is None:
        return f"invalid value {override.input_line!r}: {key} does not take {value!r}"
    return f"invalid value {key}={value!r}: {checks.must_be(key, knob)}"


def _keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    keys = []
    for name, value in node.items():
        key = f"{prefix}{name}"
        keys += [key, *_keys(value, f"{key}.")]
    return keys


def _unknown_key_message(override: Override, cfg: DictConfig | None) -> str:
    key = override.key_or_group
    moved = renamed.hint(key)
    if moved:
        return f"unknown key {key!r} in {override.input_line!r}: {moved}"
    keys = _keys(OmegaConf.to_container(cfg, resolve=False)) if cfg is not None else []
    keys = [k for k in keys if not k.rpartition(".")[2].startswith("_")]  # not _target_, _partial_
    if not key.startswith("hydra."):
        keys = [k for k in keys if not k.startswith("hydra")]
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.65)
    if not close:  # a misspelt last part: compare with the keys beside it
        parent = key.rpartition(".")[0]
        siblings = [k for k in keys if k.rpartition(".")[0] == parent]
        close = difflib.get_close_matches(key, siblings, n=3, cutoff=0.4)
    wired = checks.wiring(cfg) if cfg is not None else {}
    close = list(dict.fromkeys(wired.get(k, k) for k in close))  # one spelling per knob: the one to set
    suggestion = f"did you mean {' or '.join(close)}?" if close else "no key of the config is close."
    return (
        f"unknown key {key!r} in {override.input_line!r}: {suggestion} "
        f"(--cfg job prints every key; +{override.input_line.lstrip('+')} would add a new one)"
    )


def _missing_config_message(err: MissingConfigException) -> str:
    missing = err.missing_cfg_file or ""
    group, _, choice = missing.rpartition("/")
    if err.options and group:
        return (
            f"{group}={choice} is not a config of group {group!r}: choose one of {', '.join(err.options)} "
            f"(the files in conf/{group}/)"
        )
    return str(err).splitlines()[0]
