from __future__ import annotations

import pytest

from replicator import EmbeddedRemote


@pytest.fixture(params=["embedded"])
def store(request, tmp_path):
    if request.param == "embedded":
        return EmbeddedRemote(tmp_path / "remote.db")
    raise AssertionError(request.param)
