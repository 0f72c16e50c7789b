"""The rules matrix: user x collection x operation, allowed or denied by the generated rules.

Each case runs through the real google-cloud-firestore client acting as a signed-in
user (``UserClient``), against the emulator with the rules ``replicator rules``
generates loaded, through the TokenGate (no admin can slip through). The only admin
write is the reference data a server publishes. The outcome table is printed (run
with ``-s`` to see it) and every outcome is asserted.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from replicator.stores.base import DeviceRecord
from tests.campaign_models import FormSchema, Household
from tests.models import Comment, Note

MODELS = [Note, Comment, FormSchema, Household]
RETENTION = dt.timedelta(seconds=2)
NOW = firestore.SERVER_TIMESTAMP
_DROP = object()  # a field left out


def _note(doc_id: str, device: str = "alice-phone", **changes: Any) -> dict[str, Any]:
    when = dt.datetime.now(dt.timezone.utc)
    data = {
        "id": doc_id,
        "title": "t",
        "body": "",
        "createdOn": when,
        "updatedOn": when,
        "updatedBy": device,
        "deleted": False,
        "changedAt": NOW,
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not _DROP}


def _device_record(installation_id: str, owner: str, **changes: Any) -> dict[str, Any]:
    data = {
        "installationId": installation_id,
        "name": "tablet",
        "platform": "test",
        "appVersion": "1",
        "watermarks": {},
        "lastSync": NOW,
        "snapshotGeneration": None,
        "owner": owner,
    }
    data.update(changes)
    return data


def _request(bundle: str, **changes: Any) -> dict[str, Any]:
    data = {
        "bundle": bundle,
        "key": f"bundles/{bundle}",
        "sha256": "0" * 64,
        "size": 10,
        "count": 1,
        "collection": "households",
        "device": "alice-phone",
        "state": "pending",
        "deleted": False,
        "changedAt": NOW,
    }
    data.update(changes)
    return data


class Matrix:
    """Runs cases and keeps the table: (user, collection, operation, case, expected, got)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, bool, bool]] = []

    def check(self, user: str, coll: str, op: str, case: str, expected: bool, fn: Any) -> None:
        try:
            fn()
            got = True
        except gexc.PermissionDenied:
            got = False
        self.rows.append((user, coll, op, case, expected, got))

    def table(self) -> str:
        lines = [f"{'user':6} {'collection':16} {'op':7} {'case':44} expect  got"]
        for user, coll, op, case, expected, got in self.rows:
            mark = "" if expected == got else "   <-- WRONG"
            lines.append(
                f"{user:6} {coll:16} {op:7} {case:44} {_word(expected):7} {_word(got)}{mark}"
            )
        allowed = sum(1 for r in self.rows if r[5])
        denied = len(self.rows) - allowed
        lines.append(f"{len(self.rows)} cases: {allowed} allowed, {denied} denied")
        return "\n".join(lines)


def _word(allowed: bool) -> str:
    return "allow" if allowed else "deny"


@pytest.fixture
def world(as_users):
    """Alice and Bob, each with a registered device, Alice with notes, tombstones and a
    form schema a server published."""
    users = as_users(
        MODELS,
        download_only=["form_schemas"],
        upload_only=["households"],
        ingest_queue=True,
        retention=RETENTION,
    )
    users.remote("alice").register(DeviceRecord("alice-phone", "phone", "test", "1"))
    users.remote("bob").register(DeviceRecord("bob-phone", "phone", "test", "1"))
    alice, bob = users.client("alice"), users.client("bob")
    notes = alice.collection("users/alice/note")
    notes.document("n1").set(_note("n1"))
    notes.document("old-tomb").set(_note("old-tomb", deleted=True))
    bob.document("users/bob/note/b1").set(_note("b1", device="bob-phone"))
    schema = {"form": "f", "version": 1, "schema": "{}", "deleted": False, "changedAt": NOW}
    users.service_client().document("users/alice/form_schemas/s1").set(schema)
    time.sleep(RETENTION.total_seconds() + 0.5)  # old-tomb is now past the retention
    return users, alice, bob


def test_the_rules_matrix(world):
    users, alice, bob = world
    m = Matrix()
    for case in (
        *_synced_collections(alice),
        *_one_way_collections(alice),
        *_devices_and_meta(alice),
        *_ingest_queue(alice),
        *_other_users_root(alice, bob),
    ):
        m.check(*case)
    assert not alice.document("users/alice/note/b4").get().exists  # the refused batch
    print("\n" + m.table())
    wrong = [r for r in m.rows if r[4] != r[5]]
    assert not wrong, "\n" + m.table()
    allowed = sum(1 for r in m.rows if r[5])
    assert (allowed, len(m.rows) - allowed) == (19, 39)
    assert users.gate.refused == {}  # every refusal above came from the rules


# -- operations, as the real client makes them --------------------------------------------

Op = Callable[[], Any]
Case = tuple[str, str, str, str, bool, Op]
PAST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


def get(c: Any, path: str) -> Op:
    return lambda: c.document(path).get()


def query(c: Any, path: str) -> Op:
    return lambda: c.collection(path).order_by("changedAt").order_by("__name__").limit(5).get()


def create(c: Any, path: str, data: dict[str, Any]) -> Op:
    return lambda: c.document(path).create(data)


def update(c: Any, path: str, data: dict[str, Any]) -> Op:
    return lambda: c.document(path).update({**data, "changedAt": NOW})


def merge(c: Any, path: str, data: dict[str, Any]) -> Op:
    return lambda: c.document(path).set(data, merge=True)


def delete(c: Any, path: str) -> Op:
    return lambda: c.document(path).delete()


def batch(c: Any, folder: str, *docs: dict[str, Any]) -> Op:
    def run() -> Any:
        b = c.batch()
        for d in docs:
            b.create(c.document(f"{folder}/{d['id']}"), d)
        return b.commit()

    return run


# -- the cases ------------------------------------------------------------------------------


def _synced_collections(a: Any) -> list[Case]:
    n = "users/alice/note"
    child = {**_note("c1", title=_DROP, body=_DROP), "note_id": "n1", "text": "x"}
    cases: list[Case] = [
        ("alice", "note", "read", "own document", True, get(a, f"{n}/n1")),
        ("alice", "note", "list", "the download's query (changedAt, name)", True, query(a, n)),
        ("alice", "note", "create", "model columns + sync fields", True,
         create(a, f"{n}/n2", _note("n2"))),
        ("alice", "note", "update", "a column, changedAt = request.time", True,
         update(a, f"{n}/n1", {"title": "t2"})),
        ("alice", "note", "update", "as a tombstone (deleted: true)", True,
         update(a, f"{n}/n2", {"deleted": True})),
        ("alice", "comment", "create", "a child row", True,
         create(a, "users/alice/comment/c1", child)),
        ("alice", "note", "delete", "expired tombstone (the purge)", True,
         delete(a, f"{n}/old-tomb")),
        ("alice", "note", "delete", "a live document", False, delete(a, f"{n}/n1")),
        ("alice", "note", "delete", "a tombstone within the retention", False,
         delete(a, f"{n}/n2")),
    ]  # fmt: skip
    for case, doc_id, data in (
        ("an unknown field", "x1", _note("x1", secret="x")),
        ("forged changedAt (a device clock)", "x2", _note("x2", changedAt=PAST)),
        ("spoofed updatedBy (Bob's device)", "x3", _note("x3", device="bob-phone")),
        ("updatedBy no device registered", "x4", _note("x4", device="ghost")),
        ("no updatedBy", "x5", _note("x5", updatedBy=_DROP)),
        ("id other than the document's", "x6", _note("n1")),
        ("a column of the wrong kind", "x7", _note("x7", title=5)),
        ("deleted not a bool", "x8", _note("x8", deleted="yes")),
    ):
        cases.append(("alice", "note", "create", case, False, create(a, f"{n}/{doc_id}", data)))
    forged = lambda: a.document(f"{n}/n1").update({"title": "t3", "changedAt": PAST})  # noqa: E731
    return [
        *cases,
        ("alice", "note", "update", "forged changedAt", False, forged),
        ("alice", "note", "update", "an unknown field", False, update(a, f"{n}/n1", {"x": 1})),
        ("alice", "note", "update", "spoofed updatedBy", False,
         update(a, f"{n}/n1", {"updatedBy": "bob-phone"})),
        ("alice", "note", "batch", "two good creates", True,
         batch(a, n, _note("b2"), _note("b3"))),
        ("alice", "note", "batch", "a good create + one unknown field", False,
         batch(a, n, _note("b4"), _note("b5", secret=1))),
    ]  # fmt: skip


def _one_way_collections(a: Any) -> list[Case]:
    f, h = "users/alice/form_schemas", "users/alice/households"
    record = {"form": "f", "version": 2, "schema": "{}", "deleted": False, "changedAt": NOW}
    return [
        ("alice", "form_schemas", "read", "download-only", True, get(a, f"{f}/s1")),
        ("alice", "form_schemas", "list", "download-only", True, query(a, f)),
        ("alice", "form_schemas", "create", "download-only", False,
         create(a, f"{f}/s2", record)),
        ("alice", "form_schemas", "update", "download-only", False,
         update(a, f"{f}/s1", {"version": 3})),
        ("alice", "form_schemas", "delete", "download-only", False, delete(a, f"{f}/s1")),
        ("alice", "households", "read", "upload-only (the service's)", False,
         get(a, f"{h}/h1")),
        ("alice", "households", "list", "upload-only (the service's)", False, query(a, h)),
        ("alice", "households", "create", "upload-only (the service's)", False,
         create(a, f"{h}/h1", {"head": "x", "changedAt": NOW})),
    ]  # fmt: skip


def _devices_and_meta(a: Any) -> list[Case]:
    d, meta = "users/alice/devices", "users/alice/replicator_meta"
    tab = _device_record("alice-tab", "alice")
    uploads = firestore.FieldFilter("lastUpload", ">", PAST)
    check = lambda: a.collection(d).where(filter=uploads).get()  # noqa: E731
    cases: list[Case] = [
        ("alice", "devices", "read", "own device", True, get(a, f"{d}/alice-phone")),
        ("alice", "devices", "list", "the Devices check", True, check),
        ("alice", "devices", "create", "a new device of hers", True,
         merge(a, f"{d}/alice-tab", tab)),
        ("alice", "devices", "update", "its record, lastUpload = request.time", True,
         merge(a, f"{d}/alice-tab", {**tab, "lastUpload": NOW})),
    ]  # fmt: skip
    for case, doc, data in (
        ("owned by another user", "x-1", _device_record("x-1", "bob")),
        ("installationId not the document's", "x-2", _device_record("alice-phone", "alice")),
        ("forged lastSync", "x-3", _device_record("x-3", "alice", lastSync=PAST)),
        ("an unknown field", "x-4", _device_record("x-4", "alice", admin=True)),
    ):
        cases.append(("alice", "devices", "create", case, False, merge(a, f"{d}/{doc}", data)))
    return [
        *cases,
        ("alice", "devices", "update", "forged lastUpload", False,
         merge(a, f"{d}/alice-tab", {**tab, "lastUpload": PAST})),
        ("alice", "devices", "delete", "a device record", False, delete(a, f"{d}/alice-tab")),
        ("alice", "replicator_meta", "read", "the horizons", True, get(a, f"{meta}/horizons")),
        ("alice", "replicator_meta", "update", "raise a horizon", True,
         merge(a, f"{meta}/horizons", {"horizons": {"note": "x"}})),
        ("alice", "replicator_meta", "update", "an unknown field", False,
         merge(a, f"{meta}/horizons", {"horizons": {}, "other": 1})),
        ("alice", "replicator_meta", "create", "another document", False,
         merge(a, f"{meta}/other", {"horizons": {}})),
    ]  # fmt: skip


def _ingest_queue(a: Any) -> list[Case]:
    q = "users/alice/ingest_requests"
    return [
        ("alice", "ingest_requests", "create", "her device's pending request", True,
         create(a, f"{q}/q1", _request("q1"))),
        ("alice", "ingest_requests", "read", "the answer", True, get(a, f"{q}/q1")),
        ("alice", "ingest_requests", "create", "already 'accepted' (the service's word)", False,
         create(a, f"{q}/q2", _request("q2", state="accepted"))),
        ("alice", "ingest_requests", "create", "a collection that is not upload-only", False,
         create(a, f"{q}/q3", _request("q3", collection="note"))),
        ("alice", "ingest_requests", "create", "Bob's device", False,
         create(a, f"{q}/q4", _request("q4", device="bob-phone"))),
        ("alice", "ingest_requests", "update", "her own request", False,
         update(a, f"{q}/q1", {"state": "accepted"})),
    ]  # fmt: skip


def _other_users_root(a: Any, b: Any) -> list[Case]:
    theirs = "users/bob/note"
    return [
        ("bob", "note", "read", "his own document", True, get(b, f"{theirs}/b1")),
        ("alice", "note", "read", "another user's root", False, get(a, f"{theirs}/b1")),
        ("alice", "note", "list", "another user's root", False, query(a, theirs)),
        ("alice", "note", "create", "another user's root", False,
         create(a, f"{theirs}/z1", _note("z1"))),
        ("alice", "note", "update", "another user's root", False,
         update(a, f"{theirs}/b1", {"title": "mine now"})),
        ("alice", "note", "delete", "another user's root", False, delete(a, f"{theirs}/b1")),
        ("alice", "devices", "create", "in another user's root", False,
         merge(a, "users/bob/devices/alice-phone", _device_record("alice-phone", "alice"))),
        ("alice", "devices", "list", "another user's devices", False,
         lambda: a.collection("users/bob/devices").get()),
    ]  # fmt: skip


def test_rules_the_emulator_cannot_compile_are_refused_not_ignored(firestore_emulator):
    """A project whose rules failed to load would let everyone do everything, and every
    deny of the matrix would turn into a silent allow: loading refuses instead."""
    with pytest.raises(ValueError, match="refused the rules"):
        firestore_emulator.load_rules(
            "demo-rules-broken", "rules_version = '2'; service cloud.firestore { match /x { } "
        )
