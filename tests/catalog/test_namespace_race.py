"""Two writers creating the catalog's namespace at once (found by the two-daemon system test).

pyiceberg's ``SqlCatalog.create_namespace`` checks that the namespace is absent, then inserts
its row: another writer's insert landing in between fails ours on the primary key with an
``IntegrityError`` that pyiceberg does not translate, so ``create_namespace_if_not_exists``
raises. A daemon's workers registering their first feeds together, or two daemons, hit it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lakecheck import NOW, exporter, feed
from pgserver import PostgresDatabase
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.typedef import Identifier

from lakeexportd.catalog.iceberg import LakeCatalog
from lakeexportd.config.model import CatalogSettings
from lakeexportd.lake.configured import ConfiguredLake
from lakeexportd.lake.storage import LOCAL
from lakeexportd.sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=5, preload=50, preload_days=1) as sb:
        yield sb


class LateNamespaceCatalog(SqlCatalog):
    """A SqlCatalog that runs ``after_check`` once, right after its "does the namespace
    exist?" query answered: where another writer's create can land."""

    after_check: Callable[[], object] | None = None

    def namespace_exists(self, namespace: str | Identifier) -> bool:
        exists = super().namespace_exists(namespace)
        hook, self.after_check = self.after_check, None
        if hook is not None:
            hook()
        return exists


def test_a_namespace_created_between_check_and_insert_is_used(
    sandbox: Sandbox, tmp_path: Path, postgres_database: PostgresDatabase,
) -> None:
    """Another writer creates the namespace after our existence check: the sync still creates
    the feed's table in it and registers the feed's files."""
    root = tmp_path / "lake"
    tx = feed("tx", "TRANSACTION_FLATTENED")
    assert exporter(sandbox.url, root).export(tx, NOW).rows == 50
    catalog = LakeCatalog(CatalogSettings(uri=postgres_database.url),
                          ConfiguredLake(LOCAL, root, str(root)))
    properties = catalog._properties()
    racing = LateNamespaceCatalog("lakeexportd", **properties)
    other = SqlCatalog("lakeexportd", **properties)
    racing.after_check = lambda: other.create_namespace("lake")
    catalog._catalog = racing  # the catalog it would open itself, with the hook
    try:
        result = catalog.sync(tx)
    finally:
        catalog.close()
        other.engine.dispose()
    assert result.created and result.added >= 1
    assert racing.after_check is None, "the race was never staged"
    table = other.load_table(("lake", "tx"))
    assert table.scan().to_arrow().num_rows == 50
