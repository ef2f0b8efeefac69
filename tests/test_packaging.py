"""A clean install works: every third-party module the package imports is declared.

The check reads the source and ``pyproject.toml``, not the environment: the test extras install
pandas, which pulls numpy in, so an undeclared ``import numpy`` would pass any test that only
imports the package here and still break ``pip install .`` on a user's machine.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lakeexportd"


def _imported_top_level_modules() -> dict[str, set[str]]:
    """Top-level module name -> the package files that import it (relative imports excluded)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_runtime_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {
        _normalise(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0])
        for spec in project["dependencies"]
    }


def _third_party(found: dict[str, set[str]]) -> dict[str, set[str]]:
    return {
        module: files
        for module, files in found.items()
        if module not in sys.stdlib_module_names and module not in ("lakeexportd", "__future__")
    }


def test_every_third_party_import_of_the_package_is_a_declared_runtime_dependency() -> None:
    """Each imported distribution is in [project].dependencies (test extras do not count)."""
    declared = _declared_runtime_distributions()
    providers = packages_distributions()
    missing = []
    for module, files in sorted(_third_party(_imported_top_level_modules()).items()):
        distributions = {_normalise(d) for d in providers.get(module, [])}
        if not distributions & declared:
            where = ", ".join(sorted(files))
            missing.append(f"{module} (imported by {where}; provided by {sorted(distributions)})")
    assert not missing, "undeclared runtime imports: " + "; ".join(missing)


def test_the_import_scan_sees_the_libraries_the_hot_path_uses() -> None:
    """The scan itself finds numpy, pyarrow and httpx (so an empty scan cannot pass the check)."""
    third_party = _third_party(_imported_top_level_modules())
    assert {"numpy", "pyarrow", "httpx", "yaml"} <= third_party.keys()
    assert "json" not in third_party and "lakeexportd" not in third_party
