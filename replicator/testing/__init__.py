"""Fault injection for tests of code that syncs, yours and ours.

:class:`FaultyRemote` wraps any real :class:`~replicator.stores.base.RemoteStore`
and makes chosen calls fail the way networks fail: before the store sees the
request (``OfflineError``), or after the store committed it (a lost
acknowledgement). Everything else passes through to the real store.

:class:`FaultProxy` sits between a client and a server on 127.0.0.1 and breaks
the TCP connection the way real networks do: a reset part-way through a
response, refused connections, a half-open connection that swallows
everything, added latency.

:class:`FirestoreEmulator` starts the official Cloud Firestore emulator (Debian
package ``google-cloud-cli-firestore-emulator``, or the jar named by
``REPLICATOR_FIRESTORE_EMULATOR_JAR``) on a free port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import OfflineError
from ..stores.base import RemoteStore


class FaultyRemote:
    """A RemoteStore proxy with scripted failures.

    * ``offline = True``: every call raises ``OfflineError``.
    * ``fail("push", after=True)``: the next ``push`` commits, then raises
      (the acknowledgement was lost); ``after=False`` raises before sending.
    * ``hooks["push"] = fn``: ``fn(*args)`` runs before the call is forwarded
      (e.g. to write the local database while an upload is in flight).
    """

    def __init__(self, inner: RemoteStore) -> None:
        self.inner = inner
        self.offline = False
        self.calls: list[str] = []
        self.hooks: dict[str, Callable[..., None]] = {}
        self._faults: dict[str, list[tuple[bool, BaseException]]] = {}

    def fail(self, method: str, *, after: bool = False, error: BaseException | None = None) -> None:
        exc = error or OfflineError(f"injected failure of {method}")
        self._faults.setdefault(method, []).append((after, exc))

    #: what the store offers that is not a call to the remote: passed through, not counted
    PLUMBING = frozenset({"session", "close", "set_deadline"})

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_") or name in self.PLUMBING:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self.offline:
                raise OfflineError(f"injected: offline during {name}")
            hook = self.hooks.get(name)
            if hook is not None:
                hook(*args, **kwargs)
            faults = self._faults.get(name)
            fault = faults.pop(0) if faults else None
            if fault is not None and not fault[0]:
                raise fault[1]
            result = attr(*args, **kwargs)
            if fault is not None:
                raise fault[1]
            return result

        return call


class FaultProxy:
    """A TCP proxy on 127.0.0.1 with injectable faults, for tests of real clients.

    ``FaultProxy(upstream_port).start()`` listens on ``.port`` and forwards each
    connection to the upstream port. Faults, changeable at any time:

    * ``reset_after(n)``: once ``n`` more bytes have gone from the server to the
      client, every open connection is reset (RST); later connections pass.
    * ``mode = "refuse"``: new connections are reset as soon as they arrive.
    * ``mode = "blackhole"``: connections are accepted, nothing is forwarded
      either way (a half-open network).
    * ``latency = seconds``: each forwarded chunk waits that long.
    """

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.mode = "pass"
        self.latency = 0.0
        self.resets = 0
        self._budget: int | None = None
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self.port = self._listener.getsockname()[1]
        self.host = f"{host}:{self.port}"
        self._closed = False

    def start(self) -> FaultProxy:
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def reset_after(self, n: int) -> None:
        with self._lock:
            self._budget = n

    def stop(self) -> None:
        self._closed = True
        self._listener.close()
        self.reset_all(count=False)

    def reset_all(self, count: bool = True) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            _hard_close(conn)
        if count and conns:
            self.resets += 1

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                _hard_close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _hard_close(client)
                continue
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.mode == "blackhole" and not self._closed:
                    time.sleep(0.05)
                if self.latency:
                    time.sleep(self.latency)
                if downstream:
                    with self._lock:
                        if self._budget is not None:
                            self._budget -= len(data)
                            fire = self._budget <= 0
                            if fire:
                                self._budget = None
                        else:
                            fire = False
                    if fire:
                        self.reset_all()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def _hard_close(conn: socket.socket) -> None:
    """Close with RST (linger 0), as a dropped connection looks to the peer."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


KNOWN_JARS = [
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar",
    "/usr/share/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar",
]
MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"


def find_jar() -> str | None:
    env = os.environ.get("REPLICATOR_FIRESTORE_EMULATOR_JAR")
    if env and Path(env).is_file():
        return env
    if shutil.which("dpkg"):
        out = subprocess.run(
            ["dpkg", "-L", "google-cloud-cli-firestore-emulator"], capture_output=True, text=True
        ).stdout
        for line in out.splitlines():
            if line.endswith(".jar") and Path(line).is_file():
                return line
    return next((p for p in KNOWN_JARS if Path(p).is_file()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FirestoreEmulator:
    """The official Cloud Firestore emulator on a free 127.0.0.1 port (``start()``, ``stop()``),
    for tests and benchmarks of code that syncs through Firestore. ``pause()`` and
    ``resume()`` freeze it, the way a network partition would."""

    def __init__(self, jar: str, port: int | None = None) -> None:
        self.jar = jar
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> FirestoreEmulator:
        if shutil.which("java") is None:
            raise RuntimeError("java is not installed")
        self.proc = subprocess.Popen(
            ["java", "-cp", self.jar, MAIN, "start", "--host=127.0.0.1", f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Firestore emulator exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/", timeout=1) as r:
                    if r.read().strip() == b"Ok":
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the Firestore emulator did not answer within {timeout}s")

    def reset(self, project: str) -> None:
        req = urllib.request.Request(
            f"http://{self.host}/emulator/v1/projects/{project}/databases/(default)/documents",
            method="DELETE",
        )
        with urllib.request.urlopen(req, timeout=30):
            pass

    def pause(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


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
    delay), ``reset()`` (close the connection without an answer), each ``times``
    times.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        import http.server

        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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

    def event_keys(self) -> list[str]:
        with self._lock:
            return [e["key"] for e in self.events]

    def _handle(self, request: Any) -> None:
        import gzip as _gzip
        import json as _json
        from urllib.parse import urlsplit

        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length)
        with self._lock:
            self.requests += 1
            action = self._script.pop(0) if self._script else None
        if action is not None:
            kind, arg = action
            if kind == "reset":
                _hard_close(request.connection)
                request.close_connection = True
                return
            if kind == "slow":
                time.sleep(arg)
            if kind == "status":
                status, retry_after = arg
                headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
                with self._lock:
                    self.refused.append(status)
                return self._answer(request, status, f"scripted {status}", headers)
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
            kind = request.headers.get("X-Outbox-Type", "")
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
                key = request.headers.get("X-Event-Key", "")
                self.events.append({"key": key, "data": body, "msg_id": msg_id, "type": kind})
        self._answer(request, 200, "ok")

    @staticmethod
    def _answer(
        request: Any, status: int, text: str, headers: dict[str, str] | None = None
    ) -> None:
        data = text.encode()
        request.send_response(status)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.send_header("Content-Type", "text/plain")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


#: Seed 000's three sample events, as the seed gives them (JSON text), by type
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

#: Seed 000's three sample configurations, as written (lower-case methods, sample
#: host), keyed by type as the seed's table shows them
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
