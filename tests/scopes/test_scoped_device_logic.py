"""The multi-scope device's own logic on embedded remotes (discovery's query is tested
under the rules in test_scoped_device.py): the cap on scopes, ``only=``, an offline
discovery, listeners told per scope, a kill -9 in the middle of a loss."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from replicator import ConfigurationError, EmbeddedRemote, OfflineError
from replicator.scopes.device import ScopedReplicator
from replicator.scopes.members import Membership
from replicator.scopes.plan import database_path
from tests.helpers import ROOT
from tests.scope_models import MODELS, SCOPES, Registration


class Directory:
    def __init__(self, *scopes: str, role: str = "collector") -> None:
        self.scopes = list(scopes)
        self.role = role
        self.offline = False

    def memberships(self) -> list[Membership]:
        if self.offline:
            raise OfflineError("no network")
        return [Membership(s, "campaign", self.role) for s in self.scopes]


def device(tmp: Path, directory: Directory, **kw: object) -> ScopedReplicator:
    (tmp / "remotes").mkdir(parents=True, exist_ok=True)
    return ScopedReplicator(
        tmp / "device",
        MODELS,
        SCOPES,
        uid="u1",
        directory=directory,
        remote_for=lambda root, owned: EmbeddedRemote(tmp / "remotes" / root.replace("/", "-")),
        **kw,
    )


def test_scopes_past_the_cap_are_left_out_with_a_warning_before_any_download(tmp_path, caplog):
    directory = Directory("a", "b", "c", "d", "e")
    phone = device(tmp_path, directory, max_scopes=3)
    with caplog.at_level(logging.WARNING):
        report = phone.sync()
    assert sorted(report.reports) == ["a", "b", "c"] and report.skipped == ("d", "e")
    assert "at most 3" in caplog.text and "d, e" in caplog.text
    assert sorted((tmp_path / "device").glob("scope-*.db")) == [
        database_path(tmp_path / "device", s) for s in "abc"
    ]
    directory.scopes = ["0", "a", "b", "c"]  # a new scope sorts first: the known ones stay
    again = phone.sync()
    assert sorted(again.reports) == ["a", "b", "c"] and again.skipped == ("0",)
    with pytest.raises(ConfigurationError, match="max_scopes"):
        device(tmp_path, directory, max_scopes=0)


def test_only_the_scopes_the_app_subscribes_to(tmp_path):
    phone = device(tmp_path, Directory("a", "b"), only=lambda m: m.scope != "b")
    assert sorted(phone.sync().reports) == ["a"]
    assert [m.scope for m in phone.memberships()] == ["a"]


def test_an_offline_discovery_syncs_the_last_scopes_and_loses_none(tmp_path):
    directory = Directory("a", "b")
    phone = device(tmp_path, directory)
    phone.sync()
    with phone.scope("a").bound():
        Registration.create(head="h", collector="u1")
    directory.offline, directory.scopes = True, []  # removed meanwhile, but unseen
    report = phone.sync()
    assert report.discovery_offline and not report.removed
    assert report.reports["a"].uploaded == {"registrations": 1}
    directory.offline = False
    (first, second) = phone.sync().removed  # seen at the next discovery
    assert (first.scope, second.scope) == ("a", "b") and first.pending == 0


def test_listeners_are_told_the_scope_of_each_change(tmp_path):
    other = device(tmp_path / "other", Directory("a"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "remotes").symlink_to(tmp_path / "other" / "remotes")
    changes, scopes = [], []
    mine = device(
        tmp_path / "mine",
        Directory("a"),
        on_change=lambda scope, change: changes.append((scope, change.collection)),
        on_scope=scopes.append,
    )
    other.sync()
    with other.scope("a").bound():
        Registration.create(head="h", collector="u2")
    other.sync()
    mine.sync()
    assert ("a", "registrations") in changes
    assert [(c.event, c.scope) for c in scopes] == [("added", "a")]


def test_a_scope_file_damaged_is_that_scopes_failure(tmp_path):
    phone = device(tmp_path, Directory("a", "b"))
    phone.sync()
    phone.close()
    database_path(tmp_path / "device", "b").write_bytes(b"not a database" * 100)
    again = device(tmp_path, Directory("a", "b"))
    report = again.sync()
    assert "a" in report.reports and "b" in report.failed


LOSE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from tests.scopes.test_scoped_device_logic import Directory, device
    tmp = Path(sys.argv[1])
    print("ready", flush=True)
    device(tmp, Directory()).sync()  # the scope is lost: killed somewhere in here
    print("done", flush=True)
    """
)


def test_a_kill_in_the_middle_of_a_loss_loses_nothing(tmp_path):
    """A device loses a scope holding 3,000 writes not uploaded, killed (SIGKILL) at a
    random moment; a restart finishes the loss. Every write is in a set-aside file
    (more than once when the kill came between the file and the commit), never gone."""
    rounds = int(os.environ.get("REPLICATOR_SCOPE_KILL_ROUNDS", "6"))
    rng = random.Random(7)
    for n in range(rounds):
        tmp = tmp_path / str(n)
        phone = device(tmp, Directory("a"))
        phone.sync()
        with phone.scope("a").bound(), phone.scope("a").database.atomic():
            for i in range(3000):
                Registration.create(head=f"w{i}", collector="u1")
        phone.close()
        child = subprocess.Popen(
            [sys.executable, "-c", LOSE, str(tmp), str(ROOT)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.12))  # the loss takes about 0.1 s after "ready"
        child.send_signal(signal.SIGKILL)
        child.wait()
        report = device(tmp, Directory()).sync()  # the restart
        assert not report.failed, report.failed
        assert not list((tmp / "device").glob("scope-*"))
        kept: set[str] = set()
        for path in (tmp / "device" / "set-aside").glob("*.jsonl"):
            kept |= {json.loads(line)["row"]["head"] for line in path.read_text().splitlines()}
        assert kept == {f"w{i}" for i in range(3000)}, n
