"""``replicator rules``: write the Firestore security rules and indexes for the models.

The files come from :func:`replicator.scopes.rules.firestore_rules`, a pure
function of the models and the options; ``--check`` compares instead of
writing, so CI can fail when the models changed and the rules did not.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from .app import main

RULES_FILE = "firestore.rules"
INDEXES_FILE = "firestore.indexes.json"


@main.command()
@click.option(
    "--models",
    "models_spec",
    required=True,
    help="The models module, as in replicator.toml: 'module' (its SyncModel classes)"
    " or 'module:NAME' (a list); imported with the current directory on the path.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="The folder to write firestore.rules and firestore.indexes.json in.",
)
@click.option(
    "--download-only",
    multiple=True,
    help="A table devices only download (reference data): read-only. Repeatable.",
)
@click.option(
    "--upload-only",
    multiple=True,
    help="A table devices send as bundles: the ingest service's, no device access. Repeatable.",
)
@click.option(
    "--ingest-queue",
    is_flag=True,
    help="Let devices create their requests in ingest_requests (bundles with ingest_queue).",
)
@click.option(
    "--retention-days",
    type=click.FloatRange(min=0, min_open=True),
    default=90.0,
    show_default=True,
    help="The apps' tombstone retention: only tombstones older than this may be deleted.",
)
@click.option(
    "--keep-tombstones",
    is_flag=True,
    help="The apps keep tombstones for ever (tombstone_retention=None): no delete at all.",
)
@click.option(
    "--scopes",
    "scopes_spec",
    default=None,
    help="The app's scopes, 'module:NAME' (a replicator.scopes.Scopes): also write the"
    " rules of scopes/{scopeId}, from its roles and grants.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; fail if the files in --out differ from what the models make.",
)
def rules(
    models_spec: str,
    out: Path,
    download_only: tuple[str, ...],
    upload_only: tuple[str, ...],
    ingest_queue: bool,
    retention_days: float,
    keep_tombstones: bool,
    scopes_spec: str | None,
    check: bool,
) -> None:
    """Write the Firestore security rules and indexes for the synced models.

    A signed-in user reads and writes only their own users/{uid}: each synced
    collection takes only its model's columns and the sync fields, changedAt
    must be the request's time, the writer must be a device of that user, and
    deletes travel as tombstones. With --scopes, the scopes the app declares
    (scopes/{scopeId}, their members and each role's grants) too. Deploy them with
    firebase deploy --only firestore:rules,firestore:indexes.
    """
    from ..scopes import Scopes, firestore_rules, scoped_rules
    from .config import import_models, import_object

    models = import_models(models_spec, Path.cwd(), "--models")
    retention = None if keep_tombstones else dt.timedelta(days=retention_days)
    options = {
        "download_only": download_only,
        "upload_only": upload_only,
        "ingest_queue": ingest_queue,
        "retention": retention,
        "source": models_spec,
    }
    if scopes_spec is None:
        made = firestore_rules(models, **options)  # type: ignore[arg-type]
    else:
        scopes = import_object(scopes_spec, Path.cwd(), "--scopes")
        if not isinstance(scopes, Scopes):
            raise click.ClickException(f"--scopes {scopes_spec} is not a Scopes declaration")
        made = scoped_rules(models, scopes, **options)  # type: ignore[arg-type]
    files = {out / RULES_FILE: made.rules, out / INDEXES_FILE: made.indexes}
    if check:
        stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
        if stale:
            raise click.ClickException(
                f"{', '.join(map(str, stale))} not what {models_spec} makes now:"
                " run replicator rules without --check, then deploy"
            )
        click.echo(f"{RULES_FILE} and {INDEXES_FILE} in {out} are current")
        return
    if not out.is_dir():
        raise click.ClickException(f"the folder {out} does not exist")
    for path, text in files.items():
        path.write_text(text)
    names = ", ".join(m._meta.table_name for m in models)
    click.echo(f"wrote {out / RULES_FILE} and {out / INDEXES_FILE} for {names}")
    click.echo("deploy: firebase deploy --only firestore:rules,firestore:indexes", err=True)
