"""EventReceiver: a real HTTP receiver for outbox messages, and sample events for it.

Invariants: it deduplicates by ``msg_id`` as a real service does (a repeat is
answered 200 and dropped, and counted in ``duplicates``); it refuses with 400,
and records nothing of, a body that is not (gzipped) JSON, a message without an
``X-Message-Id`` header, and a gzipped batch that does not carry its own
``msg_id`` and events. Scripted misbehaviour takes the next requests, in the
order scripted, before any of these checks. ``stop()`` also drops the
connections clients keep alive, so a stopped receiver is gone for them.

:data:`SEED_EVENTS` and :data:`SEED_CONFIGS` are sample events and
configurations of three types, for tests, benchmarks and examples of the outbox.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from ..stores.http import header_text
from .network import hard_close


class EventReceiver:
    """A real HTTP receiver for outbox messages on 127.0.0.1, as a service would run.

    It takes POST, PUT and PATCH on any path, un-gzips a body sent with
    ``Content-Encoding: gzip``, checks that it is JSON (a batch must carry the
    ``msg_id`` of its ``X-Message-Id`` header and a list of events), answers 400
    otherwise, and drops a message whose ``msg_id`` it has already taken (answering
    200, as a deduplicating service does). What it took is in :attr:`messages`
    (one dict per message: ``msg_id``, ``type``, ``method``, ``path``, ``query``,
    ``gzipped``, ``body``) and :attr:`events` (every event, batched or single, with
    its ``msg_id``); :attr:`duplicates` counts dropped repeats.

    Scripted misbehaviour for the next requests, in order: ``fail(500)``,
    ``fail(429, retry_after=2)``, ``fail(400)``, ``slow(1.5)`` (answer after a
    delay), ``reset()`` (close the connection without an answer), ``trickle(0.2)``
    (take nothing, and answer one byte every 0.2 s for as long as the client
    stays), ``big(64 << 20)`` (take the message and answer with that many bytes;
    ``status=400``: refuse it so), each ``times`` times. ``latency`` seconds pass
    before every answer, as on a real network.

    Header values are read back as the outbox's HTTP sink encodes them (RFC 8187's
    ``UTF-8''`` and percent-encoded UTF-8, for a type or key that is not printable
    ASCII): :attr:`events` and :attr:`messages` hold the type and key as saved.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency: float = 0.0) -> None:
        import http.server

        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # answers go out at once, not after the client's delayed ACK (Nagle)
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver._open.add(self.connection)

            def finish(self) -> None:
                with receiver._lock:
                    receiver._open.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_POST(self) -> None:
                receiver._handle(self)

            do_PUT = do_PATCH = do_POST

        self.latency = latency
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._script: list[tuple[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.duplicates = 0
        self.requests = 0
        self.refused: list[int] = []

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that died mid-request is a test's doing, not news

        self.server = Server((host, port), Handler)
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> EventReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop the kept-alive connections: a stopped receiver
        is gone for its clients too."""
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def __enter__(self) -> EventReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail(self, status: int, *, times: int = 1, retry_after: str | int | None = None) -> None:
        with self._lock:
            self._script.extend([("status", (status, retry_after))] * times)

    def slow(self, seconds: float, *, times: int = 1) -> None:
        with self._lock:
            self._script.extend([("slow", seconds)] * times)

    def reset(self, *, times: int = 1) -> None:
        with self._lock:
            self._script.extend([("reset", None)] * times)

    def trickle(self, every: float, *, times: int = 1) -> None:
        with self._lock:
            self._script.extend([("trickle", every)] * times)

    def big(self, size: int, *, status: int = 200, times: int = 1) -> None:
        with self._lock:
            self._script.extend([("big", (size, status))] * times)

    def event_keys(self) -> list[str]:
        with self._lock:
            return [e["key"] for e in self.events]

    def _handle(self, request: Any) -> None:
        import gzip as _gzip
        import json as _json
        from urllib.parse import urlsplit

        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length)
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            self.requests += 1
            action = self._script.pop(0) if self._script else None
        big = None
        if action is not None and action[0] == "big":
            big, action = action[1], None
            if big[1] != 200:
                return self._answer(request, big[1], "", size=big[0])
        if action is not None and self._misbehave(request, *action):
            return
        msg_id = request.headers.get("X-Message-Id") or ""
        gzipped = request.headers.get("Content-Encoding") == "gzip"
        try:
            body = _json.loads(_gzip.decompress(raw) if gzipped else raw)
        except (OSError, EOFError, ValueError) as exc:
            return self._answer(request, 400, f"body is not (gzipped) JSON: {exc}")
        if not msg_id:
            return self._answer(request, 400, "no X-Message-Id header")
        batch = isinstance(body, dict) and "events" in body and "msg_id" in body
        if gzipped and (not batch or body["msg_id"] != msg_id):
            return self._answer(request, 400, "a batch must carry its msg_id and events")
        url = urlsplit(request.path)
        with self._lock:
            if msg_id in self.seen:
                self.duplicates += 1
                return self._answer(request, 200, "duplicate dropped")
            self.seen.add(msg_id)
            kind = header_text(request.headers.get("X-Outbox-Type", ""))
            self.messages.append(
                {
                    "msg_id": msg_id,
                    "type": kind,
                    "method": request.command,
                    "path": url.path,
                    "query": url.query,
                    "gzipped": gzipped,
                    "body": body,
                }
            )
            if batch:
                for event in body["events"]:
                    self.events.append({**event, "msg_id": msg_id, "type": kind})
            else:
                key = header_text(request.headers.get("X-Event-Key", ""))
                self.events.append({"key": key, "data": body, "msg_id": msg_id, "type": kind})
        self._answer(request, 200, "ok", size=big[0] if big else 0)

    def _misbehave(self, request: Any, kind: str, arg: Any) -> bool:
        """Play one scripted action on ``request``; True when that was its answer (a
        scripted status, or a reset), False when the request goes on (after a delay)."""
        if kind == "reset":
            hard_close(request.connection)
            request.close_connection = True
            return True
        if kind == "trickle":
            self._trickle(request, arg)
            return True
        if kind == "slow":
            time.sleep(arg)
        if kind == "status":
            status, retry_after = arg
            headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
            with self._lock:
                self.refused.append(status)
            self._answer(request, status, f"scripted {status}", headers)
            return True
        return False

    @staticmethod
    def _answer(
        request: Any,
        status: int,
        text: str,
        headers: dict[str, str] | None = None,
        *,
        size: int = 0,
    ) -> None:
        """Answer ``status`` with ``text``, or with ``size`` bytes (written a chunk
        at a time, for as long as the client reads them)."""
        data = text.encode()
        request.send_response(status)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.send_header("Content-Type", "text/plain")
        request.send_header("Content-Length", str(size or len(data)))
        request.end_headers()
        if not size:
            request.wfile.write(data)
            return
        chunk = b"x" * 65536
        with contextlib.suppress(OSError):
            for start in range(0, size, len(chunk)):
                request.wfile.write(chunk[: size - start])
        request.close_connection = True

    @staticmethod
    def _trickle(request: Any, every: float) -> None:
        """Answer 200 one byte every ``every`` seconds, until the client is gone."""
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
        request.close_connection = True
        with contextlib.suppress(OSError):
            for byte in answer:
                request.wfile.write(bytes([byte]))
                time.sleep(every)


#: Three sample events, one of each type an app sends (telemetry, a course's progress,
#: an assessment), as the apps send them (JSON text), by type
SEED_EVENTS: dict[str, str] = {
    "TELEMETRY": (
        '{"ver":"3.0","eid":"INTERACT","ets":1573470364698,"actor":{"type":"User","id'
        '":"44c1b4a0-7d87-48a6-977c-6bbf52b5547a"},"context":{"cdata":[],"env":"home"'
        ',"channel":"0126632859575746566","pdata":{"id":"staging.diksha.app","pid":"s'
        'unbird.app","ver":"2.5.local.0-debug"},"sid":"b53cd1a5-2cf3-454f-a256-42e00a'
        'fde9cf","did":"13e9e8e7b514112b9501c279b124561693aad8eb","rollup":{"l1":"012'
        '6632859575746566"}},"edata":{"type":"OTHER","subtype":"hotcode-push-key-not-'
        'defined","id":"home","pageid":"home","extra":{"pos":[]}},"object":{"id":"","'
        'type":"","version":"","rollup":{}},"mid":"ceea76c7-8426-4445-9392-a747d9af6f'
        'd3"}'
    ),
    "COURSE_PROGRESS": (
        '{"id":"api.content.state.read","ver":"v1","ts":"2019-11-11 11:12:54:640+0000'
        '","params":{"resmsgid":null,"msgid":null,"err":null,"status":"success","errm'
        'sg":null},"responseCode":"OK","result":{"contentList":[{"lastAccessTime":"20'
        '19-07-15 09:46:04:448+0000","contentId":"do_212686738040504320192","complete'
        'dCount":1,"batchId":"0127517178263224325","result":null,"score":null,"grade"'
        ':null,"progress":100,"viewCount":35,"contentVersion":null,"courseId":"do_212'
        '7517138056724481636","lastCompletedTime":"2019-07-15 09:47:33:379+0000","sta'
        'tus":2},{"lastAccessTime":"2019-08-05 11:51:30:971+0000","contentId":"do_212'
        '7319848127283201364","completedCount":1,"batchId":"0127517178263224325","res'
        'ult":null,"score":null,"grade":null,"progress":100,"viewCount":33,"contentVe'
        'rsion":null,"courseId":"do_2127517138056724481636","lastCompletedTime":"2019'
        '-08-05 11:51:30:971+0000","status":2},{"lastAccessTime":"2019-08-05 11:51:30'
        ':971+0000","contentId":"do_2127516435133644801619","completedCount":1,"batch'
        'Id":"0127517178263224325","result":null,"score":null,"grade":null,"progress"'
        ':100,"viewCount":33,"contentVersion":null,"courseId":"do_2127517138056724481'
        '636","lastCompletedTime":"2019-08-05 11:51:30:971+0000","status":2}]}}'
    ),
    "COURSE_ASSESSMENT": (
        '{"do_21285785558886809611575":[{"eid":"ASSESS","ets":1573471977913,"ver":"3.'
        '1","mid":"ASSESS:a2821b1315cf55e472146eb8d6aca423","actor":{"id":"44c1b4a0-7'
        'd87-48a6-977c-6bbf52b5547a","type":"User"},"context":{"channel":"01266328595'
        '75746566","pdata":{"id":"staging.diksha.app","ver":"2.5.local.0-debug","pid"'
        ':"sunbird.app.contentplayer"},"env":"contentplayer","sid":"6684854f-2327-423'
        '7-9051-09b973c215f4","did":"13e9e8e7b514112b9501c279b124561693aad8eb","cdata'
        '":[{"id":"b08b596eed995cee55f33b016fcdcb8a","type":"AttemptId"},{"id":"offli'
        'ne","type":"PlayerLaunch"},{"id":"5dd8d0941877f2e584336af7ea4dbeaa","type":"'
        'ContentSession"}],"rollup":{"l1":"0126632859575746566"}},"object":{"id":"do_'
        '21285785558886809611575","type":"Content","ver":"1","rollup":{"l1":"do_21286'
        '30563500359681261","l2":"do_2128630590915870721263"}},"tags":[],"edata":{"it'
        'em":{"id":"do_21285785489686528011574","maxscore":1,"type":"mcq","exlength":'
        '0,"params":[{"1":"{\\"text\\":\\"Two\\\\n\\"}"},{"2":"{\\"text\\":\\"Three (correct)\\'
        '\\n\\"}"},{"3":"{\\"text\\":\\"Four \\\\n\\"}"},{"4":"{\\"text\\":\\"One \\\\n\\"}"},{"ans'
        'wer":"{\\"correct\\":[\\"2\\"]}"}],"uri":"","title":"DND please","mmc":[],"mc":['
        '],"desc":"By kiruba"},"index":2,"pass":"Yes","score":1,"resvalues":[{"2":"{\\'
        '"text\\":\\"Three (correct)\\\\n\\"}"}],"duration":3}}]}'
    ),
}

#: The sample configurations of those three types, as written (lower-case methods,
#: sample host), keyed by type
SEED_CONFIGS = """{
  "TELEMETRY": {
    "api": {"method": "post", "host": "sample_host", "path": "sample_path",
            "params": "sample_params"},
    "autoSync": {"frequency": 2, "threshold": 200, "bandwidth": 200},
    "shouldBatch": true
  },
  "COURSE_PROGRESS": {
    "api": {"method": "patch", "host": "sample_host", "path": "sample_path",
            "params": "sample_params"},
    "shouldBatch": false
  },
  "COURSE_ASSESSMENT": {
    "api": {"method": "patch", "host": "sample_host", "path": "sample_path",
            "params": "sample_params"},
    "shouldBatch": false
  }
}"""
