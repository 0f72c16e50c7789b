"""The ``replicator`` command: a thin layer over the library."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import click

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="replicator")
def main() -> None:
    """Offline-first replication of peewee/SQLite databases."""


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
    from .demo import run

    ok = run(directory, echo=click.echo)
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("database", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def status(database: Path) -> None:
    """Show a device's identity, pending changes and download watermarks."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        try:
            device = conn.execute(
                "SELECT installation_id, name, platform, last_sync, last_upload, seen_position"
                " FROM replicator_device"
            ).fetchone()
        except sqlite3.OperationalError:
            raise click.ClickException(
                f"{database} has no replicator tables; create a Replicator on it first"
            ) from None
        if device is None:
            raise click.ClickException(f"{database} has no device identity yet")
        iid, name, platform, last_sync, last_upload, seen = device
        click.echo(f"device        {name} ({platform})")
        click.echo(f"installation  {iid}")
        click.echo(f"last sync     {last_sync or 'never'}")
        click.echo(f"last upload   {last_upload or 'never'}")
        click.echo(f"caught up to  {seen or 'nothing yet'}")
        trackers = dict(
            conn.execute('SELECT collection, "downloadedTill" FROM "DownloadedTracker"')
        )
        tombs = dict(
            conn.execute(
                "SELECT collection, COUNT(*) FROM replicator_tombstones WHERE pending = 1"
                " GROUP BY collection"
            )
        )
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
            if "isDirty" in {c[1] for c in conn.execute(f'PRAGMA table_info("{r[0]}")')}
        ]
        click.echo(f"{'collection':<20} {'rows':>7} {'dirty':>7} {'deletes':>8}  downloadedTill")
        for table in tables:
            (rows,) = conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()
            (dirty,) = conn.execute(
                f'SELECT COUNT(*) FROM "{table}" WHERE "isDirty" = 1'
            ).fetchone()
            click.echo(
                f"{table:<20} {rows:>7} {dirty:>7} {tombs.get(table, 0):>8}  "
                f"{trackers.get(table) or '-'}"
            )
    finally:
        conn.close()


if __name__ == "__main__":  # pragma: no cover
    main()
