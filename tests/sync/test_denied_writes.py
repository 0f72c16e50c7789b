"""Writes the remote's rules refuse never block the others (issue 27, item 6).

The remote here is the embedded store behind a wrapper that refuses, as
Firestore does, a whole batch holding one write its "rules" forbid (nothing
written), so the bisection, the set-aside rows and what later syncs do with them
are checked without the emulator; ``tests/stores/test_denied_as_users.py`` plays
the same with real users under generated rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from replicator import AccessDeniedError, OfflineError
from replicator.testing import FaultyRemote
from tests.models import Comment, Note


def refusing(remote: Any, forbidden: Callable[[Any], bool]) -> FaultyRemote:
    """``remote`` whose pushes are refused whole when a write is ``forbidden``."""
    faulty = FaultyRemote(remote)

    def rules(writes: Any, device: Any) -> None:
        bad = [w for w in writes if forbidden(w)]
        if bad:
            raise AccessDeniedError(f"rules refused the batch ({len(writes)} writes)")

    faulty.hooks["push"] = rules
    return faulty


def title_is(text: str) -> Callable[[Any], bool]:
    return lambda w: w.collection == "note" and w.data.get("title") == text


def remote_titles(remote: Any) -> set[str]:
    return {d.data["title"] for d in remote.pull("note", None, 10_000).docs if not d.deleted}


@pytest.mark.parametrize("remote", ["embedded"], indirect=True)
def test_one_forbidden_row_in_400_is_set_aside_and_the_rest_land(make_device, remote):
    store = refusing(remote, title_is("n0200"))
    phone = make_device("phone", store=store)
    with phone.bound():
        for i in range(400):
            Note.create(title=f"n{i:04d}")
    report = phone.sync()
    assert report.uploaded == {"note": 399}
    assert report.denied_counts == {"note": 1}
    assert "rules refused" in str(report.denied[0].error)
    assert "the rules refused 1 note (set aside)" in report.summary()
    assert remote_titles(remote) == {f"n{i:04d}" for i in range(400)} - {"n0200"}
    pushes = store.calls.count("push")
    assert pushes <= 1 + 2 * 9, pushes  # one refused batch, then about 2·log2(400)
    (aside,) = phone.denied_rows()
    assert aside.collection == "note" and "rules refused" in aside.reason
    with phone.bound():
        assert Note.get_by_id(aside.id).title == "n0200"  # kept as the app wrote it
    # the next sync does not fail, and does not send the row again
    store.calls.clear()
    again = phone.sync()
    assert again.denied == () and "push" not in store.calls
    assert phone.denied_rows() == [aside]


@pytest.mark.parametrize("remote", ["embedded"], indirect=True)
def test_a_row_changed_again_goes_up_and_leaves_the_aside(make_device, remote):
    store = refusing(remote, title_is("secret"))
    phone = make_device("phone", store=store)
    with phone.bound():
        note = Note.create(title="secret")
        Note.create(title="fine")
    phone.sync()
    assert [r.id for r in phone.denied_rows()] == [note.id]
    with phone.bound():
        Note.update(title="public").where(Note.id == note.id).execute()
    report = phone.sync()
    assert report.uploaded == {"note": 1} and report.denied == ()
    assert phone.denied_rows() == []
    assert remote_titles(remote) == {"fine", "public"}


@pytest.mark.parametrize("remote", ["embedded"], indirect=True)
def test_a_child_of_a_refused_parent_waits_and_is_never_an_orphan(make_device, remote):
    store = refusing(remote, title_is("forbidden"))
    phone = make_device("phone", store=store)
    with phone.bound():
        bad = Note.create(title="forbidden")
        Comment.create(note=bad, text="under a refused note")
        good = Note.create(title="allowed")
        Comment.create(note=good, text="fine")
    report = phone.sync()
    assert report.uploaded == {"note": 1, "comment": 1}
    assert [r.id for r in phone.denied_rows()] == [bad.id]
    assert [r.collection for r in report.rejected] == ["comment"]  # waits, stays dirty
    comments = remote.pull("comment", None, 100).docs
    assert [d.data["text"] for d in comments] == ["fine"]
    assert phone.sync().uploaded == {}  # still waiting, still no orphan


@pytest.mark.parametrize("remote", ["embedded"], indirect=True)
def test_retry_sends_again_and_discard_takes_the_remote_version(make_device, remote):
    allowed = {"now": False}
    store = refusing(remote, lambda w: not allowed["now"] and w.data.get("title") == "late")
    phone, other = make_device("phone", store=store), make_device("other")
    with other.bound():
        shared = Note.create(title="shared")
    other.sync()
    phone.sync()
    with phone.bound():
        late = Note.create(title="late")
        Note.update(title="late").where(Note.id == shared.id).execute()
    phone.sync()
    assert {r.id for r in phone.denied_rows()} == {late.id, shared.id}
    assert phone.discard_denied(Note, [shared.id]) == 1
    with phone.bound():
        assert Note.get_by_id(shared.id).title == "shared"  # the remote's version back
    allowed["now"] = True
    assert phone.retry_denied(Note) == 1
    report = phone.sync()
    assert report.uploaded == {"note": 1} and phone.denied_rows() == []
    assert remote_titles(remote) == {"shared", "late"}


@pytest.mark.parametrize("remote", ["embedded"], indirect=True)
def test_a_download_leaves_a_row_set_aside_as_it_is(make_device, remote):
    store = refusing(remote, title_is("mine"))
    phone, other = make_device("phone", store=store), make_device("other")
    with other.bound():
        shared = Note.create(title="theirs")
    other.sync()
    phone.sync()
    with phone.bound():
        Note.update(title="mine").where(Note.id == shared.id).execute()
    phone.sync()
    with other.bound():
        Note.update(title="theirs, again").where(Note.id == shared.id).execute()
    other.sync()
    phone.sync()
    with phone.bound():
        assert Note.get_by_id(shared.id).title == "mine"
    assert [r.id for r in phone.denied_rows()] == [shared.id]


@pytest.mark.parametrize("remote", ["embedded"], indirect=True)
def test_denied_deletes_are_set_aside_too(make_device, remote):
    phone = make_device("phone")
    with phone.bound():
        keep = Note.create(title="keep")
        Note.create(title="other")
    phone.sync()
    store = refusing(remote, lambda w: w.deleted and w.id == keep.id)
    phone.remote = store
    with phone.bound():
        Note.delete().execute()
    report = phone.sync()
    assert report.uploaded_deletes == {"note": 1}
    (aside,) = phone.denied_rows()
    assert aside.id == keep.id and aside.delete
    store.calls.clear()
    phone.sync()
    assert "push" not in store.calls


@pytest.mark.parametrize("remote", ["embedded"], indirect=True)
def test_the_export_lists_every_row_set_aside_as_json_lines(make_device, remote, tmp_path):
    store = refusing(remote, lambda w: w.data.get("title", "").startswith("x"))
    phone = make_device("phone", store=store)
    with phone.bound():
        for t in ("x1", "ok", "x2"):
            Note.create(title=t)
    phone.sync()
    out = tmp_path / "denied.jsonl"
    assert phone.export_denied(out) == 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["row"]["title"] for line in lines) == ["x1", "x2"]
    assert {line["collection"] for line in lines} == {"note"}
    assert all(line["reason"] and line["denied_on"] for line in lines)


@pytest.mark.parametrize("remote", ["embedded"], indirect=True)
def test_a_refused_device_record_fails_the_upload_and_sets_nothing_aside(make_device, remote):
    phone = make_device("phone")
    phone.sync()
    store = FaultyRemote(remote)

    def refuse(*args: Any) -> None:
        raise AccessDeniedError("rules refused the device")

    store.hooks["push"] = refuse
    store.hooks["register"] = refuse
    phone.remote = store
    with phone.bound():
        Note.create(title="anything")
    with pytest.raises(AccessDeniedError):
        phone.sync()
    assert phone.denied_rows() == []
    assert phone.pending_count() == 1


@pytest.mark.parametrize("remote", ["embedded"], indirect=True)
def test_a_conflict_met_while_isolating_is_resolved_and_nothing_is_lost(make_device, remote):
    phone, other = make_device("phone"), make_device("other")
    with other.bound():
        shared = Note.create(title="v0")
    other.sync()
    phone.sync()
    with phone.bound():
        Note.update(body="phone's").where(Note.id == shared.id).execute()
        for i in range(6):
            Note.create(title="secret" if i == 3 else f"n{i}")
    store = refusing(remote, title_is("secret"))
    refuse = store.hooks["push"]
    raced = {"done": False}

    def race(writes: Any, device: Any) -> None:
        if not raced["done"] and len(writes) < 7:  # inside the isolation: another writer
            raced["done"] = True
            with other.bound():
                Note.update(title="other's").where(Note.id == shared.id).execute()
            other.sync()
        refuse(writes, device)

    store.hooks["push"] = race
    phone.remote = store
    report = phone.sync()
    assert raced["done"]
    assert [e.id for e in report.denied] == [r.id for r in phone.denied_rows()]
    assert len(phone.denied_rows()) == 1
    assert remote_titles(remote) == {"other's", "n0", "n1", "n2", "n4", "n5"}
    # the conflict the isolation met was resolved by the strategy, and reported
    assert [c.id for c in report.conflicts] == [shared.id]
    assert phone.pending_count() == 1  # the refused row only


@pytest.mark.parametrize("remote", ["embedded"], indirect=True)
def test_a_lost_acknowledgement_while_isolating_is_recognised_as_our_own(make_device, remote):
    store = refusing(remote, lambda w: w.id == "n1")
    phone = make_device("phone", store=store)
    phone.sync()
    with phone.bound():
        for i in range(8):
            Note.create(id=f"n{i}", title=f"note {i}")
    # the parts go [n0] (taken), [n1] (refused), [n2, n3]: that one commits and its
    # answer is lost
    rules, passed = store.hooks["push"], {"n": 0}

    def lose_the_second_answer(writes: Any, device: Any) -> None:
        rules(writes, device)  # raises for a part the rules refuse
        passed["n"] += 1
        if passed["n"] == 2:
            store.fail("push", after=True)

    store.hooks["push"] = lose_the_second_answer
    with pytest.raises(OfflineError):
        phone.sync()
    assert {"note 0", "note 2", "note 3"} <= remote_titles(remote)
    with phone.bound():  # the app changes a row whose send was answered by no one
        Note.update(title="note 2, again").where(Note.id == "n2").execute()
    report = phone.sync()
    assert report.conflicts == ()  # what n2 holds remotely is recognised as our own send
    want = {f"note {i}" for i in range(8)} - {"note 1", "note 2"} | {"note 2, again"}
    assert remote_titles(remote) == want
    assert [r.id for r in phone.denied_rows()] == ["n1"]
