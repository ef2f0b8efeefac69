"""The configuration: frozen, typed, closed models, validated fully at load (DESIGN.md section 7).

``load_config(path)`` reads the YAML file; ``parse_config(data, path=..., environ=...)`` builds
the same ``Config`` from already-parsed data (tests use it). Every problem is a ``ConfigError``
naming the file, the key path (``$.feeds[0].schedule.every``), the bad value and the fix.

Models are frozen so a running export keeps its ``Feed`` while a reload swaps in a new
``Config``; ``Feed`` is hashable and comparable, so a reload diffs old and new feeds with ``==``.
Each ``Feed`` is fully resolved: the ``defaults`` section merged with the feed's own keys. Keys
that do not apply to a feed's kind hold their built-in default there, so editing a stream-only
default never makes a table feed look changed.

Feed names must match ``^[a-z][a-z0-9_]{0,62}$``: they become folder and file names in the
lake, so no dots, slashes or upper case (``Orders`` and ``orders`` would share a folder on
case-insensitive filesystems). Sources are unquoted ksqlDB identifiers, stored upper-cased as
ksqlDB itself stores them.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from lakeexportd.config.durations import format_duration
from lakeexportd.config.sizes import format_size

DEFAULT_CONFIG_PATH: Final = Path("/etc/lakeexportd/lakeexportd.yaml")
CONFIG_ENV: Final = "LAKEEXPORTD_CONFIG"

FEED_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,62}")
KSQL_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Kind = Literal["stream", "table"]
Start = Literal["earliest", "now"]
Security = Literal["raw", "anonymized", "aggregated"]
Api = Literal["auto", "query-stream", "query"]
LogLevel = Literal["debug", "info", "warning", "error"]
TableFormat = Literal["parquet", "delta"]
Mode = Literal["batch", "realtime"]


class Secret:
    """A password that never shows in repr, str, logs or tracebacks; ``reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a feed runs: every N seconds, or on a 5-field cron expression in UTC."""

    every: float | None = None
    cron: str | None = None

    def __str__(self) -> str:
        return f"every {format_duration(self.every)}" if self.every is not None \
            else f"cron '{self.cron}' UTC"


@dataclass(frozen=True, slots=True)
class TLSSettings:
    verify: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class KsqlDBSettings:
    url: str
    username: str | None = None
    password: Secret | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    max_retries: int = 5
    http2: bool = False
    api: Api = "auto"
    tls: TLSSettings = field(default_factory=TLSSettings)


@dataclass(frozen=True, slots=True)
class LakeSettings:
    """Where the lake lives: a local folder (``root``) or an object-store URL (``url``) with
    its store options (``storage``, secrets already read from their ``*_env``/``*_file``;
    never shown: ``repr`` leaves them out). ``lake.configured.lake_of`` opens it, in one
    place. ``origin`` (``<file>: $.lake``) prefixes the errors of opening it."""

    root: Path | None = None
    url: str | None = None
    storage: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    lease_ttl: float = 30.0  # object stores: how long a killed writer's lease blocks its feed
    # Object stores: unlisted objects younger than this are left alone (a paused writer may
    # still commit them); a local lake's flock makes that cleanup immediate. On every lake,
    # compaction inputs stay this long after the swap, for readers in flight.
    orphan_grace: float = 3600.0
    origin: str = field(default="", repr=False, compare=False)

    @property
    def where(self) -> str:
        """The lake as the operator wrote it (a folder or a URL), for messages."""
        return self.url if self.url is not None else str(self.root)


@dataclass(frozen=True, slots=True)
class CatalogSettings:
    """``catalog:``: the Apache Iceberg catalog every Parquet feed is registered in (DESIGN 13).

    ``type: sql`` (the tested default) takes ``uri``: ``sqlite:////abs/catalog.db`` or
    ``postgresql+psycopg2://user@host:5432/db``, its password from ``password_env`` /
    ``password_file`` only (the catalog module puts it in). Other pyiceberg types (``rest``,
    ``glue``, ``hive``) get ``uri`` and ``properties`` as pyiceberg names them (untested).
    ``warehouse`` is where Iceberg's own metadata files go (default: ``<lake>/_catalog``).
    With ``security_namespaces`` a feed's table is ``<namespace>_<security>.<feed>`` so access
    can be granted per level; otherwise ``<namespace>.<feed>`` (the level is a table property).
    """

    type: str = "sql"
    uri: str | None = None
    # The catalog's own name: a SQL catalog keys its rows by it, so every reader (Spark's
    # catalog name, Trino's jdbc-catalog.catalog-name) must use the same one.
    name: str = "lakeexportd"
    namespace: str = "lake"
    security_namespaces: bool = False
    warehouse: str | None = None
    timeout: float = 10.0  # seconds to connect to the catalog before the feed is marked behind
    password: Secret | None = field(default=None, repr=False)
    properties: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    origin: str = field(default="", repr=False, compare=False)

    def namespace_of(self, security: Security) -> str:
        return f"{self.namespace}_{security}" if self.security_namespaces else self.namespace

    @property
    def where(self) -> str:
        """The catalog as the operator wrote it, password never included."""
        return f"{self.type} catalog {self.uri}" if self.uri else f"{self.type} catalog"


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    workers: int = 4
    jitter: float = 0.0
    stop_grace: float = 30.0
    lock_wait: float = 10.0


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    listen: str = "127.0.0.1:9464"
    host: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    dir: Path
    level: LogLevel = "info"
    keep_months: int = 12


S3_CLASSES: Final = ("STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR")
"""S3 storage classes ``tiering`` may move to: colder, yet read at once like STANDARD."""
AZURE_TIERS: Final = ("Cool", "Cold")
"""Azure Blob access tiers ``tiering`` may move to (Archive is offline: never)."""


@dataclass(frozen=True, slots=True)
class Tiering:
    """``tiering: {after: 30d, class: STANDARD_IA}``: closed day partitions older than
    ``after_days`` move to ``storage_class`` in place (object-store lakes, streams only)."""

    after_days: int
    storage_class: str

    def __str__(self) -> str:
        return f"after {self.after_days}d to {self.storage_class}"


@dataclass(frozen=True, slots=True)
class Compaction:
    """``compaction: {after: 1d, target_file_size: 256MiB}``: a stream's day partitions whose
    day ended more than ``after_days`` ago (feed time zone) have their small files rewritten
    into files near ``target_file_size`` (streams only; tables write each version whole)."""

    after_days: int = 1
    target_file_size: int = 256 * 1024 * 1024

    def __str__(self) -> str:
        return f"after {self.after_days}d to {format_size(self.target_file_size)} files"


@dataclass(frozen=True, slots=True)
class Rotate:
    """``rotate: {rows, bytes, age, idle}`` of a realtime feed: the files of every open day
    partition are closed and committed together (one commit with their offsets) as soon as
    one holds: ``rows`` rows or ``bytes`` bytes of rows (their in-memory size) written since
    the last commit, the oldest of them ``age`` seconds old, or no row for ``idle`` seconds."""

    rows: int = 1_000_000
    bytes: int = 128 * 1024 * 1024
    age: float = 60.0
    idle: float = 10.0

    def __str__(self) -> str:
        return (f"rows {self.rows:,}, bytes {format_size(self.bytes)}, "
                f"age {format_duration(self.age)}, idle {format_duration(self.idle)}")


MIN_TARGET_FILE_SIZE: Final = 1024 * 1024
"""Below 1 MiB compaction would cut files smaller than a single export already writes."""


def tier_classes(root_scheme: str | None) -> tuple[str, ...]:
    """The classes ``tiering`` may name on a lake whose root has this URL scheme (``None``:
    a local folder, which has none)."""
    scheme = (root_scheme or "").lower()
    if scheme in ("s3", "s3a"):
        return S3_CLASSES
    if scheme in ("az", "azure", "abfs", "abfss", "adl"):
        return AZURE_TIERS
    return ()


@dataclass(frozen=True, slots=True)
class FeedDefaults:
    """The ``defaults`` section: what every feed gets unless it says otherwise."""

    schedule: Schedule = Schedule(every=300.0)
    batch_size: int = 10_000
    retention_versions: int = 7
    settle_delay: float = 30.0
    start: Start = "earliest"
    security: Security = "raw"
    max_rows_per_file: int = 1_000_000
    max_open_partitions: int = 32  # an open-file cap; memory is bounded by the sink budget
    timezone: str = "UTC"
    retention_days: int | None = None
    tiering: Tiering | None = None
    format: TableFormat = "parquet"
    # On by default: without it a stream's _metadata.json lists every file of every run forever.
    compaction: Compaction | None = Compaction()
    # Who to ask about the data, and labels to find it by: in the catalog and the HTML report.
    owner: str | None = None
    tags: tuple[str, ...] = ()


BUILTIN: Final = FeedDefaults()


@dataclass(frozen=True, slots=True)
class Feed:
    """One resolved feed: every field has its final value (defaults merged with overrides)."""

    name: str
    source: str
    kind: Kind
    schedule: Schedule
    batch_size: int = BUILTIN.batch_size
    retention_versions: int = BUILTIN.retention_versions
    settle_delay: float = BUILTIN.settle_delay
    start: Start = BUILTIN.start
    security: Security = BUILTIN.security
    max_rows_per_file: int = BUILTIN.max_rows_per_file
    max_open_partitions: int = BUILTIN.max_open_partitions
    event_time: str | None = None
    timezone: str = BUILTIN.timezone
    retention_days: int | None = BUILTIN.retention_days
    tiering: Tiering | None = BUILTIN.tiering
    format: TableFormat = BUILTIN.format
    compaction: Compaction | None = BUILTIN.compaction
    owner: str | None = BUILTIN.owner
    tags: tuple[str, ...] = BUILTIN.tags
    description: str | None = None
    catalogued: bool = True  # `catalog: false`: a Parquet feed the catalog leaves out
    enabled: bool = True
    # `mode: realtime` (streams): one long-lived push query instead of scheduled runs
    # (DESIGN 14); `rotate` says when its files are committed.
    mode: Mode = "batch"
    rotate: Rotate = Rotate()

    @property
    def realtime(self) -> bool:
        return self.mode == "realtime"

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    ksqldb: KsqlDBSettings
    lake: LakeSettings
    scheduler: SchedulerSettings
    defaults: FeedDefaults
    metrics: MetricsSettings
    logging: LoggingSettings
    feeds: tuple[Feed, ...]
    catalog: CatalogSettings | None = None

    def feed(self, name: str) -> Feed:
        for feed in self.feeds:
            if feed.name == name:
                return feed
        raise KeyError(name)


def summarize(config: Config) -> list[str]:
    """Lines for ``lakeexportd validate``: where things go (the catalog too, if any), then one
    line per feed."""
    feeds = config.feeds
    streams = sum(feed.kind == "stream" for feed in feeds)
    enabled = sum(feed.enabled for feed in feeds)
    auth = f"user {config.ksqldb.username}" if config.ksqldb.username else "no auth"
    lines = [
        f"{config.path}: OK, {len(feeds)} feeds ({enabled} enabled): "
        f"{streams} streams, {len(feeds) - streams} tables",
        f"ksqldb {config.ksqldb.url} ({auth}); lake {config.lake.where}; "
        f"metrics {config.metrics.listen}",
    ]
    catalog = config.catalog
    if catalog is not None:
        levels = (f"namespaces {catalog.namespace_of('raw')}, "
                  f"{catalog.namespace_of('anonymized')}, {catalog.namespace_of('aggregated')} "
                  "by security level" if catalog.security_namespaces
                  else f"namespace {catalog.namespace}")
        where = catalog.warehouse or f"{config.lake.where}/_catalog"
        parquet = sum(feed.format == "parquet" for feed in feeds)
        lines.append(f"catalog: {catalog.where}, {levels}, Iceberg metadata in {where}: "
                     f"{parquet} Parquet feeds as tables")
    width = max((len(feed.name) for feed in feeds), default=0)
    source_width = max((len(feed.source) for feed in feeds), default=0)
    for feed in feeds:
        state = "" if feed.enabled else "  (disabled)"
        delta = "  delta" if feed.format == "delta" else ""
        when = f"realtime (rotate {feed.rotate})" if feed.realtime else str(feed.schedule)
        lines.append(f"  {feed.name:<{width}}  {feed.kind:<6}  {feed.source:<{source_width}}  "
                     f"{when:<22}  {feed.security}{delta}{state}")
    return lines
