"""Opening the configured Iceberg catalog: pyiceberg's properties from ``catalog:`` and the
lake's store (its FileIO writes Iceberg's own metadata there), and the URIs files go by."""

from __future__ import annotations

from pathlib import Path, PurePath
from urllib.parse import quote, urlsplit

import sqlalchemy.exc
from pyiceberg.catalog import Catalog, load_catalog

from lakeexportd.config.model import CatalogSettings
from lakeexportd.errors import CatalogError
from lakeexportd.lake.configured import ConfiguredLake


def open_catalog(settings: CatalogSettings, lake: ConfiguredLake) -> Catalog:
    """pyiceberg's SQL catalog creates its tables when it finds none: two daemons opening
    a new database at once both try. The second ``CREATE TABLE`` fails: "already exists"
    (the first committed after our look) or, when it waited for the first's transaction,
    a unique violation in PostgreSQL's own catalog (``pg_type``). The tables are there
    then: open again, once. A SQLite catalog's folder is made on a first start."""
    uri = settings.uri or ""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return load_catalog(settings.name, **properties(settings, lake))
    except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
        return load_catalog(settings.name, **properties(settings, lake))


def properties(settings: CatalogSettings, lake: ConfiguredLake) -> dict[str, str]:
    props = dict(settings.properties)
    props.update(file_io(settings, lake))
    props["type"] = settings.type
    props["warehouse"] = warehouse(settings, lake)
    if settings.uri is not None:
        props["uri"] = sql_uri(settings)
    if settings.type == "sql":
        props.setdefault("pool_pre_ping", "true")
    return props


def sql_uri(settings: CatalogSettings) -> str:
    """The SQL catalog's URL with its password and a connect timeout put in."""
    uri = settings.uri or ""
    timeout = max(1, round(settings.timeout))
    if uri.startswith("postgresql"):
        scheme, rest = uri.split("://", 1)
        password = settings.password
        if password is not None and "@" in rest:
            user, host = rest.split("@", 1)
            rest = f"{user}:{quote(password.reveal(), safe='')}@{host}"
        separator = "&" if "?" in rest else "?"
        return f"{scheme}://{rest}{separator}connect_timeout={timeout}"
    if uri.startswith("sqlite"):
        separator = "&" if "?" in uri else "?"
        return f"{uri}{separator}timeout={timeout}"
    return uri


def file_io(settings: CatalogSettings, lake: ConfiguredLake) -> dict[str, str]:
    """pyiceberg's FileIO options for the lake's store (it writes Iceberg's metadata)."""
    url, options = lake.storage.table_location(lake.root)
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("", "file"):
        return {}
    if scheme not in ("s3", "s3a"):
        raise CatalogError(
            f"{settings.where}: a catalog for a {scheme}:// lake is not built (local and S3 "
            "lakes are): remove `catalog:` or move the lake")
    names = {"endpoint": "s3.endpoint", "access_key_id": "s3.access-key-id",
             "secret_access_key": "s3.secret-access-key", "session_token": "s3.session-token",
             "region": "s3.region", "default_region": "s3.region"}
    io: dict[str, str] = {}
    for key, value in options.items():
        name = names.get(key.lower().removeprefix("aws_"))
        if name is not None:
            io[name] = value
    return io


def warehouse(settings: CatalogSettings, lake: ConfiguredLake) -> str:
    """Where Iceberg's own metadata goes: ``catalog.warehouse``, else ``<lake>/_catalog``."""
    return settings.warehouse or uri_of(lake, lake.root / "_catalog")


def uri_of(lake: ConfiguredLake, path: PurePath) -> str:
    """The URI Iceberg records for a lake path: ``file:///abs/path`` or ``s3://b/key``."""
    url, _ = lake.storage.table_location(path)
    return url if "://" in url else f"file://{url}"
