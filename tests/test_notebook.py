"""examples/notebook.ipynb runs top to bottom in a real kernel, and says what it should."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "notebook.ipynb"


def test_the_notebook_runs_and_its_outputs_hold(tmp_path):
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
    # part 2: the group aggregates merged per metric, never backwards
    assert "last-writer-wins would keep: {'completedCount': 1," in text
    assert (
        "merged per metric:            {'completedCount': 2, 'completionPercentage': 50.0,"
        " 'enrolledCount': 5}" in text
    )
    table = [line.split() for line in text.splitlines() if line.startswith(("maths", "science"))]
    assert ["maths", "5", "2", "40.0"] in table and ["science", "2", "1", "50.0"] in table
    assert images == 1  # the completion plot
