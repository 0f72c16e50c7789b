"""Key rings: generations of a snapshot key, the newest publishing, a snapshot opened
with the generation its header names; a source of rings read at each publish and
restore (what a scope's keys in Firestore are)."""

from __future__ import annotations

import io

import pytest

from replicator import EmbeddedRemote, KeyRing, SnapshotKey
from replicator.errors import ConfigurationError, WrongKeyError
from replicator.snapshots.crypto import decrypt_stream, encrypt_stream, publishing_key
from replicator.snapshots.manifest import read_manifest
from replicator.stores.directory import DirectoryBlobStore
from replicator.strategies.snapshot import Always, Never
from tests.helpers import snapshot_rows
from tests.models import Note

K1, K2, K3 = (SnapshotKey(bytes([n]) * 32) for n in (1, 2, 3))


def sealed(key, text=b"the rows of a scope"):
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(text), out, publishing_key(key), {"n": 1})
    return out.getvalue()


def opened(key, blob):
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(blob), out, key)
    return out.getvalue()


def test_the_newest_generation_seals_and_each_opens_what_it_sealed():
    old, new = sealed(KeyRing([K1])), sealed(KeyRing([K1, K2]))
    assert opened(KeyRing([K1, K2]), old) == opened(KeyRing([K1, K2]), new)
    assert opened(K2, new) == b"the rows of a scope"  # sealed under the newest alone
    with pytest.raises(WrongKeyError, match="does not open"):
        opened(K1, new)


def test_a_ring_without_the_generation_says_which_it_holds_and_what_to_do():
    with pytest.raises(WrongKeyError, match=r"does not hold .*generations 1, 2") as info:
        opened(KeyRing([K1, K2]), sealed(KeyRing([K1, K2, K3])))
    assert "removed from the scope never gets" in info.value.hint
    with pytest.raises(WrongKeyError, match="generations 4, 9"):
        opened(KeyRing([K1, K2], generations=[4, 9]), sealed(K3))


@pytest.mark.parametrize(
    "keys, generations",
    [([], ()), ([b"\0" * 32], ()), ([K1, K2], (2, 1)), ([K1, K2], (1,)), ([K1], (1, 1))],
)
def test_a_malformed_ring_is_refused(keys, generations):
    with pytest.raises(ConfigurationError, match="key ring"):
        KeyRing(keys, generations=generations)


def test_a_ring_never_shows_its_keys():
    ring = KeyRing([K1, K2], generations=[3, 7])
    assert repr(ring) == "KeyRing(<generations 3, 7 hidden>)"
    assert "\\x01" not in repr(ring) and "01010101" not in str(ring)


class Source:
    """A key source whose ring the test rotates; counts its reads."""

    def __init__(self, *keys):
        self.keys, self.reads = list(keys), 0

    def ring(self):
        self.reads += 1
        return KeyRing(self.keys)


@pytest.fixture
def remote(tmp_path):
    return EmbeddedRemote(tmp_path / "remote.db")


def test_a_rotation_seals_the_next_snapshot_and_keeps_the_manifests_history(make_device, tmp_path):
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    source = Source(K1)

    def make(name, key, **kw):
        kw.setdefault("snapshot_strategy", Never())
        return make_device(name, blobs=blobs, key=key, **kw)

    a = make("a", source, snapshot_strategy=Always())
    with a.bound():
        Note.create(title="before the rotation")
    first = a.sync().snapshot
    assert first is not None and source.reads == 1  # one read for the whole publish
    stale = make("stale", KeyRing([K1]))
    stale.login()  # generation 1 opens generation 1's snapshot

    source.keys.append(K2)  # rotated: picked up without reopening the device
    with a.bound():
        Note.create(title="after the rotation")
    second = a.sync().snapshot
    manifest = read_manifest(blobs, K2)  # sealed under the newest generation
    assert manifest.snapshot_id == second and manifest.history == (second, first)
    assert manifest.generation == 2  # read through the ring, not replaced as unreadable

    late = make("late", KeyRing([K1]))
    with pytest.raises(WrongKeyError, match="does not hold"):
        late.restore()
    with pytest.raises(WrongKeyError, match="does not hold"):
        late.restore(snapshot_id=first)  # the manifest naming it is generation 2's
    joined = make("joined", Source(K1, K2))
    assert joined.login().restored == second
    assert snapshot_rows(joined) == snapshot_rows(a)
    older = make("older", KeyRing([K1, K2]))
    assert older.restore(snapshot_id=first) == first  # generation 1's, kept in the history
    reads = joined.key.reads
    joined.restore(force=True)
    assert joined.key.reads == reads + 1  # one read for the whole restore
