from __future__ import annotations

import pytest

from replicator import EmbeddedRemote
from tests.helpers import make_firestore_remote


@pytest.fixture(params=["embedded", "firestore"])
def store(request, tmp_path):
    if request.param == "embedded":
        return EmbeddedRemote(tmp_path / "remote.db")
    return make_firestore_remote(request.getfixturevalue("firestore_client"))
