"""Reading YAML into checked values, with errors that name the file, the key path and the fix.

``config.py`` builds the typed models; this module knows only YAML and the shapes of values.
Every error reads ``<file>: $.feeds[0].schedule.every (feed 'orders'): <problem>: <fix>``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import yaml

from lakeexportd.config.durations import DURATION_HELP, parse_duration
from lakeexportd.config.sizes import SIZE_HELP, format_size, parse_size
from lakeexportd.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML would silently keep only the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[object, yaml.Mark] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            first = seen[key]
            raise yaml.constructor.ConstructorError(
                None, None,
                f"duplicate key {key!r} (first defined on line {first.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def read_yaml(path: Path) -> object:
    """Parse the file at ``path``; unreadable files and YAML errors become ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read the configuration file: {exc}: "
            "check the path given with -c (or $LAKEEXPORTD_CONFIG) and its permissions"
        ) from exc
    return parse_yaml(text, file=str(path))


def parse_yaml(text: str, *, file: str) -> object:
    """Parse YAML text; a syntax error names its line and column (1-based)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds no Python objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        kind = "error" if isinstance(exc, yaml.constructor.ConstructorError) else "syntax error"
        raise ConfigError(
            f"{file}: YAML {kind} at {where}: {problem}: fix the YAML at that position"
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: YAML error: {exc}: fix the YAML") from exc


def show(value: object) -> str:
    """A short, quoted rendering of a bad value for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_name(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)


class Node:
    """A YAML mapping at a key path. Every read checks the type and reports the path on error."""

    def __init__(self, value: object, path: str, file: str, label: str = "") -> None:
        self.path = path
        self.file = file
        self.label = label
        if not isinstance(value, dict):
            raise self._fail(path, f"expected a mapping, got {type_name(value)} {show(value)}",
                             "write `key: value` lines under it")
        for key in value:
            if not isinstance(key, str):
                raise self._fail(path, f"key {show(key)} is {type_name(key)}",
                                 "keys must be strings")
        self.data: dict[str, object] = value

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}"

    def _fail(self, path: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.file}: {path}{self.label}: {problem}: {fix}")

    def fail(self, key: str | None, problem: str, fix: str) -> ConfigError:
        """An error about ``key`` of this mapping (or the mapping itself when ``key`` is None)."""
        return self._fail(self.path if key is None else self.key_path(key), problem, fix)

    def check_keys(self, known: Collection[str], *, where: str = "here") -> None:
        """Refuse unknown keys, suggesting the closest known one (typos are the usual cause)."""
        for key in self.data:
            if key in known:
                continue
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            fix = f"did you mean {close[0]!r}?" if close else \
                f"known keys {where} are: {', '.join(sorted(known))}"
            raise self.fail(key, f"unknown key {key!r}", fix)

    def has(self, key: str) -> bool:
        return key in self.data

    def section(self, key: str, *, required: bool = False) -> Node:
        # A section whose keys are all commented out reads as null: treat it as empty.
        if self.data.get(key) is None:
            if required:
                raise self.fail(key, "missing section", f"add a `{key}:` section")
            return Node({}, self.key_path(key), self.file, self.label)
        return Node(self.data[key], self.key_path(key), self.file, self.label)

    def nodes(self, key: str) -> Iterator[tuple[int, object]]:
        """The items of the list at ``key`` (absent or null means an empty list)."""
        value = self.data.get(key)
        if value is None:
            return iter(())
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {type_name(value)} {show(value)}",
                            "write one `- name: ...` item per line")
        return iter(enumerate(value))

    def _typed(self, key: str, kinds: tuple[type, ...], wanted: str) -> object:
        value = self.data[key]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise self.fail(key, f"expected {wanted}, got {type_name(value)} {show(value)}",
                            f"write {wanted}")
        return value

    def opt_string(self, key: str) -> str | None:
        if self.data.get(key) is None:
            return None
        value = self._typed(key, (str,), "a string")
        assert isinstance(value, str)
        if not value.strip():
            raise self.fail(key, "empty string", "write a value or remove the key")
        return value

    def string(self, key: str, default: str) -> str:
        if key not in self.data:
            return default
        value = self.opt_string(key)
        if value is None:
            raise self.fail(key, "expected a string, got null",
                            f"write a value (default {default!r})")
        return value

    def require_string(self, key: str, what: str) -> str:
        value = self.opt_string(key)
        if value is None:
            problem = "is empty (null)" if key in self.data else "missing required key"
            raise self.fail(key, problem, f"give `{key}:` {what}")
        return value

    def choice(self, key: str, choices: Collection[str], default: str) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.fail(key, f"invalid value {show(value)}",
                            f"use one of: {' | '.join(choices)}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.data:
            return default
        value = self._typed(key, (bool,), "true or false")
        assert isinstance(value, bool)
        return value

    def opt_integer(self, key: str, *, minimum: int) -> int | None:
        if self.data.get(key) is None:
            return None
        value = self._typed(key, (int,), "a whole number")
        assert isinstance(value, int)
        if value < minimum:
            raise self.fail(key, f"{value} is too small", f"use a number >= {minimum}")
        return value

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        if key in self.data and self.data[key] is None:
            raise self.fail(key, "expected a whole number, got null",
                            f"write a number (default {default})")
        value = self.opt_integer(key, minimum=minimum)
        return default if value is None else value

    def duration(self, key: str, default: float, *, positive: bool) -> float:
        if key not in self.data:
            return default
        raw = self.data[key]
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            raise self.fail(key, f"duration {show(raw)} has no unit",
                            f"write e.g. '{raw}s'; {DURATION_HELP}")
        text = self._typed(key, (str,), "a duration such as '30s'")
        assert isinstance(text, str)
        if text.strip().startswith("-"):
            raise self.fail(key, f"duration {show(text)} is negative",
                            "give a positive amount such as '5s' (or '0s' where zero is allowed)")
        try:
            seconds = parse_duration(text)
        except ValueError:
            raise self.fail(key, f"bad duration {show(text)}", DURATION_HELP) from None
        if positive and seconds <= 0:
            raise self.fail(key, f"duration {show(text)} must be greater than zero",
                            "use a positive duration such as '10s'")
        return seconds

    def size(self, key: str, default: int, *, minimum: int) -> int:
        """A byte size written with a unit (``256MiB``), at least ``minimum`` bytes."""
        if key not in self.data:
            return default
        raw = self.data[key]
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            raise self.fail(key, f"size {show(raw)} has no unit", f"write e.g. '{raw}MiB'; "
                            + SIZE_HELP)
        text = self._typed(key, (str,), "a size such as '256MiB'")
        assert isinstance(text, str)
        try:
            size = parse_size(text)
        except ValueError:
            raise self.fail(key, f"bad size {show(text)}", SIZE_HELP) from None
        if size < minimum:
            raise self.fail(key, f"size {show(text)} is below {format_size(minimum)}",
                            f"use at least {format_size(minimum)}")
        return size

    def matching(self, key: str, pattern: re.Pattern[str], what: str, fix: str) -> str:
        value = self.require_string(key, what)
        if not pattern.fullmatch(value):
            raise self.fail(key, f"{show(value)} is not {what}", fix)
        return value

    def path_value(self, key: str, base: Path) -> Path | None:
        """A filesystem path; relative ones resolve against ``base`` (the config's directory)."""
        text = self.opt_string(key)
        if text is None:
            return None
        return (base / Path(text).expanduser()).resolve()


def root_node(data: object, file: str) -> Node:
    """The top of the document, refusing an empty file or a top level that is not a mapping."""
    if data is None:
        raise ConfigError(f"{file}: $: the configuration file is empty: write at least the "
                          "`ksqldb:` and `lake:` sections (see etc/lakeexportd.yaml)")
    return Node(data, "$", file)
