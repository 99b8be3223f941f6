"""Every key of every script's config refused well, generated from the declarations (mnist_lstm/config/schema.py
and the signatures of the objects the config builds): for each key, a value of the wrong type and a value out of
its range (where it has one) end with one line, exit status 1, and nothing written. And a property test: any value
for any key of train.py's config is accepted or refused with a UserError, never another exception."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import lightning as L
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_lstm.cli.command_line import prepare_command_line
from mnist_lstm.config import checks
from mnist_lstm.config.annotations import matches
from mnist_lstm.config.schema import SCHEMAS, TRAINER_LIMITS
from mnist_lstm.errors import UserError
from tests.helpers import CONF, compose_train, run_in_process

WRONG_TYPE = {int: "abc", float: "abc", bool: "maybe", str: "nonsense"}
FORMATTED = {"[1, 2]": "[1,2]", "{'a': 1}": "{a:1}"}  # as a command line writes them


def wrong_type(knob: checks.Knob) -> str | None:
    """A value of the wrong type for `knob` (for a string with choices: one not among them), or None."""
    if knob.kind is str and not knob.meta.get("choices"):
        return None  # any string is a string
    return WRONG_TYPE.get(knob.kind)


def out_of_range(meta: typing.Mapping, integer: bool) -> str | None:
    """A number just outside the range `meta` declares, or (a finite number) nan; None if it has no range."""
    step = 1 if integer else 0.5
    if meta.get("at_least") is not None:
        return str(meta["at_least"] - step)
    if meta.get("above") is not None:
        return str(meta["above"])
    if meta.get("below") is not None:
        return str(meta["below"])
    if meta.get("at_most") is not None:
        return str(meta["at_most"] + step)
    return None if integer else "nan"


def user_keys(script: str) -> dict[str, checks.Knob]:
    """The knobs a user sets, one spelling each: nested keys that only pass a top-level knob on are left out."""
    wired = checks.wiring(compose_train()) if script == "train" else {}
    return {key: knob for key, knob in checks.knobs(SCHEMAS[script]).items() if key not in wired}


def cases() -> list[tuple[str, str, str]]:
    """(script, override, what is wrong) for every knob of every script, and every Trainer key of train.py's."""
    found = []
    for script in SCHEMAS:
        for key, knob in user_keys(script).items():
            if (value := wrong_type(knob)) is not None:
                found.append((script, f"{key}={value}", "wrong type"))
            if knob.kind in (int, float) and (value := out_of_range(knob.meta, knob.kind is int)) is not None:
                found.append((script, f"{key}={value}", "out of range"))
    hints = typing.get_type_hints(L.Trainer.__init__)
    for key in compose_train().trainer:
        if key.startswith("_") or key not in hints:
            continue
        value = next(v for v in ("abc", [1, 2], 1.5, {"a": 1}) if not matches(v, hints[key]))
        found.append(("train", f"trainer.{key}={FORMATTED.get(repr(value), value)}", "wrong type"))
        if key in TRAINER_LIMITS and (bound := out_of_range(TRAINER_LIMITS[key], integer=True)) is not None:
            found.append(("train", f"trainer.{key}={bound}", "out of range"))
    return found


CASES = cases()


def test_the_generated_cases_cover_every_declared_key() -> None:
    covered = {(script, case.split("=")[0]) for script, case, _ in CASES}
    for script in SCHEMAS:
        for key, knob in user_keys(script).items():
            if wrong_type(knob) is not None or knob.kind in (int, float):
                assert (script, key) in covered, (script, key)
    assert len(CASES) > 60


@pytest.mark.parametrize(("script", "override", "wrong"), CASES, ids=[f"{s}:{o}" for s, o, _ in CASES])
def test_a_bad_value_of_any_key_is_one_line_status_1_and_nothing_written(
    script: str, override: str, wrong: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # (the scripts that read a checkpoint run in the current directory)
    run_dir = tmp_path / "run"
    status, stderr = run_in_process(f"{script}.py", override, f"hydra.run.dir={run_dir}")
    lines = stderr.strip().splitlines()
    assert status == 1, (override, stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    assert override.split("=")[0] in lines[0], lines[0]  # it names the key
    assert list(tmp_path.iterdir()) == []  # no run directory, no file


# ---------------------------------------------------------------- any value, any key: accepted or refused well

KEYS = sorted(
    set(user_keys("train")) | {f"trainer.{k}" for k in compose_train().trainer if not k.startswith("_")}
    | {"data.eval_batch_size", "callbacks.progress_bar.refresh_rate", "model.optimizer.fused"}
)  # fmt: skip
VALUES = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: "nan" if math.isnan(f) else repr(f)),
    st.sampled_from(["true", "false", "null", "[]", "[1,2]", "{}", "''", "auto", "cpu", "gpu", "ddp", "1e-3"]),
    st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=12),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_value_for_any_key_is_accepted_or_refused_with_one_line(key: str, value: str, tmp_path: Path) -> None:
    try:
        prepare_command_line(CONF, "train", [f"{key}={value}", f"hydra.run.dir={tmp_path / 'never'}"])
    except UserError as err:
        assert "\n" not in str(err) and str(err), (key, value, str(err))
    assert not (tmp_path / "never").exists()
