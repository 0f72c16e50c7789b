"""``replicator snapshot``: publish, list, verify and restore encrypted snapshots.

The list, verify and restore commands name the blob store (``--blobs DIR`` or
``--s3 BUCKET[/PREFIX]``, exactly one) and the key (``--key-file`` or
``--passphrase-env``, else a prompt) with the same options, gathered into one
:class:`_Source`. A key file's bytes are taken as they are: a raw key is never
stripped of what looks like whitespace. ``restore`` never writes over unsynced
changes, and a failed restore into a new file leaves no file behind.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click

from .app import ProgressLine, config_option, guard, main, synced_tables
from .shapes import emit, json_option, snapshots_shape

if TYPE_CHECKING:
    from ..snapshots.crypto import SnapshotSecret
    from ..snapshots.manifest import Manifest
    from ..stores.base import BlobStore


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
        if value is None:
            raise click.ClickException(
                f"${passphrase_env} is not set; export the snapshot passphrase in it"
            )
        if not value:
            raise click.ClickException(f"${passphrase_env} is empty; it must hold the passphrase")
        return Passphrase(value)
    if not sys.stdin.isatty():  # nobody to ask: getpass would only warn and read stdin
        raise click.ClickException(
            "no key given and no terminal to ask for the passphrase: pass --key-file FILE"
            " or --passphrase-env VAR"
        )
    return Passphrase(click.prompt("Snapshot passphrase", hide_input=True))


def parse_key_file(data: bytes, path: object = "the key file") -> bytes:
    """The 32-byte key in a key file (see :func:`replicator.snapshots.crypto.key_from_file`)."""
    from ..errors import ConfigurationError
    from ..snapshots.crypto import key_from_file

    try:
        return key_from_file(data, path)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def snapshot() -> None:
    """List, verify and restore encrypted snapshots."""


@snapshot.command("publish")
@config_option
def snapshot_publish(config_path: Path) -> None:
    """Sync the device a config file describes, then publish a snapshot of it now,
    whatever the Big Brother rule says (it still refuses while rows stay unsynced)."""
    from ..strategies.snapshot import Always
    from .config import DeviceConfig

    config = DeviceConfig.load(config_path)
    if config.blobs is None:
        raise click.ClickException(f"{config_path} names no [blobs] store to publish to")
    line = ProgressLine()
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
@json_option
def snapshot_list(source: _Source, as_json: bool) -> None:
    """The snapshots in the blob store, the latest marked with *."""
    from ..snapshots.manifest import read_manifest

    store = source.store()
    kek = None
    if source.key_file is not None or source.passphrase_env:
        from ..snapshots.manifest import resolve_key

        kek = guard(lambda: resolve_key(store, source.key(), create=False)[0])
    manifest = guard(lambda: read_manifest(store, kek))
    objects = guard(lambda: [i for i in store.list("snapshots/") if i.key.endswith(".snap")])
    if as_json:
        emit(snapshots_shape(objects, manifest, authenticated=kek is not None))
        return
    if not objects:
        click.echo("no snapshots yet")
        return
    for info in reversed(objects):
        sid = info.key.split("/")[-1][: -len(".snap")]
        mark = "*" if manifest and sid == manifest.snapshot_id else " "
        click.echo(f"{mark} {sid}  {readable_size(info.size):>10}  sha256 {info.sha256[:16]}")
    if manifest:
        checked = "authenticated" if kek is not None else "not checked: give the key to check it"
        click.echo(
            f"latest by {manifest.device_name or '?'} at {manifest.created},"
            f" generation {manifest.generation} (manifest {checked})"
        )
        for coll, cursor in sorted(manifest.watermarks.items()):
            click.echo(f"  {coll:<20} {cursor}")


def readable_size(size: int) -> str:
    """``812 B``, ``172.4 KiB``, ``36.0 MiB``: a byte count a person reads at a glance."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _fetch(store: BlobStore, key: SnapshotSecret, dest: Path) -> Manifest:
    from ..snapshots.fetch import fetch_and_decrypt, open_latest

    manifest: Manifest
    manifest, _kek, _kdf = guard(lambda: open_latest(store, key))
    with click.progressbar(length=manifest.size, label="downloading", file=sys.stderr) as bar:
        guard(lambda: fetch_and_decrypt(store, manifest, key, dest, on_bytes=bar.update))
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
        counts = {table: rows for table, rows, _ in synced_tables(conn)}
        conn.close()
    click.echo(
        f"snapshot {manifest.snapshot_id} is intact: "
        + ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))
    )


def _prepare(db: Any, source: _Source, *, force: bool, snapshot_id: str | None) -> Any:
    """The restore decided on; a refusal that ``--force`` would lift says so in CLI words."""
    from ..errors import UnsafeRestoreError
    from ..snapshots.restore import prepare

    try:
        return prepare(db, source.store(), source.key(), force=force, snapshot_id=snapshot_id)
    except UnsafeRestoreError as exc:
        if exc.forceable:
            raise UnsafeRestoreError(
                exc.message, hint="add --force to replace it with the snapshot"
            ) from exc
        raise


@snapshot.command("restore")
@click.argument("database", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace synced data the database already holds.")
@click.option(
    "--id",
    "snapshot_id",
    default=None,
    help="Restore this older snapshot (one replicator snapshot list shows) instead of the latest.",
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
    from ..cipher.keyfiles import cli_database

    database = database.absolute()
    if not database.parent.is_dir():
        raise click.ClickException(f"the directory {database.parent} does not exist")
    existed = database.exists()
    # encrypted when $REPLICATOR_DATABASE_KEY_FILE or $REPLICATOR_DATABASE_PASSPHRASE says
    db = cli_database(database)
    try:
        job = guard(lambda: _prepare(db, source, force=force, snapshot_id=snapshot_id))
        manifest = job.manifest
        with click.progressbar(length=manifest.size, label="downloading", file=sys.stderr) as bar:
            guard(lambda: job.run(on_bytes=bar.update))
    except BaseException:
        db.close()
        if not existed:  # a failed restore into a new file leaves no file behind
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{database}{suffix}").unlink(missing_ok=True)
        raise
    db.close()
    click.echo(f"restored snapshot {manifest.snapshot_id} into {database}")
