"""The ``replicator`` command group, and what its command modules share.

Every command registers on the one group :data:`main`: the command modules
import it from here and decorate, and the package imports them so that they do.
This module imports none of them, so the group has no cycle.

Invariants: no command ends in a traceback. Errors of the library and of the
files and stores a command was pointed at become one line on stderr that says
what happened and what to do, and exit status 1 (:class:`_Guarded` for errors a
command lets through, :func:`guard` for a library call whose error a command
wants to report the same way before it goes on). Progress goes to stderr, so
stdout holds only a command's result.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import __version__

T = TypeVar("T")


class _Guarded(click.Group):
    """A command group whose commands never end in a traceback.

    Errors of the library and of the files and stores it was pointed at become
    one line on stderr that says what happened and what to do, and exit 1.
    Set ``REPLICATOR_DEBUG=1`` to see the traceback of an unexpected error.
    """

    def invoke(self, ctx: click.Context) -> Any:
        import peewee

        from ..errors import ReplicatorError
        from ..sql import local_error

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except click.ClickException as exc:
            _json_error(ctx, getattr(exc, "cause", exc))
            raise
        except ReplicatorError as exc:
            _json_error(ctx, exc)
            raise click.ClickException(one_line(exc)) from None
        except (sqlite3.DatabaseError, peewee.DatabaseError) as exc:
            # a command that opened a file itself: the package's one rule for SQLite
            raise click.ClickException(
                one_line(local_error("SQLite refused the database", exc))
            ) from None
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None
        except ImportError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            if os.environ.get("REPLICATOR_DEBUG"):
                raise
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {exc} (set REPLICATOR_DEBUG=1 for the"
                " traceback and report it)"
            ) from None


def _json_error(ctx: click.Context, exc: BaseException) -> None:
    """A command asked for ``--json`` failed: its error as JSON on stdout too."""
    from .shapes import JSON, emit, error_shape

    if ctx.meta.get(JSON) and not isinstance(exc, click.UsageError):
        emit(error_shape(exc))


#: ``ctx.meta`` key: ``-q`` was given
QUIET = "replicator.quiet"
#: the handler ``-v`` put on the ``replicator`` logger and the level it found there (one,
#: however often ``main`` runs in a process)
_verbose_handler: list[tuple[Any, int]] = []


@click.group(cls=_Guarded)
@click.version_option(__version__, prog_name="replicator")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no notes: results and errors.")
@click.option(
    "-v", "--verbose", count=True, help="Log what the library does on stderr (-vv: debug)."
)
@click.pass_context
def main(ctx: click.Context, quiet: bool, verbose: int) -> None:
    """Offline-first replication of peewee/SQLite databases."""
    import logging

    ctx.meta[QUIET] = quiet
    logger = logging.getLogger("replicator")
    for handler, level in _verbose_handler:
        logger.removeHandler(handler)
        logger.setLevel(level)
    _verbose_handler.clear()
    if verbose and not quiet:
        handler = logging.StreamHandler()  # stderr, as it is now
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _verbose_handler.append((handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


def quiet() -> bool:
    """Whether ``-q`` was given to the running command."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(QUIET))


def guard(fn: Callable[[], T]) -> T:
    """``fn()``, with a library error turned into the command's one-line error."""
    from ..errors import ReplicatorError

    try:
        return fn()
    except ReplicatorError as exc:
        failure = click.ClickException(one_line(exc))
        failure.cause = exc  # type: ignore[attr-defined]  # for --json's error document
        raise failure from None


def one_line(exc: BaseException) -> str:
    """An error as the one line a command prints: its kind, then its message and hint
    with any line breaks (a driver's multi-line message) folded into spaces."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


#: the ``--config`` option of the commands that open a device from its config file
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default="replicator.toml",
    show_default=True,
    help="The device's config file: database, models module, remote, blob store, key.",
)


class ProgressLine:
    """Follows a sync's Progress on stderr, with a percentage when the total is known.

    On a terminal each step (a phase, and the collection it works on) is a bar of
    click's (``click.progressbar``: bar, ETA, done/total), redrawn at most ten times
    a second and always when it ends; a finished step keeps its line. Anywhere else
    (a log, a pipe) a redrawn line would be a heap of ``\\r`` frames, so each step
    gets plain lines instead: its last state when it ends (or the next step starts),
    and one every :attr:`LOG_EVERY` seconds while a long step runs. ``silent``
    (``-q``) shows nothing.
    """

    #: seconds between two lines of one running step, when stderr is not a terminal
    LOG_EVERY = 5.0

    def __init__(self, terminal: bool | None = None, *, silent: bool = False) -> None:
        self.silent = silent or quiet()
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.last = 0.0
        self.step: tuple[str, str | None] | None = None
        self.unsaid: str | None = None  # the running step's last state, not written yet
        self.bar: Any = None  # the running step's click progress bar, on a terminal

    def __call__(self, progress: Any) -> None:
        import time

        if self.silent:
            return
        now = time.monotonic()
        done = progress.total is not None and progress.done >= progress.total
        step = (progress.phase, progress.collection)
        if step != self.step:
            self._flush()
            self.step, self.last = step, now
            if self.terminal:
                self.bar = _bar(step)
        if self.terminal:
            if now - self.last >= 0.1 or done or self.bar.pos == 0:
                self.last = now
                self.bar.length = progress.total
                self.bar.show_percent = progress.total is not None
                self.bar.update(progress.done - self.bar.pos, _amount(progress))
            return
        self.unsaid = _progress_text(progress)
        if done or now - self.last >= self.LOG_EVERY:
            self.last = now
            self._flush()

    def _flush(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None
        if self.unsaid is not None:
            click.echo(self.unsaid, err=True)
            self.unsaid = None

    def end(self) -> None:
        self._flush()


def _bar(step: tuple[str, str | None]) -> Any:
    """A click progress bar on stderr for one step, of a length told as it goes."""
    label = f"{step[0]} {step[1] or ''}".strip()
    bar = click.progressbar(
        iter(()),  # no length yet: the step tells it
        label=f"{label:<20}",
        file=sys.stderr,
        show_percent=True,
        item_show_func=lambda amount: amount,
    )
    bar.entered = True
    return bar


def _amount(progress: Any) -> str:
    """done/total, in KiB for a restore's bytes."""
    if progress.phase == "restore" and progress.total:
        return f"{progress.done / 1024:,.0f} of {progress.total / 1024:,.0f} KiB"
    return f"{progress.done}/{progress.total}" if progress.total else f"{progress.done}"


def _progress_text(progress: Any) -> str:
    what = f"{progress.phase} {progress.collection or ''}".strip()
    if progress.phase == "restore" and progress.total:  # bytes of the snapshot
        pct = min(100, progress.done * 100 // progress.total)
        return f"{what}: {progress.done / 1024:,.0f} of {progress.total / 1024:,.0f} KiB ({pct}%)"
    if progress.total:
        pct = min(100, progress.done * 100 // progress.total)
        return f"{what}: {progress.done}/{progress.total} ({pct}%)"
    return f"{what}: {progress.done}"


def synced_tables(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
    """(table, rows, dirty rows) for every table that carries replicator's sync columns."""
    from ..snapshots.restore import synced_tables as names

    out = []
    for name in names(conn):
        (rows,) = conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()
        (dirty,) = conn.execute(f'SELECT COUNT(*) FROM "{name}" WHERE "isDirty" = 1').fetchone()
        out.append((name, rows, dirty))
    return out
