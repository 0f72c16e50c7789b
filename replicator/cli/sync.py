"""The device commands: ``replicator status``, ``sync`` and ``devices``.

``status`` only reads the database (opened read-only: looking never changes a
device); ``sync`` opens the device its config file describes and closes its
database whatever happens; ``devices`` reads the remote's Devices collection and
never creates a remote that does not exist.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .app import ProgressLine, config_option, main, quiet, synced_tables
from .shapes import device_shape, emit, json_option, report_shape, status_shape

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
@json_option
def status(database: Path, as_json: bool) -> None:
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
        if as_json:
            emit(status_shape(recorded, synced_tables(conn), device))
            return
        click.echo(f"device        {device.get('name')} ({device.get('platform')})")
        click.echo(f"installation  {device.get('installation_id')}")
        click.echo(f"last sync     {readable_time(device.get('last_sync'), age=True)}")
        click.echo(f"last upload   {readable_time(device.get('last_upload'), age=True)}")
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
        _reasons(
            f"the remote's rules refused {_rows(recorded.denied_total, 'write')}, set aside"
            " (kept here; replicator denied lists, exports, retries or discards them):",
            recorded.denied,
            recorded.denied_total,
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
@json_option
def sync(config_path: Path, timeout: float | None, as_json: bool) -> None:
    """Sync the device a config file describes, with a progress line.

    On a new, empty database with a blob store configured this is a login:
    the latest snapshot is restored first, then only what it lacks is
    downloaded.
    """
    from .config import DeviceConfig

    line = ProgressLine()  # silent under -q
    device = DeviceConfig.load(config_path).replicator(on_progress=line)
    login = False
    try:
        if device.blobs is not None and device.is_empty():
            login = True
            report = device.login()
        else:
            report = device.sync(timeout=timeout)
    finally:
        line.end()
        device.database.close()
    if as_json:
        emit(report_shape(report, login=login))
    elif not quiet():
        click.echo(report.summary())
        _say_why(report)


#: how many rejected rows and set-aside documents ``sync`` names, each with its reason
_NAMED = 20


def _say_why(report: SyncReport) -> None:
    """Name each row the sync rejected and each remote document it set aside, with why:
    a row rejected stays dirty, and without its reason nobody can fix it."""
    named = (
        ("rejected", report.rejected),
        ("set aside", report.set_aside),
        ("denied", report.denied),
    )
    for verb, errors in named:
        for e in errors[:_NAMED]:
            click.echo(f"{verb} {e.collection}/{e.id}: {type(e.error).__name__}: {e.error}")
        if len(errors) > _NAMED:
            click.echo(
                f"{verb} {len(errors) - _NAMED:,} more (replicator status names the first 50)"
            )


@main.command()
@config_option
@json_option
def devices(config_path: Path, as_json: bool) -> None:
    """The Devices collection of the remote a config file names."""
    from .config import DeviceConfig

    records = DeviceConfig.load(config_path).open_remote(create=False).devices()
    if as_json:
        ordered = sorted(records, key=lambda r: (r.name, r.installation_id))
        emit({"devices": [device_shape(d) for d in ordered]})
        return
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


def readable_time(text: str | None, *, age: bool = False) -> str:
    """A time this device or the store recorded, as ``2026-11-23 09:45:38 UTC``, and with
    ``age`` how long ago it was (``2026-11-23 09:45:38 UTC (3 min ago)``).

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
    shown = when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if not age:
        return shown
    return f"{shown} ({time_ago(dt.datetime.now(dt.timezone.utc) - when)})"


def time_ago(elapsed: datetime.timedelta) -> str:
    """``just now``, ``42 s ago``, ``3 min ago``, ``5 h ago``, ``12 days ago``; a time
    ahead of this machine's clock reads ``in the future (clocks differ)``."""
    seconds = elapsed.total_seconds()
    if seconds < -5:
        return "in the future (clocks differ)"
    if seconds < 5:
        return "just now"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size if unit == "days" else seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"
