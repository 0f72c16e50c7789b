"""The ingest service's HTTP API: an ASGI application (Starlette) served by uvicorn.

Routes:

* ``POST /ingest``: an :class:`IngestRequest` as JSON; the answer is the
  :class:`IngestResult` as JSON, 200 when decided, 202 while pending. Refusals of the
  request itself: 400 (not a well-formed request, however malformed or deeply
  nested), 401 (no valid credential: the answer's ``error`` says why), 403 (the
  request names another device than the caller's), 408 (the body did not arrive
  within ``body_timeout``), 413 (a body over ``max_body`` bytes); 503 when the store,
  the bucket or the identity check cannot be reached now (asking again later can
  succeed), 500 for a bug (logged with its trace). A refused request's connection
  is closed, so nothing left of its body is ever read as another request;
* ``GET /health``: 200 ``{"status": "ok", "ingestor": <name>}`` while it serves.

Every decision is logged (``logging``, logger ``replicator.bundles``): each bundle
accepted or rejected with the reason by the ingestor, each request refused here with
the reason and the client's address.

Connections cost no thread: uvicorn serves them on one event loop, and a request's
ingest runs on a bounded pool of worker threads. A connection that has not sent a
whole request head within ``header_timeout`` seconds of opening (or of its previous
answer) is closed, so half-sent requests do not pile up; an idle kept-alive one is
closed after ``keep_alive`` seconds. :meth:`IngestServer.close` shuts down
gracefully: it stops accepting, lets requests in flight finish (at most
``shutdown_timeout`` seconds), then stops.

starlette and uvicorn are the ``service`` extra (``pip install 'replicator[service]'``),
imported only when a server or an application is made.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import ConfigurationError, ReplicatorError
from ..stores.ingest import IngestRequest, IngestResult
from .auth import Authenticator, Caller, Refused

log = logging.getLogger(__name__)

#: most bytes of a request's body (a request is a few hundred bytes of JSON)
MAX_BODY = 64 << 10


class Submits(Protocol):
    """What the API serves: an ``Ingestor``."""

    name: str

    def submit(self, request: IngestRequest, caller: Caller | None = None) -> IngestResult: ...


class _TooLarge(Exception):
    pass


def ingest_app(
    ingestor: Submits,
    auth: Authenticator | None = None,
    *,
    max_body: int = MAX_BODY,
    body_timeout: float = 10.0,
    routes: Sequence[Any] = (),
) -> Any:
    """The ASGI application serving ``ingestor`` (see the module's docstring); ``auth``
    None takes every request as coming from the device it names. ``routes`` are served
    beside (e.g. ``replicator.grants.storage_routes``: storage grants)."""
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise _missing_extra(exc) from exc

    async def ingest(request: Request) -> Any:
        client = request.client.host if request.client else "?"
        caller = await _caller(auth, request.headers) if auth is not None else None
        if isinstance(caller, tuple):
            return _refused(JSONResponse, *caller, client)
        try:
            body = await asyncio.wait_for(_body(request, max_body), body_timeout)
        except asyncio.TimeoutError:
            return _refused(JSONResponse, 408, f"the body took over {body_timeout:g} s", client)
        except _TooLarge:
            error = f"an ingest request is a JSON object of at most {max_body} bytes"
            return _refused(JSONResponse, 413, error, client)
        parsed = _parse(body, caller)
        if isinstance(parsed, tuple):
            return _refused(JSONResponse, *parsed, client)
        return await _submit(JSONResponse, ingestor, parsed, caller)

    async def health(request: Request) -> Any:
        return JSONResponse({"status": "ok", "ingestor": ingestor.name})

    return Starlette(
        routes=[
            Route("/ingest", ingest, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            *routes,
        ]
    )


async def _caller(auth: Authenticator, headers: Any) -> Caller | tuple[int, str]:
    """Who the headers say is calling (checked on a worker thread: verifying a token
    may fetch certificates or look the user up), or the status and error refusing it."""
    from starlette.concurrency import run_in_threadpool

    try:
        found = await run_in_threadpool(auth, headers)
    except ReplicatorError as exc:
        log.warning("could not check a caller's identity: %s", exc)
        return 503, f"the caller's identity cannot be checked now: {exc.message}"
    if isinstance(found, Caller):
        return found
    return 401, found.reason if isinstance(found, Refused) else "missing or wrong bearer token"


async def _body(request: Any, limit: int) -> bytes:
    """The request's body, refused (``_TooLarge``) as soon as it passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes, caller: Caller | None) -> IngestRequest | tuple[int, str]:
    """The request a body holds, or the status and error that refuse it."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return 400, "malformed ingest request: not JSON (or nested too deeply)"
    try:
        request = IngestRequest.from_json(data)
    except ValueError as exc:
        return 400, f"malformed ingest request: {exc}"
    if caller is not None and request.device != caller.device:
        return 403, (
            f"the caller is device {caller.device}; the request names"
            f" {request.device[:64]!r}: a device sends only its own bundles"
        )
    return request


async def _submit(
    respond: Any, ingestor: Submits, request: IngestRequest, caller: Caller | None
) -> Any:
    from starlette.concurrency import run_in_threadpool

    try:
        result = await run_in_threadpool(ingestor.submit, request, caller)
    except ReplicatorError as exc:  # the store or the bucket, for now: ask again later
        log.warning("bundle %s from %s: not decided: %s", request.bundle, request.device, exc)
        return respond({"error": f"{type(exc).__name__}: {exc.message}"}, status_code=503)
    except Exception:  # a bug: the device is told to try later, the log has the trace
        log.exception("bundle %s from %s: the service failed", request.bundle, request.device)
        return respond({"error": "the ingest service failed; try again later"}, status_code=500)
    return respond(result.to_json(), status_code=202 if result.state == "pending" else 200)


def _refused(respond: Any, status: int, error: str, client: str) -> Any:
    """A refusal of the request itself, logged; the connection is closed after it."""
    log.info("refused a request from %s: HTTP %d: %s", client, status, error)
    return respond({"error": error}, status_code=status, headers={"Connection": "close"})


def _missing_extra(exc: ImportError) -> ConfigurationError:
    return ConfigurationError(
        f"the ingest service's HTTP API needs starlette and uvicorn ({exc})",
        hint="pip install 'replicator[service]'",
        orig=exc,
    )


class IngestServer:
    """``ingestor``'s HTTP API on ``host:port`` (0: a free port), under uvicorn in a
    thread of this process; ``url`` is the ingest endpoint, ``port`` the port bound.
    Close it (or use it as a context manager) to shut it down gracefully.

    ``auth``: the authenticator (``DeviceTokens``); limits and timeouts as in the
    module's docstring. ``backlog`` is the listen queue (many devices connecting at
    once wait in it instead of being reset). ``routes`` are served beside the ingest API
    (``replicator.grants.storage_routes``); ``base_url`` is the server's root."""

    def __init__(
        self,
        ingestor: Submits,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        auth: Authenticator | None = None,
        max_body: int = MAX_BODY,
        body_timeout: float = 10.0,
        header_timeout: float = 10.0,
        keep_alive: int = 5,
        shutdown_timeout: float = 30.0,
        backlog: int = 2048,
        routes: Sequence[Any] = (),
    ) -> None:
        try:
            import uvicorn
        except ImportError as exc:  # pragma: no cover - the extra is missing
            raise _missing_extra(exc) from exc
        self.ingestor = ingestor
        self._shutdown_timeout = shutdown_timeout
        app = ingest_app(
            ingestor, auth, max_body=max_body, body_timeout=body_timeout, routes=routes
        )
        config = uvicorn.Config(
            app,
            http=timed_h11(header_timeout),
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_keep_alive=keep_alive,
            timeout_graceful_shutdown=int(shutdown_timeout),
            backlog=backlog,
        )
        self._socket = _bind(host, port)
        self.port: int = self._socket.getsockname()[1]
        self.base_url = f"http://{host}:{self.port}"
        self.url = f"{self.base_url}/ingest"
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="ingest-http",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:  # pragma: no cover - a machine far too slow
                break
            time.sleep(0.01)
        if not self._server.started:
            self.close()
            raise ConfigurationError(f"the ingest service could not start on {host}:{port}")
        log.info("ingest service %s taking requests at %s", ingestor.name, self.url)

    def __repr__(self) -> str:
        return f"IngestServer({self.url!r})"

    def close(self) -> None:
        """Stop accepting, let the requests in flight finish, stop."""
        self._server.should_exit = True
        self._thread.join(self._shutdown_timeout + 5)
        self._socket.close()

    def __enter__(self) -> IngestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``; an address that cannot be bound is a
    ConfigurationError saying what to change."""
    try:
        family, kind, proto, _, _ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # (the protocol named, as asyncio needs it to set TCP_NODELAY on each connection:
        # without it, every answer waits for the client's delayed ACK, 40 ms)
        sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    except (OSError, OverflowError) as exc:
        raise _unbindable(host, port, exc) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:  # in use, not this machine's, out of range
        sock.close()
        raise _unbindable(host, port, exc) from exc
    return sock


def _unbindable(host: str, port: int, exc: BaseException) -> ConfigurationError:
    busy = isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ConfigurationError(
        f"cannot serve on {host}:{port}: {reason}",
        hint="choose another port, or stop the program that holds it"
        if busy
        else "give an address of this machine (e.g. 127.0.0.1 or 0.0.0.0) and a"
        " port from 0 to 65535",
        orig=exc,
    )


def timed_h11(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's head: a connection
    that has not sent a whole request head ``header_timeout`` seconds after it opened,
    or after its previous answer, is closed (uvicorn itself waits for ever)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(header_timeout, self._expired)

        def _expired(self) -> None:
            self._deadline = None
            busy = self.cycle is not None and not self.cycle.response_complete
            if not busy and not self.transport.is_closing():
                client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
                log.info("closed a connection from %s: no whole request in time", client)
                self.transport.close()

    return TimedH11Protocol
