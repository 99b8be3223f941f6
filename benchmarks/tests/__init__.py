"""The benchmarks' own tests (the suite in smoke mode, its arithmetic, its figures): `python -m pytest benchmarks`,
and with the project's tests by `python -m pytest` (pyproject.toml's testpaths)."""
