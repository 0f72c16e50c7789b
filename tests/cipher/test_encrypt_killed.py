"""Encrypting a database in place, killed with SIGKILL at any moment: the path holds
either the whole plain database or the whole encrypted one, never neither, and the
next run finishes the job."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

pytest.importorskip("sqlcipher3", reason="the sqlcipher extra is not installed")

from replicator.cipher import EncryptedDatabase, encrypt_in_place
from tests.cipher.scan import markers_found
from tests.helpers import ROOT

KEY = bytes(range(32))
ROWS = 150_000

KILLER = """
import os, signal, sys, threading
sys.path.insert(0, sys.argv[3])
from replicator.cipher import encrypt_in_place
threading.Timer(float(sys.argv[2]), lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
encrypt_in_place(sys.argv[1], bytes(range(32)))
os.kill(os.getpid(), signal.SIGKILL)  # finished before the timer: killed at the very end
"""


def make_plain(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE visit (id INTEGER PRIMARY KEY, who TEXT)")
    conn.executemany(
        "INSERT INTO visit (who) VALUES (?)", [(f"visitor {i} " * 4,) for i in range(ROWS)]
    )
    conn.commit()
    conn.close()


def rows(path):
    try:
        conn = sqlite3.connect(path)
        return "plain", conn.execute("SELECT COUNT(*) FROM visit").fetchone()[0]
    except sqlite3.DatabaseError:
        pass
    finally:
        conn.close()
    with EncryptedDatabase(str(path), key=KEY) as db:
        return "encrypted", db.execute_sql("SELECT COUNT(*) FROM visit").fetchone()[0]


def test_a_killed_encryption_leaves_one_whole_database(tmp_path):
    seen = []
    for delay in (0.05, 0.3, 0.6, 1.2, 2.5, 60.0):  # after the imports; 60: at the very end
        place = tmp_path / str(delay)
        place.mkdir()
        path = place / "field.db"
        make_plain(path)
        proc = subprocess.run(
            [sys.executable, "-c", KILLER, str(path), str(delay), str(ROOT)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == -9, proc.stderr
        state, count = rows(path)
        assert count == ROWS, (delay, state)
        seen.append(state)
        if state == "plain":  # killed before the swap: run again, and it is done
            encrypt_in_place(path, KEY)
            assert rows(path) == ("encrypted", ROWS)
        assert [p.name for p in place.iterdir()] == ["field.db"], delay  # no copy, no 2nd name
        assert markers_found(place, ["visitor 4321 "]) == []
    print(seen)
    assert seen[0] == "plain" and seen[-1] == "encrypted"  # the kills hit both sides
