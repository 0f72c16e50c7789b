"""The Python blocks of docs/concepts/denied-writes.md run as written, each in a fresh
directory and process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "concepts" / "denied-writes.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(blocks())))
def test_the_page_runs(index, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's replicator
    result = subprocess.run(
        [sys.executable, "-c", blocks()[index]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "the rules refused 1 note (set aside)" in result.stdout
    assert (tmp_path / "denied.jsonl").read_text().count("\n") == 1
