"""``replicator outbox``: inspect and drive an event outbox file.

The commands open the file with the configurations the app stored in it (they
take none of their own) and always close it, also when a delivery fails.
``requeue`` puts dead letters back in line with their own ``msg_id``, so a
receiver that deduplicates still takes each message once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .app import main


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
    """Inspect and drive an event outbox file."""


@outbox.command("status")
@_outbox_file
def outbox_status(events: Path) -> None:
    """Per type: events not yet delivered, messages, dead letters, drops, last
    success, last error and next attempt."""
    from ..outbox.status import read_status

    rows = read_status(events)  # read-only: looking never changes the file
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
    """List the messages a receiver refused, with its status and answer (or the
    sink's error, for a message whose sink failed too often)."""
    box = _open_outbox(events)
    try:
        letters = box.dead_letters(type_)
    finally:
        box.close()
    if not letters:
        click.echo("no dead letters")
    for d in letters:
        answer = " ".join(d.response.split())[:120]
        refusal = f"HTTP {d.status}" if d.status else "sink failed"
        click.echo(
            f"{d.msg_id}  {d.type}  {d.event_count} event(s)  {refusal}"
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
        if msg_ids:  # each one named must be a dead letter (of the type), or nothing moves
            known = {d.msg_id for d in box.dead_letters(type_)}
            unknown = [m for m in msg_ids if m not in known]
            if unknown:
                of_type = f" of type {type_}" if type_ else ""
                raise click.ClickException(
                    f"no dead letter{of_type} has the msg_id {', '.join(unknown)}; nothing"
                    f" requeued (replicator outbox dead-letters {events} lists them)"
                )
        moved = box.requeue(type_, list(msg_ids) or None)
    finally:
        box.close()
    click.echo(f"{moved} message(s) back in line")
