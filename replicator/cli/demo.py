"""``replicator demo``: the four-device tour of :mod:`replicator.cli.scenario`.

The command exits 0 only when the scenario ends as designed (every device
identical, nothing left unsynced, the login restored the published snapshot
and caught up); the scenario is imported only when the command runs, so the
other commands never define its models.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from .app import main


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the devices' databases and the remote here (default: a temporary directory).",
)
def demo(directory: Path | None) -> None:
    """Three devices edit offline, sync in turns, and end identical."""
    from .scenario import PASSPHRASE, run

    ok = run(directory, echo=click.echo)
    click.echo(f"the snapshots are sealed with the passphrase {PASSPHRASE!r}")
    if directory is None:
        click.echo("run replicator demo --dir DIR to keep the files and open them with the CLI")
    else:
        _try_next(directory, PASSPHRASE)
    sys.exit(0 if ok else 1)


def _try_next(directory: Path, passphrase: str) -> None:
    """The commands to try on what the demo left in ``directory``, ready to paste."""
    blobs = shlex.quote(str(directory / "blobs"))
    key = f"--blobs {blobs} --passphrase-env {_PASSPHRASE_ENV}"
    restored = shlex.quote(str(directory / "restored.db"))
    click.echo("try the snapshot commands on them:")
    click.echo(f"  export {_PASSPHRASE_ENV}={shlex.quote(passphrase)}")
    for command in (
        f"snapshot list {key}",
        f"snapshot verify {key}",
        f"snapshot restore {restored} {key}",
        f"status {restored}",
    ):
        click.echo(f"  replicator {command}")


#: the variable the printed commands read the demo's passphrase from
_PASSPHRASE_ENV = "REPLICATOR_DEMO_PASSPHRASE"
