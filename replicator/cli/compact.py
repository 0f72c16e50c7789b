"""``replicator compact``: purge remote tombstones older than the retention.

It names exactly one remote (an EmbeddedRemote file or a Firestore root) and
never creates one. A purge raises the collection's horizon with it, so a device
offline for longer than the retention notices at its next sync and downloads
the affected collections again, keeping its own unsynced work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .app import guard, main


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

    Devices offline for longer than --older-than-days notice at their next
    sync, download the affected collections again and keep their own unsynced
    work. Use the retention the apps pass to Replicator(tombstone_retention=...)
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
        from ..stores.firestore import FirestoreRemote
        from .config import firestore_client

        remote = FirestoreRemote(firestore_client(firestore_project), str(firestore_root))
    held = guard(remote.collections)
    unknown = [c for c in collections if c not in held]
    if unknown:
        raise click.BadParameter(
            f"the remote holds no collection {', '.join(map(repr, unknown))}"
            f" (it holds: {', '.join(sorted(held)) or 'none'})",
            param_hint="--collection",
        )
    names = list(collections) or held
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=older_than_days)

    def tell(coll: str, done: int) -> None:
        click.echo(f"  {coll}: {done} purged so far", err=True)

    purged = guard(lambda: purge(remote, names, before, on_purged=tell))
    for coll in names:
        click.echo(f"{coll}: {purged.get(coll, 0)} tombstone(s) purged")
    click.echo(f"older than {before.isoformat(timespec='seconds')}; horizons raised accordingly")
