"""The reference-file cache's index sealed under a database key: the file names and
boundary are not readable on the disk, the cache works as a plain one, a wrong key
is a typed error naming the index file."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("sqlcipher3", reason="the sqlcipher extra is not installed")

from replicator import DirectoryBlobStore, ReferenceFiles
from replicator.errors import WrongDatabaseKeyError
from tests.cipher.scan import markers_found
from tests.reference.test_reference import Tiles

KEY = bytes(range(32))


@pytest.mark.parametrize("key", [KEY, "a passphrase"], ids=["raw", "passphrase"])
def test_the_cache_index_is_sealed(tmp_path, key):
    blobs = DirectoryBlobStore(tmp_path / "bucket")
    files = {f"Chibuto-district-{i}.bin": os.urandom(300) for i in range(3)}
    Tiles(blobs).publish("Gaza-Chibuto-boundary", files)
    cache = ReferenceFiles(blobs, tmp_path / "cache", key=key)
    assert len(cache.sync("Gaza-Chibuto-boundary").downloaded) == 3
    index = tmp_path / "cache" / ".manifest.json"
    assert markers_found(tmp_path, ["Chibuto-district", "Gaza-Chibuto"], only=[index]) == []
    again = ReferenceFiles(blobs, tmp_path / "cache", key=lambda: key)
    boundary, installed = again.installed()
    assert boundary == "Gaza-Chibuto-boundary" and set(installed) == set(files)
    assert again.sync("Gaza-Chibuto-boundary").downloaded == ()
    with pytest.raises(WrongDatabaseKeyError, match=str(index)):
        ReferenceFiles(blobs, tmp_path / "cache", key=bytes(32)).installed()
    # a plain cache's index names them: the scan can fail
    plain = ReferenceFiles(blobs, tmp_path / "plain")
    plain.sync("Gaza-Chibuto-boundary")
    assert markers_found(
        tmp_path / "plain", ["Gaza-Chibuto"], only=[tmp_path / "plain" / ".manifest.json"]
    )
