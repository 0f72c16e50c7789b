"""Network faults between the real google-cloud-firestore client and the emulator.

A :class:`~replicator.testing.FaultProxy` sits between the client and the
emulator and resets connections part-way through reads and commits, refuses
connections, goes half-open, and adds latency. Every sync either succeeds or
ends in ``OfflineError``/``TransientError`` in bounded time, never a raw
exception; afterwards the devices converge with nothing lost or duplicated.
``REPLICATOR_NETFAULT_ROUNDS`` (default 4) sets how many random resets run. The
resets and the outage run twice: as admin (a server's client), and as a signed-in
user under the generated rules (the proxy in front of the TokenGate).
"""

from __future__ import annotations

import os
import random
import time
import uuid

import peewee
import pytest

from replicator import OfflineError, Replicator, TransientError
from replicator.stores.firestore import FirestoreRemote
from replicator.testing import FaultProxy
from tests.helpers import FIRESTORE_PROJECT, snapshot_rows
from tests.models import MODELS, Comment, Note

ROUNDS = int(os.environ.get("REPLICATOR_NETFAULT_ROUNDS", "4"))


@pytest.fixture
def proxy(firestore_emulator):
    p = FaultProxy(firestore_emulator.port).start()
    yield p
    p.stop()


class Net:
    """Remotes of one kind (admin, or a signed-in user under the generated rules) that
    reach the emulator through ``proxy`` (``faulty``) or straight."""

    def __init__(self, kind, firestore_emulator, request, monkeypatch):
        self.users = request.getfixturevalue("as_users")() if kind == "user" else None
        self.direct = self.users.gate.host if self.users else firestore_emulator.host
        self.proxy = FaultProxy(int(self.direct.rsplit(":", 1)[1])).start()
        self.monkeypatch = monkeypatch

    def remote(self, uid, *, faulty=True, **kw):
        from google.cloud import firestore

        kw.setdefault("timeout", 5.0)
        kw.setdefault("attempts", 3)
        host = self.proxy.host if faulty else self.direct
        self.monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)  # read when a client is made
        if self.users is not None:
            return self.users.remote(uid, **kw)
        client = firestore.Client(project=FIRESTORE_PROJECT)
        return FirestoreRemote(client, root=f"users/{uid}", **kw)


@pytest.fixture(params=["admin", "user"])
def net(request, firestore_emulator, monkeypatch):
    n = Net(request.param, firestore_emulator, request, monkeypatch)
    yield n
    n.proxy.stop()


def _client_through(proxy, monkeypatch):
    from google.cloud import firestore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", proxy.host)
    return firestore.Client(project=FIRESTORE_PROJECT)


def _device(tmp_path, name, remote):
    db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
    return Replicator(db, MODELS, remote, device_name=name, page_size=200)


def _remote(client, root, **kw):
    kw.setdefault("timeout", 5.0)
    kw.setdefault("attempts", 3)
    return FirestoreRemote(client, root=root, **kw)


def _sync_allowing_network_errors(device, **kw):
    try:
        return device.sync(**kw)
    except (OfflineError, TransientError):
        return None


def test_resets_mid_read_and_mid_commit_end_typed_and_converge(tmp_path, net):
    uid, proxy = uuid.uuid4().hex, net.proxy
    writer = _device(tmp_path, "writer", net.remote(uid, faulty=False, timeout=10.0))
    reader = _device(tmp_path, "reader", net.remote(uid))
    with writer.bound():
        for i in range(300):
            note = Note.create(title=f"n{i}", body="x" * 200)
            Comment.create(note=note, text=f"c{i}")
    writer.sync()
    rng = random.Random(7)
    outcomes = []
    for round_ in range(ROUNDS):
        with reader.bound():  # something to commit, so resets hit commits too
            Note.create(title=f"reader {round_}", body="y" * 5000)
        proxy.reset_after(rng.choice([200, 2_000, 20_000, 60_000]))
        outcomes.append(_sync_allowing_network_errors(reader) is not None)
        proxy.reset_after(10**12)  # disarm
    assert proxy.resets >= 1
    for _ in range(3):
        _recovers(reader)
        writer.sync()
    assert snapshot_rows(reader) == snapshot_rows(writer)
    notes = {i for i, d in reader.remote.all_docs("note").items() if not d.deleted}
    assert len(notes) == 300 + ROUNDS  # nothing lost, nothing duplicated
    assert net.users is None or net.users.gate.refused == {}


def test_refused_connections_end_in_offline_error(tmp_path, proxy, monkeypatch):
    client = _client_through(proxy, monkeypatch)
    device = _device(tmp_path, "d", _remote(client, f"users/{uuid.uuid4().hex}", attempts=2))
    proxy.mode = "refuse"
    with pytest.raises(OfflineError) as info:
        device.sync()
    assert info.value.retryable and info.value.hint
    proxy.mode = "pass"
    _recovers(device)


def _recovers(device, within: float = 20.0):
    """The client reconnects with its own backoff: a later sync succeeds."""
    until = time.monotonic() + within
    while True:
        try:
            return device.sync()
        except OfflineError:
            if time.monotonic() > until:
                raise
            time.sleep(0.5)


def test_a_half_open_connection_gives_up_at_the_sync_deadline(tmp_path, proxy, monkeypatch):
    client = _client_through(proxy, monkeypatch)
    remote = _remote(client, f"users/{uuid.uuid4().hex}", timeout=20.0, attempts=5)
    device = _device(tmp_path, "d", remote)
    device.sync()  # connected once, then the network goes half-open
    with device.bound():
        Note.create(title="waits")
    proxy.mode = "blackhole"
    started = time.monotonic()
    with pytest.raises(OfflineError, match="deadline"):
        device.sync(timeout=3.0)
    assert time.monotonic() - started < 15  # not the 100 s the per-call policy allows
    proxy.mode = "pass"
    proxy.reset_all()
    report = _recovers(device)
    assert report.uploaded == {"note": 1}


def test_latency_slows_a_sync_but_changes_nothing(tmp_path, proxy, firestore_client, monkeypatch):
    root = f"users/{uuid.uuid4().hex}"
    a = _device(tmp_path, "a", _remote(firestore_client, root))
    with a.bound():
        Comment.create(note=Note.create(title="n"), text="c")
    a.sync()
    proxy.latency = 0.05
    b = _device(tmp_path, "b", _remote(_client_through(proxy, monkeypatch), root))
    b.sync()
    assert snapshot_rows(b) == snapshot_rows(a)


def test_the_first_sync_after_an_outage_succeeds(tmp_path, net):
    """gRPC backs off its reconnects while the network is down (1 s, 1.6 s, 2.6 s...) and
    its channel fails every call at once until the next attempt, even once the network is
    back: a sync started then re-dials instead of failing on that backoff (as a user: a
    channel that still carries the user's token, never the admin header)."""
    proxy = net.proxy
    device = _device(tmp_path, "d", net.remote(uuid.uuid4().hex))
    device.sync()
    with device.bound():
        Note.create(title="its answer is lost")
    proxy.reset_after(1)  # the sync's first answer never arrives
    _sync_allowing_network_errors(device)
    proxy.mode = "refuse"  # then the network goes down, long enough for gRPC to back off
    proxy.reset_all()
    down_until = time.monotonic() + 4.0
    while time.monotonic() < down_until:
        with pytest.raises(OfflineError):
            device.sync(timeout=2.0)
        time.sleep(0.5)
    proxy.mode = "pass"
    started = time.monotonic()
    device.sync(timeout=5.0)  # the very next sync, not "one of the next ones"
    assert time.monotonic() - started < 5
    notes = device.remote.all_docs("note").values()
    assert [d.data["title"] for d in notes] == ["its answer is lost"]
    assert net.users is None or net.users.gate.refused == {}


def test_a_production_client_is_redialed_to_the_same_service(monkeypatch):
    """No network needed: building a channel does not connect. The emulator tests above
    cover the insecure channel; this one the TLS channel with the client's credentials."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    from replicator.stores.firestore_dial import redial

    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    client = firestore.Client(project="p", credentials=AnonymousCredentials())
    assert redial(client) is False  # never dialed: its first call dials anyway
    old = client._firestore_api
    assert redial(client) is True
    new = client._firestore_api
    assert new is not old and new.transport.grpc_channel is not old.transport.grpc_channel
    assert new.transport._host == old.transport._host == "firestore.googleapis.com:443"
    new.transport.close()
    old.transport.close()
