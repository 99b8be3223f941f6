"""Every key of every script's config refused well, generated from the declarations (mnist_lstm/config/schema.py
and the signature of Lightning's Trainer): for each key, a value of the wrong type and a value out of its range
(where it has one) end with one line, exit status 1, and nothing written. And a property test: any value for any key
of train.py's config is accepted or refused with a UserError, never another exception."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import annotated_types
import lightning as L
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict, TypeAdapter, ValidationError

from mnist_lstm import cli
from mnist_lstm.config.schema import SCHEMAS, knobs
from mnist_lstm.errors import UserError
from tests.helpers import compose_train, run_in_process

WRONG_TYPE = {int: "abc", float: "abc", bool: "maybe", str: "[1,2]"}
FORMATTED = {"[1, 2]": "[1,2]", "{'a': 1}": "{a:1}"}  # as a command line writes them


def wrong_type(field: typing.Any) -> str | None:
    """A value of the wrong type for a declared key (a string with choices: one not among them), or None."""
    kind = field.annotation
    if typing.get_origin(kind) is typing.Literal:
        return "nonsense"
    return WRONG_TYPE.get(kind)


def out_of_range(field: typing.Any) -> str | None:
    """A number just outside the range a declared key has, or (a finite number) nan; None if it has no range."""
    step = 1 if field.annotation is int else 0.5
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Ge):
            return str(bound.ge - step)
        if isinstance(bound, annotated_types.Gt):
            return str(bound.gt)
        if isinstance(bound, annotated_types.Lt):
            return str(bound.lt)
        if isinstance(bound, annotated_types.Le):
            return str(bound.le + step)
    return "nan" if field.annotation is float else None


def accepted_by(annotation: typing.Any, value: typing.Any) -> bool:
    try:
        TypeAdapter(annotation, config=ConfigDict(strict=True, arbitrary_types_allowed=True)).validate_python(value)
    except ValidationError:
        return False
    return True


def cases() -> list[tuple[str, str, str]]:
    """(script, override, what is wrong) for every knob of every script, and every Trainer key of train.py's."""
    found = []
    for script, schema in SCHEMAS.items():
        for key, field in knobs(schema).items():
            if (value := wrong_type(field)) is not None:
                found.append((script, f"{key}={value}", "wrong type"))
            if field.annotation in (int, float) and (value := out_of_range(field)) is not None:
                found.append((script, f"{key}={value}", "out of range"))
    hints = typing.get_type_hints(L.Trainer.__init__)
    for key in compose_train().trainer:
        if key.startswith("_") or key not in hints:
            continue
        value = next(v for v in ("abc", [1, 2], 1.5, {"a": 1}) if not accepted_by(hints[key], v))
        found.append(("train", f"trainer.{key}={FORMATTED.get(repr(value), value)}", "wrong type"))
    return found


CASES = cases()


def test_the_generated_cases_cover_every_declared_key() -> None:
    covered = {(script, case.split("=")[0]) for script, case, _ in CASES}
    for script, schema in SCHEMAS.items():
        for key, field in knobs(schema).items():
            if wrong_type(field) is not None or field.annotation in (int, float):
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
    set(knobs(SCHEMAS["train"])) | {f"trainer.{k}" for k in compose_train().trainer if not k.startswith("_")}
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
        cli.check_command_line("train", [f"{key}={value}", f"hydra.run.dir={tmp_path / 'never'}"])
    except UserError as err:
        assert "\n" not in str(err) and str(err), (key, value, str(err))
    assert not (tmp_path / "never").exists()
