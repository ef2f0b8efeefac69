"""``ObjectStorage.rewrite_in_class`` on the real servers (moto's S3, Azurite), both paths:
one PUT If-Match for an object up to ``part_size``, a streamed multipart upload above it.
Classes are read back from the servers themselves, bytes through obstore."""

from __future__ import annotations

import errno
import os
from pathlib import PurePosixPath

import obstore
import pytest
from objectstores import Azurite, Bucket, MotoS3

from lakeexportd.lake.storage import PreconditionFailed
from lakeexportd.lake.storage.object import ObjectStorage

PART = 5 * 1024 * 1024  # S3's smallest part


def server_class(bucket: Bucket, key: str, request: pytest.FixtureRequest) -> str:
    if bucket.kind == "s3":
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        return moto.storage_classes(bucket.name)[key]
    azurite: Azurite = request.getfixturevalue("azurite")
    status, headers = azurite.request("HEAD", f"{bucket.name}/{key}")
    assert status == 200 and isinstance(headers, dict)
    return headers["x-ms-access-tier"]


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_small_and_streamed_objects_keep_their_bytes_in_the_new_class(
    kind: str, request: pytest.FixtureRequest,
) -> None:
    bucket: Bucket = request.getfixturevalue("s3_bucket" if kind == "s3" else "azure_container")
    storage = ObjectStorage(bucket.store, url=bucket.url, root=PurePosixPath(f"/{bucket.name}"),
                            part_size=PART)
    target = "ONEZONE_IA" if kind == "s3" else "Cold"
    objects = {"small": os.urandom(1000), "streamed": os.urandom(2 * PART + 123)}
    for key, data in objects.items():
        obstore.put(bucket.store, key, data)
        storage.rewrite_in_class(storage.root / key, target, size=len(data))
        assert server_class(bucket, key, request) == target
        assert bytes(obstore.get(bucket.store, key).bytes()) == data


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_an_object_that_changes_while_it_streams_is_never_replaced(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another writer replaces the object during the streamed copy: the upload is dropped
    (PreconditionFailed), and the other writer's object stays, in its own class."""
    bucket: Bucket = request.getfixturevalue("s3_bucket" if kind == "s3" else "azure_container")
    storage = ObjectStorage(bucket.store, url=bucket.url, root=PurePosixPath(f"/{bucket.name}"),
                            part_size=PART)
    data, theirs = os.urandom(PART + 1), os.urandom(PART + 1)
    obstore.put(bucket.store, "obj", data)
    real = storage.signature

    def replaced_meanwhile(path: PurePosixPath) -> object:
        obstore.put(bucket.store, "obj", theirs)  # the other writer, before the check
        return real(path)

    monkeypatch.setattr(storage, "signature", replaced_meanwhile)
    with pytest.raises(PreconditionFailed) as info:
        storage.rewrite_in_class(storage.root / "obj", "STANDARD_IA" if kind == "s3" else "Cool",
                                 size=len(data))
    assert info.value.errno == errno.ESTALE and "new copy was dropped" in str(info.value)
    assert bytes(obstore.get(bucket.store, "obj").bytes()) == theirs
    assert server_class(bucket, "obj", request) == ("STANDARD" if kind == "s3" else "Hot")
