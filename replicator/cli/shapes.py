"""What ``--json`` prints: one JSON document on stdout per command, of a stable shape.

The shapes are documented in ``docs/guides/cli-for-scripts.md`` and kept by its tests
(``tests/cli/test_json.py``): keys are only ever added, never renamed or removed.
Times are ISO 8601 in UTC (``2026-11-23T09:45:38Z``) or null; a value a store
records as a position rather than a time (the embedded store's upload position, a
change number) is given as it is recorded, as text. A failing command prints
``{"error": {"kind", "message", "hint", "retryable"}}`` on stdout too (its one line
goes to stderr as always) and exits 1.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..report import SyncReport
    from ..snapshots.manifest import Manifest
    from ..stores.base import BlobInfo, DeviceRecord
    from ..tables import Recorded

#: ``ctx.meta`` key: the command asked for JSON
JSON = "replicator.json"


def _asked(ctx: click.Context, _: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[JSON] = True
    return value


#: the ``--json`` option of the commands that print a result
json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    callback=_asked,
    expose_value=True,
    help="Print the result as one JSON document on stdout (docs/guides/cli-for-scripts.md).",
)


def emit(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def iso(value: str | _dt.datetime | None) -> str | None:
    """A recorded time as ISO 8601 UTC with ``Z``; text that is no time as it is."""
    if value is None or value == "":
        return None
    when = value
    if isinstance(when, str):
        if when.isdigit():
            return when
        try:
            when = _dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            return value if isinstance(value, str) else None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_shape(exc: BaseException) -> dict[str, Any]:
    """A library error by its kind; a mistake the command found itself (a missing file,
    a bad option value) is a ``CommandError``."""
    kind = "CommandError" if isinstance(exc, click.ClickException) else type(exc).__name__
    return {
        "error": {
            "kind": kind,
            "message": str(getattr(exc, "message", exc)),
            "hint": getattr(exc, "hint", ""),
            "retryable": bool(getattr(exc, "retryable", False)),
        }
    }


def _reasons(rows: Sequence[tuple[str, str, str]]) -> list[dict[str, str]]:
    return [{"collection": c, "id": i, "reason": why} for c, i, why in rows]


def status_shape(
    recorded: Recorded, tables: Sequence[tuple[str, int, int]], device: Mapping[str, Any]
) -> dict[str, Any]:
    """``replicator status --json``."""
    tombs = recorded.pending_deletes
    collections: list[dict[str, Any]] = [
        {
            "name": table,
            "rows": rows,
            "dirty": dirty,
            "deletes": tombs.get(table, 0),
            "downloaded_till": recorded.trackers.get(table),
        }
        for table, rows, dirty in tables
    ]
    return {
        "device": {
            "name": device.get("name"),
            "platform": device.get("platform"),
            "installation_id": device.get("installation_id"),
        },
        "last_sync": iso(device.get("last_sync")),
        "last_upload": iso(device.get("last_upload")),
        "caught_up_to": device.get("seen_position"),
        "snapshot": device.get("last_snapshot"),
        "pending": sum(dirty + tombs.get(table, 0) for table, _, dirty in tables),
        "collections": collections,
        "bundles_waiting": recorded.bundles,
        "refused": dict(sorted(recorded.refused.items())),
        "rejected": _reasons(recorded.rejected),
        "rejected_total": recorded.rejected_total,
        "set_aside": _reasons(recorded.set_aside),
        "set_aside_total": recorded.set_aside_total,
        "denied": _reasons(recorded.denied),
        "denied_total": recorded.denied_total,
    }


def device_shape(d: DeviceRecord) -> dict[str, Any]:
    """One element of ``replicator devices --json``."""
    return {
        "installation_id": d.installation_id,
        "name": d.name,
        "platform": d.platform,
        "app_version": d.app_version,
        "last_sync": iso(d.last_sync),
        "last_upload": iso(d.last_upload),
        "snapshot_generation": d.snapshot_generation,
    }


def _errors(rows: Sequence[Any]) -> list[dict[str, str]]:
    return [
        {"collection": e.collection, "id": e.id, "reason": f"{type(e.error).__name__}: {e.error}"}
        for e in rows
    ]


def report_shape(report: SyncReport, *, login: bool) -> dict[str, Any]:
    """``replicator sync --json``."""
    u = report.usage
    return {
        "installation_id": report.installation_id,
        "login": login,
        "started_at": iso(report.started_at),
        "finished_at": iso(report.finished_at),
        "idle": report.idle,
        "summary": report.summary(),
        "downloaded": dict(report.downloaded),
        "deleted": dict(report.deleted),
        "uploaded": dict(report.uploaded),
        "uploaded_deletes": dict(report.uploaded_deletes),
        "conflicts": [
            {"collection": r.collection, "id": r.id, "outcome": r.outcome, "strategy": r.strategy}
            for r in report.conflicts
        ],
        "rejected": _errors(report.rejected),
        "set_aside": _errors(report.set_aside),
        "denied": _errors(report.denied),
        "restored": report.restored,
        "snapshot": report.snapshot,
        "snapshot_error": None if report.snapshot_error is None else str(report.snapshot_error),
        "bundled": dict(report.bundled),
        "bundles_waiting": report.bundles_waiting,
        "usage": {
            "reads": u.reads,
            "writes": u.writes,
            "bytes_read": u.bytes_read,
            "bytes_written": u.bytes_written,
        },
    }


def snapshots_shape(
    objects: Sequence[BlobInfo], manifest: Manifest | None, *, authenticated: bool
) -> dict[str, Any]:
    """``replicator snapshot list --json``."""
    latest = None if manifest is None else manifest.snapshot_id
    snapshots = []
    for info in reversed(objects):
        sid = info.key.split("/")[-1][: -len(".snap")]
        snapshots.append(
            {"id": sid, "size": info.size, "sha256": info.sha256, "latest": sid == latest}
        )
    shape: dict[str, Any] = {"snapshots": snapshots, "manifest": None}
    if manifest is not None:
        shape["manifest"] = {
            "snapshot_id": manifest.snapshot_id,
            "device_name": manifest.device_name,
            "created": iso(manifest.created),
            "generation": manifest.generation,
            "authenticated": authenticated,
            "watermarks": dict(sorted(manifest.watermarks.items())),
        }
    return shape
