"""``replicator ingest``: the campaign service's ingestor, run from a config file.

It needs no device database: only the config file's models, remote, and the
collections and bucket of ``[bundles]``; it takes bundles of those collections
only. Several ingestors may run on the same queue (each claims a bundle for
``--lease`` seconds). With ``--serve`` it serves the HTTP API under uvicorn
(``bundles/service.py``), and only to callers it can identify: signed-in devices
(``--firebase-project``: each request's Firebase ID token is verified, and the
user's rows go to the user's root, ``users/<uid>``) and/or the operators' programs
(``--device-tokens FILE`` or ``[service] device_tokens``: a bearer token each);
with neither it refuses to serve. Each decision is logged to stderr. SIGTERM stops
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
@click.option(
    "--firebase-project",
    metavar="ID",
    help="With --serve: take signed-in devices of this Firebase project (their ID tokens"
    " are verified on every request; each user's rows go to users/<uid>).",
)
@click.option(
    "--account-check/--no-account-check",
    default=True,
    show_default=True,
    help="With --firebase-project: refuse users disabled, deleted or revoked (asks"
    " Firebase Authentication about each user once a minute).",
)
@click.option(
    "--grant-storage",
    is_flag=True,
    help="With --firebase-project: also sign each signed-in user's S3 requests under"
    " users/<uid>/ of the bundles' bucket (POST /storage/sign), so devices hold no"
    " bucket keys (GrantedBlobStore).",
)
@click.option(
    "--device-tokens",
    "tokens_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --serve: the operators' tokens, a TOML file of"
    ' "<installation id>" = "<token>" lines (default: [service] device_tokens).',
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
    firebase_project: str | None,
    account_check: bool,
    grant_storage: bool,
    tokens_file: Path | None,
    once: bool,
    poll: float,
    name: str | None,
    lease: float,
) -> None:
    """Run the campaign service's ingestor: verify bundles devices uploaded and apply
    their rows to the remote store, from the store's queue (and over HTTP with
    --serve, to signed-in devices of --firebase-project and to holders of the
    operators' tokens). Several may run at once on the same queue. Stop with SIGTERM
    or Ctrl-C."""
    if once and address:
        raise click.UsageError(
            "--once and --serve cannot go together: --once ingests what the queue holds"
            " and stops, --serve keeps taking requests over HTTP"
        )
    if (firebase_project or tokens_file) and not address:
        raise click.UsageError(
            "--firebase-project and --device-tokens say who may call over HTTP: add --serve"
        )
    if grant_storage and not firebase_project:
        raise click.UsageError(
            "--grant-storage signs requests for signed-in users: add --firebase-project ID"
        )
    from ..bundles.ingest import Ingestor
    from .config import DeviceConfig

    config = DeviceConfig.load(config_path, service=True)
    collections = config.ingest_collections(config.load_models())
    auth, verifier = (
        _callers(config, firebase_project, account_check, tokens_file) if address else (None, None)
    )
    blobs = config.bundle_blobs()
    routes = _grant_routes(config, blobs, verifier) if grant_storage else []
    ingestor = Ingestor(
        blobs,
        config.open_remote(),
        collections,
        name=name,
        lease=lease,
        users=config.user_remotes() if firebase_project else None,
    )
    with _decisions_logged():
        if once:
            results = ingestor.poll(limit=1_000_000)
            for r in results:
                click.echo(f"{r.bundle}  {r.state}  {r.accepted} rows  {r.reason}".rstrip())
            click.echo(f"{len(results)} bundle(s) decided")
            return
        _serve_and_poll(ingestor, address, auth, poll, routes)


def _callers(
    config: Any, project: str | None, account_check: bool, tokens_file: Path | None
) -> Any:
    """Who may call over HTTP (and the ID-token verifier, when devices sign in):
    signed-in devices of ``project``, the operators' tokens (``tokens_file``, else the
    config's), or both; neither is a ConfigurationError."""
    from ..bundles.auth import DeviceTokens, FirstOf, SignedInCallers
    from ..errors import ConfigurationError

    operators = DeviceTokens.from_file(tokens_file) if tokens_file else config.device_tokens()
    if project is None:
        if operators is None:
            raise ConfigurationError(
                f"{config.path}: --serve needs to know who may call, and nothing says",
                hint="give --firebase-project ID (signed-in devices), or the operators' tokens:"
                ' --device-tokens FILE or [service] device_tokens = "FILE", a file of'
                ' "<installation id>" = "<token>" lines',
            )
        return operators, None
    from ..auth.accounts import AccountStatus
    from ..auth.verify import IdTokenVerifier

    verifier = IdTokenVerifier(project, accounts=AccountStatus(project) if account_check else None)
    if verifier.emulator:
        click.echo(
            "FIREBASE_AUTH_EMULATOR_HOST is set: taking the emulator's unsigned ID tokens"
            " (never in production)",
            err=True,
        )
    users = SignedInCallers(verifier)
    return (users if operators is None else FirstOf(operators, users)), verifier


def _grant_routes(config: Any, blobs: Any, verifier: Any) -> list[Any]:
    """The storage-grant route for the bundles' S3 bucket: each signed-in user's
    requests signed under ``<prefix>/users/<uid>/``, where the ingestor reads them."""
    from ..errors import ConfigurationError
    from ..grants import Signer, storage_routes
    from ..stores.s3 import S3BlobStore

    if not isinstance(blobs, S3BlobStore):
        raise ConfigurationError(
            f"{config.path}: --grant-storage signs S3 requests, and the bundles' bucket is"
            " not on S3",
            hint='name it with s3 = "BUCKET[/PREFIX]" in [bundles] (or [blobs])',
        )
    import boto3
    from botocore.config import Config

    client = boto3.client(  # presigned requests need SigV4, whatever the endpoint
        "s3",
        endpoint_url=blobs.client.meta.endpoint_url,
        region_name=blobs.client.meta.region_name,
        config=Config(signature_version="s3v4"),
    )
    root = f"{blobs.prefix}/users" if blobs.prefix else "users"
    return storage_routes(Signer(client, blobs.bucket, root=root), verifier)


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


def _serve_and_poll(
    ingestor: Any, address: tuple[str, int] | None, auth: Any, poll: float, routes: list[Any]
) -> None:
    """Poll the queue, and serve HTTP on ``address``, until SIGTERM (graceful: the
    requests in flight are answered) or Ctrl-C."""
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = ingestor.serve(*address, auth=auth, routes=routes) if address else None
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
