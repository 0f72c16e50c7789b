"""``replicator ingest``: the campaign service's ingestor, run from a config file.

It needs no device database: only the config file's models, remote and the
bucket the devices upload bundles to. Several ingestors may run on the same
queue (each claims a bundle for ``--lease`` seconds). A bearer token named by
``--token-env`` must be set, or the command refuses to serve rather than serve
without one. SIGTERM stops it once the poll in hand is done; Ctrl-C stops it at
once.
"""

from __future__ import annotations

import os
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
@click.option(
    "--token-env",
    metavar="VAR",
    help="Require 'Authorization: Bearer $VAR' on HTTP requests.",
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
    token_env: str | None,
    once: bool,
    poll: float,
    name: str | None,
    lease: float,
) -> None:
    """Run the campaign service's ingestor: verify bundles devices uploaded and apply
    their rows to the remote store, from the store's queue (and over HTTP with
    --serve). Several may run at once on the same queue. Stop with Ctrl-C."""
    import signal
    import threading

    if once and address:
        raise click.UsageError(
            "--once and --serve cannot go together: --once ingests what the queue holds"
            " and stops, --serve keeps taking requests over HTTP"
        )
    from ..bundles.ingest import Ingestor
    from ..errors import ConfigurationError
    from .config import DeviceConfig

    config = DeviceConfig.load(config_path, service=True)
    ingestor = Ingestor(
        config.bundle_blobs(), config.open_remote(), config.load_models(), name=name, lease=lease
    )
    if once:
        results = ingestor.poll(limit=1_000_000)
        for r in results:
            click.echo(f"{r.bundle}  {r.state}  {r.accepted} rows  {r.reason}".rstrip())
        click.echo(f"{len(results)} bundle(s) decided")
        return
    server = None
    if address:
        token = os.environ.get(token_env) if token_env else None
        if token_env and not token:
            raise ConfigurationError(f"${token_env} is empty", hint="export the token first")
        server = ingestor.serve(*address, token=token)
        click.echo(f"taking ingest requests at {server.url}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(f"ingestor {ingestor.name} polling the queue every {poll:g} s")
    try:
        ingestor.run(poll_every=poll, stop=stop)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.close()
