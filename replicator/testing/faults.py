"""FaultyRemote: a real RemoteStore whose chosen calls fail the way networks fail.

Invariants: a scripted fault makes a call fail either before the store sees the
request (nothing changed; ``OfflineError`` unless another error is given) or
after the store committed it (a lost acknowledgement: the change is there, the
caller is told it failed). Each method's faults fire once each, in the order
scripted; every other call passes through to the real store unchanged. The
plumbing that is no call to the remote (sessions, closing, deadlines) is
neither counted in ``calls`` nor failed.
"""

from __future__ import annotations

from collections.abc import Callable
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
