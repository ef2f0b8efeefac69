"""The layer rules of the code layout are data: import-linter checks them (pyproject.toml).

Layers, top to bottom: cli, service, audit | export, feeds | ksqldb, lake, config,
errors | failpoints; a folder imports only the folders below it. The sandbox imports nothing
else of lakeexportd, but for the exceptions the contract lists (issue 3/7 removes them).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml")], cwd=tree,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


def test_the_package_keeps_its_layers_and_the_sandbox_stays_apart() -> None:
    """Both contracts are kept on the code as it is."""
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    """The check can fail: a copy of the package where lake/ imports service/ is refused."""
    copy = tmp_path / "lakeexportd"
    shutil.copytree(ROOT / "lakeexportd", copy, ignore=shutil.ignore_patterns("__pycache__"))
    layout = copy / "lake" / "layout.py"
    layout.write_text(layout.read_text() + "\nfrom lakeexportd.service import daemon  # noqa\n")
    done = lint(tmp_path)
    assert done.returncode != 0
    assert "Layers: imports point down only BROKEN" in done.stdout
    assert "lakeexportd.lake.layout -> lakeexportd.service.daemon" in done.stdout
