"""Builders that turn checked YAML (``config_reader.Node``) into the models of ``config.py``.

Called only through ``config.load.parse_config``; split out so each module holds one idea.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import cast
from urllib.parse import unquote, urlsplit

from apscheduler.triggers.cron import CronTrigger

from lakeexportd.config.model import (
    BUILTIN,
    FEED_NAME,
    KSQL_IDENTIFIER,
    MIN_TARGET_FILE_SIZE,
    Api,
    CatalogSettings,
    Compaction,
    Config,
    Feed,
    FeedDefaults,
    Kind,
    KsqlDBSettings,
    LakeSettings,
    LoggingSettings,
    LogLevel,
    MetricsSettings,
    Mode,
    Rotate,
    Schedule,
    SchedulerSettings,
    Secret,
    Security,
    Start,
    TableFormat,
    Tiering,
    TLSSettings,
    tier_classes,
)
from lakeexportd.config.reader import Node, show

TOP_KEYS = ("ksqldb", "lake", "catalog", "scheduler", "defaults", "metrics", "logging", "feeds")
CATALOG_KEYS = ("type", "uri", "name", "namespace", "security_namespaces", "warehouse", "timeout",
                "password_env", "password_file", "properties")
KSQLDB_KEYS = ("url", "username", "password_env", "password_file", "connect_timeout",
               "read_timeout", "max_retries", "http2", "api", "tls")
DEFAULT_KEYS = tuple(f.name for f in fields(FeedDefaults))
STREAM_ONLY = ("settle_delay", "start", "event_time", "timezone", "retention_days",
               "max_open_partitions", "tiering", "compaction", "mode", "rotate")
TABLE_ONLY = ("retention_versions",)
FEED_KEYS = ("name", "source", "kind", "enabled", "event_time", "description", "catalog",
             "mode", "rotate", *DEFAULT_KEYS)
# A catalog namespace or an owner/tag: printable, no control characters, bounded.
_LABEL = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
_DESCRIPTION = re.compile(r"[^\x00-\x09\x0b-\x1f\x7f]{1,1000}")
_NAMESPACE = re.compile(r"[a-z][a-z0-9_]{0,62}")

# Bounds of `every`: below a second a feed spins (1ms burned 93% CPU and ~20 GB of logs a day);
# above a year APScheduler's next-run arithmetic overflows and takes the daemon down.
MIN_EVERY = 1.0
MAX_EVERY = 366 * 86_400.0
MAX_JITTER = 86_400.0

# APScheduler 3 numbers weekdays from Monday=0 while cron uses Sunday=0: a numeric weekday
# would silently run on the wrong day, so only names (mon-fri) are accepted there.
_NUMERIC_WEEKDAY = re.compile(r"(?<!/)\d")


def build_config(root: Node, path: Path, environ: Mapping[str, str]) -> Config:
    root.check_keys(TOP_KEYS, where="at the top level")
    base = path.absolute().parent
    lake = _lake(root.section("lake", required=True), base, environ)
    defaults = _defaults(root.section("defaults"))
    feeds = _feeds(root, defaults)
    _check_tiering(root, lake)
    catalog = _catalog(root.section("catalog"), base, environ) if root.has("catalog") else None
    return Config(
        path=path.absolute(),
        ksqldb=_ksqldb(root.section("ksqldb", required=True), base, environ),
        lake=lake,
        scheduler=_scheduler(root.section("scheduler")),
        defaults=defaults,
        metrics=_metrics(root.section("metrics")),
        logging=_logging(root.section("logging"), base, lake),
        feeds=feeds,
        catalog=catalog,
    )


def _ksqldb(node: Node, base: Path, environ: Mapping[str, str]) -> KsqlDBSettings:
    if node.has("password"):
        raise node.fail("password", "a password written in the YAML is refused",
                        "put it in an environment variable named by `password_env`, "
                        "or in a file named by `password_file`")
    node.check_keys(KSQLDB_KEYS, where="in ksqldb")
    url = node.require_string("url", "the ksqlDB server URL, e.g. http://localhost:8088")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise node.fail("url", f"{show(url)} is not an http(s) URL",
                        "write e.g. http://localhost:8088 or https://ksqldb.example.com")
    username = node.opt_string("username")
    password = _password(node, environ, base)
    if password is not None and username is None:
        raise node.fail("username", "a password is configured but no username",
                        "add `username:` (ksqlDB basic auth needs both) or remove the password")
    if username is not None and password is None:
        raise node.fail("username", f"username {username!r} has no password",
                        "add `password_env:` or `password_file:`")
    return KsqlDBSettings(
        url=url.rstrip("/"),
        username=username,
        password=password,
        connect_timeout=node.duration("connect_timeout", 10.0, positive=True),
        read_timeout=node.duration("read_timeout", 300.0, positive=True),
        max_retries=node.integer("max_retries", 5, minimum=0),
        http2=node.boolean("http2", False),
        api=cast(Api, node.choice("api", ("auto", "query-stream", "query"), "auto")),
        tls=_tls(node.section("tls"), base),
    )


def _password(node: Node, environ: Mapping[str, str], base: Path) -> Secret | None:
    env_name = node.opt_string("password_env")
    file = node.path_value("password_file", base)
    if env_name is not None and file is not None:
        raise node.fail("password_file", "both password_env and password_file are set",
                        "keep only one of them")
    if env_name is not None:
        value = environ.get(env_name)
        if not value:
            raise node.fail("password_env", f"environment variable {env_name!r} is unset or empty",
                            f"export {env_name} in the daemon's environment "
                            "(systemd: EnvironmentFile=) or use password_file")
        return Secret(value)
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise node.fail("password_file", f"cannot read {str(file)!r}: {exc.__class__.__name__}",
                            "check the path and that the daemon's user may read it") from exc
        if not value:
            raise node.fail("password_file", f"{str(file)!r} is empty",
                            "write the password into the file")
        return Secret(value)
    return None


def _catalog(node: Node, base: Path, environ: Mapping[str, str]) -> CatalogSettings:
    """``catalog:`` (DESIGN 13). A SQL catalog's URI is checked here, its password read from
    the environment or a file (never from the YAML, never in the URI), a relative SQLite path
    resolved against the config file's folder."""
    node.check_keys(CATALOG_KEYS, where="in catalog")
    kind = node.string("type", "sql")
    uri = node.opt_string("uri")
    if kind == "sql":
        if uri is None:
            raise node.fail("uri", "missing required key",
                            "add `uri: sqlite:////var/lib/lakeexportd/catalog.db` (one machine) "
                            "or `uri: postgresql://lakeexportd@dbhost:5432/catalog` (shared)")
        uri = _sql_uri(node, uri, base)
    elif uri is not None and urlsplit(uri).password:
        raise node.fail("uri", "a password written in the catalog URI",
                        "remove it from the URI and use `password_env:` or `password_file:`")
    namespace = node.matching("namespace", _NAMESPACE, "a catalog namespace",
                              "1-63 characters: a lowercase letter, then lowercase letters, "
                              "digits or _") if node.has("namespace") else "lake"
    password = _password(node, environ, base)
    if password is not None and kind == "sql" and uri is not None and uri.startswith("sqlite"):
        raise node.fail("password_env" if node.has("password_env") else "password_file",
                        "a SQLite catalog has no password", "remove the password keys")
    name = node.matching("name", _NAMESPACE, "a catalog name",
                         "1-63 characters: a lowercase letter, then lowercase letters, digits "
                         "or _") if node.has("name") else "lakeexportd"
    return CatalogSettings(
        type=kind,
        uri=uri,
        name=name,
        namespace=namespace,
        security_namespaces=node.boolean("security_namespaces", False),
        warehouse=node.opt_string("warehouse"),
        timeout=node.duration("timeout", 10.0, positive=True),
        password=password,
        properties=_store_options(node.section("properties"), base, environ),
        origin=f"{node.file}: {node.path}",
    )


_SQL_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "postgres")


def _sql_uri(node: Node, uri: str, base: Path) -> str:
    """A SQLAlchemy URL pyiceberg's SQL catalog can open: SQLite (relative paths resolved) or
    PostgreSQL through psycopg2 (the driver lakeexportd installs)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in _SQL_SCHEMES:
        raise node.fail("uri", f"{show(uri)} is not a SQLite or PostgreSQL URL",
                        "write sqlite:////abs/path/catalog.db or "
                        "postgresql://user@host:5432/database")
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.lower().startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise node.fail("uri", f"{show(uri)} names no database file",
                            "write sqlite:////abs/path/catalog.db (four slashes: absolute) or "
                            "sqlite:///catalog.db (relative to this file's folder)")
        return f"sqlite:///{(base / path).resolve()}"
    if parts.password:
        raise node.fail("uri", "a password written in the catalog URI",
                        "remove it from the URI and use `password_env:` or `password_file:`")
    if not parts.hostname or not parts.path.strip("/"):
        raise node.fail("uri", f"{show(uri)} names no host or database",
                        "write postgresql://user@host:5432/database")
    return "postgresql+psycopg2://" + uri.split("://", 1)[1]


def _tls(node: Node, base: Path) -> TLSSettings:
    node.check_keys(("verify", "ca_file", "cert_file", "key_file"), where="in ksqldb.tls")
    files: dict[str, Path | None] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        files[key] = node.path_value(key, base)
        found = files[key]
        if found is not None and not found.is_file():
            raise node.fail(key, f"file {str(found)!r} does not exist",
                            "give the path of a PEM file (relative to the config file's folder)")
    if files["key_file"] is not None and files["cert_file"] is None:
        raise node.fail("key_file", "key_file without cert_file", "add `cert_file:` too")
    return TLSSettings(verify=node.boolean("verify", True), **files)


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+)://(.*)")
OBJECT_SCHEMES = ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl")
"""URL schemes of object-store lakes (``lake.storage.object.SCHEMES`` but ``memory``; a test
pins the two together: config cannot import the lake)."""

_OPTION_PREFIXES = ("aws_", "azure_storage_", "azure_", "google_")
# obstore's options whose value is a secret: read only from `<key>_env` / `<key>_file`.
_SECRET_OPTIONS = frozenset({
    "secret_access_key", "session_token", "token",  # S3
    "account_key", "access_key", "master_key", "client_secret", "sas_key", "sas_token",
    "bearer_token", "encryption_key", "fabric_session_token",  # Azure
    "service_account_key",  # GCS
})
# obstore's options that name a file it reads itself: a path, not a secret (kept as written,
# relative to the config file's folder), even where the name ends in `_file`.
_PATH_OPTIONS = frozenset({
    "web_identity_token_file", "container_authorization_token_file", "federated_token_file",
    "application_credentials", "service_account", "service_account_path",
})
# Any other option whose name says secret is refused too (a future obstore option, an alias),
# unless it names a place (fabric_token_service_url) or an identifier.
_SECRET_WORDS = re.compile(r"secret|token|password|passwd|private_key|sas_")
_NOT_SECRET = re.compile(r".*_(url|uri|endpoint|id)")


def _option_name(key: str) -> str:
    """obstore's short name of an option (``AWS_SECRET_ACCESS_KEY`` -> ``secret_access_key``)."""
    name = key.lower()
    for prefix in _OPTION_PREFIXES:
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    return name


def is_secret_option(key: str) -> bool:
    """Whether the store option ``key`` holds a credential (never written in the YAML)."""
    name = _option_name(key)
    if name in _PATH_OPTIONS:
        return False
    return name in _SECRET_OPTIONS or (bool(_SECRET_WORDS.search(name))
                                       and not _NOT_SECRET.fullmatch(name))


def _lake(node: Node, base: Path, environ: Mapping[str, str]) -> LakeSettings:
    node.check_keys(("root", "storage", "lease_ttl", "orphan_grace"), where="in lake")
    text = node.opt_string("root")
    if text is None:
        raise node.fail("root", "missing required key",
                        "add `root:` with the lake's folder, or an s3:// az:// gs:// URL")
    url = _URL.fullmatch(text)
    options = node.section("storage")
    origin = f"{node.file}: {node.path}"
    # Allowed on every root, so one config moves between a folder and a bucket; only object
    # stores use it (on disk the flock excludes a paused writer: cleanup is immediate).
    grace = node.duration("orphan_grace", 3600.0, positive=False)
    if url is None or url.group(1).lower() == "file":
        for key in ("storage", "lease_ttl"):
            if node.has(key):
                raise node.fail(key, "applies to object-store lakes only (a local lake uses "
                                "flock)", f"remove `{key}:`, or make `root:` an s3://, az:// "
                                "or gs:// URL")
        if url is None:
            return LakeSettings(root=node.path_value("root", base), orphan_grace=grace,
                                origin=origin)
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise node.fail("root", f"{show(text)} is not a local file:// URL",
                            "write file:///absolute/path (three slashes), or the path itself")
        return LakeSettings(root=Path(unquote(parts.path)).resolve(), orphan_grace=grace,
                            origin=origin)
    scheme = url.group(1).lower()
    if scheme == "memory":
        raise node.fail("root", "memory:// lakes live in one process and vanish with it",
                        "give a folder or an s3://, az:// or gs:// URL (memory:// is for tests)")
    if scheme not in OBJECT_SCHEMES:
        raise node.fail("root", f"{scheme}:// is not a lake lakeexportd can open",
                        "give a folder, file:///path, or one of "
                        + ", ".join(f"{s}://" for s in OBJECT_SCHEMES))
    if not url.group(2).strip("/"):
        raise node.fail("root", f"{show(text)} names no bucket or container",
                        "write e.g. s3://my-bucket/lake or az://my-container/lake")
    return LakeSettings(url=text.rstrip("/"), storage=_store_options(options, base, environ),
                        lease_ttl=node.duration("lease_ttl", 30.0, positive=True),
                        orphan_grace=grace, origin=origin)


def _store_options(
    node: Node, base: Path, environ: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """``lake.storage`` as obstore's option names and string values; a secret comes only from
    the environment (``<key>_env: VARIABLE``) or a file (``<key>_file: /path``)."""
    resolved: dict[str, str] = {}
    given: dict[str, str] = {}  # option -> the key that gave it
    for key, value in node.data.items():
        if isinstance(value, dict | list) or value is None:
            raise node.fail(key, f"expected a single value, got {show(value)}",
                            "write one value per option, as the storage library names it")
        name = key
        if _option_name(key) in _PATH_OPTIONS:
            path = node.path_value(key, base)
            assert path is not None
            resolved[name] = str(path)
        elif key.endswith("_env"):
            name = key.removesuffix("_env")
            variable = node.require_string(key, "the name of an environment variable")
            if not environ.get(variable):
                raise node.fail(key, f"environment variable {variable} is "
                                f"{'empty' if variable in environ else 'not set'}",
                                f"export {variable} for lakeexportd (e.g. in the systemd "
                                f"unit's EnvironmentFile), or use `{name}_file:`")
            resolved[name] = environ[variable]
        elif key.endswith("_file"):
            name = key.removesuffix("_file")
            path = node.path_value(key, base)
            assert path is not None
            try:
                resolved[name] = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise node.fail(key, f"cannot read {path} ({reason})",
                                "point it at a file lakeexportd's user can read") from None
            if not resolved[name]:
                raise node.fail(key, f"{path} is empty", f"write the {name} into the file")
        elif is_secret_option(key):
            raise node.fail(key, "a secret written in the configuration file",
                            f"use `{key}_env: VARIABLE` or `{key}_file: /path/to/secret`, "
                            "or the store's standard credential chain")
        else:
            resolved[key] = str(value).lower() if isinstance(value, bool) else str(value)
        if name in given:
            raise node.fail(key, f"`{name}` is also given by `{given[name]}`",
                            "keep only one of them")
        given[name] = key
    return tuple(sorted(resolved.items()))


def _scheduler(node: Node) -> SchedulerSettings:
    node.check_keys(("workers", "jitter", "stop_grace", "lock_wait"), where="in scheduler")
    return SchedulerSettings(
        workers=node.integer("workers", 4, minimum=1),
        jitter=_jitter(node),
        stop_grace=node.duration("stop_grace", 30.0, positive=False),
        lock_wait=node.duration("lock_wait", 10.0, positive=False),
    )


def _metrics(node: Node) -> MetricsSettings:
    node.check_keys(("listen",), where="in metrics")
    listen = node.string("listen", "127.0.0.1:9464")
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):(\d{1,5})", listen)
    port = int(match.group(2)) if match else 0
    if match is None or not 1 <= port <= 65535:
        raise node.fail("listen", f"{show(listen)} is not host:port",
                        "write e.g. 127.0.0.1:9464, 0.0.0.0:9464 or [::1]:9464")
    return MetricsSettings(listen=listen, host=match.group(1).strip("[]"), port=port)


def _logging(node: Node, base: Path, lake: LakeSettings) -> LoggingSettings:
    node.check_keys(("level", "keep_months", "dir"), where="in logging")
    level = node.choice("level", ("debug", "info", "warning", "error"), "info")
    return LoggingSettings(
        dir=_log_dir(node, base, lake),
        level=cast(LogLevel, level),
        keep_months=node.integer("keep_months", 12, minimum=1),
    )


def _log_dir(node: Node, base: Path, lake: LakeSettings) -> Path:
    chosen = node.path_value("dir", base)
    if chosen is not None:
        return chosen
    if lake.root is None:
        raise node.fail("dir", "missing: logs stay on local disk when the lake is on an object "
                        "store", "add `logging: {dir: /var/log/lakeexportd}`")
    return lake.root / "logs"


def _jitter(node: Node) -> float:
    jitter = node.duration("jitter", 0.0, positive=False)
    if jitter > MAX_JITTER:
        raise node.fail("jitter", f"jitter of {show(node.data['jitter'])} is out of range",
                        "give at most 1d (runs start up to this much late)")
    return jitter


def _schedule(node: Node) -> Schedule:
    node.check_keys(("every", "cron"), where="in a schedule")
    if node.has("every") == node.has("cron"):
        problem = "both `every` and `cron` are set" if node.has("every") else \
            "neither `every` nor `cron` is set"
        raise node.fail(None, problem, "give exactly one, e.g. {every: 5m} or {cron: '0 * * * *'}")
    if node.has("every"):
        every = node.duration("every", 0.0, positive=True)
        if not MIN_EVERY <= every <= MAX_EVERY:
            raise node.fail(
                "every", f"`every` of {show(node.data['every'])} is out of range",
                "give 1s to 366d: shorter burns CPU and logs without exporting more, and "
                "for rarer runs a cron says when (e.g. '0 3 1 * *' for monthly)",
            )
        return Schedule(every=every)
    expr = node.require_string("cron", "a 5-field cron expression")
    try:
        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as exc:
        raise node.fail("cron", f"bad cron expression {show(expr)}: {exc}",
                        "write 5 fields: minute hour day month weekday, e.g. '0 * * * *'") from None
    weekday = expr.split()[4]
    if _NUMERIC_WEEKDAY.search(weekday):
        raise node.fail("cron", f"numeric weekday {weekday!r} in {show(expr)}",
                        "write weekday names (sun, mon-fri): the scheduler counts Monday as 0")
    return Schedule(cron=expr)


def _settings(node: Node, base: FeedDefaults) -> FeedDefaults:
    """Read the defaultable keys present in ``node`` over ``base`` (used by defaults and feeds)."""
    timezone = node.string("timezone", base.timezone)
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise node.fail("timezone", f"unknown time zone {show(timezone)}",
                        "use an IANA name such as UTC or Europe/Paris") from None
    retention_days = node.opt_integer("retention_days", minimum=1)
    return FeedDefaults(
        schedule=_schedule(node.section("schedule")) if node.has("schedule") else base.schedule,
        batch_size=node.integer("batch_size", base.batch_size, minimum=1),
        retention_versions=node.integer("retention_versions", base.retention_versions, minimum=1),
        settle_delay=node.duration("settle_delay", base.settle_delay, positive=False),
        start=cast(Start, node.choice("start", ("earliest", "now"), base.start)),
        security=cast(Security, node.choice("security", ("raw", "anonymized", "aggregated"),
                                            base.security)),
        max_rows_per_file=node.integer("max_rows_per_file", base.max_rows_per_file, minimum=1),
        max_open_partitions=node.integer("max_open_partitions", base.max_open_partitions,
                                         minimum=1),
        timezone=timezone,
        retention_days=retention_days if node.has("retention_days") else base.retention_days,
        tiering=_tiering(node, base.tiering),
        format=cast(TableFormat, node.choice("format", ("parquet", "delta"), base.format)),
        compaction=_compaction(node, base.compaction),
        owner=_label(node, "owner") if node.has("owner") else base.owner,
        tags=_tags(node) if node.has("tags") else base.tags,
    )


def _label(node: Node, key: str) -> str:
    return node.matching(key, _LABEL, "one line of text",
                         "write one line of up to 200 characters, e.g. `team-payments`")


def _tags(node: Node) -> tuple[str, ...]:
    """``tags: [finance, pii]``: distinct one-line labels, in the order written."""
    value = node.data.get("tags")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) and _LABEL.fullmatch(t)
                                              for t in value):
        raise node.fail("tags", f"expected a list of one-line labels, got {show(value)}",
                        "write e.g. `tags: [finance, pii]`")
    return tuple(dict.fromkeys(value))


def _tiering(node: Node, base: Tiering | None) -> Tiering | None:
    """``tiering: {after: 30d, class: STANDARD_IA}``; ``tiering: null`` turns a default off."""
    if not node.has("tiering"):
        return base
    if node.data["tiering"] is None:
        return None
    tiering = node.section("tiering")
    tiering.check_keys(("after", "class"), where="in tiering")
    if not tiering.has("after"):
        raise tiering.fail("after", "missing required key",
                           "say how old a day partition gets before it moves, e.g. `after: 30d`")
    days = _whole_days(tiering, "after", 0.0, example="30d")
    storage_class = tiering.require_string(
        "class", "the colder class, e.g. STANDARD_IA (S3) or Cool (Azure Blob)")
    return Tiering(after_days=days, storage_class=storage_class)


def _whole_days(node: Node, key: str, default: float, *, example: str) -> int:
    """A duration that must be whole days (day partitions age in days), at least one."""
    days, rest = divmod(node.duration(key, default, positive=True), 86_400.0)
    if rest or days < 1:
        raise node.fail(key, f"{show(node.data[key])} is not a whole number of days",
                        f"write whole days such as {example} (partitions are days)")
    return int(days)


def _compaction(node: Node, base: Compaction | None) -> Compaction | None:
    """``compaction: {after: 1d, target_file_size: 256MiB}`` (either key may be left out);
    ``compaction: null`` turns it off."""
    if not node.has("compaction"):
        return base
    if node.data["compaction"] is None:
        return None
    section = node.section("compaction")
    section.check_keys(("after", "target_file_size"), where="in compaction")
    days = _whole_days(section, "after", 86_400.0, example="1d")
    size = section.size("target_file_size", Compaction().target_file_size,
                        minimum=MIN_TARGET_FILE_SIZE)
    return Compaction(after_days=days, target_file_size=size)


def _check_tiering(root: Node, lake: LakeSettings) -> None:
    """Every ``tiering`` (in ``defaults`` or a feed) names a class the lake's store has."""
    scheme = None if lake.url is None else lake.url.split("://", 1)[0].lower()
    allowed = tier_classes(scheme)
    places = [root.section("defaults")]
    for index, item in root.nodes("feeds"):
        name = item.get("name") if isinstance(item, dict) else None
        places.append(Node(item, f"$.feeds[{index}]", root.file, f" (feed {name!r})"))
    for place in places:
        if place.data.get("tiering") is None:
            continue
        if not allowed:
            where = f"the lake is the local folder {lake.where}" if scheme is None \
                else f"{scheme}:// lakes have no tiering yet (S3 and Azure Blob do)"
            raise place.fail("tiering", f"storage tiering needs an object-store lake: {where}",
                             "remove `tiering:`, or make lake.root an s3:// or az:// URL")
        node = place.section("tiering")
        chosen = node.data["class"]
        if chosen not in allowed:
            same = [c for c in allowed if c.lower() == str(chosen).lower()]
            hint = f"did you mean {same[0]!r}? " if same else ""
            raise node.fail("class", f"{show(chosen)} is not a class tiering moves to on "
                            f"{scheme}:// lakes", f"{hint}use one of: {' | '.join(allowed)} "
                            "(colder, yet read at once: paths and readers stay the same)")


def _defaults(node: Node) -> FeedDefaults:
    node.check_keys(DEFAULT_KEYS, where="in defaults")
    return _settings(node, BUILTIN)


def _feeds(root: Node, defaults: FeedDefaults) -> tuple[Feed, ...]:
    feeds: list[Feed] = []
    seen: dict[str, int] = {}
    for index, item in root.nodes("feeds"):
        feed = build_feed(Node(item, f"$.feeds[{index}]", root.file), defaults)
        if feed.name in seen:
            raise root.fail(f"feeds[{index}].name",
                            f"duplicate feed name {feed.name!r} (also $.feeds[{seen[feed.name]}])",
                            "give every feed a unique name")
        seen[feed.name] = index
        feeds.append(feed)
    return tuple(feeds)


def build_feed(node: Node, defaults: FeedDefaults) -> Feed:
    """One feed from its YAML node (the feed registry reads its entries back through this)."""
    raw_name = node.data.get("name")
    lower = f"use {raw_name.lower()!r} or " if isinstance(raw_name, str) \
        and FEED_NAME.fullmatch(raw_name.lower()) else "use "
    name = node.matching("name", FEED_NAME, "a safe feed name",
                         f"{lower}1-63 characters: a lowercase letter first, then lowercase "
                         "letters, digits or _ (the name becomes a folder in the lake)")
    node.label = f" (feed {name!r})"
    node.check_keys(FEED_KEYS, where="in a feed")
    source = node.matching("source", KSQL_IDENTIFIER, "a ksqlDB stream or table name",
                           "write the unquoted name as SHOW STREAMS/SHOW TABLES lists it, "
                           "e.g. TRANSACTION_STREAM")
    kind = cast(Kind, node.choice("kind", ("stream", "table"), "") if node.has("kind") else "")
    if not kind:
        raise node.fail("kind", "missing required key", "add `kind: stream` or `kind: table`")
    wrong = TABLE_ONLY if kind == "stream" else STREAM_ONLY
    for key in wrong:
        if node.has(key):
            raise node.fail(key, f"`{key}` does not apply to a {kind}",
                            f"remove it (it is for {'tables' if kind == 'stream' else 'streams'})")
    event_time = None
    if node.data.get("event_time") is not None:
        event_time = node.matching("event_time", KSQL_IDENTIFIER, "a column name",
                                   "name a TIMESTAMP or BIGINT column, or remove the key "
                                   "to use ROWTIME").upper()
    resolved = _settings(node, defaults)
    if kind == "table":
        # Stream-only settings keep their built-in values so stream defaults never alter tables.
        resolved = replace(resolved, settle_delay=BUILTIN.settle_delay, start=BUILTIN.start,
                           timezone=BUILTIN.timezone, retention_days=BUILTIN.retention_days,
                           max_open_partitions=BUILTIN.max_open_partitions,
                           tiering=BUILTIN.tiering, compaction=BUILTIN.compaction)
    else:
        resolved = replace(resolved, retention_versions=BUILTIN.retention_versions)
    mode = cast(Mode, node.choice("mode", ("batch", "realtime"), "batch"))
    if node.has("rotate") and mode != "realtime":
        raise node.fail("rotate", "`rotate` is for `mode: realtime` feeds (a batch feed "
                        "writes one file set per scheduled run)",
                        "add `mode: realtime`, or remove `rotate:`")
    rotate = _rotate(node) if node.has("rotate") else Rotate()
    if mode == "realtime" and node.has("schedule"):
        raise node.fail("schedule", "a `mode: realtime` feed has no schedule: its push query "
                        "runs all the time and `rotate` says when files are committed",
                        "remove `schedule:` from this feed")
    if mode == "realtime" and resolved.tiering is not None:
        raise node.fail("mode", "`tiering` is not built for realtime feeds yet (the feed's "
                        "lock is held by its push query all along)",
                        "remove `tiering:` from this feed (or set `tiering: null` on it when "
                        "it comes from defaults), or use a scheduled (batch) feed")
    if mode == "realtime":
        # Unused by a realtime feed: the built-in value, so a `defaults.schedule` edit never
        # makes it look changed (a reload would restart its query) and a registry entry,
        # which has no schedule, reads back the same Feed.
        resolved = replace(resolved, schedule=BUILTIN.schedule)
    if resolved.format == "delta" and resolved.tiering is not None:
        raise node.fail("format", "`tiering` is for Parquet feeds: a Delta table's files are "
                        "listed by its log, and moving them is not built",
                        "remove `tiering:` from this feed (or set `tiering: null` on it when it "
                        "comes from defaults), or use `format: parquet`")
    return Feed(
        name=name,
        source=source.upper(),
        kind=kind,
        event_time=event_time,
        enabled=node.boolean("enabled", True),
        catalogued=node.boolean("catalog", True),
        description=node.matching("description", _DESCRIPTION, "a description",
                                  "write up to 1000 characters of text") if node.has(
                                      "description") else None,
        mode=mode,
        rotate=rotate,
        **{f.name: getattr(resolved, f.name) for f in fields(FeedDefaults)},
    )


MIN_ROTATE_S = 0.1  # below it a quiet feed would commit an empty check many times a second


def _rotate(node: Node) -> Rotate:
    """``rotate: {rows: 100000, bytes: 64MiB, age: 5s, idle: 2s}``; keys left out keep
    their defaults (``Rotate``)."""
    section = node.section("rotate")
    section.check_keys(("rows", "bytes", "age", "idle"), where="in rotate")
    base = Rotate()
    rotate = Rotate(
        rows=section.integer("rows", base.rows, minimum=1),
        bytes=section.size("bytes", base.bytes, minimum=1024),
        age=section.duration("age", base.age, positive=True),
        idle=section.duration("idle", base.idle, positive=True),
    )
    for key in ("age", "idle"):
        if getattr(rotate, key) < MIN_ROTATE_S:
            raise section.fail(key, f"{show(section.data[key])} is shorter than "
                               f"{MIN_ROTATE_S:g}s", "write e.g. `5s` (each rotation is a "
                               "commit of _metadata.json)")
    return rotate
