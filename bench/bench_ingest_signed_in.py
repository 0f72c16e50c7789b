"""What knowing the caller costs the ingest service: signed-in devices against the
operators' bearer tokens, on the same server in the same run.

One ``Ingestor`` (embedded remotes, a directory bucket, in a temporary folder) serves
HTTP under uvicorn with both authenticators (``FirstOf(DeviceTokens,
SignedInCallers)``). Each round sends ``--requests`` ingest requests (one bundle of
``--rows`` rows each) through ``HttpIngest`` as a signed-in
user (an ID token and the device header on every request; the user's folder of the
bucket; the user's root of the remote store) and as an operator's program (a bearer
token; ``bundles/``; the operators' root), interleaved request by request, which goes
first alternating; the first round warms both and is not counted. Printed: the ratio
signed-in / operator per round, its min and median, and, for scale, what verifying
one RS256-signed ID token costs (google-auth, the production path, with the
certificate at hand).

The Auth emulator's tokens are unsigned, so the ratio measures everything but the
signature check; the second figure is that check.

usage: python bench/bench_ingest_signed_in.py [--requests N] [--rows K] [--runs R]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import peewee

from replicator import DirectoryBlobStore, EmbeddedRemote, HttpIngest, Ingestor, SyncModel
from replicator.auth.verify import IdTokenVerifier
from replicator.bundles.auth import DeviceTokens, FirstOf, SignedInCallers
from replicator.bundles.format import bundle_header, pack, put_once
from replicator.codec import encode_json
from replicator.stores.ingest import IngestRequest
from replicator.testing import MockIdTokens

PROJECT = "demo-bench"
COLUMNS = ["id", "createdOn", "updatedOn", "updatedBy", "head", "members", "village"]
OPERATOR = "operator-token-0123456789"


class Household(SyncModel):
    head = peewee.TextField()
    members = peewee.IntegerField(default=1)
    village = peewee.TextField(default="")

    class Meta:
        table_name = "households"


def _bundles(blobs: Any, device: str, n: int, rows: int, tag: str) -> list[IngestRequest]:
    out = []
    for r in range(n):
        bundle = f"{tag}-{r:05d}"
        lines = [
            encode_json({"id": f"{tag}-{r:05d}-{i:06d}", "head": f"head {i}", "members": 3,
                         "village": "north", "updatedOn": "2026-11-23 10:00:00"}).encode()
            for i in range(rows)
        ]  # fmt: skip
        header = bundle_header(
            bundle=bundle,
            device=device,
            collection="households",
            columns=COLUMNS,
            app_version="1",
            count=rows,
        )
        packed = pack(header, lines)
        key = f"bundles/{device}/{bundle}.ndjson.gz"
        with packed.body:
            put_once(blobs, key, packed.body, packed.sha256)
        out.append(
            IngestRequest(bundle, key, packed.sha256, packed.size, rows, "households", device)
        )
    return out


def _pairs(
    user: HttpIngest, signed: list[IngestRequest], operator: HttpIngest, plain: list[IngestRequest]
) -> tuple[float, float]:
    """Send the two lists request by request, interleaved (which goes first alternates
    from pair to pair, so a noisy neighbour hits both alike); each side's total time."""
    totals = [0.0, 0.0]
    for i, pair in enumerate(zip(signed, plain, strict=True)):
        order = (0, 1) if i % 2 else (1, 0)
        for side in order:
            service = user if side == 0 else operator
            started = time.perf_counter()
            assert service.submit(pair[side]).state == "accepted"
            totals[side] += time.perf_counter() - started
    return totals[0], totals[1]


def _rs256_verify_cost(times: int = 300) -> float:
    """Seconds to verify one RS256 ID token with google-auth, the certificate at hand."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    from google.auth import crypt, jwt

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - _dt.timedelta(days=1)).not_valid_after(now + _dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signer = crypt.RSASigner.from_string(pem, key_id="k1")
    t = int(time.time())
    claims = {"iss": f"https://securetoken.google.com/{PROJECT}", "aud": PROJECT,
              "sub": "alice", "iat": t, "exp": t + 3600}  # fmt: skip
    token = jwt.encode(signer, claims)
    certs = {"k1": cert.public_bytes(serialization.Encoding.PEM)}
    started = time.perf_counter()
    for _ in range(times):
        jwt.decode(token, certs=certs, audience=PROJECT)
    return (time.perf_counter() - started) / times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        place = Path(tmp)
        bucket = DirectoryBlobStore(place / "bucket")
        (place / "roots").mkdir()
        ingestor = Ingestor(
            bucket,
            EmbeddedRemote(place / "operators.db"),
            [Household],
            users=lambda uid: EmbeddedRemote(place / "roots" / f"{uid}.db"),
        )
        callers = FirstOf(
            DeviceTokens({"operator": OPERATOR}),
            SignedInCallers(IdTokenVerifier(PROJECT, emulator=True)),
        )
        mine = DirectoryBlobStore(place / "bucket" / "users" / "alice")
        with ingestor.serve(auth=callers) as api:
            user = HttpIngest(api.url, tokens=MockIdTokens("alice", PROJECT))
            operator = HttpIngest(api.url, headers={"Authorization": f"Bearer {OPERATOR}"})
            ratios = []
            for run in range(args.runs + 1):
                signed = _bundles(mine, "alice-phone", args.requests, args.rows, f"u{run}")
                plain = _bundles(bucket, "operator", args.requests, args.rows, f"o{run}")
                t_user, t_op = _pairs(user, signed, operator, plain)
                if run == 0:
                    continue  # the warm-up
                ratios.append(t_user / t_op)
                print(
                    f"run {run}: {args.requests} requests signed-in {t_user:.2f} s,"
                    f" operator {t_op:.2f} s: ratio {t_user / t_op:.3f}"
                )
            user.close()
            operator.close()
    per_request = t_op / args.requests
    verify = _rs256_verify_cost()
    print(
        f"signed-in / operator tokens: min {min(ratios):.3f}, median"
        f" {statistics.median(ratios):.3f} over {len(ratios)} runs"
    )
    print(
        f"RS256 signature check of one ID token: {verify * 1e6:.0f} us"
        f" ({verify / per_request:.1%} of one request's {per_request * 1000:.1f} ms)"
    )


if __name__ == "__main__":
    main()
