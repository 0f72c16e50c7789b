"""Outbox types whose sink is a bundle: each message is a checksummed object in the
bucket, verified by the ingestor, whose events become documents of the remote."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from replicator import (
    BundleSink,
    DirectoryBlobStore,
    EmbeddedRemote,
    HttpIngest,
    Ingestor,
    OfflineError,
    Outbox,
    StoreIngest,
)
from tests.campaign_models import MODELS


def configs(types: dict[str, bool]) -> list[dict[str, Any]]:
    api = {"method": "post", "host": "http://127.0.0.1:9", "path": "", "params": ""}
    return [{"type": t, "api": api, "autoSync": None, "shouldBatch": b} for t, b in types.items()]


@pytest.fixture
def place(tmp_path):
    blobs = DirectoryBlobStore(tmp_path / "bucket")
    remote = EmbeddedRemote(tmp_path / "remote.db")
    return tmp_path, blobs, remote, Ingestor(blobs, EmbeddedRemote(tmp_path / "remote.db"), MODELS)


def events_of(remote: EmbeddedRemote, type_: str) -> list[Any]:
    docs = remote.all_docs(f"outbox_{type_.lower()}")
    return sorted((d.data["key"], json.loads(d.data["data"])) for d in docs.values())


def test_batched_and_single_events_reach_the_store_once_even_after_a_lost_answer(place):
    tmp, blobs, remote, ingestor = place
    with ingestor.serve() as server:
        service = HttpIngest(server.url)
        real, lost = service.submit, [True, True]

        def drop_answers(request: Any, device: Any) -> Any:
            result = real(request, device)
            if lost and lost.pop():
                raise OfflineError("the answer was lost")
            return result

        service.submit = drop_answers  # type: ignore[method-assign]
        sink = BundleSink(blobs, service, device="tablet-1")
        outbox = Outbox(tmp / "events.db")
        outbox.init(
            configs({"TELEMETRY": True, "COURSE_PROGRESS": False}),
            sinks={"TELEMETRY": sink, "COURSE_PROGRESS": sink},
        )
        for i in range(30):
            outbox.save("TELEMETRY", {"eid": "INTERACT", "n": i})
        outbox.save("COURSE_PROGRESS", {"do_1": 2, "events": [1]}, key="learner-7")
        outbox.sync("TELEMETRY")
        outbox.sync("COURSE_PROGRESS")
        assert outbox.status()["TELEMETRY"].pending_events == 0
        outbox.close()
    telemetry = events_of(remote, "TELEMETRY")
    assert sorted(e["n"] for _, e in telemetry) == list(range(30))  # each once
    assert events_of(remote, "COURSE_PROGRESS") == [("learner-7", {"do_1": 2, "events": [1]})]
    keys = [b.key for b in blobs.list("bundles/tablet-1/outbox/")]
    assert len(keys) == 2 and all(k.endswith(".json.gz") for k in keys)


def test_a_queue_service_is_asked_again_until_it_decides(place):
    tmp, blobs, remote, ingestor = place
    outbox = Outbox(tmp / "events.db")
    outbox.init(
        configs({"TELEMETRY": True}),
        sinks={"TELEMETRY": BundleSink(blobs, StoreIngest(remote), retry_after=0.01)},
    )
    outbox.save("TELEMETRY", {"n": 1})
    with pytest.raises(Exception, match="not decided"):
        outbox.sync("TELEMETRY")
    assert outbox.status()["TELEMETRY"].pending_events == 1
    ingestor.poll()
    outbox.sync("TELEMETRY")
    assert outbox.status()["TELEMETRY"].pending_events == 0
    assert [e for _, e in events_of(remote, "TELEMETRY")] == [{"n": 1}]
    outbox.close()


def test_a_message_altered_in_the_bucket_is_dead_lettered_not_applied(place):
    tmp, blobs, remote, ingestor = place
    real_put = blobs.put

    def alter(key: str, source: Any, **kw: Any) -> Any:
        info = real_put(key, source, **kw)
        real_put(key, io.BytesIO(b"altered"))  # someone with write access, right after
        return info

    blobs.put = alter  # type: ignore[method-assign]
    with ingestor.serve() as server:
        outbox = Outbox(tmp / "events.db")
        outbox.init(
            configs({"TELEMETRY": True}),
            sinks={"TELEMETRY": BundleSink(blobs, HttpIngest(server.url))},
        )
        outbox.save("TELEMETRY", {"n": 1})
        outbox.sync("TELEMETRY")
        (letter,) = outbox.dead_letters()
        assert letter.status == 422 and "bytes" in letter.response
        outbox.close()
    assert events_of(remote, "TELEMETRY") == []
