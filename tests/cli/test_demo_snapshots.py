"""``replicator demo --dir DIR`` ends by telling how to open what it published: the
passphrase and the snapshot commands, which work as printed on the demo's own files."""

from __future__ import annotations

import re
import shlex

from click.testing import CliRunner

from replicator.cli import main


def test_the_commands_the_demo_prints_work_on_its_files(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    [export] = [line.strip() for line in lines if line.strip().startswith("export ")]
    name, _, value = export.removeprefix("export ").partition("=")
    env = {name: shlex.split(value)[0]}
    assert env[name] == "correct horse battery staple"
    commands = [shlex.split(line)[1:] for line in lines if line.startswith("  replicator ")]
    assert [c[:2] for c in commands] == [
        ["snapshot", "list"],
        ["snapshot", "verify"],
        ["snapshot", "restore"],
        ["status", str(tmp_path / "restored.db")],
    ]
    outputs = []
    for args in commands:
        ran = CliRunner(env=env).invoke(main, args)
        assert ran.exit_code == 0, (args, ran.output)
        outputs.append(ran.output)
    listed, verified, restored, status = outputs
    assert "manifest authenticated" in listed
    assert "is intact: 1 comment, 2 note" in verified
    assert "restored snapshot" in restored
    assert re.search(r"note\s+2\s+0\s+0", status), status


def test_without_a_directory_the_demo_says_how_to_keep_its_files():
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert "correct horse battery staple" in result.output
    assert "replicator demo --dir DIR" in result.output
