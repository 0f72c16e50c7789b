"""``replicator ingest``: the campaign service's ingestor, run from a config file.

It needs no device database: only the config file's models, remote, and the
collections and bucket of ``[bundles]``; it takes bundles of those collections
only. Several ingestors may run on the same queue (each claims a bundle for
``--lease`` seconds). With ``--serve`` it serves the HTTP API under uvicorn
(``bundles/service.py``), and only to devices with a token: ``[service]
device_tokens`` must name the devices' tokens, or the command refuses to serve
rather than serve without them. Each decision is logged to stderr. SIGTERM stops
it gracefully (requests in flight are answered, the poll in hand is finished);
Ctrl-C stops it at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .app import config_option, main


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--serve``'s HOST:PORT as ``(host, port)``, checked before anything is opened: a
    malformed address or a port out of range is a usage error, even with ``--once``."""
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(
            f"{value!r}: give HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:8765",
            ctx,
            param,
        )
    return host, int(port)


@main.command()
@config_option
@click.option(
    "--serve",
    "address",
    metavar="HOST:PORT",
    callback=_address,
    help="Also take ingest requests over HTTP here (for devices using ingest_url).",
)
@click.option("--once", is_flag=True, help="Ingest what the queue holds now, then stop.")
@click.option(
    "--poll",
    type=click.FloatRange(min=0.01),
    default=2.0,
    show_default=True,
    help="Seconds between looks at the queue.",
)
@click.option("--name", help="This ingestor's name (default: host name and a random suffix).")
@click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds a claim holds before another ingestor may take a bundle over.",
)
def ingest(
    config_path: Path,
    address: tuple[str, int] | None,
    once: bool,
    poll: float,
    name: str | None,
    lease: float,
) -> None:
    """Run the campaign service's ingestor: verify bundles devices uploaded and apply
    their rows to the remote store, from the store's queue (and over HTTP with
    --serve, to devices holding a token of [service] device_tokens). Several may run
    at once on the same queue. Stop with SIGTERM or Ctrl-C."""
    if once and address:
        raise click.UsageError(
            "--once and --serve cannot go together: --once ingests what the queue holds"
            " and stops, --serve keeps taking requests over HTTP"
        )
    from ..bundles.ingest import Ingestor
    from .config import DeviceConfig

    config = DeviceConfig.load(config_path, service=True)
    collections = config.ingest_collections(config.load_models())
    auth = config.device_tokens() if address else None
    if address and auth is None:
        from ..errors import ConfigurationError

        raise ConfigurationError(
            f"{config_path}: --serve needs the devices' tokens, and the config names none",
            hint='add [service] device_tokens = "FILE", a file of'
            ' "<installation id>" = "<token>" lines',
        )
    ingestor = Ingestor(
        config.bundle_blobs(), config.open_remote(), collections, name=name, lease=lease
    )
    with _decisions_logged():
        if once:
            results = ingestor.poll(limit=1_000_000)
            for r in results:
                click.echo(f"{r.bundle}  {r.state}  {r.accepted} rows  {r.reason}".rstrip())
            click.echo(f"{len(results)} bundle(s) decided")
            return
        _serve_and_poll(ingestor, address, auth, poll)


class _Stderr(logging.Handler):
    """Log lines on the standard error of the moment (the command's)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # a closed stream must not stop the service
            self.handleError(record)


@contextlib.contextmanager
def _decisions_logged() -> Iterator[None]:
    """While the command runs, each decision of the service on stderr, one line each
    (unless the program configured logging itself)."""
    logger = logging.getLogger("replicator")
    configured = [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]
    if configured or logging.getLogger().handlers:
        yield
        return
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _serve_and_poll(ingestor: Any, address: tuple[str, int] | None, auth: Any, poll: float) -> None:
    """Poll the queue, and serve HTTP on ``address``, until SIGTERM (graceful: the
    requests in flight are answered) or Ctrl-C."""
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = ingestor.serve(*address, auth=auth) if address else None
    if server is not None:
        click.echo(f"taking ingest requests at {server.url}")
    click.echo(f"ingestor {ingestor.name} polling the queue every {poll:g} s")
    try:
        ingestor.run(poll_every=poll, stop=stop)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.close()
