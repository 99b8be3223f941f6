"""The architecture, checked: imports point one way, nothing imports itself back, and the plain model file holds
the model only (docs/model.md, "The layout")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import REPO

# Layer -> the packages it must never import (the model never imports the speed layer, and so on up).
FORBIDDEN = {
    "mnist_lstm.model": ["mnist_lstm.fast", "mnist_lstm.run", "mnist_lstm.use", "mnist_lstm.cli", "mnist_lstm.config"],
    "mnist_lstm.fast": ["mnist_lstm.run", "mnist_lstm.use", "mnist_lstm.cli"],
    "mnist_lstm.data": ["mnist_lstm.model", "mnist_lstm.fast", "mnist_lstm.run", "mnist_lstm.use", "mnist_lstm.cli"],
    "mnist_lstm.config": ["mnist_lstm.model", "mnist_lstm.fast", "mnist_lstm.run", "mnist_lstm.use", "mnist_lstm.cli"],
    "mnist_lstm.checkpoint": ["mnist_lstm.run", "mnist_lstm.use", "mnist_lstm.cli"],
    "mnist_lstm.run": ["mnist_lstm.cli"],
    "mnist_lstm.use": ["mnist_lstm.cli", "mnist_lstm.run", "mnist_lstm.demo"],
    "mnist_lstm.demo": ["mnist_lstm.cli", "mnist_lstm.run"],
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any level of its code (function-level imports included)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # (a submodule, when it is one)
    return found


def graph(*roots: str) -> dict[str, set[str]]:
    """module -> the project modules it imports, over the packages `roots`."""
    files = {module_name(p): p for root in roots for p in (REPO / root).rglob("*.py")}
    edges = {}
    for name, path in files.items():
        edges[name] = {m for m in imports(path) if m in files and m != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `edges` (a package's __init__ importing its own submodules does not count)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if node.startswith(target + ".") or target.startswith(node + "."):
                continue  # a package and its own submodules
            if state.get(target) == "open":
                found.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_no_module_imports_another_that_imports_it_back() -> None:
    assert cycles(graph("mnist_lstm", "benchmarks")) == []


def test_the_cycle_check_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


@pytest.mark.parametrize("layer", list(FORBIDDEN))
def test_imports_point_one_way(layer: str) -> None:
    for name, targets in graph("mnist_lstm").items():
        if name == layer or name.startswith(layer + "."):
            wrong = sorted(t for t in targets for f in FORBIDDEN[layer] if t == f or t.startswith(f + "."))
            assert not wrong, f"{name} imports {wrong}"


def test_the_tests_import_neither_the_benchmarks_nor_each_other() -> None:
    for path in (REPO / "tests").glob("*.py"):
        wrong = sorted(m for m in imports(path) if m.startswith(("benchmarks", "tests.test_", "tests.conftest")))
        assert not wrong, f"{path.name} imports {wrong}"


def test_the_model_file_is_the_plain_model_only() -> None:
    """What a student reads: no autograd Function, Triton, CUDA graph or Lightning; about 200 lines."""
    source = (REPO / "mnist_lstm" / "model" / "lstm.py").read_text()
    assert len(source.splitlines()) <= 250
    for word in ("autograd.Function", "triton", "CUDAGraph", "cuda.graph", "lightning"):
        assert word not in source, word
    assert not re.search(r"[(,]\s*out=", source)  # no preallocated buffers written in place: plain ops
    assert "for t in range(steps)" in source


def test_no_private_api_of_a_library() -> None:
    """A library's private modules and attributes (`hydra._internal`, `trainer._x`, `JobReturn._return_value`)
    change without notice: the project imports and touches only their public API."""
    library = r"\b(?:hydra|lightning|torch|omegaconf|torchmetrics)(?:\.\w+)*\._(?!_)\w"  # (not __version__)
    private = re.compile(library + r"|\._(?:trainer|return_value)\b")
    for root in ("mnist_lstm", "scripts", "benchmarks"):
        for path in (REPO / root).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]  # (a comment may name what it avoids)
                assert not private.search(code), f"{path.relative_to(REPO)}:{number}: {line.strip()}"
