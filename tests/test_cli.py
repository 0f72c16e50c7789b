"""The replicator command."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from replicator.cli import main


def test_demo_converges_and_prints_an_account(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "all three devices are identical" in result.output
    assert "conflict on note/" in result.output and "merged both" in result.output
    assert "Groceries | milk, eggs, coffee" in result.output  # both edits of the note kept
    assert "dirty rows left: {'phone': 0, 'tablet': 0, 'laptop': 0}" in result.output


def test_demo_runs_as_an_installed_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "replicator.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_status_shows_device_and_pending_changes(tmp_path):
    CliRunner().invoke(main, ["demo", "--dir", str(tmp_path)])
    result = CliRunner().invoke(main, ["status", str(tmp_path / "phone.db")])
    assert result.exit_code == 0, result.output
    assert "installation" in result.output and "note" in result.output


def test_status_on_a_plain_database_says_what_to_do(tmp_path):
    import sqlite3

    path = tmp_path / "plain.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    result = CliRunner().invoke(main, ["status", str(path)])
    assert result.exit_code != 0
    assert "create a Replicator on it first" in result.output
