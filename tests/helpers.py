"""What many tests share that is not a fixture: comparing devices, running scripts in
their own processes, an app committing in the middle of a sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from replicator import Replicator
from tests.models import MODELS

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: the scripts the multi-process tests run, each in its own process
WORKERS = TESTS / "workers"

FIRESTORE_PROJECT = "demo-replicator"

#: the pages generated from the code (scripts/gen_docs.py), not written by hand
GENERATED_PAGES = ("cli.md", "errors.md")


def doc_pages(*, generated: bool = True) -> list[Path]:
    """The README and every page of the documentation site, the README first."""
    pages = sorted((ROOT / "docs").rglob("*.md"))
    if not generated:
        pages = [p for p in pages if p.relative_to(ROOT / "docs").as_posix() not in GENERATED_PAGES]
    return [ROOT / "README.md", *pages]


def docs_text(*, generated: bool = True) -> str:
    """What the documentation says, all pages together (the README's front page first)."""
    return "\n\n".join(p.read_text() for p in doc_pages(generated=generated))


#: a module's scenarios run on every store and also on Firestore as a signed-in user
#: under the generated rules (``pytestmark = ALSO_AS_USERS``; conftest's ``remote``)
ALSO_AS_USERS = pytest.mark.parametrize(
    "remote", ["embedded", "firestore", "firestore-user"], indirect=True
)


def make_firestore_remote(client: Any, **kw: Any) -> Any:
    from replicator.stores.firestore import FirestoreRemote

    kw.setdefault("timeout", 10.0)
    return FirestoreRemote(client, root="users/test-user", **kw)


class Users:
    """Users signed in to one project of the Firestore emulator whose security rules are
    the ones ``replicator rules`` generates (``as_users`` in conftest makes them). Every
    client reaches the emulator through ``gate`` (a TokenGate), which refuses the
    emulator's admin token and expired ID tokens, as production would."""

    def __init__(self, emulator: Any, gate: Any, project: str) -> None:
        self.emulator = emulator
        self.gate = gate
        self.project = project

    def tokens(self, uid: str, **kw: Any) -> Any:
        from replicator.testing import MockIdTokens

        return MockIdTokens(uid, self.project, **kw)

    def remote(self, uid: str = "test-user", tokens: Any = None, **kw: Any) -> Any:
        """A remote acting as ``uid`` (a fresh sign-in unless ``tokens`` is given)."""
        from replicator.stores.firestore_user import UserFirestoreRemote

        kw.setdefault("timeout", 10.0)
        return UserFirestoreRemote(tokens or self.tokens(uid), self.project, **kw)

    def client(self, uid: str, tokens: Any = None) -> Any:
        """A google-cloud-firestore client acting as ``uid``."""
        from replicator.stores.firestore_user import UserClient

        return UserClient(tokens or self.tokens(uid), self.project)

    def service_client(self) -> Any:
        """An admin client straight to the emulator, past the gate: what a server (the
        ingest service, an admin tool) holds, for writing what only servers write."""
        import os

        from google.cloud import firestore

        gate_host = os.environ["FIRESTORE_EMULATOR_HOST"]
        os.environ["FIRESTORE_EMULATOR_HOST"] = self.emulator.host
        try:
            return firestore.Client(project=self.project)
        finally:
            os.environ["FIRESTORE_EMULATOR_HOST"] = gate_host


def snapshot_rows(device: Replicator, models: Any = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every synced row of a device, sync columns dropped, for comparing devices."""
    out = {}
    for model in models or MODELS:
        table = model._meta.table_name
        cols = [
            f.column_name
            for f in model._meta.sorted_fields
            if f.column_name not in ("isDirty", "serverId", "syncRev", "syncVersion")
        ]
        names = ", ".join(f'"{c}"' for c in cols)
        out[table] = device.database.execute_sql(
            f'SELECT {names} FROM "{table}" ORDER BY id'
        ).fetchall()
    return out


def assert_converged(devices: list[Replicator], models: Any = None, rounds: int = 3) -> list[Any]:
    """Sync every device ``rounds`` times in turn; then every device must hold the same
    rows and nothing dirty. Returns each device's rows."""
    for _ in range(rounds):
        for device in devices:
            device.sync()
    views = [snapshot_rows(d, models) for d in devices]
    for i, view in enumerate(views[1:], 1):
        diff = {
            t: {"only here": sorted(set(view[t]) - set(views[0][t]))[:4],
                "only on device 0": sorted(set(views[0][t]) - set(view[t]))[:4]}
            for t in view
            if view[t] != views[0][t]
        }  # fmt: skip
        assert view == views[0], f"device {i} differs from device 0: {diff}"
    for device in devices:
        assert sum(device.dirty_counts().values()) == 0, "dirty rows left"
    return views


def run_script(script: str, *args: Any, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``script`` in a new Python process (one that may kill itself part-way)."""
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sync_with_app_commit_at(
    device: Replicator, path: Path, position: int, statements: list[tuple[str, tuple[Any, ...]]]
) -> bool:
    """Run ``device.sync()`` while another connection (the app) commits ``statements`` in
    one transaction just before the sync's statement number ``position`` (sqlite3's trace
    callback), or the first later one at which the app can take the write lock. Returns
    whether the app's transaction went in."""
    import sqlite3

    app = sqlite3.connect(path, timeout=0, isolation_level=None)
    seen = {"n": 0, "done": False}

    def trace(sql: str) -> None:
        seen["n"] += 1
        if seen["done"] or seen["n"] < position:
            return
        try:
            app.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return  # the sync holds the write lock here: the app would wait; try the next one
        try:
            for sql_text, params in statements:
                app.execute(sql_text, params)
            app.execute("COMMIT")
        except BaseException:
            app.execute("ROLLBACK")
            raise
        seen["done"] = True

    conn = device.database.connection()
    conn.set_trace_callback(trace)
    try:
        device.sync()
    finally:
        conn.set_trace_callback(None)
        app.close()
    return bool(seen["done"])
