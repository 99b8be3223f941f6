"""A virtual environment that holds only this project's dependencies, linked from the running one.

A shared machine's Python can hold hundreds of packages (the lent GPU machines': transformers, scikit-learn,
JAX, ...). Importing Lightning imports torchmetrics, which imports every optional package of its own that is
installed: on such a machine seconds of start-up that an environment made with `pip install -e .` does not pay.
This makes that environment without a network: `python -m venv --without-pip <dir>`, whose site-packages links
the distributions this project depends on, and theirs (their metadata's requirements, markers evaluated, extras
left out), from the running interpreter's environment: the same files, nothing else beside them.

    python -m benchmarks.clean_env /tmp/clean && /tmp/clean/bin/python -m benchmarks.e2e ...
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def project_requirements() -> list[str]:
    """This project's dependencies: from pyproject.toml (Python 3.11+), else from its installed metadata."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return [r for r in metadata.requires("mnist-lstm") or [] if "extra ==" not in r]
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def dependency_closure(requirements: list[str]) -> tuple[list[metadata.Distribution], list[str]]:
    """The installed distributions `requirements` need, theirs included (with the extras asked for); and the
    names not installed as distributions (they may still be importable, e.g. from PYTHONPATH)."""
    found: dict[str, metadata.Distribution] = {}
    missing: set[str] = set()
    done: set[tuple[str, str]] = set()  # (distribution, extra) pairs whose requirements are queued
    queue = [Requirement(r) for r in requirements]
    while queue:
        requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        extras = {"", *requirement.extras} - {extra for n, extra in done if n == name}
        if not extras or name in missing:
            continue
        if name not in found:
            try:
                found[name] = metadata.distribution(requirement.name)
            except metadata.PackageNotFoundError:
                missing.add(name)
                continue
        for extra in extras:
            done.add((name, extra))
            for line in found[name].requires or []:
                needed = Requirement(line)
                if needed.marker is None or needed.marker.evaluate({"extra": extra}):
                    queue.append(needed)
    return list(found.values()), sorted(missing)


def top_level_entries(distribution: metadata.Distribution) -> set[Path]:
    """The files and folders a distribution put directly into site-packages (its packages, modules, .pth
    files and its .dist-info folder), from its RECORD."""
    entries = set()
    for file in distribution.files or []:
        first = file.parts[0]
        if first in ("..", "__pycache__") or first.endswith(".pyc"):
            continue  # scripts installed into bin/, and compiled files
        entries.add(Path(distribution.locate_file(first)))
    return entries


def make(target: Path, extra: list[str] | None = None) -> Path:
    """Make the environment at `target` (replacing the links of an earlier one), with the `extra` requirements
    too (e.g. pytest); return its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(target)], check=True)
    python = target / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    distributions, missing = dependency_closure(project_requirements() + (extra or []))
    for distribution in distributions:
        for entry in top_level_entries(distribution):
            link = Path(site) / entry.name
            if entry.exists() and not link.exists():
                link.symlink_to(entry)
    names = sorted(d.metadata["Name"] for d in distributions)
    print(f"{target}: {len(names)} distributions linked ({', '.join(names)})")
    if missing:
        print(f"not installed as distributions here (left to PYTHONPATH): {', '.join(sorted(missing))}")
    return python


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="the folder to make the environment in")
    parser.add_argument("--extra", nargs="*", default=[], help="more requirements to link, e.g. pytest")
    args = parser.parse_args(argv)
    make(args.target, args.extra)


if __name__ == "__main__":
    main()
