"""FirestoreEmulator: the official Cloud Firestore emulator, for tests and benchmarks.

The emulator is the Debian package ``google-cloud-cli-firestore-emulator``, or
the jar named by ``REPLICATOR_FIRESTORE_EMULATOR_JAR`` (:func:`find_jar`; None
when there is none, so a test can skip). Invariants: it listens on 127.0.0.1
only, on a free port unless told one; ``start()`` returns only once it answers,
and stops it again if it does not; it runs in a process group of its own, so
``pause()`` (a network partition), ``resume()`` and ``stop()`` reach the Java
process and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

#: where Google Cloud SDK installs put the emulator's jar
KNOWN_JARS = [
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar",
    "/usr/share/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar",
]
#: the emulator's main class in the jar
MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"


def find_jar() -> str | None:
    """The emulator's jar: ``$REPLICATOR_FIRESTORE_EMULATOR_JAR``, else the Debian
    package's, else one of :data:`KNOWN_JARS`; None if there is none."""
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
    """A TCP port on 127.0.0.1 that was free a moment ago."""
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

    def load_rules(self, project: str, rules: str) -> None:
        """Make ``rules`` (the text of a ``firestore.rules`` file) the security rules of
        ``project`` (the emulator's REST endpoint for rules). Until a project is given
        rules, the emulator lets everyone do everything in it; a request acting as
        admin (``Bearer owner``) bypasses rules whatever they are."""
        body = json.dumps({"rules": {"files": [{"content": rules}]}}).encode()
        req = urllib.request.Request(
            f"http://{self.host}/emulator/v1/projects/{project}:securityRules",
            data=body,
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                answer = json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:  # rules that do not compile
            raise ValueError(
                f"the emulator refused the rules: {exc.read().decode()[:2000]}"
            ) from exc
        errors = [i for i in answer.get("issues", []) if i.get("severity") == "ERROR"]
        if errors:
            raise ValueError(f"the emulator refused the rules: {errors}")

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
