"""Loading the configuration: the file ``-c`` names, read, validated and resolved.

Kept apart from the models (``model``) so the builders (``build``) can import the models
without a cycle: load -> build -> model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from lakeexportd.config.build import build_config
from lakeexportd.config.model import CONFIG_ENV, DEFAULT_CONFIG_PATH, Config
from lakeexportd.config.reader import read_yaml, root_node


def default_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """The file ``-c`` means when not given: ``$LAKEEXPORTD_CONFIG``, then the system path."""
    return Path(environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] = os.environ) -> Config:
    """Read, validate and resolve the configuration file at ``path``."""
    return parse_config(read_yaml(Path(path)), path=path, environ=environ)


def parse_config(
    data: object, *, path: str | os.PathLike[str], environ: Mapping[str, str] = os.environ
) -> Config:
    """Validate and resolve parsed YAML ``data`` as if read from ``path``."""
    return build_config(root_node(data, str(path)), Path(path), environ)
