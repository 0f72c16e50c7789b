"""The ingest service as a web service (Starlette under uvicorn) on a real socket, as
clients and networks treat it: half-sent requests, bodies that never come, a body
smuggling a second request, a hundred devices at once, a shutdown while a request is
in flight. It logs each decision, and answers health checks."""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest

from replicator import DeviceTokens
from replicator.stores.ingest import QUEUE
from tests.bundles.kit import Desk, row

TOKENS = {"collector-1": "collector-1-token-0123", "collector-2": "collector-2-token-0123"}
AUTH = DeviceTokens(TOKENS)


@pytest.fixture
def desk(tmp_path):
    return Desk(tmp_path)


def _raw(server, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(data)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def _post_text(body: bytes, token: str | None = None, length: int | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    ).encode() + body


def test_it_answers_health_checks_and_is_served_by_uvicorn(desk):
    with desk.ingestor.serve(auth=AUTH) as server:
        answer = httpx.get(server.url.replace("/ingest", "/health"))
    assert answer.status_code == 200 and answer.json() == {"status": "ok", "ingestor": "desk"}
    assert answer.headers["server"] == "uvicorn"


def test_half_sent_requests_pin_no_thread_and_are_closed_after_the_header_timeout(desk):
    with desk.ingestor.serve(auth=AUTH, header_timeout=1.5) as server:
        threads = threading.active_count()
        started = time.monotonic()
        half = [_raw(server, b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-") for _ in range(150)]
        time.sleep(0.3)
        assert threading.active_count() - threads < 5  # no thread per connection
        request = desk.request([row(1)], device="collector-1")
        answer = httpx.post(
            server.url,
            json=request.to_json(),
            headers={"Authorization": f"Bearer {TOKENS['collector-1']}"},
            timeout=5,
        )
        assert answer.status_code == 200 and answer.json()["state"] == "accepted"
        for sock in half:  # each closed by the service once its head was late
            sock.settimeout(10)
            assert _read_all(sock) == b""
            sock.close()
        assert time.monotonic() - started < 10


def test_a_body_that_never_arrives_is_a_408_and_its_connection_closed(desk):
    with desk.ingestor.serve(auth=AUTH, body_timeout=0.5) as server:
        sock = _raw(server, _post_text(b'{"bundle": ', TOKENS["collector-1"], length=300))
        answer = _read_all(sock)
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"the body took over" in answer


def test_a_body_left_unread_is_never_taken_for_another_request(desk):
    request = desk.request([row(1)], device="collector-1")
    smuggled = _post_text(_json(request), TOKENS["collector-1"])
    with desk.ingestor.serve(auth=AUTH) as server:
        # refused for its token, unread: its body is a whole, valid request
        sock = _raw(server, _post_text(smuggled, token="wrong-token-0123456789"))
        answers = _read_all(sock)
        sock.close()
    assert answers.count(b"HTTP/1.1 ") == 1 and answers.startswith(b"HTTP/1.1 401"), answers
    assert desk.remote.all_docs(QUEUE) == {} and desk.stored() == {}


def _json(request) -> bytes:
    import json

    return json.dumps(request.to_json()).encode()


@pytest.mark.parametrize("body", [b"[" * 30_000 + b"]" * 30_000, b'[{"a":' * 10_000])
def test_a_body_nested_30000_deep_is_a_400_not_a_dropped_connection(desk, body):
    with desk.ingestor.serve(auth=AUTH) as server:
        answer = httpx.post(
            server.url, content=body, headers={"Authorization": f"Bearer {TOKENS['collector-1']}"}
        )
    assert answer.status_code == 400 and "malformed ingest request" in answer.json()["error"]


def test_a_hundred_devices_posting_at_once_are_all_answered(desk):
    tokens = {f"device-{i:03d}": f"token-of-device-{i:03d}-0123" for i in range(100)}
    requests = {d: desk.request([row(i)], device=d) for i, d in enumerate(tokens)}
    barrier = threading.Barrier(100)
    answers: dict[str, int] = {}
    failures: list[str] = []

    def device(name: str, server) -> None:
        barrier.wait()
        try:
            with httpx.Client(timeout=60) as client:  # its own connection
                answer = client.post(
                    server.url,
                    json=requests[name].to_json(),
                    headers={"Authorization": f"Bearer {tokens[name]}"},
                )
            answers[name] = answer.status_code
        except httpx.TransportError as exc:  # a reset, a refusal
            failures.append(f"{name}: {exc!r}")

    with desk.ingestor.serve(auth=DeviceTokens(tokens)) as server:
        threads = [threading.Thread(target=device, args=(d, server)) for d in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert failures == []
    assert sorted(set(answers.values())) == [200] and len(answers) == 100
    assert len(desk.stored()) == 100


def test_each_decision_is_logged_with_its_reason(desk, caplog):
    good = desk.request([row(1), row(2, members="many")], device="collector-1")
    bad = desk.request(["not json"], device="collector-1")
    headers = {"Authorization": f"Bearer {TOKENS['collector-1']}"}
    with caplog.at_level(logging.INFO, logger="replicator"), desk.ingestor.serve(auth=AUTH) as s:
        httpx.post(s.url, json=good.to_json(), headers=headers)
        httpx.post(s.url, json=bad.to_json(), headers=headers)
        httpx.post(s.url, json=good.to_json())
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("replicator")]
    assert any(
        f"bundle {good.bundle} of households from collector-1: accepted (1 rows accepted,"
        " 1 refused)" in line
        for line in lines
    ), lines
    assert any(
        f"bundle {bad.bundle} of households from collector-1: rejected: not a readable bundle:"
        " line 2 is not JSON" in line
        for line in lines
    ), lines
    assert any("HTTP 401: missing or wrong bearer token" in line for line in lines), lines


def test_closing_the_service_answers_the_request_in_flight_then_stops(desk):
    request = desk.request([row(1)], device="collector-1")
    body = _json(request)
    server = desk.ingestor.serve(auth=AUTH)
    sock = _raw(server, _post_text(body[:20], TOKENS["collector-1"], length=len(body)))
    time.sleep(0.3)  # the request is in flight: its head read, its body coming
    closing = threading.Thread(target=server.close)
    closing.start()
    time.sleep(0.5)
    with pytest.raises(httpx.TransportError):  # no new connection is taken
        httpx.get(server.url.replace("/ingest", "/health"), timeout=2)
    sock.sendall(body[20:])
    answer = _read_all(sock)
    sock.close()
    closing.join(20)
    assert not closing.is_alive()
    assert answer.startswith(b"HTTP/1.1 200") and b'"accepted"' in answer, answer
