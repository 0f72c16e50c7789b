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

from .errors import OfflineError
from .stores.base import RemoteStore


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
