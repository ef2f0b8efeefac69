"""The layer rules of the code layout are data: import-linter checks them (pyproject.toml).

Layers, top to bottom: cli, service, audit | export, feeds | ksqldb, lake, config,
errors | failpoints; a folder imports only the folders below it. The sandbox imports nothing
else of lakeexportd, without exceptions: it is the independent witness the client is tested
against.
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


def test_a_sandbox_import_of_the_client_breaks_the_witness_contract(tmp_path: Path) -> None:
    """The sandbox contract can fail too: a copy where the sandbox borrows the client's types."""
    copy = tmp_path / "lakeexportd"
    shutil.copytree(ROOT / "lakeexportd", copy, ignore=shutil.ignore_patterns("__pycache__"))
    formatting = copy / "sandbox" / "formatting.py"
    formatting.write_text(formatting.read_text() + "\nfrom lakeexportd.ksqldb import types  # noqa\n")
    done = lint(tmp_path)
    assert done.returncode != 0
    assert "The sandbox is an independent witness" in done.stdout
    assert "lakeexportd.sandbox.formatting -> lakeexportd.ksqldb.types" in done.stdout
