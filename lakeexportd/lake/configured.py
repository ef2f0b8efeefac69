"""The configured lake, opened in one place: ``lake_of(config.lake)`` gives its storage and root.

A local lake is its folder on the local file system. An object-store lake is opened from its
URL and ``lake.storage`` options (secrets already read from ``*_env``/``*_file`` by the config
loader). Its root is still a ``Path``, so the layout's path arithmetic stays one code:
``/bucket/prefix/streams/tx/...``. Nothing touches that path on local disk, because every
read and write goes through the storage (a test pins that ``export/``, ``feeds/`` and
``audit/`` make no file-system call). One ``ObjectStorage`` is kept per configured lake, so
a daemon's lease observations and connections are shared by every run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from lakeexportd.config.model import LakeSettings
from lakeexportd.errors import ConfigError, StoreUnavailable
from lakeexportd.lake.storage import LOCAL, Storage, open_lake


@dataclass(frozen=True)
class ConfiguredLake:
    storage: Storage
    root: Path
    where: str  # the folder or URL as configured, for messages


def check_store(lake: ConfiguredLake) -> None:
    """Refuse a store without create-if-absent and If-Match: exactly-once stands on them.

    ``ConfigError`` (exit 78) names the store and what it lacks, or the refused credentials;
    ``StoreUnavailable`` (exit 75, retried by systemd) when it cannot be reached at all.
    Writes and removes one scratch object under the lake's root.
    """
    try:
        problems = lake.storage.check_conditional_writes(lake.root)
    except PermissionError as exc:
        raise ConfigError(f"the lake store {lake.where} refused lakeexportd's credentials "
                          f"({exc.strerror}): check lake.storage and the *_env/*_file "
                          "secrets it names") from exc
    except OSError as exc:
        raise StoreUnavailable(f"the lake store {lake.where} cannot be reached "
                               f"({exc.strerror or exc}): check lake.storage.endpoint and "
                               "the network") from exc
    if problems:
        raise ConfigError(
            f"the lake store {lake.where} cannot hold exactly-once: {'; '.join(problems)}. "
            "lakeexportd needs conditional writes (create-if-absent and If-Match): use a store "
            "or an S3-compatible server that enforces them"
        )


@functools.cache
def lake_of(settings: LakeSettings) -> ConfiguredLake:
    """The storage and root of the configured lake (``ConfigError`` for bad store options)."""
    if settings.url is None:
        assert settings.root is not None  # the config loader gives one or the other
        return ConfiguredLake(LOCAL, settings.root, settings.where)
    try:  # offline: builds the client, sends nothing
        lake = open_lake(settings.url, dict(settings.storage), lease_ttl=settings.lease_ttl)
    except ConfigError as exc:  # an option obstore does not know or refuses (never its value)
        where = f"{settings.origin}.storage: " if settings.origin else ""
        raise ConfigError(f"{where}{exc}: name each option as obstore does (see the README, "
                          "Lakes on object stores)") from None
    return ConfiguredLake(lake.storage, Path(lake.root), settings.where)
