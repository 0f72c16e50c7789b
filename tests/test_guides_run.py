"""The Python blocks of the status and continuous-sync guide run as written, each in a
fresh directory and process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "status-and-continuous-sync.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(blocks())))
def test_the_guide_runs(index, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", blocks()[index]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
