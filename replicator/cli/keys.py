"""``replicator key generate``: make the key that encrypts snapshots.

A key file is written once: an existing file is never overwritten (a lost key
makes every snapshot sealed with it unreadable), and it is created readable by
its owner only (mode 0600) in one step, never widened afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from .app import main


@main.group()
def key() -> None:
    """Make the key that encrypts snapshots."""


@key.command("generate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def key_generate(path: Path) -> None:
    """Write a new random snapshot key to PATH (64 hex digits, readable by you only).

    Keep the file safe and give every device of the user the same key: a
    snapshot cannot be restored without it.
    """
    from ..snapshots.crypto import SnapshotKey

    if path.exists():
        raise click.ClickException(f"{path} exists; refusing to overwrite a key")
    if not path.parent.is_dir():
        raise click.ClickException(f"the directory {path.parent} does not exist")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(SnapshotKey.generate().raw.hex() + "\n")
    click.echo(f"wrote a new snapshot key to {path}")
