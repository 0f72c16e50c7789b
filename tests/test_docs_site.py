"""The documentation site builds strictly, and its generated pages are current.

``mkdocs build --strict`` fails on any warning: a broken link or anchor, a page
left out of the nav, a docstring mkdocstrings cannot read. ``docs/cli.md`` and
``docs/errors.md`` are made from the code by ``scripts/gen_docs.py``; a command,
an option or an error changed without running it fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.helpers import ROOT


def _run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def test_the_site_builds_strictly(tmp_path):
    built = _run("-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"))
    assert built.returncode == 0, built.stderr
    assert not re.search(r"^(WARNING|ERROR)\b", built.stderr, flags=re.M), built.stderr
    reference = (tmp_path / "site" / "api" / "replicator" / "index.html").read_text()
    assert "tombstone_retention" in reference  # the docstrings were read, not just the page
    for page in (tmp_path / "site" / "api").rglob("*.html"):  # Sphinx roles made code
        assert not re.search(r":(class|meth|func|mod|data|attr):", page.read_text()), page


def test_the_cli_and_errors_pages_are_current():
    checked = _run("scripts/gen_docs.py", "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_errors_page_gives_every_error_its_hint():
    from replicator import errors

    page = (ROOT / "docs" / "errors.md").read_text()
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, errors.ReplicatorError):
            assert f"## {value.__name__}\n" in page, value.__name__
            if value.default_hint:
                assert f"**Hint:** {value.default_hint}" in page, value.__name__


def test_every_command_has_its_help_in_the_cli_reference():
    from click.testing import CliRunner

    from replicator.cli import main

    page = (ROOT / "docs" / "cli.md").read_text()
    for name, command in main.commands.items():
        assert f"## replicator {name}\n" in page, name
        first = (command.help or "").strip().splitlines()[0]
        assert first in page, name
    usage = CliRunner().invoke(main, ["--help"], prog_name="replicator").output
    assert usage.splitlines()[0] in page


def test_every_code_fence_names_one_language():
    # "```python notest" is no fence to MkDocs: the block would show as a paragraph
    from tests.helpers import doc_pages

    for page in doc_pages():
        fences = re.findall(r"^```(.*)$", page.read_text(), flags=re.M)
        assert [f for f in fences if len(f.split()) > 1] == [], page.name


def test_the_license_is_the_one_the_package_declares():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', pyproject, flags=re.M)
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "the replicator authors" in license_text
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog") and "## 0.1.0" in changelog
