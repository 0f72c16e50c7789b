"""The command line never prints a traceback, and every command is documented.

Every command's ``--help`` runs; every command appears in the hand-written docs. Bad input
(keys, files, directories, buckets) gets one line that says what to do.
"""

from __future__ import annotations

import os

import click
import pytest
from click.testing import CliRunner

from replicator.cli import main
from replicator.cli.snapshot import parse_key_file
from tests.cli.test_commands import _published
from tests.helpers import docs_text

#: the pages written by hand: the generated CLI reference names every command anyway
DOCS = docs_text(generated=False)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in sorted(group.commands.items()):
        out.append((*prefix, name))
        if isinstance(command, click.Group):
            out += _commands(command, (*prefix, name))
    return out


COMMANDS = _commands(main)


def test_the_command_tree_is_what_the_docs_expect():
    assert ("key", "generate") in COMMANDS and ("snapshot", "restore") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_and_is_in_the_docs(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 3
    assert f"replicator {' '.join(command)}" in DOCS, f"the docs lack `{' '.join(command)}`"


def _no_traceback(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    text = result.output
    assert "Traceback" not in text and text.startswith("Error: ")
    assert len(text.strip().splitlines()) == 1, text
    return text


def test_key_generate_writes_a_private_key_that_opens_snapshots(tmp_path):
    runner = CliRunner()
    key = tmp_path / "k.hex"
    made = runner.invoke(main, ["key", "generate", str(key)])
    assert made.exit_code == 0 and oct(key.stat().st_mode & 0o777) == "0o600"
    assert len(parse_key_file(key.read_bytes())) == 32
    assert "refusing" in _no_traceback(runner.invoke(main, ["key", "generate", str(key)]))
    missing_dir = runner.invoke(main, ["key", "generate", str(tmp_path / "no" / "k")])
    assert "does not exist" in _no_traceback(missing_dir)


@pytest.mark.parametrize("edge", [b" ", b"\n", b"\t", b"\r", b"\x0b", b"\x0c"])
def test_raw_keys_are_never_stripped(tmp_path, edge):
    raw = edge + bytes(range(100, 130)) + edge
    assert parse_key_file(raw) == raw
    _published(tmp_path, key=raw)  # a key file written raw, as _published does
    result = CliRunner().invoke(
        main,
        [
            "snapshot",
            "verify",
            "--blobs",
            str(tmp_path / "blobs"),
            "--key-file",
            str(tmp_path / "key"),
        ],
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "content",
    [b"", b"short", b"z" * 64, b"0" * 63, bytes(range(33)), b"\xff" * 64, b"0" * 65],
    ids=["empty", "short", "non-hex", "63-hex", "33-raw", "non-ascii", "65-hex"],
)
def test_a_bad_key_file_is_one_line(tmp_path, content):
    _published(tmp_path)
    bad = tmp_path / "bad.key"
    bad.write_bytes(content)
    result = CliRunner().invoke(
        main, ["snapshot", "verify", "--blobs", str(tmp_path / "blobs"), "--key-file", str(bad)]
    )
    assert "replicator key generate" in _no_traceback(result)


def test_hex_keys_may_carry_a_newline(tmp_path):
    raw = os.urandom(32)
    assert parse_key_file(raw.hex().encode() + b"\n") == raw
    assert parse_key_file(b"  " + raw.hex().upper().encode() + b"\r\n") == raw


def test_bad_files_and_stores_are_one_line(tmp_path, moto_server, monkeypatch):
    runner = CliRunner()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite " * 200)
    assert "not a SQLite database" in _no_traceback(runner.invoke(main, ["status", str(junk)]))
    _published(tmp_path)
    key = ["--key-file", str(tmp_path / "key")]
    no_dir = runner.invoke(main, ["snapshot", "list", "--blobs", str(tmp_path / "nowhere")])
    assert "not a directory" in _no_traceback(no_dir)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    no_bucket = runner.invoke(
        main,
        ["snapshot", "verify", "--s3", "no-such-bucket-77", "--endpoint-url", moto_server, *key],
    )
    _no_traceback(no_bucket)
    offline = runner.invoke(
        main,
        ["snapshot", "list", "--s3", "b", "--endpoint-url", "http://127.0.0.1:9", *key],
    )
    _no_traceback(offline)
