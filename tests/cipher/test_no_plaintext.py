"""No plaintext on disk, ever: a device with an encrypted database publishes a
snapshot, restores one, sends bundles and upgrades its app, each in a process killed
with SIGKILL at several moments (and once let run to its end); then every file the
device left, in its folder and in the temporary folder it was given, is searched for
the app's marker values in every encoding (``scan.py``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sqlcipher3", reason="the sqlcipher extra is not installed")

from tests.cipher.scan import files_under, markers_found
from tests.helpers import ROOT

MARK = "Zeferina-Mucavele-registo-"
#: where each operation is killed: at its first snapshot bytes, and at fractions of the
#: SQL statements a whole run makes (counted in that run)
FRACTIONS = (0.1, 0.35, 0.6, 0.85)
OPERATIONS = {
    "publish": ("bytes", *FRACTIONS),
    "restore": ("bytes", *FRACTIONS),
    "bundle": FRACTIONS,
    "upgrade": FRACTIONS,
}


def worker(place: Path, operation: str, kill: str) -> subprocess.CompletedProcess[str]:
    tmp = place / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "SQLITE_TMPDIR": str(tmp)}
    return subprocess.run(
        [sys.executable, "-m", "tests.workers.cipher_worker", str(place), operation, kill],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    place = tmp_path_factory.mktemp("cipher-template")
    (place / "dev").mkdir()
    (place / "server").mkdir()
    done = worker(place, "setup", "never")
    assert done.returncode == 0, done.stderr
    return place


def scanned(place: Path) -> list[tuple[str, str]]:
    """Markers found in what the device left: its folder and its temporary folder."""
    found = []
    for folder in (place / "dev", place / "tmp"):
        found += markers_found(folder, [MARK])
    return found


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_no_plaintext_is_left_whenever_the_device_is_killed(template, tmp_path, operation):
    # the scan can fail: the server's plain SQLite file holds the markers
    assert markers_found(template / "server", [MARK])
    whole = tmp_path / "whole"
    shutil.copytree(template, whole)
    done = worker(whole, operation, "never")
    assert done.returncode == 0, done.stderr
    statements = int(done.stdout.split()[-1])
    assert scanned(whole) == []
    covered = []
    for point in OPERATIONS[operation]:
        place = tmp_path / f"kill-{point}"
        shutil.copytree(template, place)
        kill = "bytes" if point == "bytes" else str(max(1, int(statements * point)))
        proc = worker(place, operation, kill)
        assert proc.returncode == -9, (point, proc.returncode, proc.stderr[-2000:])
        assert scanned(place) == [], (operation, point)
        covered.append((point, len(files_under([place / "dev", place / "tmp"]))))
    print(operation, "killed at", covered, "of", statements, "statements")
