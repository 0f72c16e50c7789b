"""One sync at a time per device, and no sync from inside its own.

A device's syncs, restores and logins take turns: a call from another thread
waits until the running one ends. The app's code that runs *inside* a sync
(the change listeners, ``on_conflict``, ``on_progress``, the conflict
strategy) would wait for ever if it started another: the sync it waits for
is the one calling it. Such a call is refused with ``ConfigurationError``
instead. Listeners keep running during the sync, under the lock, because
that is what they are for: a progress bar moves while the sync works, and a
change is told once its step is committed, while the next step waits.

Re-entry is recognised on the thread holding the turn, and on any thread
while it runs one of the device's callbacks (a blob store may report
progress from its own transfer threads).

An asyncio app's calls (``sync_async``) take turns on the event loop first,
so one waiting for another holds no thread; the turn is held until the
worker thread ends, even when the awaiting task is cancelled (a thread
cannot be interrupted: the sync goes on to its end).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from ..errors import ConfigurationError

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_HINT = (
    "a listener, on_progress, on_conflict or a conflict strategy runs inside the sync,"
    " which holds the device until it ends: note that another is wanted (e.g. set a"
    " flag) and call it once this sync has returned; a call from another thread waits"
    " its turn"
)


class Turns:
    """The device's lock: :meth:`hold` for a sync (or restore), :meth:`guard` for the
    app's callbacks it runs, :meth:`in_worker` for an asyncio app's calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: int | None = None  # the thread holding the turn
        self._inside = threading.local()  # per thread: how deep in the device's callbacks
        #: one lock per event loop (an asyncio.Lock belongs to the loop it first waits on)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @contextlib.contextmanager
    def hold(self, what: str) -> Iterator[None]:
        """Wait for the device's turn and hold it for ``what`` (e.g. ``"sync()"``).

        Raises ``ConfigurationError`` at once when called from inside the
        device's own sync, which would otherwise wait for itself for ever.
        """
        self.refuse_inside(what)
        with self._lock:
            self._holder = threading.get_ident()
            try:
                yield
            finally:
                self._holder = None

    def refuse_inside(self, what: str) -> None:
        """Raise ``ConfigurationError`` if this thread is inside the device's sync.

        Only the holder writes its own id into ``_holder``, so a thread reads
        its own id there exactly when it holds the turn.
        """
        depth: int = getattr(self._inside, "depth", 0)
        if self._holder == threading.get_ident() or depth:
            # said here too: a change listener's error is logged by its kind only
            log.warning("%s refused: called from inside this device's own sync", what)
            raise ConfigurationError(
                f"{what} was called from inside this device's own sync, which it would"
                " wait for for ever",
                hint=_HINT,
            )

    def guard(self, callback: Callable[P, R]) -> Callable[P, R]:
        """``callback``, marking whichever thread runs it as inside the device's sync."""

        @functools.wraps(callback)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            inside = self._inside
            inside.depth = getattr(inside, "depth", 0) + 1
            try:
                return callback(*args, **kwargs)
            finally:
                inside.depth -= 1

        return guarded

    async def in_worker(self, call: Callable[[], R]) -> R:
        """Run ``call`` in a worker thread once this event loop's turn comes, holding the
        turn until the thread ends, even when the awaiting task is cancelled."""
        loop = asyncio.get_running_loop()
        turn = self._loops.get(loop)
        if turn is None:
            turn = self._loops[loop] = asyncio.Lock()
        await turn.acquire()
        try:
            work = asyncio.ensure_future(asyncio.to_thread(call))
        except BaseException:
            turn.release()
            raise

        def end_turn(done: asyncio.Future[R]) -> None:
            turn.release()
            if not done.cancelled():
                done.exception()  # its awaiter has it, or no one wants it: not "unretrieved"

        work.add_done_callback(end_turn)
        return await asyncio.shield(work)
