"""The command line, checked against the composed config before Hydra runs it.

Hydra reports an unknown key or a missing config with a multi-line message, and it writes the run's
`.hydra/` before our task can refuse anything. Composing the config here first lets every mistake end in
one line with nothing written: unknown keys (with a "did you mean"), unknown config choices, values out of
range (every value of a sweep too), an existing run directory, and a checkpoint that cannot be resumed.
A checkpoint inside a run (`<run>/checkpoints/*.ckpt`) is resumed into that run, with its own overrides.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser  # the parser hydra.main itself reads sys.argv with
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, OverrideType
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from mnist_lstm.config import RULES, check_value, validate
from mnist_lstm.errors import UserError
from mnist_lstm.resume import resume_overrides, run_of_checkpoint

# Architecture fields of a checkpoint's hyper_parameters, and the override that sets each.
ARCHITECTURE = {"layer_num": "layer_num", "hidden_size": "hidden_size", "cell": "model.cell"}
ARCHITECTURE |= {"forget_bias": "model.forget_bias", "input_size": "model.input_size"}


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

    cfg = compose_config(config_dir, config_name, parsed)
    validate(cfg)
    for override in parsed:  # a sweep's values: each one a job will run with
        if override.is_sweep_override() and override.key_or_group in RULES:
            for value in _sweep_values(override):
                check_value(override.key_or_group, value, RULES[override.key_or_group])
    if not args.cfg:  # --cfg only prints the config
        check_output_dir(cfg, args.multirun, run_dir if resuming else None)
    if resumable and ckpt_path:
        check_resume(cfg, ckpt_path)
    if overrides == list(args.overrides):
        return argv
    return [arg for arg in argv if arg not in args.overrides] + overrides


def compose_config(config_dir: Path, config_name: str, parsed: list[Override]) -> DictConfig:
    """The config one job of this command line gets (a sweep's first value), Hydra's errors made one line."""
    lines = [_single_job(o) for o in parsed]
    try:
        return _compose(config_dir, config_name, lines)
    except MissingConfigException as err:
        raise UserError(_missing_config_message(err, parsed)) from err
    except ConfigCompositionException as err:
        override = next((o for o in parsed if f"'{o.key_or_group}'" in str(err).splitlines()[0]), None)
        if override is not None and str(err).startswith("Could not override"):
            others = [line for line, o in zip(lines, parsed, strict=True) if o is not override]
            try:
                raise UserError(_unknown_key_message(override, _compose(config_dir, config_name, others))) from err
            except ConfigCompositionException:  # another override is wrong too: report this one plainly
                raise UserError(_unknown_key_message(override, None)) from err
        raise UserError("; ".join(line.strip() for line in str(err).splitlines() if line.strip())) from err


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
        for field in ARCHITECTURE
        if field in hparams and field in cfg.model and hparams[field] != cfg.model[field]
    }
    if differ:
        found = ", ".join(
            f"{f}={old!r} in the checkpoint but {new!r} in the config" for f, (old, new) in differ.items()
        )
        fix = " ".join(f"{ARCHITECTURE[f]}={ckpt}" for f, (ckpt, _) in differ.items())
        raise UserError(f"{ckpt_path} holds a model of another architecture: {found}; resume it with {fix}")
    step = int(checkpoint.get("global_step", 0))
    if OmegaConf.select(cfg, "trainer.fast_dev_run"):
        raise UserError(f"debug=fdr (trainer.fast_dev_run) saves nothing and cannot resume {ckpt_path}: drop one")
    if "max_steps" in cfg and cfg.max_steps <= step:
        raise UserError(
            f"{ckpt_path} is at step {step}, which already reaches max_steps={cfg.max_steps}: "
            f"raise max_steps (e.g. max_steps={2 * step}) to train further"
        )


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
    keys = _keys(OmegaConf.to_container(cfg, resolve=False)) if cfg is not None else []
    keys = [k for k in keys if not k.rpartition(".")[2].startswith("_")]  # not _target_, _partial_
    if not key.startswith("hydra."):
        keys = [k for k in keys if not k.startswith("hydra")]
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.65)
    if not close:  # a misspelt last part: compare with the keys beside it
        parent = key.rpartition(".")[0]
        siblings = [k for k in keys if k.rpartition(".")[0] == parent]
        close = difflib.get_close_matches(key, siblings, n=3, cutoff=0.4)
    suggestion = f"did you mean {' or '.join(close)}?" if close else "no key of the config is close."
    return (
        f"unknown key {key!r} in {override.input_line!r}: {suggestion} "
        f"(--cfg job prints every key; +{override.input_line.lstrip('+')} would add a new one)"
    )


def _missing_config_message(err: MissingConfigException, parsed: list[Override]) -> str:
    missing = err.missing_cfg_file or ""
    group, _, choice = missing.rpartition("/")
    if err.options and group:
        return (
            f"{group}={choice} is not a config of group {group!r}: choose one of {', '.join(err.options)} "
            f"(the files in conf/{group}/)"
        )
    return str(err).splitlines()[0]
