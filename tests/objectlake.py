"""A lake in a test bucket, seen without lakeexportd: its objects, what ``_metadata.json`` lists.

Both come straight from the store (obstore on the test's ``Bucket``) and from the document's
JSON, never from the code under test, so a test can tell listed data, unlisted leftovers and
the objects lakeexportd keeps for itself (``_metadata.json``, ``_lease.json``) apart.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import obstore
from objectstores import Bucket

OWN = ("_metadata.json", "_lease.json")  # lakeexportd's own objects in a feed folder


def feed_prefix(prefix: str, kind: str, feed: str) -> str:
    """The key prefix of a feed folder of the lake at ``<bucket>/<prefix>``."""
    return f"{prefix}/{'streams' if kind == 'stream' else 'tables'}/{feed}/"


def objects(bucket: Bucket, prefix: str, kind: str, feed: str) -> dict[str, dt.datetime]:
    """Every object under the feed folder (keys relative to it) and its last-modified time."""
    start = feed_prefix(prefix, kind, feed)
    found: dict[str, dt.datetime] = {}
    for chunk in obstore.list(bucket.store, start):
        for meta in chunk:
            found[meta["path"][len(start):]] = meta["last_modified"]
    return found


def document(bucket: Bucket, prefix: str, kind: str, feed: str) -> dict[str, Any] | None:
    key = feed_prefix(prefix, kind, feed) + "_metadata.json"
    try:
        data = bytes(obstore.get(bucket.store, key).bytes())
    except FileNotFoundError:
        return None
    parsed: dict[str, Any] = json.loads(data)
    return parsed


def listed(doc: dict[str, Any] | None) -> set[str]:
    """Keys (relative to the feed folder) of every file the document lists."""
    if doc is None:
        return set()
    groups = doc["partitions"] if "partitions" in doc else doc["versions"]
    return {f"{group['path']}/{entry['name']}" for group in groups for entry in group["files"]}


def unlisted(bucket: Bucket, prefix: str, kind: str, feed: str) -> set[str]:
    """Objects of the feed folder that its ``_metadata.json`` does not list (leftovers)."""
    names = objects(bucket, prefix, kind, feed)
    return {k for k in names if k not in OWN} - listed(document(bucket, prefix, kind, feed))


def lease_owner(bucket: Bucket, prefix: str, kind: str, feed: str) -> dict[str, Any] | None:
    """The feed's ``_lease.json`` as written (owner ``host:pid:token``, epoch, released)."""
    key = feed_prefix(prefix, kind, feed) + "_lease.json"
    try:
        parsed: dict[str, Any] = json.loads(bytes(obstore.get(bucket.store, key).bytes()))
    except FileNotFoundError:
        return None
    return parsed


def store_config(bucket: Bucket) -> tuple[str, dict[str, str], str, str]:
    """(``lake.storage`` YAML flow mapping with the secret as ``*_env: LAKE_SECRET``, the
    options for ``open_lake``, the secret's value, the lake root URL under prefix ``lake``)."""
    options = {**{k: str(v) for k, v in bucket.config.items()}, "allow_http": "true"}
    secret_key = "secret_access_key" if bucket.kind == "s3" else "account_key"
    plain = {k: v for k, v in options.items() if k != secret_key}
    flow = "{" + ", ".join(f"{k}: '{v}'" for k, v in plain.items()) + \
        f", {secret_key}_env: LAKE_SECRET}}"
    return flow, options, options[secret_key], f"{bucket.url}/lake"
