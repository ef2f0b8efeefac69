"""Each feed's catalog state for the commands that show more than the catalog (``metadata
list|show``, ``status``): asked within ``catalog.timeout``, one table cell each, long texts
printed whole under the table. ``lakeexportd catalog`` itself is ``cli/catalog.py``."""

from __future__ import annotations

from typing import Any

from lakeexportd.catalog.policy import in_catalog, open_catalog
from lakeexportd.cli.export import _known
from lakeexportd.config.model import Config, Feed
from lakeexportd.errors import LakeExportError
from lakeexportd.lake.configured import lake_of


def configured_feeds(config: Config) -> list[Feed]:
    """The feeds of the YAML and the registry; the YAML's alone if the registry is unreadable
    (the commands that show catalog states must not fail for it)."""
    try:
        return [feed for feed, _ in _known(config).values()]
    except LakeExportError:
        return list(config.feeds)


def feed_states(config: Config, feeds: list[Feed]) -> dict[str, dict[str, Any]] | None:
    """``metadata list|show`` and ``status``: each Parquet feed's table state (``level``,
    ``behind: ...``, ``catalog unreachable: ...``), asked within ``catalog.timeout``; None
    without a catalog. Never raises for the catalog: its failure is the state shown."""
    if config.catalog is None:
        return None
    from lakeexportd.catalog.glance import close_unless_hung, glance_all  # pyiceberg: here only

    catalog = open_catalog(config.catalog, lake_of(config.lake))
    assert catalog is not None
    glances = glance_all(catalog, [f for f in feeds if in_catalog(f)])
    close_unless_hung(catalog, glances)
    return {name: {"table": g.table, "state": g.shown, "level": g.level}
            for name, g in glances.items()}


CELL = 40  # a catalog state longer than this is cut in a table and printed whole below it


def state_cell(state: dict[str, Any] | None) -> str | None:
    """A ``feed_states`` entry as one table cell (``metadata list``, ``status``)."""
    if state is None:
        return None
    text = str(state["state"])
    return text if len(text) <= CELL else text[:CELL - 3] + "..."


def long_states(states: dict[str, str], *, prefix: bool = False) -> list[str]:
    """The states ``state_cell`` cut, whole, under the table: one line per distinct text
    (an unreachable catalog says the same for every feed); ``prefix``: say they are the
    catalog's (``catalog refused: ...``), in tables about more than the catalog."""
    feeds: dict[str, list[str]] = {}
    for name, text in sorted(states.items()):
        if prefix and not text.startswith("catalog"):
            text = f"catalog {text}"
        if len(text) > CELL:
            feeds.setdefault(text, []).append(name)
    return [f"{', '.join(names)}: {text}" for text, names in feeds.items()]
