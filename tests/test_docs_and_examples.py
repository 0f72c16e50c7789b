"""Every Python block of the README and of the documentation site, and every example,
runs as written; every file the pages name exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import doc_pages, docs_text

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


#: a block that needs a service the suite cannot start for it is marked with an HTML
#: comment on the line above it (invisible on the site and on GitHub), and skipped
NOTEST = re.compile(r"<!-- notest[^>]*-->\n```python\n(.*?)```", flags=re.S)


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", NOTEST.sub("", text), flags=re.S)


#: (page, index of the block in it), the README's first
BLOCKS = [
    (page.relative_to(ROOT).as_posix(), index)
    for page in doc_pages()
    for index in range(len(python_blocks(page.read_text())))
]


@pytest.mark.parametrize(("page", "index"), BLOCKS, ids=[f"{p}:{i}" for p, i in BLOCKS])
def test_the_docs_python_blocks_run(page, index, tmp_path):
    code = python_blocks((ROOT / page).read_text())[index]
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
    if (script == "sign_in.py" or "firestore" in script) and not os.environ.get(
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


def test_the_pages_have_python_blocks_to_run():
    pages = {page for page, _ in BLOCKS}
    assert "README.md" in pages and "docs/getting-started.md" in pages
    assert len(pages) >= 8, pages


def test_every_file_the_docs_name_exists():
    text = docs_text()
    paths = re.findall(r"`((?:examples|bench|tests|replicator|scripts|\.ci)/[\w./-]+)`", text)
    missing = [p for p in paths if not (ROOT / p).exists()]
    places = [ROOT, ROOT / "replicator", ROOT / "examples", ROOT / "bench", ROOT / "tests"]
    for name in re.findall(r"`([\w-]+\.py)`", text):  # a module or script named bare
        if not any((place / name).exists() for place in places):
            missing.append(name)
    assert missing == []


def test_every_link_of_the_readme_leads_to_a_file():
    # the site checks its own links (mkdocs build --strict); the README is outside it
    links = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", README)
    assert links, "the README links to no page"
    assert [link for link in links if not (ROOT / link).exists()] == []


def test_examples_say_how_to_run_them_with_the_projects_python():
    for path in sorted((ROOT / "examples").glob("*.py")):
        assert f"Run: .venv/bin/python examples/{path.name}" in path.read_text(), path.name


def test_the_first_use_names_python_attributes_not_columns():
    first_use = python_blocks(README)[0]
    assert "is_dirty" in first_use and "server_id" in first_use


def test_the_docs_sign_in_block_is_the_one_the_example_runs():
    # the block needs the Auth emulator, so the page marks it notest and
    # examples/sign_in.py runs the same lines
    page = (ROOT / "docs" / "concepts" / "sign-in.md").read_text()
    section = page.split("## In development and tests", 1)[1]
    block = NOTEST.findall(section)[0]
    example = (ROOT / "examples" / "sign_in.py").read_text()
    between = example.split("# docs: begin\n", 1)[1].split("    # docs: end", 1)[0]
    assert textwrap.dedent(between) == block
