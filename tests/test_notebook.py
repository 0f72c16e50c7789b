"""examples/notebook.ipynb runs top to bottom in a real kernel, and says what it should.

Its second part runs on the Firestore and Auth emulators as signed-in users under the
compiled scope rules: the emulators the environment names (CI's), or started by the
notebook itself; skipped, saying why, when they can be neither."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "notebook.ipynb"
_COURSES = ("maths", "science", "english")  # the lines of the aggregates' table


def _emulators_or_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Name CI's emulators to the kernel, or skip when the notebook could start none."""
    from replicator.testing import find_firebase_cli, find_jar

    for given, variable in (
        ("REPLICATOR_FIRESTORE_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST"),
        ("REPLICATOR_AUTH_EMULATOR_HOST", "FIREBASE_AUTH_EMULATOR_HOST"),
    ):
        if os.environ.get(given) and not os.environ.get(variable):
            monkeypatch.setenv(variable, os.environ[given])
    if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
        if find_jar() is None:
            pytest.skip("FIRESTORE EMULATOR MISSING: install google-cloud-cli-firestore-emulator")
        if shutil.which("java") is None:
            pytest.skip("JAVA MISSING: the Firestore emulator needs default-jre-headless")
    if not os.environ.get("FIREBASE_AUTH_EMULATOR_HOST") and find_firebase_cli() is None:
        pytest.skip("AUTH EMULATOR MISSING: npm install firebase-tools (.ci/run does)")


def test_the_notebook_runs_and_its_outputs_hold(tmp_path, monkeypatch):
    _emulators_or_skip(monkeypatch)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:  # what the file carries must not pass for this run's results
        if cell.cell_type == "code":
            cell.outputs = []
    client = nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on any failing cell (the asserts included)
    text = ""
    images = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text += out.text
            elif "image/png" in out.get("data", {}):
                images += 1
    # part 1: a conflict merged, a third device logged in from the snapshot
    assert "conflict on note: merged (field-merge)" in text
    assert "phone   Groceries | milk, eggs" in text and "tablet  Groceries | milk, eggs" in text
    assert "laptop restored the snapshot: True" in text
    assert "then downloaded: {'note': 1}" in text
    # part 2, learners: one on two devices, her offline edits merged with map_max; a
    # learner's device holds her own progress only
    assert "conflicts: [('course_progress', 'merged', 'per-collection')]" in text
    for device in ("asha's phone  maths: ", "asha's tablet maths: "):
        (line,) = [line for line in text.splitlines() if line.startswith(device)]
        assert json.loads(line[len(device) :]) == {"m1": 2, "m2": 2, "m3": 2}
    assert "asha's phone holds the progress of: ['asha']" in text
    assert "dana's phone holds the progress of: ['dana']" in text
    assert "the teacher's laptop holds the progress of: ['asha', 'ben', 'chen', 'dana']" in text
    # part 2, teachers: the group aggregates merged per metric, never backwards
    assert "last-writer-wins would keep: {'completedCount': 1," in text
    assert (
        "merged per metric:            {'completedCount': 2, 'completionPercentage': 50.0,"
        " 'enrolledCount': 5}" in text
    )
    before, marker, after = text.partition("the laptop deleted dana's 2 progress rows")
    assert marker
    table = [line.split() for line in before.splitlines() if line.startswith(_COURSES)]
    assert ["maths", "5", "2", "40.0"] in table and ["science", "2", "1", "50.0"] in table
    assert images == 1  # the completion plot
    # part 2, a learner leaves: gone from both teachers' devices and from the aggregates
    for device in ("laptop", "tablet"):
        assert (
            f"the teacher's {device} holds the progress of: ['asha', 'ben', 'chen', 'eli']" in after
        )
    table = [line.split() for line in after.splitlines() if line.startswith(_COURSES)]
    assert table == [
        ["maths", "4", "2", "50.0"],
        ["science", "2", "1", "50.0"],
        ["english", "1", "1", "100.0"],
    ]
    assert "dana's phone lost the group (0 writes not uploaded set aside)" in after
