"""Seed 003's learner, Rahul, on two devices: progress that merges instead of overwriting.

Rahul studies course "class-1-maths" (batch-1) on a phone and a tablet, both
offline. Each device records content status (0 not started, 1 in progress,
2 completed) in a ``content_status`` map and assessment attempts in a
``best_scores`` map. When the devices sync, a whole-row "last writer wins"
would keep only one device's map, which is exactly the lost-progress problem
the seed describes; ``FieldMerge`` with ``map_max`` and ``best_score`` keeps
every completion and the best attempt.

Run: .venv/bin/python examples/course_progress.py [DIRECTORY]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import peewee

from replicator import EmbeddedRemote, FieldMerge, LastWriterWins, Replicator, SyncModel
from replicator.strategies import best_score, map_max


class CourseProgress(SyncModel):
    user_id = peewee.TextField()
    collection_id = peewee.TextField()
    context_id = peewee.TextField()
    content_status = peewee.TextField(default="{}")  # JSON: content id -> 0/1/2
    best_scores = peewee.TextField(default="{}")  # JSON: content id -> {score, max_score}

    class Meta:
        table_name = "course_progress"


PROGRESS_MERGE = FieldMerge(fields={"content_status": map_max, "best_scores": best_score})


def open_device(directory: Path, name: str, remote: EmbeddedRemote, strategy: Any) -> Replicator:
    db = peewee.SqliteDatabase(str(directory / f"{name}.db"))
    return Replicator(db, [CourseProgress], remote, device_name=name, conflict_strategy=strategy)


def record(device: Replicator, row_id: str, content: str, status: int, score: Any = None) -> None:
    """What the app does when Rahul finishes (or starts) a content on this device."""
    with device.bound():
        row = CourseProgress.get_by_id(row_id)
        statuses = json.loads(row.content_status)
        statuses[content] = max(statuses.get(content, 0), status)
        scores = json.loads(row.best_scores)
        if score is not None:
            scores[content] = best_score(scores.get(content), score, None)
        CourseProgress.update(
            content_status=json.dumps(statuses, sort_keys=True),
            best_scores=json.dumps(scores, sort_keys=True),
        ).where(CourseProgress.id == row_id).execute()


def play(directory: Path, strategy: Any, label: str) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    remote = EmbeddedRemote(directory / "remote.db")
    phone = open_device(directory, "phone", remote, strategy)
    tablet = open_device(directory, "tablet", remote, strategy)

    with phone.bound():
        row = CourseProgress.create(
            user_id="rahul", collection_id="class-1-maths", context_id="batch-1"
        )
    phone.sync()
    tablet.sync()

    # offline on both devices
    record(phone, row.id, "single-digit-addition", 2)
    record(phone, row.id, "double-digit-addition", 1)
    record(phone, row.id, "addition-quiz", 2, {"score": 4, "max_score": 5})
    record(tablet, row.id, "double-digit-addition", 2)
    record(tablet, row.id, "triple-digit-addition", 1)
    record(tablet, row.id, "addition-quiz", 2, {"score": 3, "max_score": 5})

    print(f"-- {label}")
    for name, device in (("phone", phone), ("tablet", tablet), ("phone", phone)):
        report = device.sync()
        print(f"  {name:<6} {report.summary()}")
    results = {}
    for name, device in (("phone", phone), ("tablet", tablet)):
        with device.bound():
            final = CourseProgress.get_by_id(row.id)
            results[name] = (json.loads(final.content_status), json.loads(final.best_scores))
    status, scores = results["phone"]
    print("  content_status:", status)
    print("  best_scores:   ", scores)
    assert results["phone"] == results["tablet"], "devices differ"
    phone.database.close()
    tablet.database.close()
    return {"status": status, "scores": scores}


def main(directory: Path) -> None:
    lww = play(directory / "lww", LastWriterWins(), "whole-row last writer wins (loses progress)")
    merged = play(directory / "merge", PROGRESS_MERGE, "FieldMerge with map_max and best_score")
    lost = sorted(set(merged["status"]) - set(lww["status"]))
    print(f"last-writer-wins lost progress on: {', '.join(lost) or 'nothing'}")
    assert merged["status"] == {
        "addition-quiz": 2,
        "double-digit-addition": 2,
        "single-digit-addition": 2,
        "triple-digit-addition": 1,
    }
    assert merged["scores"]["addition-quiz"] == {"score": 4, "max_score": 5}
    print("FieldMerge kept every completion and the best score on both devices")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
