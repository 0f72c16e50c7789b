"""Structure-aware fuzzing of the ingest service's decoder: bundles whose checksum
matches (an attacker controls a bundle and its request together), built from rows,
headers and lines of the wrong types, depths, keys, numbers and text, not only
flipped bytes. Every case is *accepted* (with refused rows) or *rejected* with a
reason, never an exception; a rejected bundle applies nothing; what is applied keeps
the service's rules (its writer, its stamps); and the service takes a legitimate
bundle after all of them.

REPLICATOR_INGEST_FUZZ sets the number of cases (default 200);
REPLICATOR_INGEST_FUZZ_SEED replays one run (its seed is printed)."""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import random
from typing import Any

import pytest

from replicator.bundles.format import FORMAT
from replicator.model import remote_columns
from tests.bundles.kit import Desk, row
from tests.campaign_models import Household

CASES = int(os.environ.get("REPLICATOR_INGEST_FUZZ", "200"))
DEVICE = "fuzzer"
LATEST = _dt.datetime(2027, 1, 15, 9, 0, 0)  # the service's clock (kit.NOW) + 1 hour

SCALARS = [
    "null", "true", "false", "0", "-0", "1.5", "-1e308", "1e999", "-1e999", "NaN",
    "Infinity", "-Infinity", str(2**63), str(-(2**63) - 1), str(2**64), "1" * 4400,
    "5e-324", '""', '"\\ud800"', '"\\u0000"', '"é ✓ 日本"', '"2026-11-23 10:00:00"',
    '"9999-12-31 23:59:59.999999"', '"0000-00-00"', '"' + "x" * 100_000 + '"',
    '"\\"quoted\\""', '"a/b"', '"."', '"__x__"',
]  # fmt: skip
KEYS = [
    '""', '"$bytes"', '"$real"', '"$hex"', '"createdBy"', '"__name__"', '"é"',
    '"' + "k" * 300 + '"', '"id"', '"updatedOn"', '"members"', '"head\\u0000"',
]  # fmt: skip
RAW_LINES = [
    b"", b"\xff\xfe{}", b"\xef\xbb\xbf{}", b"{}x", b'{"id": ', b"[]", b'"text"', b"42",
    b"null", b'{"id": "a", "id": "b"}', b"{" * 3000, b"\t {} \t", b"\x00",
]  # fmt: skip


def value(rng: random.Random, depth: int = 0) -> str:
    """A JSON value's text, of any type, sometimes nested deep or tagged."""
    pick = rng.random()
    if pick < 0.45 or depth > 3:
        return rng.choice(SCALARS)
    if pick < 0.6:
        n = rng.choice([2, 10, 999, 1001, 50_000])
        return "[" * n + rng.choice(SCALARS) + "]" * n
    if pick < 0.75:
        tag = rng.choice(['"$bytes"', '"$real"', '"$hex"'])
        return "{" + tag + ": " + value(rng, depth + 1) + "}"
    if pick < 0.88:
        return "[" + ", ".join(value(rng, depth + 1) for _ in range(rng.randrange(4))) + "]"
    members = (f"{rng.choice(KEYS)}: {value(rng, depth + 1)}" for _ in range(rng.randrange(4)))
    return "{" + ", ".join(members) + "}"


def row_line(rng: random.Random, i: int) -> bytes:
    """A row's line: a valid row, then one structural change (or none)."""
    # JSON key text → JSON value text
    fields = {json.dumps(k): json.dumps(v) for k, v in row(i % 5, updatedBy=DEVICE).items()}
    kind = rng.choice(["value", "value", "key", "drop", "line", "none"])
    if kind == "value":
        fields[rng.choice(sorted(fields))] = value(rng)
    elif kind == "key":
        fields[rng.choice(KEYS)] = value(rng)
    elif kind == "drop":
        fields.pop(rng.choice(sorted(fields)))
    elif kind == "line":
        return rng.choice(RAW_LINES) if rng.random() < 0.5 else value(rng).encode()
    text = "{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"
    return text.encode("utf-8", "surrogatepass")


def header_line(rng: random.Random, bundle: str, count: int) -> bytes:
    fields = {
        "format": json.dumps(FORMAT),
        "bundle": json.dumps(bundle),
        "device": json.dumps(DEVICE),
        "collection": '"households"',
        "count": str(count),
        "columns": json.dumps(remote_columns(Household)),
    }
    if rng.random() < 0.15:
        fields[rng.choice(sorted(fields))] = value(rng)
    if rng.random() < 0.03:
        return value(rng).encode()
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


def case(rng: random.Random, n: int) -> tuple[bytes, str, int]:
    bundle = f"fuzz-{n}"
    rows = [row_line(rng, i) for i in range(rng.randrange(1, 8))]
    lines = [header_line(rng, bundle, len(rows)), *rows]
    return gzip.compress(b"\n".join(lines) + b"\n", mtime=0), bundle, len(rows)


def test_structure_aware_fuzz_of_the_decoder(tmp_path):
    seed = int(os.environ.get("REPLICATOR_INGEST_FUZZ_SEED", "0")) or random.randrange(1, 10**9)
    print(f"REPLICATOR_INGEST_FUZZ_SEED={seed}")
    rng = random.Random(seed)
    desk = Desk(tmp_path)
    outcomes = {"accepted": 0, "rejected": 0, "refused rows": 0}
    for n in range(CASES):
        data, bundle, count = case(rng, n)
        before = desk.stored()
        request = desk.put(data, device=DEVICE, bundle=bundle, count=count)
        result = desk.ingestor.submit(request)  # never raises
        assert result.state in ("accepted", "rejected"), (seed, n, result)
        if result.state == "rejected":
            assert result.reason, (seed, n)
            assert desk.stored() == before, (seed, n, result)  # nothing of it applied
        else:
            assert all(result.refused.values()), (seed, n, result)
            outcomes["refused rows"] += len(result.refused)
        outcomes[result.state] += 1
        _check_the_service_rules(desk.stored(), seed, n)
    print(f"{CASES} structured cases: {outcomes}")
    assert outcomes["rejected"] and outcomes["refused rows"]  # the fuzz reached both
    legit = desk.send([row(9, updatedBy=DEVICE)], device=DEVICE)
    assert legit.state == "accepted" and legit.accepted == 1


def _check_the_service_rules(stored: dict[str, Any], seed: int, n: int) -> None:
    for rid, data in stored.items():
        assert data["updatedBy"] == DEVICE and data["createdBy"] == DEVICE, (seed, n, rid)
        when = _dt.datetime.fromisoformat(data["updatedOn"])
        assert when <= LATEST, (seed, n, rid, data["updatedOn"])
        assert isinstance(data["head"], str) and isinstance(data["members"], int), (seed, n)


@pytest.mark.parametrize("n", range(3))
def test_outbox_messages_of_every_shape_are_decided(tmp_path, n):
    """The outbox path of the same decoder: messages of wrong types and depths."""
    rng = random.Random(n)
    desk = Desk(tmp_path)
    for i in range(max(10, CASES // 10)):
        events = ", ".join(value(rng) for _ in range(rng.randrange(0, 4)))
        head = rng.choice([f'"msg_id": "m{i}", "type": "T"', f'"msg_id": {value(rng)}'])
        text = "{" + head + ', "events": [' + events + "]}"
        if rng.random() < 0.2:
            text = value(rng)
        data = gzip.compress(text.encode("utf-8", "surrogatepass"), mtime=0)
        count = events.count(",") + 1 if events else 0
        request = desk.put(data, device=DEVICE, bundle=f"m{i}", collection="outbox:T", count=count)
        result = desk.ingestor.submit(request)
        assert result.state == "accepted" or (result.state == "rejected" and result.reason)
