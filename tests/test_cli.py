"""What every entry point shares (mnist_lstm/cli/main.py): the cyclic garbage collector off while a script imports."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

HYDRA_SCRIPTS = sorted(p.name for p in (REPO / "scripts").glob("*.py") if "hydra_main" in p.read_text())


@pytest.mark.parametrize("script", HYDRA_SCRIPTS)
def test_scripts_turn_the_collector_off_before_importing(script: str) -> None:
    """Importing torch, Lightning and matplotlib with the collector on cost about a second of every start."""
    body = ast.parse((REPO / "scripts" / script).read_text()).body
    code = [ast.unparse(s) for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    assert code[:2] == ["import gc", "if __name__ == '__main__':\n    gc.disable()"]
    assert any(line.startswith("from mnist_lstm") for line in code[2:])  # the heavy imports come after it


def test_the_task_runs_with_the_collector_on_and_the_imports_frozen(tmp_path: Path) -> None:
    """hydra_main freezes what the script imported (never scanned again) and turns the collector back on."""
    script = tmp_path / "task.py"
    script.write_text(
        "import gc\n"
        "if __name__ == '__main__':\n"
        "    gc.disable()\n"
        "import torch, lightning\n"
        "from mnist_lstm.cli.main import hydra_main\n"
        f"@hydra_main(config_name='train', config_path={str(REPO / 'conf')!r})\n"
        "def main(cfg):\n"
        "    print('enabled', gc.isenabled(), 'frozen', gc.get_freeze_count())\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, str(script), f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    words = result.stdout.split()
    enabled, frozen = words[words.index("enabled") + 1], int(words[words.index("frozen") + 1])
    assert enabled == "True" and frozen > 100_000  # torch and Lightning alone are hundreds of thousands of objects
