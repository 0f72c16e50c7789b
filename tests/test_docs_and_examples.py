"""The README's snippet and every example run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)  # "python notest" is skipped


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_blocks_run(index, tmp_path):
    code = python_blocks(README)[index]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    if "summary()" in code:
        assert "uploaded" in result.stdout


def test_readme_names_the_commands_ci_runs():
    assert "bash scripts/test" in README
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()
    assert "replicator demo" in README


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_examples_run(script, tmp_path):
    if "firestore" in script:
        from replicator.testing import find_jar

        if find_jar() is None:
            pytest.skip("FIRESTORE EMULATOR MISSING: install google-cloud-cli-firestore-emulator")
    if script in ("sign_in.py", "firestore_sync.py") and not os.environ.get(
        "FIREBASE_AUTH_EMULATOR_HOST"
    ):
        from replicator.testing import find_firebase_cli

        if find_firebase_cli() is None:
            pytest.skip("AUTH EMULATOR MISSING: npm install firebase-tools (.ci/run does)")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_every_file_the_readme_names_exists():
    paths = re.findall(r"`((?:examples|bench|tests|replicator|scripts|\.ci)/[\w./-]+)`", README)
    missing = [p for p in paths if not (ROOT / p).exists()]
    places = [ROOT, ROOT / "replicator", ROOT / "examples", ROOT / "bench", ROOT / "tests"]
    for name in re.findall(r"`([\w-]+\.py)`", README):  # a module or script named bare
        if not any((place / name).exists() for place in places):
            missing.append(name)
    assert missing == []


def test_examples_say_how_to_run_them_with_the_projects_python():
    for path in sorted((ROOT / "examples").glob("*.py")):
        assert f"Run: .venv/bin/python examples/{path.name}" in path.read_text(), path.name


def test_the_first_use_names_python_attributes_not_columns():
    first_use = python_blocks(README)[0]
    assert "is_dirty" in first_use and "server_id" in first_use


def test_the_readme_sign_in_block_is_the_one_the_example_runs():
    # the block needs the Auth emulator, so the README marks it notest and
    # examples/sign_in.py runs the same lines
    section = README.split("## Sign-in and security", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```python notest\n(.*?)```", section, flags=re.S)[0]
    example = (ROOT / "examples" / "sign_in.py").read_text()
    between = example.split("# README: begin\n", 1)[1].split("    # README: end", 1)[0]
    assert textwrap.dedent(between) == block
