"""Seed 001's field campaign, end to end: the whole sequence diagram on one machine.

* The **campaign service** publishes form schemas, localizations, SOS contacts and
  dashboard aggregates (download-only reference data), map tiles and routing data
  for each boundary (reference files in a bucket), and runs an ``Ingestor`` that
  takes checksummed bundles over HTTP.
* A **data collector** logs in for the first time: the reference data and the
  boundary's tiles and routes download in parallel. Offline for days, she registers
  households; a sync attempted without a network fails fast and changes nothing.
  Back online, her manual sync compiles the unsynced entries into a bundle,
  checksums it, puts it in the storage bucket, sends its URL and checksum to the
  service, and marks the entries synced only once the service verified them.
* A **supervisor** sees the registrations by an ordinary sync.

Run: .venv/bin/python examples/field_campaign.py [DIRECTORY]
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tempfile
import threading
from pathlib import Path

import peewee

from replicator import (
    Bundles,
    DirectoryBlobStore,
    EmbeddedRemote,
    HttpIngest,
    Ingestor,
    OfflineError,
    ReferenceFiles,
    Replicator,
    SyncModel,
    localizations,
)
from replicator.reference.files import FILES_FORMAT
from replicator.testing import FaultyRemote


class Household(SyncModel):
    """A registration, made offline with a client-side UUID (upload-only)."""

    head = peewee.TextField()
    members = peewee.IntegerField()
    village = peewee.TextField()


class FormSchema(SyncModel):
    form = peewee.TextField()
    version = peewee.IntegerField()
    schema = peewee.TextField()


class Localization(SyncModel):
    form = peewee.TextField()
    language = peewee.TextField()
    strings = peewee.TextField()  # a JSON object: field key -> text


class Contact(SyncModel):
    """Static SOS contact information."""

    name = peewee.TextField()
    phone = peewee.TextField()


class Aggregate(SyncModel):
    """A data point of the dashboards, computed by the service."""

    metric = peewee.TextField()
    value = peewee.FloatField()


MODELS = [Household, FormSchema, Localization, Contact, Aggregate]
REFERENCE = [FormSchema, Localization, Contact, Aggregate]


def device(place: Path, name: str, remote: object, **kw: object) -> Replicator:
    db = peewee.SqliteDatabase(str(place / f"{name}.db"), pragmas={"foreign_keys": 1})
    return Replicator(db, MODELS, remote, device_name=name, **kw)  # type: ignore[arg-type]


def publish_files(bucket: DirectoryBlobStore, boundary: str, files: dict[str, bytes]) -> None:
    """The tile and routing servers' side: files and a manifest of sizes and SHA-256."""
    entries = []
    for path, data in files.items():
        bucket.put(f"reference/{boundary}/files/{path}", io.BytesIO(data))
        entries.append(
            {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )
    manifest = {"format": FILES_FORMAT, "boundary": boundary, "files": entries}
    bucket.put(f"reference/{boundary}/manifest.json", io.BytesIO(json.dumps(manifest).encode()))


def tiles_for(boundary: str, n: int) -> dict[str, bytes]:
    files = {f"tiles/14/{boundary}/{i}.png": f"{boundary} tile {i}".encode() * 40 for i in range(n)}
    files["routing/graph.bin"] = b"shared road graph" * 500
    return files


def main(place: Path) -> None:
    # each party opens the campaign's remote and bucket itself (its own connection)
    def remote() -> EmbeddedRemote:
        return EmbeddedRemote(place / "campaign-remote.db")

    bucket = DirectoryBlobStore(place / "storage-bucket")

    # -- the campaign service: reference data, files, and the ingestor ----------------------
    service = device(place, "service", remote())
    with service.bound():
        FormSchema.create(form="household", version=1, schema='{"fields": ["head", "members"]}')
        Localization.create(
            form="household",
            language="pt",
            strings=json.dumps({"head": "Chefe do agregado", "members": "Membros"}),
        )
        Contact.create(name="District health office", phone="+258 21 000 000")
        Aggregate.create(metric="households_registered", value=0)
    service.sync()
    publish_files(bucket, "district-7", tiles_for("district-7", 12))
    # the service takes bundles of the upload-only collections, and only of those
    ingestor = Ingestor(bucket, remote(), [Household], name="campaign-service")
    server = ingestor.serve()  # 127.0.0.1, a free port: the campaign service's API

    # -- the collector's first login: reference data and files, in parallel ---------------------
    network = FaultyRemote(remote())  # the collector's connection, which we can cut
    collector = device(
        place,
        "collector",
        network,
        bundles=Bundles(bucket, HttpIngest(server.url), [Household], max_rows=100),
        download_only=REFERENCE,
    )
    cache = ReferenceFiles(bucket, place / "collector-map-cache", workers=4)
    files_done: list[object] = []
    maps = threading.Thread(target=lambda: files_done.append(cache.sync("district-7")))
    maps.start()
    report = collector.login()
    maps.join()
    print("collector first login:", report.summary())
    print(f"  map cache: {len(files_done[0].downloaded)} files")  # type: ignore[attr-defined]
    with collector.bound():
        print("  form labels (pt):", localizations(Localization, "household", "pt"))

    # -- offline for days: registrations; a sync without a network fails fast -----------
    network.offline = True
    with collector.bound():
        for i in range(250):
            Household.create(head=f"Head {i}", members=1 + i % 6, village=f"village {i % 9}")
    try:
        collector.sync(timeout=5)
    except OfflineError as exc:
        print("sync while offline:", type(exc).__name__, "- nothing changed,", end=" ")
        print(collector.pending_count(), "entries wait")

    # -- back online: the manual sync bundles, checksums, uploads; the service verifies --------
    network.offline = False
    report = collector.sync()
    print("collector manual sync:", report.summary())
    assert report.bundled == {"household": 250} and collector.pending_count() == 0

    # -- the supervisor sees them by normal sync ------------------------------------------------
    supervisor = device(place, "supervisor", remote(), download_only=REFERENCE)
    report = supervisor.sync()
    with supervisor.bound():
        print(f"supervisor: {Household.select().count()} households;", report.summary())

    # -- the service updates a form and the boundary changes: only the difference moves ----------
    with service.bound():
        FormSchema.update(version=2, schema='{"fields": ["head", "members", "phone"]}').execute()
    service.sync()
    publish_files(bucket, "district-8", tiles_for("district-8", 5))
    report = collector.sync()
    print("collector next sync:", report.summary())
    moved = cache.sync("district-8")
    print(
        f"  new boundary: {len(moved.downloaded)} files downloaded, {moved.kept} kept,"
        f" {len(moved.removed)} of the old boundary removed"
    )
    server.close()
    for d in (service, collector, supervisor):
        d.database.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        target = Path(sys.argv[1])
        target.mkdir(parents=True, exist_ok=True)
        main(target)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
