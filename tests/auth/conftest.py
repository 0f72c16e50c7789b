"""Sign-in tests run against the real Firebase Authentication emulator, with users reset
before each test, and a clock each test can move (ID tokens live an hour)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from replicator.auth import FirebaseAuth
from replicator.testing import FaultProxy


class Clock:
    """Wall-clock time plus an offset the test moves: the session believes that much
    time has passed (its tokens expire) while the emulator's clock runs as usual."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.offset += seconds


@pytest.fixture
def emulator(auth_emulator: Any) -> Any:
    auth_emulator.reset()
    return auth_emulator


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_auth(emulator: Any, tmp_path: Path, clock: Clock) -> Iterator[Callable[..., FirebaseAuth]]:
    """``make_auth(name)``: a FirebaseAuth on the emulator (or on ``host=``, a proxy in
    front of it) keeping its session in ``tmp_path/<name>.session.json``: one per device."""
    made: list[FirebaseAuth] = []

    def make(name: str = "device", *, host: str | None = None, **kw: Any) -> FirebaseAuth:
        kw.setdefault("clock", clock)
        kw.setdefault("store", tmp_path / f"{name}.session.json")
        auth = FirebaseAuth(emulator_host=host or emulator.host, **kw)
        made.append(auth)
        return auth

    yield make
    for auth in made:
        auth.close()


@pytest.fixture
def proxy(emulator: Any) -> Iterator[FaultProxy]:
    """A TCP proxy in front of the emulator, to take the network away."""
    proxy = FaultProxy(emulator.port).start()
    yield proxy
    proxy.stop()
