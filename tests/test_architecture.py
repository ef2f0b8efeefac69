"""The layer rules of the code layout are data: import-linter checks them (pyproject.toml).

Layers, top to bottom: cli, service, audit | export, feeds | ksqldb, lake, config,
errors | failpoints; a folder imports only the folders below it. lake/storage imports nothing
else of lakeexportd. The sandbox imports nothing else of lakeexportd, without exceptions: it is
the independent witness the client is tested against. Two AST checks add what import-linter
cannot say: no file-system calls outside the lake, no private names across folders.
"""

from __future__ import annotations

import ast
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
    """Every contract is kept on the code as it is."""
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 3 kept, 0 broken." in done.stdout


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


PACKAGE = ROOT / "lakeexportd"
# What reads or writes files: only lake/storage/ may do it for the lake.
_FS_MODULES = {"os", "shutil", "fcntl", "tempfile", "glob"}
_FS_METHODS = {"exists", "is_dir", "is_file", "is_symlink", "iterdir", "glob", "rglob",
               "unlink", "mkdir", "rmdir", "rename", "touch", "chmod", "stat",
               "read_bytes", "read_text", "write_bytes", "write_text"}


_PARQUET_OPENERS = {"read_table", "read_metadata", "read_schema", "ParquetFile"}


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def test_export_feeds_and_audit_touch_the_lake_only_through_its_storage() -> None:
    """Object stores and Delta plug in below lake/storage/ without touching these folders:
    none of them imports a file-system module or calls a pathlib file-system method."""
    offences = []
    for folder in ("export", "feeds", "audit"):
        for path in _modules(folder):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module.split(".")[0]]
                offences += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}"
                             for n in names if n in _FS_MODULES]
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in _FS_METHODS
                        and "storage" not in ast.unparse(node.func.value)):
                    offences.append(f"{path.relative_to(ROOT)}:{node.lineno} calls "
                                    f"{ast.unparse(node.func)}()")
                # pyarrow opening a path itself (``pq.read_table(feed_dir / name)``) instead
                # of a file the storage opened
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in _PARQUET_OPENERS and node.args
                        and isinstance(node.args[0], ast.BinOp | ast.Constant)):
                    offences.append(f"{path.relative_to(ROOT)}:{node.lineno} opens "
                                    f"{ast.unparse(node.args[0])} with {ast.unparse(node.func)}")
    assert offences == []


def test_no_folder_reaches_into_another_folders_private_names() -> None:
    """``from lakeexportd.<a>.x import _name`` (or ``x._name``) from outside folder <a> is refused:
    what a folder shares is its public names."""
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        folder = path.relative_to(PACKAGE).parts[0]
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}  # local name -> the module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.startswith("lakeexportd."):
                owner = node.module.split(".")[1]
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    if owner != folder and alias.name.startswith("_"):
                        offences.append(f"{path.relative_to(ROOT)}: {node.module}.{alias.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.value.id in aliases):
                module = aliases[node.value.id]
                if module.split(".")[1] != folder:
                    offences.append(f"{path.relative_to(ROOT)}: {module}.{node.attr}")
    assert offences == []


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
