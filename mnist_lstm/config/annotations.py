"""Whether a config value fits a Python type annotation, and the annotation in words.

The objects the config builds (`_target_`: Lightning's Trainer, torch's optimisers and schedulers, callbacks,
loggers) declare their arguments' types in their signatures: those declarations are the schema of their keys.
This reads the annotations a config can meet (numbers, strings, booleans, None, Literal, Union, lists, tuples,
dicts); for a class it cannot build from a command line (a Tensor, a timedelta) it accepts a nested object config
(a dict with `_target_`) and leaves the rest to the object itself, which the dry run builds before anything is
written (mnist_lstm/run/dry_run.py).
"""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any

_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def matches(value: Any, annotation: Any) -> bool:
    """Whether `value` (as OmegaConf gives it, containers converted) fits `annotation`."""
    if annotation is Any or annotation is typing.Any:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _is_union(annotation):
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable, set):
        return isinstance(value, list) and (not args or all(matches(v, args[0]) for v in value))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(args) == len(value) and all(matches(v, a) for v, a in zip(value, args, strict=True))
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if isinstance(value, dict) and "_target_" in value:
        return True  # an object built from its own config (a callback, a plugin...): its target checks it
    if isinstance(annotation, type) and annotation.__module__ == "pathlib":
        return isinstance(value, str)
    return False  # a class a command line cannot give (a Tensor, a timedelta, an Accelerator object...)


def describe(annotation: Any) -> str:
    """`annotation` in words: "an integer or null", "one of 32, '32-true', 'bf16-mixed' or null"."""
    if annotation is Any or annotation is typing.Any:
        return "any value"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _is_union(annotation):
        literals = [a for arg in args if typing.get_origin(arg) is typing.Literal for a in typing.get_args(arg)]
        others = [describe(arg) for arg in args if typing.get_origin(arg) is not typing.Literal]
        if "a number" in others:  # (int | float)
            others = [o for o in others if o != "an integer"]
        parts = ([f"one of {', '.join(repr(v) for v in literals)}"] if literals else []) + others
        return " or ".join(dict.fromkeys(parts))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in args)
    if annotation in _WORDS:
        return _WORDS[annotation]
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable, set):
        return f"a list of {_plural(describe(args[0]))}" if args else "a list"
    if origin is tuple:
        return f"a list of {len(args)} values" if args and args[-1] is not Ellipsis else "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    if isinstance(annotation, type) and annotation.__module__ == "pathlib":
        return "a path"
    return "an object (a mapping with _target_)"


def _plural(words: str) -> str:
    plural = {"an integer": "integers", "a number": "numbers", "a string": "strings"}
    return plural.get(words, "objects" if words.startswith("an object") else words)
