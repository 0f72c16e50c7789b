"""The ``replicator`` command: a thin layer over the library."""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click

from .. import __version__

if TYPE_CHECKING:
    from ..snapshots.crypto import SnapshotSecret
    from ..snapshots.manifest import Manifest
    from ..stores.base import BlobStore


class _Guarded(click.Group):
    """A command group whose commands never end in a traceback.

    Errors of the library and of the files and stores it was pointed at become
    one line on stderr that says what happened and what to do, and exit 1.
    Set ``REPLICATOR_DEBUG=1`` to see the traceback of an unexpected error.
    """

    def invoke(self, ctx: click.Context) -> Any:
        from ..errors import ReplicatorError

        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except ReplicatorError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise click.ClickException(f"SQLite refused the database: {exc}") from None
        except OSError as exc:
            raise click.ClickException(f"{exc.strerror or exc}: {exc.filename or ''}") from None
        except ImportError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            if os.environ.get("REPLICATOR_DEBUG"):
                raise
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {exc} (set REPLICATOR_DEBUG=1 for the"
                " traceback and report it)"
            ) from None


@click.group(cls=_Guarded)
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
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
        except sqlite3.DatabaseError:
            raise click.ClickException(f"{database} is not a SQLite database") from None
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
        click.echo(f"last sync     {device.get('last_sync') or 'never'}")
        click.echo(f"last upload   {device.get('last_upload') or 'never'}")
        click.echo(f"caught up to  {device.get('seen_position') or 'nothing yet'}")
        snap = device.get("last_snapshot") or "none published or restored here"
        click.echo(f"snapshot      {snap}")
        trackers, tombs = recorded.trackers, recorded.pending_deletes
        click.echo(f"{'collection':<20} {'rows':>7} {'dirty':>7} {'deletes':>8}  downloadedTill")
        for table, rows, dirty in _synced_tables(conn):
            click.echo(
                f"{table:<20} {rows:>7} {dirty:>7} {tombs.get(table, 0):>8}  "
                f"{trackers.get(table) or '-'}"
            )
        if recorded.bundles:
            click.echo(f"bundles awaiting the ingest service: {recorded.bundles}")
        for table, n in sorted(recorded.refused.items()):
            click.echo(f"{table}: {n} row(s) refused by the ingest service")
    finally:
        conn.close()


# -- a device from its config file ---------------------------------------------------------

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default="replicator.toml",
    show_default=True,
    help="The device's config file: database, models module, remote, blob store, key.",
)


class _ProgressLine:
    """One line on stderr that follows a sync's Progress, with a percentage when the
    total is known; it redraws at most ten times a second, and always at the end."""

    def __init__(self) -> None:
        self.last = 0.0
        self.width = 0

    def __call__(self, progress: Any) -> None:
        import time

        now = time.monotonic()
        done = progress.total is not None and progress.done >= progress.total
        if now - self.last < 0.1 and not done:
            return
        self.last = now
        what = f"{progress.phase} {progress.collection or ''}".strip()
        if progress.phase == "restore" and progress.total:  # bytes of the snapshot
            pct = min(100, progress.done * 100 // progress.total)
            text = (
                f"{what}: {progress.done / 1024:,.0f} of {progress.total / 1024:,.0f} KiB ({pct}%)"
            )
        elif progress.total:
            pct = min(100, progress.done * 100 // progress.total)
            text = f"{what}: {progress.done}/{progress.total} ({pct}%)"
        else:
            text = f"{what}: {progress.done}"
        click.echo("\r" + text.ljust(self.width), nl=False, err=True)
        self.width = len(text)

    def end(self) -> None:
        if self.width:
            click.echo("", err=True)


@main.command()
@_config_option
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

    line = _ProgressLine()
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


@main.command()
@_config_option
def devices(config_path: Path) -> None:
    """The Devices collection of the remote a config file names."""
    from .config import DeviceConfig

    records = DeviceConfig.load(config_path).open_remote(create=False).devices()
    if not records:
        click.echo("no device has registered yet")
        return
    click.echo(
        f"{'name':<16} {'platform':<10} {'app':<8} {'last upload':<28} {'snapshot':>8}"
        "  installation"
    )
    for d in sorted(records, key=lambda r: (r.name, r.installation_id)):
        click.echo(
            f"{d.name or '?':<16} {(d.platform or '?').split('-')[0][:10]:<10}"
            f" {d.app_version or '-':<8}"
            f" {d.last_upload or 'never':<28} {d.snapshot_generation or '-':>8}"
            f"  {d.installation_id}"
        )


# -- the ingest service (seed 001) ------------------------------------------------------


@main.command()
@_config_option
@click.option(
    "--serve",
    "address",
    metavar="HOST:PORT",
    help="Also take ingest requests over HTTP here (for devices using ingest_url).",
)
@click.option(
    "--token-env",
    metavar="VAR",
    help="Require 'Authorization: Bearer $VAR' on HTTP requests.",
)
@click.option("--once", is_flag=True, help="Ingest what the queue holds now, then stop.")
@click.option(
    "--poll",
    type=click.FloatRange(min=0.01),
    default=2.0,
    show_default=True,
    help="Seconds between looks at the queue.",
)
@click.option("--name", help="This ingestor's name (default: host name and a random suffix).")
@click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds a claim holds before another ingestor may take a bundle over.",
)
def ingest(
    config_path: Path,
    address: str | None,
    token_env: str | None,
    once: bool,
    poll: float,
    name: str | None,
    lease: float,
) -> None:
    """Run the campaign service's ingestor: verify bundles devices uploaded and apply
    their rows to the remote store, from the store's queue (and over HTTP with
    --serve). Several may run at once on the same queue. Stop with Ctrl-C."""
    import signal
    import threading

    from ..bundles.ingest import Ingestor
    from ..errors import ConfigurationError
    from .config import DeviceConfig

    config = DeviceConfig.load(config_path, service=True)
    ingestor = Ingestor(
        config.bundle_blobs(), config.open_remote(), config.load_models(), name=name, lease=lease
    )
    if once:
        results = ingestor.poll(limit=1_000_000)
        for r in results:
            click.echo(f"{r.bundle}  {r.state}  {r.accepted} rows  {r.reason}".rstrip())
        click.echo(f"{len(results)} bundle(s) decided")
        return
    server = None
    if address:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise click.BadParameter("give HOST:PORT, e.g. 127.0.0.1:8765", param_hint="--serve")
        token = os.environ.get(token_env) if token_env else None
        if token_env and not token:
            raise ConfigurationError(f"${token_env} is empty", hint="export the token first")
        server = ingestor.serve(host, int(port), token=token)
        click.echo(f"taking ingest requests at {server.url}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(f"ingestor {ingestor.name} polling the queue every {poll:g} s")
    try:
        ingestor.run(poll_every=poll, stop=stop)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.close()


# -- snapshots ---------------------------------------------------------------------------


def _blob_options(fn: Any) -> Any:
    """Add the blob store and key options, handed to the command as one ``source``."""
    options = [
        click.option("--blobs", type=click.Path(path_type=Path), help="Blob directory."),
        click.option("--s3", "s3", metavar="BUCKET[/PREFIX]", help="S3 bucket and prefix."),
        click.option("--endpoint-url", help="S3-compatible endpoint (default: AWS)."),
        click.option(
            "--key-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="File holding the 32-byte key (raw, or 64 hex digits).",
        ),
        click.option(
            "--passphrase-env",
            metavar="VAR",
            help="Environment variable holding the passphrase (else you are asked).",
        ),
    ]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        names = ("blobs", "s3", "endpoint_url", "key_file", "passphrase_env")
        source = _Source(**{n: kwargs.pop(n) for n in names})
        return fn(source=source, **kwargs)

    for option in reversed(options):
        command = option(command)
    return command


@attrs.frozen
class _Source:
    """Where the snapshots are and how to open them, from the command line."""

    blobs: Path | None
    s3: str | None
    endpoint_url: str | None
    key_file: Path | None
    passphrase_env: str | None

    def store(self) -> Any:
        return _open_blobs(self.blobs, self.s3, self.endpoint_url)

    def key(self) -> Any:
        return _read_key(self.key_file, self.passphrase_env)


def _open_blobs(blobs: Path | None, s3: str | None, endpoint_url: str | None) -> Any:
    if (blobs is None) == (s3 is None):
        raise click.UsageError("name one blob store: --blobs DIR or --s3 BUCKET[/PREFIX]")
    if blobs is not None:
        from ..stores.directory import DirectoryBlobStore

        if not blobs.is_dir():
            raise click.ClickException(f"{blobs} is not a directory")
        return DirectoryBlobStore(blobs, create=False)
    try:
        from ..stores.s3 import S3BlobStore
    except ImportError:
        raise click.ClickException("--s3 needs boto3: pip install 'replicator[s3]'") from None

    bucket, _, prefix = (s3 or "").partition("/")
    if not bucket:
        raise click.UsageError("--s3 needs a bucket name: --s3 BUCKET[/PREFIX]")
    return S3BlobStore(bucket, prefix, endpoint_url=endpoint_url)


def _read_key(key_file: Path | None, passphrase_env: str | None) -> Any:
    from ..snapshots.crypto import Passphrase, SnapshotKey

    if key_file is not None:
        return SnapshotKey(parse_key_file(key_file.read_bytes(), key_file))
    if passphrase_env:
        value = os.environ.get(passphrase_env)
        if not value:
            raise click.ClickException(f"${passphrase_env} is empty")
        return Passphrase(value)
    return Passphrase(click.prompt("Snapshot passphrase", hide_input=True))


def parse_key_file(data: bytes, path: object = "the key file") -> bytes:
    """The 32-byte key in a key file (see :func:`replicator.crypto.key_from_file`)."""
    from ..errors import ConfigurationError
    from ..snapshots.crypto import key_from_file

    try:
        return key_from_file(data, path)
    except ConfigurationError as exc:
        raise click.ClickException(exc.message) from None


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


@main.command()
@click.option(
    "--embedded",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The EmbeddedRemote file to compact.",
)
@click.option(
    "--firestore-root",
    help="The Firestore document the collections live under (e.g. users/<uid>); project"
    " and credentials come from the environment, FIRESTORE_EMULATOR_HOST included.",
)
@click.option(
    "--firestore-project", help="The Google Cloud project (default: from the environment)."
)
@click.option(
    "--older-than-days",
    type=click.FloatRange(min=0, min_open=True),
    default=90.0,
    show_default=True,
    help="Purge tombstones the store committed longer ago than this.",
)
@click.option(
    "--collection", "collections", multiple=True, help="Only this collection (repeatable)."
)
def compact(
    embedded: Path | None,
    firestore_root: str | None,
    firestore_project: str | None,
    older_than_days: float,
    collections: tuple[str, ...],
) -> None:
    """Purge remote tombstones older than the retention.

    Devices offline for longer than ``--older-than-days`` notice at their next
    sync, download the affected collections again and keep their own unsynced
    work. Use the retention the apps pass to ``Replicator(tombstone_retention=)``
    (90 days by default) or longer.
    """
    import datetime as dt

    from ..sync.retention import purge

    if (embedded is None) == (firestore_root is None):
        raise click.UsageError("name exactly one remote: --embedded FILE or --firestore-root PATH")
    if embedded is not None:
        from ..stores.embedded import EmbeddedRemote

        remote: Any = EmbeddedRemote(embedded, create=False)
    else:
        from google.cloud import firestore

        from ..stores.firestore import FirestoreRemote

        remote = FirestoreRemote(firestore.Client(project=firestore_project), str(firestore_root))
    names = list(collections) or _guard(remote.collections)
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=older_than_days)

    def tell(coll: str, done: int) -> None:
        click.echo(f"  {coll}: {done} purged so far", err=True)

    purged = _guard(lambda: purge(remote, names, before, on_purged=tell))
    for coll in names:
        click.echo(f"{coll}: {purged.get(coll, 0)} tombstone(s) purged")
    click.echo(f"older than {before.isoformat(timespec='seconds')}; horizons raised accordingly")


@main.group()
def snapshot() -> None:
    """List, verify and restore encrypted snapshots."""


@snapshot.command("publish")
@_config_option
def snapshot_publish(config_path: Path) -> None:
    """Sync the device a config file describes, then publish a snapshot of it now,
    whatever the Big Brother rule says (it still refuses while rows stay unsynced)."""
    from ..strategies.snapshot import Always
    from .config import DeviceConfig

    config = DeviceConfig.load(config_path)
    if config.blobs is None:
        raise click.ClickException(f"{config_path} names no [blobs] store to publish to")
    line = _ProgressLine()
    device = config.replicator(on_progress=line, snapshot_strategy=Always())
    try:
        report = device.sync()
    finally:
        line.end()
        device.database.close()
    if report.snapshot_error is not None:
        raise click.ClickException(
            f"no snapshot: {type(report.snapshot_error).__name__}: {report.snapshot_error}"
        )
    if report.snapshot is None:
        raise click.ClickException("no snapshot was published (rows are still unsynced)")
    click.echo(f"published snapshot {report.snapshot}")


@snapshot.command("list")
@_blob_options
def snapshot_list(source: _Source) -> None:
    """The snapshots in the blob store, the latest marked with *."""
    from ..snapshots.manifest import read_manifest

    store = source.store()
    kek = None
    if source.key_file is not None or source.passphrase_env:
        from ..snapshots.manifest import resolve_key

        kek = _guard(lambda: resolve_key(store, source.key(), create=False)[0])
    manifest = _guard(lambda: read_manifest(store, kek))
    objects = _guard(lambda: [i for i in store.list("snapshots/") if i.key.endswith(".snap")])
    if not objects:
        click.echo("no snapshots yet")
        return
    for info in reversed(objects):
        sid = info.key.split("/")[-1][: -len(".snap")]
        mark = "*" if manifest and sid == manifest.snapshot_id else " "
        click.echo(f"{mark} {sid}  {info.size / 1e6:9.2f} MB  sha256 {info.sha256[:16]}")
    if manifest:
        checked = "authenticated" if kek is not None else "not checked: give the key to check it"
        click.echo(
            f"latest by {manifest.device_name or '?'} at {manifest.created},"
            f" generation {manifest.generation} (manifest {checked})"
        )
        for coll, cursor in sorted(manifest.watermarks.items()):
            click.echo(f"  {coll:<20} {cursor}")


def _guard(fn: Any) -> Any:
    from ..errors import ReplicatorError

    try:
        return fn()
    except ReplicatorError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


def _fetch(store: BlobStore, key: SnapshotSecret, dest: Path) -> Manifest:
    from ..snapshots.manifest import fetch_and_decrypt, open_latest

    manifest: Manifest
    manifest, _kek, _kdf = _guard(lambda: open_latest(store, key))
    with click.progressbar(length=manifest.size, label="downloading", file=sys.stderr) as bar:
        _guard(lambda: fetch_and_decrypt(store, manifest, key, dest, on_bytes=bar.update))
    return manifest


@snapshot.command("verify")
@_blob_options
def snapshot_verify(source: _Source) -> None:
    """Download the latest snapshot and check checksum, encryption and SQLite integrity."""
    import tempfile

    store, key = source.store(), source.key()
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "verify.db"
        manifest = _fetch(store, key, dest)
        conn = sqlite3.connect(dest)
        counts = {table: rows for table, rows, _ in _synced_tables(conn)}
        conn.close()
    click.echo(
        f"snapshot {manifest.snapshot_id} is intact: "
        + ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))
    )


@snapshot.command("restore")
@click.argument("database", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace synced data the database already holds.")
@click.option(
    "--id",
    "snapshot_id",
    default=None,
    help="Restore this older snapshot (one `snapshot list` shows) instead of the latest.",
)
@_blob_options
def snapshot_restore(database: Path, force: bool, snapshot_id: str | None, source: _Source) -> None:
    """Restore the latest snapshot (or --id an older one) into DATABASE, never over
    unsynced changes.

    Only the synced tables and replicator's own are replaced; tables the app
    keeps for itself stay as they are. DATABASE must be new, empty, or a
    database replicator manages. After an older snapshot, the next sync
    downloads everything since it.
    """
    import peewee

    from ..snapshots.restore import prepare

    database = database.absolute()
    if not database.parent.is_dir():
        raise click.ClickException(f"the directory {database.parent} does not exist")
    existed = database.exists()
    db = peewee.SqliteDatabase(str(database))
    try:
        job = _guard(
            lambda: prepare(db, source.store(), source.key(), force=force, snapshot_id=snapshot_id)
        )
        manifest = job.manifest
        with click.progressbar(length=manifest.size, label="downloading", file=sys.stderr) as bar:
            _guard(lambda: job.run(on_bytes=bar.update))
    except BaseException:
        db.close()
        if not existed:  # a failed restore into a new file leaves no file behind
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{database}{suffix}").unlink(missing_ok=True)
        raise
    db.close()
    click.echo(f"restored snapshot {manifest.snapshot_id} into {database}")


def _synced_tables(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
    """(table, rows, dirty rows) for every table that carries replicator's sync columns."""
    from ..snapshots.restore import synced_tables

    out = []
    for name in synced_tables(conn):
        (rows,) = conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()
        (dirty,) = conn.execute(f'SELECT COUNT(*) FROM "{name}" WHERE "isDirty" = 1').fetchone()
        out.append((name, rows, dirty))
    return out


# -- the event outbox --------------------------------------------------------------------


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _open_outbox(path: Path) -> Any:
    from ..outbox import Outbox

    return Outbox(path)


_outbox_file = click.argument(
    "events", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


@main.group()
def outbox() -> None:
    """Inspect and drive an event outbox file (seed 000)."""


@outbox.command("status")
@_outbox_file
def outbox_status(events: Path) -> None:
    """Per type: events not yet delivered, messages, dead letters, drops, last
    success, last error and next attempt."""
    box = _open_outbox(events)
    try:
        rows = box.status()
    finally:
        box.close()
    if not rows:
        click.echo("no types configured and no events")
        return
    click.echo(
        f"{'type':<20} {'pending':>8} {'bytes':>10} {'messages':>8} {'dead':>5} {'dropped':>7}"
        f"  {'last success':<20}  {'next attempt':<20}  last error"
    )
    for s in rows.values():
        name = s.type if s.configured else f"{s.type} (not configured)"
        click.echo(
            f"{name:<20} {s.pending_events:>8} {s.pending_bytes:>10} {s.messages:>8}"
            f" {s.dead_letters:>5} {s.dropped:>7}  {_when(s.last_success):<20}"
            f"  {_when(s.next_attempt):<20}  {s.last_error or '-'}"
        )


@outbox.command("sync")
@_outbox_file
@click.option("--type", "types", multiple=True, help="Sync only this type (repeatable).")
def outbox_sync(events: Path, types: tuple[str, ...]) -> None:
    """Deliver now, with the configurations the app stored in the file."""
    box = _open_outbox(events)
    try:
        chosen = list(types) or sorted(box.configurations)
        if not chosen:
            raise click.ClickException(
                f"{events} holds no configurations; the app's outbox.init() stores them"
            )
        for name in chosen:
            report = box.sync(name)
            click.echo(
                f"{name}: sent {report.events_sent} event(s) in {report.messages_sent}"
                f" message(s), {report.bytes_sent} byte(s); {report.dead_lettered}"
                f" dead-lettered; {report.pending_events} left"
            )
    finally:
        box.close()


@outbox.command("dead-letters")
@_outbox_file
@click.option("--type", "type_", default=None, help="Only this type.")
def outbox_dead_letters(events: Path, type_: str | None) -> None:
    """List the messages a receiver refused, with its status and answer."""
    box = _open_outbox(events)
    try:
        letters = box.dead_letters(type_)
    finally:
        box.close()
    if not letters:
        click.echo("no dead letters")
    for d in letters:
        answer = " ".join(d.response.split())[:120]
        click.echo(
            f"{d.msg_id}  {d.type}  {d.event_count} event(s)  HTTP {d.status}"
            f"  {_when(d.failed_at)}  {answer}"
        )


@outbox.command("requeue")
@_outbox_file
@click.option("--type", "type_", default=None, help="Only dead letters of this type.")
@click.option("--msg-id", "msg_ids", multiple=True, help="Only this message (repeatable).")
def outbox_requeue(events: Path, type_: str | None, msg_ids: tuple[str, ...]) -> None:
    """Put dead letters back in line (same msg_id) once their cause is fixed."""
    box = _open_outbox(events)
    try:
        moved = box.requeue(type_, list(msg_ids) or None)
    finally:
        box.close()
    click.echo(f"{moved} message(s) back in line")
