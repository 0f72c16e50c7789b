"""What an idle sync costs a user in 1, 10 and 100 scopes (``ScopedReplicator``).

On the Firestore emulator, under the rules ``replicator rules --scopes`` compiles
(``scoped_rules``), behind a TokenGate (which refuses the emulator's admin token, so
the device provably acts as its signed-in user). For each N of ``--scopes``, in a
project of its own:

* a server (an admin client, past the gate) makes N campaign scopes, the user a
  collector of each (``member_document``), and ``--rows`` forms in each (uploaded by
  a server Replicator, so every scope has a Devices record with an upload);
* the user's device (``ScopedReplicator.for_user``, a sign-in session of unsigned
  emulator tokens) syncs a first time, gaining the N scopes: timed, not in the ratio;
* then idle syncs are measured: reads per idle sync, split into the discovery (one
  collection-group query, a read per scope) and the scopes' own (one Devices query
  each, ``uploads_after``), the gRPC calls the gate forwarded, and the wall time;
* against the raw work in the same run: the same reads made with a
  google-cloud-firestore client acting as the same user (``UserClient``, a
  ``firestore.Client``): the collection-group query, then per scope the Devices query
  the engine makes. Both are warmed, the order alternates run by run, ``--runs``
  runs of ``--repeat`` idle syncs each; min and median of the time per sync are
  printed, and of the ratio engine / raw per run.

usage: python bench/bench_scopes.py [--scopes 1,10,100] [--rows 5] [--runs 3] [--repeat 5]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import peewee

from replicator import Replicator, SyncModel
from replicator.scopes import ScopeKind, Scopes, scoped_rules
from replicator.scopes.device import ScopedReplicator
from replicator.scopes.members import member_document
from replicator.testing import FirestoreEmulator, MockIdTokens, find_jar

USER = "collector-1"


class Registration(SyncModel):
    """A household a collector registered; ``collector`` is their uid."""

    head = peewee.TextField()
    collector = peewee.TextField()

    class Meta:
        table_name = "registrations"


class Form(SyncModel):
    """Reference data of a campaign: its members read it."""

    name = peewee.TextField()
    version = peewee.IntegerField(default=1)

    class Meta:
        table_name = "forms"


MODELS = [Registration, Form]
SCOPES = Scopes(
    [
        ScopeKind(
            "campaign",
            roles=["collector", "admin"],
            admins=["admin"],
            tables={
                "registrations": {
                    "collector": "read create update:own delete:own",
                    "admin": "read create update delete",
                },
                "forms": {"*": "read"},
            },
        )
    ],
    owners={"registrations": "collector"},
)


@attrs.define
class Project:
    """One project of the emulator under the scoped rules: its admin client (past the
    gate) and the gate counting the user's calls."""

    name: str
    emulator: Any
    gate: Any
    folder: Path

    @property
    def admin(self) -> Any:
        from google.cloud import firestore

        with _host(self.emulator.host):
            return firestore.Client(project=self.name)


@contextmanager
def _host(host: str) -> Iterator[None]:
    before = os.environ["FIRESTORE_EMULATOR_HOST"]
    os.environ["FIRESTORE_EMULATOR_HOST"] = host
    try:
        yield
    finally:
        os.environ["FIRESTORE_EMULATOR_HOST"] = before


def make_scopes(project: Project, n: int, rows: int) -> list[str]:
    """N campaigns with the user a collector of each and ``rows`` forms in each."""
    from replicator.stores.firestore import FirestoreRemote

    admin = project.admin
    names = [f"campaign-{i:03d}" for i in range(n)]
    for scope in names:
        admin.document(f"scopes/{scope}").set({"kind": "campaign"})
        admin.document(f"scopes/{scope}/members/{USER}").set(
            member_document(USER, "campaign", "collector")
        )
        db = peewee.SqliteDatabase(str(project.folder / f"server-{scope}.db"))
        server = Replicator(
            db, [Form], FirestoreRemote(admin, f"scopes/{scope}"), device_name="server"
        )
        with server.bound(), db.atomic():
            for r in range(rows):
                Form.create(name=f"form {r}")
        server.sync()
        db.close()
    return names


def device(project: Project, tokens: Any, n: int) -> ScopedReplicator:
    """The user's device; ``max_scopes`` raised to N (the default, 50, leaves the rest
    out: a device of a user in 100 scopes syncs 50 unless told otherwise)."""
    return ScopedReplicator.for_user(
        project.folder / "device", MODELS, SCOPES, tokens, project.name,
        device_name="phone", max_scopes=max(n, 50),
    )  # fmt: skip


class Raw:
    """The idle sync's reads with the raw client, as the same user: the discovery
    query, then each scope's Devices query from the last upload it saw less the
    engine's settle window, selecting ``lastUpload`` (what ``uploads_after`` asks)."""

    def __init__(self, client: Any, settle: float = 2.0) -> None:
        self.client = client
        self.settle = _dt.timedelta(seconds=settle)
        self.since: dict[str, _dt.datetime] = {}

    def read(self) -> int:
        from google.cloud import firestore

        members = list(
            self.client.collection_group("members")
            .where(filter=firestore.FieldFilter("uid", "==", USER))
            .stream()
        )
        reads = max(1, len(members))
        for snap in members:
            scope = snap.reference.parent.parent.id
            since = self.since.get(scope, _dt.datetime(1970, 1, 2, tzinfo=_dt.timezone.utc))
            query = (
                self.client.collection(f"scopes/{scope}/devices")
                .where(filter=firestore.FieldFilter("lastUpload", ">=", since - self.settle))
                .select(["lastUpload"])
            )
            uploads = [s.get("lastUpload") for s in query.stream()]
            reads += max(1, len(uploads))
            if uploads:
                self.since[scope] = max(uploads)
        return reads


@attrs.define
class Figures:
    """One N's measurements."""

    scopes: int
    first: float
    discovery: int
    scope_reads: int
    writes: int
    calls: int
    raw_reads: int
    engine: list[float]
    raw: list[float]

    @property
    def ratios(self) -> list[float]:
        return [e / r for e, r in zip(self.engine, self.raw, strict=True)]


def idle_sync(phone: ScopedReplicator, n: int) -> Any:
    report = phone.sync()
    if report.failed or not report.idle or len(report.reports) != n:
        raise SystemExit(
            f"an idle sync of {n} scopes was not idle: failed {dict(report.failed)},"
            f" added {report.added}, removed {report.removed},"
            f" not idle {[s for s, r in report.reports.items() if not r.idle]}"
        )
    return report


def measure(project: Project, n: int, rows: int, runs: int, repeat: int) -> Figures:
    from replicator.stores.firestore_user import UserClient

    make_scopes(project, n, rows)
    tokens = MockIdTokens(USER, project.name)
    phone = device(project, tokens, n)
    started = time.perf_counter()
    first = phone.sync()
    first_time = time.perf_counter() - started
    if first.failed or len(first.added) != n:
        raise SystemExit(f"the first sync gained {len(first.added)} of {n}: {first.failed}")
    raw = Raw(UserClient(tokens, project.name))
    raw.read()  # warm both
    idle_sync(phone, n)
    calls = project.gate.calls
    report = idle_sync(phone, n)
    calls = project.gate.calls - calls
    raw_reads = raw.read()
    engine_times: list[float] = []
    raw_times: list[float] = []
    for run in range(runs):
        for side in ("engine", "raw") if run % 2 == 0 else ("raw", "engine"):
            started = time.perf_counter()
            for _ in range(repeat):
                if side == "engine":
                    idle_sync(phone, n)
                else:
                    raw.read()
            took = (time.perf_counter() - started) / repeat
            (engine_times if side == "engine" else raw_times).append(took)
    phone.close()
    scope_reads = report.reads - report.discovery_reads
    writes = sum(r.usage.writes for r in report.reports.values())
    return Figures(
        n, first_time, report.discovery_reads, scope_reads, writes, calls, raw_reads,
        engine_times, raw_times,
    )  # fmt: skip


def _ms(values: list[float]) -> str:
    return f"{min(values) * 1000:.1f} / {statistics.median(values) * 1000:.1f} ms"


def print_table(figures: list[Figures], args: Any) -> None:
    print(
        f"Firestore emulator under the scoped rules, as a signed-in user through the"
        f" TokenGate; {args.rows} rows a scope; {args.runs} alternating runs of"
        f" {args.repeat} idle syncs (time per sync, min / median)\n"
    )
    print("| scopes | reads per idle sync (discovery + scopes) | engine time | raw time | ratio |")
    print("|---:|---|---:|---:|---:|")
    for f in figures:
        print(
            f"| {f.scopes} | {f.discovery + f.scope_reads} ({f.discovery} + {f.scope_reads})"
            f" | {_ms(f.engine)} | {_ms(f.raw)}"
            f" | {min(f.ratios):.2f} / {statistics.median(f.ratios):.2f} |"
        )
    print()
    for f in figures:
        print(
            f"{f.scopes} scopes: idle sync {f.discovery + f.scope_reads} reads"
            f" ({(f.discovery + f.scope_reads) / f.scopes:.1f} per scope; raw client"
            f" {f.raw_reads}), {f.writes} writes, {f.calls} gRPC calls;"
            f" first sync (gaining {f.scopes}) {f.first:.2f} s,"
            f" {f.first / f.scopes * 1000:.0f} ms per scope"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scopes", default="1,10,100")
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5, help="idle syncs timed per run")
    args = parser.parse_args()
    sizes = [int(s) for s in args.scopes.split(",") if s.strip()]
    jar = find_jar()
    if jar is None:
        raise SystemExit("the Firestore emulator is not installed")
    from replicator.testing import TokenGate

    emulator = FirestoreEmulator(jar).start()
    gate = TokenGate(emulator.host).start()
    os.environ["FIRESTORE_EMULATOR_HOST"] = gate.host
    try:
        figures = []
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                name = f"demo-scopes-{uuid.uuid4().hex[:10]}"
                emulator.load_rules(name, scoped_rules(MODELS, SCOPES).rules)
                folder = Path(tmp) / name
                folder.mkdir()
                project = Project(name, emulator, gate, folder)
                figures.append(measure(project, n, args.rows, args.runs, args.repeat))
        if gate.refused or set(gate.users) != {USER}:
            raise SystemExit(f"refused: {dict(gate.refused)}; callers: {dict(gate.users)}")
        print_table(figures, args)
    finally:
        gate.stop()
        emulator.stop()


if __name__ == "__main__":
    main()
