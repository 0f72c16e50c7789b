"""Fault injection for tests of code that syncs, yours and ours.

:class:`FaultyRemote` wraps any real :class:`~replicator.stores.base.RemoteStore`
and makes chosen calls fail the way networks fail: before the store sees the
request (``OfflineError``), or after the store committed it (a lost
acknowledgement). Everything else passes through to the real store.

:class:`FirestoreEmulator` starts the official Cloud Firestore emulator (Debian
package ``google-cloud-cli-firestore-emulator``, or the jar named by
``REPLICATOR_FIRESTORE_EMULATOR_JAR``) on a free port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
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

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_"):
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
