"""The failpoint hook: declared names only, Nth hit, and the injected ENOSPC action."""

from __future__ import annotations

import errno

import pytest

from lakeexportd import failpoints
from lakeexportd.failpoints import FAILPOINTS, failpoint


def test_undeclared_name_is_a_programming_error() -> None:
    """A failpoint must be declared, so the crash matrix can iterate over all of them."""
    with pytest.raises(KeyError):
        failpoint("no.such.point")


def test_enospc_action_raises_at_the_nth_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    """``name:2:enospc`` raises OSError(ENOSPC) at the second hit, not before."""
    monkeypatch.setattr(failpoints, "_hits", {})
    monkeypatch.setenv(failpoints.ENV, "metadata.after_tmp_write:2:enospc")
    failpoint("metadata.after_tmp_write")
    failpoint("append.after_rename")  # another point is never affected
    with pytest.raises(OSError) as info:
        failpoint("metadata.after_tmp_write")
    assert info.value.errno == errno.ENOSPC and "injected" in str(info.value)


def test_every_failpoint_is_described() -> None:
    """Each declared point says where in the write path it is."""
    assert len(FAILPOINTS) >= 50 and all(text.strip() for text in FAILPOINTS.values())
