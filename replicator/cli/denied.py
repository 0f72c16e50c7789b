"""``replicator denied``: the writes the remote's security rules refused, set aside.

``list`` and ``export`` only read; ``retry`` makes the next sync send the rows
again (after the rules or the user's rights changed); ``discard`` gives the
writes up, each row taking the remote's version back (export them first).
Every command opens the device its config file describes and closes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .app import config_option, main
from .shapes import emit, json_option


@contextmanager
def _device(config_path: Path) -> Iterator[Any]:
    from .config import DeviceConfig

    device = DeviceConfig.load(config_path).replicator()
    try:
        yield device
    finally:
        device.database.close()


def _model(device: Any, collection: str | None) -> Any:
    if collection is None:
        return None
    for model in device.models:
        if model._meta.table_name == collection:
            return model
    names = ", ".join(m._meta.table_name for m in device.models)
    raise click.ClickException(f"no synced collection {collection!r} (one of: {names})")


_collection = click.option("--collection", help="Only the rows of this collection.")
_ids = click.option("--id", "ids", multiple=True, help="Only this row (repeat for more).")


@main.group()
def denied() -> None:
    """Writes the remote's security rules refused: list, export, retry, discard."""


@denied.command("list")
@config_option
@json_option
def denied_list(config_path: Path, as_json: bool) -> None:
    """Each write set aside: collection, id, when, why."""
    with _device(config_path) as device:
        rows = device.denied_rows()
    if as_json:
        emit([r.as_json() for r in rows])
        return
    if not rows:
        click.echo("no write is set aside")
    for r in rows:
        kind = "delete of " if r.delete else ""
        click.echo(f"{kind}{r.collection}/{r.id}  refused {r.denied_on}: {r.reason}")


@denied.command("export")
@config_option
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
def denied_export(config_path: Path, out: str) -> None:
    """Write every write set aside, with the row's values, as JSON lines to OUT
    (- for standard output)."""
    with _device(config_path) as device:
        n = device.export_denied(out)
    if out != "-":
        click.echo(f"exported {n} row(s) set aside to {out}", err=True)


def _act(
    verb: str, call: Callable[[Any], Callable[..., int]]
) -> Callable[[Path, str | None, tuple[str, ...]], None]:
    def run(config_path: Path, collection: str | None, ids: tuple[str, ...]) -> None:
        with _device(config_path) as device:
            n = call(device)(_model(device, collection), list(ids) or None)
        click.echo(f"{verb} {n} write(s) set aside")

    return run


denied.command("retry", help="Send the writes set aside again at the next sync.")(
    config_option(_collection(_ids(_act("will retry", lambda d: d.retry_denied))))
)
denied.command(
    "discard",
    help="Give the writes set aside up: each row takes the remote's version back.",
)(config_option(_collection(_ids(_act("discarded", lambda d: d.discard_denied)))))
