"""The device commands: ``replicator status``, ``sync`` and ``devices``.

``status`` only reads the database (opened read-only: looking never changes a
device); ``sync`` opens the device its config file describes and closes its
database whatever happens; ``devices`` reads the remote's Devices collection and
never creates a remote that does not exist.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .app import ProgressLine, config_option, main, synced_tables

if TYPE_CHECKING:
    from ..report import SyncReport


def _open_status(database: Path) -> Any:
    """A connection to ``database`` that has read its schema: read-only for a plain
    file, with the key the environment names for an encrypted one."""
    from ..cipher.keyfiles import cli_database, cli_key

    if cli_key(None, Path.cwd()) is not None:
        conn: Any = cli_database(database).connection()
    else:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    except sqlite3.DatabaseError:
        conn.close()
        raise click.ClickException(
            f"{database} is not a SQLite database (or an encrypted one: export"
            " REPLICATOR_DATABASE_KEY_FILE or REPLICATOR_DATABASE_PASSPHRASE)"
        ) from None
    return conn


@main.command()
@click.argument("database", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def status(database: Path) -> None:
    """Show a device's identity, pending changes and download watermarks.

    An encrypted database opens with the key $REPLICATOR_DATABASE_KEY_FILE or
    $REPLICATOR_DATABASE_PASSPHRASE names."""
    conn = _open_status(database)
    try:
        from ..local import read_recorded

        recorded = read_recorded(conn.execute)
        if recorded is None:
            raise click.ClickException(
                f"{database} has no replicator tables; create a Replicator on it first"
            )
        device = recorded.device
        if device is None:
            raise click.ClickException(f"{database} has no device identity yet")
        click.echo(f"device        {device.get('name')} ({device.get('platform')})")
        click.echo(f"installation  {device.get('installation_id')}")
        click.echo(f"last sync     {readable_time(device.get('last_sync'))}")
        click.echo(f"last upload   {readable_time(device.get('last_upload'))}")
        click.echo(f"caught up to  {device.get('seen_position') or 'nothing yet'}")
        snap = device.get("last_snapshot") or "none published or restored here"
        click.echo(f"snapshot      {snap}")
        trackers, tombs = recorded.trackers, recorded.pending_deletes
        click.echo(f"{'collection':<20} {'rows':>7} {'dirty':>7} {'deletes':>8}  downloadedTill")
        for table, rows, dirty in synced_tables(conn):
            click.echo(
                f"{table:<20} {rows:>7} {dirty:>7} {tombs.get(table, 0):>8}  "
                f"{trackers.get(table) or '-'}"
            )
        if recorded.bundles:
            click.echo(f"bundles awaiting the ingest service: {recorded.bundles}")
        for table, n in sorted(recorded.refused.items()):
            click.echo(f"{table}: {n} row(s) refused by the ingest service")
        _reasons(
            f"the last sync rejected {_rows(recorded.rejected_total, 'row')}"
            " (it stays dirty until fixed):",
            recorded.rejected,
            recorded.rejected_total,
        )
        _reasons(
            f"{_rows(recorded.set_aside_total, 'remote document')} set aside"
            " (retried at every sync):",
            recorded.set_aside,
            recorded.set_aside_total,
        )
    finally:
        conn.close()


def _rows(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _reasons(title: str, rows: Sequence[tuple[str, str, str]], total: int) -> None:
    """``title``, then each (collection, id, why) of ``rows`` on a line of its own."""
    if not total:
        return
    click.echo(title)
    for collection, row_id, why in rows:
        click.echo(f"  {collection}/{row_id}: {why}")
    if total > len(rows):
        click.echo(f"  and {total - len(rows):,} more")


@main.command()
@config_option
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds for the whole sync."
)
def sync(config_path: Path, timeout: float | None) -> None:
    """Sync the device a config file describes, with a progress line.

    On a new, empty database with a blob store configured this is a login:
    the latest snapshot is restored first, then only what it lacks is
    downloaded.
    """
    from .config import DeviceConfig

    line = ProgressLine()
    device = DeviceConfig.load(config_path).replicator(on_progress=line)
    try:
        if device.blobs is not None and device.is_empty():
            report = device.login()
        else:
            report = device.sync(timeout=timeout)
    finally:
        line.end()
        device.database.close()
    click.echo(report.summary())
    _say_why(report)


#: how many rejected rows and set-aside documents ``sync`` names, each with its reason
_NAMED = 20


def _say_why(report: SyncReport) -> None:
    """Name each row the sync rejected and each remote document it set aside, with why:
    a row rejected stays dirty, and without its reason nobody can fix it."""
    for verb, errors in (("rejected", report.rejected), ("set aside", report.set_aside)):
        for e in errors[:_NAMED]:
            click.echo(f"{verb} {e.collection}/{e.id}: {type(e.error).__name__}: {e.error}")
        if len(errors) > _NAMED:
            click.echo(
                f"{verb} {len(errors) - _NAMED:,} more (replicator status names the first 50)"
            )


@main.command()
@config_option
def devices(config_path: Path) -> None:
    """The Devices collection of the remote a config file names."""
    from .config import DeviceConfig

    records = DeviceConfig.load(config_path).open_remote(create=False).devices()
    if not records:
        click.echo("no device has registered yet")
        return
    click.echo(
        f"{'name':<16} {'platform':<10} {'app':<8} {'last sync':<23} {'last upload':<23}"
        f" {'snapshot':>8}  installation"
    )
    for d in sorted(records, key=lambda r: (r.name, r.installation_id)):
        click.echo(
            f"{d.name or '?':<16} {(d.platform or '?').split('-')[0][:10]:<10}"
            f" {d.app_version or '-':<8} {readable_time(d.last_sync):<23}"
            f" {readable_time(d.last_upload):<23} {d.snapshot_generation or '-':>8}"
            f"  {d.installation_id}"
        )


def readable_time(text: str | None) -> str:
    """A time this device or the store recorded, as ``2026-11-23 09:45:38 UTC``.

    An upload position of the embedded store is a number in its change order, not a
    time: it reads ``change 3,011``. Nothing recorded reads ``never``.
    """
    import datetime as dt

    if not text:
        return "never"
    if text.isdigit():
        return f"change {int(text):,}"
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if when.tzinfo is None:  # naive times here are UTC
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
