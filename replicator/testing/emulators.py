"""The emulators tests and benchmarks run against: Firestore's and Firebase Authentication's.

:class:`FirestoreEmulator` is the official Cloud Firestore emulator.

The emulator is the Debian package ``google-cloud-cli-firestore-emulator``, or
the jar named by ``REPLICATOR_FIRESTORE_EMULATOR_JAR`` (:func:`find_jar`; None
when there is none, so a test can skip). Invariants: it listens on 127.0.0.1
only, on a free port unless told one; ``start()`` returns only once it answers,
and stops it again if it does not; it runs in a process group of its own, so
``pause()`` (a network partition), ``resume()`` and ``stop()`` reach the Java
process and nothing else.

:class:`AuthEmulator` is the Firebase Authentication emulator from the npm package
``firebase-tools`` (:func:`find_firebase_cli`), with the same invariants.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

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


class ProcessGroup:
    """An emulator running in a process group of its own: paused, resumed and stopped
    whole (a launcher's children included)."""

    proc: subprocess.Popen[bytes] | None = None

    def pause(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def _launch(self, command: list[str], folder: Path, log: str, what: str, timeout: float,
                ready: Any) -> None:  # fmt: skip
        """Start ``command`` in ``folder`` in a process group of its own, its output in
        ``folder/log``, and return once ``ready()`` is true; if it exits first or is not
        ready within ``timeout`` s, stop it and raise RuntimeError naming ``what`` (with
        the end of its log). ``ready`` may raise OSError or ValueError: not yet."""
        with open(folder / log, "wb") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (folder / log).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{what} exited with {self.proc.returncode}:\n{tail}")
            try:
                if ready():
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{what} did not answer within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class FirestoreEmulator(ProcessGroup):
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


#: where ``.ci/run`` installs the Firebase CLI (npm package ``firebase-tools``),
#: relative to the repository root
CI_FIREBASE_CLI = Path(".ci") / "node" / "node_modules" / ".bin" / "firebase"
#: the project id the Auth emulator runs as: a ``demo-`` project needs no login
AUTH_PROJECT = "demo-replicator"


def find_firebase_cli() -> str | None:
    """The Firebase CLI: ``$REPLICATOR_FIREBASE_CLI``, else the one ``.ci/run``
    installed (in the current folder or the source checkout), else ``firebase`` on
    PATH; None if there is none (or no ``node`` to run it)."""
    if shutil.which("node") is None:
        return None
    env = os.environ.get("REPLICATOR_FIREBASE_CLI")
    if env and Path(env).is_file():
        return env
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / CI_FIREBASE_CLI).is_file():
            return str(root / CI_FIREBASE_CLI)
    return shutil.which("firebase")


class AuthEmulator(ProcessGroup):
    """The Firebase Authentication emulator (``firebase emulators:start --only auth``)
    on free 127.0.0.1 ports, in a process group of its own, run from a scratch folder
    holding its ``firebase.json`` (and the CLI's debug log). It signs users up and in
    over the same REST API as production and issues unsigned ID tokens, which the
    Firestore emulator accepts for rules.

    Its admin calls (``reset``, ``disable_user``, ``delete_user``) take the place of
    the Firebase console in tests; :meth:`custom_token` mints the unsigned custom
    tokens the emulator accepts (a backend signs them in production).
    """

    def __init__(self, cli: str, port: int | None = None, project: str = AUTH_PROJECT) -> None:
        self.cli = cli
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.project = project
        self.proc: subprocess.Popen[bytes] | None = None
        self.folder: Path | None = None

    def start(self, timeout: float = 60.0) -> AuthEmulator:
        self.folder = Path(tempfile.mkdtemp(prefix="auth-emulator-"))
        config = {
            "emulators": {
                "auth": {"host": "127.0.0.1", "port": self.port},
                "hub": {"host": "127.0.0.1", "port": free_port()},
                "logging": {"host": "127.0.0.1", "port": free_port()},
                "ui": {"enabled": False},
            }
        }
        (self.folder / "firebase.json").write_text(json.dumps(config))
        command = [self.cli, "emulators:start", "--only", "auth", "--project", self.project]
        self._launch(command, self.folder, "emulator.log", "the Auth emulator", timeout,
                     self._ready)  # fmt: skip
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"http://{self.host}/", timeout=1) as r:
            return bool(json.loads(r.read()).get("authEmulator", {}).get("ready"))

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(
            f"http://{self.host}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": "Bearer owner", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"{}")

    def reset(self) -> None:
        """Delete every user."""
        self._call("DELETE", f"/emulator/v1/projects/{self.project}/accounts")

    def disable_user(self, uid: str, disabled: bool = True) -> None:
        """Disable (or enable again) a user, as an administrator would in the console."""
        path = f"/identitytoolkit.googleapis.com/v1/projects/{self.project}/accounts:update"
        self._call("POST", path, {"localId": uid, "disableUser": disabled})

    def revoke_sessions(self, uid: str, at: float | None = None) -> None:
        """Revoke the user's sessions as of ``at`` (now), as the Admin SDK's
        ``revoke_refresh_tokens`` does: ID tokens issued earlier are refused by a service
        that checks accounts (``AccountStatus``)."""
        path = f"/identitytoolkit.googleapis.com/v1/projects/{self.project}/accounts:update"
        since = int(time.time() if at is None else at)
        self._call("POST", path, {"localId": uid, "validSince": str(since)})

    def delete_user(self, uid: str) -> None:
        """Delete a user: their refresh tokens stop working (a revoked session)."""
        path = f"/identitytoolkit.googleapis.com/v1/projects/{self.project}/accounts:delete"
        self._call("POST", path, {"localId": uid})

    @staticmethod
    def custom_token(uid: str, claims: dict[str, Any] | None = None) -> str:
        """An unsigned custom token for ``uid``: the emulator accepts it where production
        wants one signed by the project's service account (Admin SDK)."""

        def part(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        now = int(time.time())
        payload: dict[str, Any] = {
            "uid": uid,
            "iat": now,
            "exp": now + 3600,
            "aud": "https://identitytoolkit.googleapis.com/"
            "google.identity.identitytoolkit.v1.IdentityToolkit",
            "iss": "firebase-adminsdk@emulator",
            "sub": "firebase-adminsdk@emulator",
        }
        if claims:
            payload["claims"] = claims
        return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."

    def stop(self) -> None:
        super().stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
