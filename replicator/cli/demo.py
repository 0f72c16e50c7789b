"""``replicator demo``: the four-device tour of :mod:`replicator.cli.scenario`.

The command exits 0 only when the scenario ends as designed (every device
identical, nothing left unsynced, the login restored the published snapshot
and caught up); the scenario is imported only when the command runs, so the
other commands never define its models.
"""

from __future__ import annotations

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
    from .scenario import run

    ok = run(directory, echo=click.echo)
    sys.exit(0 if ok else 1)
