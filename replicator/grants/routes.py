"""``POST /storage/sign``: the storage-grant route, for the ingest service's app or one
of its own (:func:`grants_app`).

Every request is authenticated by the caller's Firebase ID token (``Authorization:
Bearer <token>``, checked by an ``IdTokenVerifier``); the body is
``{"ops": [...]}`` (``replicator.stores.grant_ops``). Answers:

* 200: ``{"expires_in": s, "requests": [...]}``, one signed request per op;
* 400: the body is not such a request, an op is malformed or a key breaks the rules
  (nothing is signed); 408: the body did not arrive within ``body_timeout`` seconds;
  413: a body over ``max_body`` bytes or more than ``MAX_OPS`` ops;
* 401: no token, or not a valid ID token of the project;
* 403: an op the user may not do (a write in a read-only shared folder, any op in a
  scope's folder the user is not a member of now);
* 503: the tokens or the requests cannot be checked or signed now (Google's
  certificates, the service's credentials or a scope's membership out of reach): ask
  again later;
* 500: the service is set up wrong (no S3 credentials), logged with its trace.

Each decision is one log line (logger ``replicator.grants``): the user, the client's
address and the ops granted, or why they were refused; never a signed URL. A refused
request's connection is closed, so nothing left of its body is read as another request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..bundles.auth import bearer
from ..errors import ConfigurationError, ReplicatorError
from ..stores.grant_ops import MAX_OPS, BadOp, Op
from .signer import Refused, Signer

log = logging.getLogger("replicator.grants")

#: most bytes of a request's body (1000 ops of a 900-byte key, and room to spare)
MAX_BODY = 2 << 20
#: ops named in a grant's log line before "(+N more)"
_LOGGED = 4


def storage_routes(
    signer: Signer,
    verifier: Callable[[str], str | None],
    *,
    max_body: int = MAX_BODY,
    body_timeout: float = 10.0,
) -> list[Any]:
    """The Starlette routes of the grant API (``POST /storage/sign``), for ``signer``,
    authenticating callers with ``verifier`` (an ``IdTokenVerifier``: token → uid)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def sign(request: Request) -> Any:
        client = request.client.host if request.client else "?"
        try:
            uid = await run_in_threadpool(verifier, bearer(request.headers))
        except ReplicatorError as exc:  # Google's certificates out of reach
            return _answer(JSONResponse, 503, f"cannot check ID tokens now: {exc.message}", client)
        if not uid:
            return _answer(JSONResponse, 401, "no valid ID token (Authorization: Bearer)", client)
        try:
            ops = await asyncio.wait_for(_read_ops(request, max_body), body_timeout)
        except asyncio.TimeoutError:
            ops = 408, f"the body took over {body_timeout:g} s"
        if isinstance(ops, tuple):
            return _answer(JSONResponse, *ops, client, uid)
        try:
            signed = await run_in_threadpool(signer.sign, uid, ops)
        except BadOp as exc:
            return _answer(JSONResponse, 400, str(exc), client, uid)
        except Refused as exc:
            return _answer(JSONResponse, 403, str(exc), client, uid)
        except ConfigurationError:
            log.exception("storage grant for %s from %s: the signer is set up wrong", uid, client)
            return JSONResponse({"error": "the service cannot sign; see its log"}, 500)
        except ReplicatorError as exc:
            return _answer(JSONResponse, 503, f"cannot sign now: {exc.message}", client, uid)
        log.info("granted %s from %s %s", uid, client, _summary(ops))
        body = {"expires_in": signer.expires, "requests": [s.to_json() for s in signed]}
        return JSONResponse(body)

    return [Route("/storage/sign", sign, methods=["POST"])]


def grants_app(signer: Signer, verifier: Callable[[str], str | None], **options: Any) -> Any:
    """A Starlette application serving only the grant API (run it with uvicorn);
    ``options`` as :func:`storage_routes`'."""
    from starlette.applications import Starlette

    return Starlette(routes=storage_routes(signer, verifier, **options))


async def _read_ops(request: Any, limit: int) -> list[Op] | tuple[int, str]:
    """The ops a request's body holds, or the status and error refusing it."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return 413, f"a grant request is at most {limit} bytes"
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return 413, f"a grant request is at most {limit} bytes"
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return 400, 'a grant request is JSON: {"ops": [...]}'
    raw = data.get("ops") if isinstance(data, dict) else None
    if not isinstance(raw, list) or not raw:
        return 400, 'a grant request is {"ops": [...]} with at least one op'
    if len(raw) > MAX_OPS:
        return 413, f"a grant request has at most {MAX_OPS} ops"
    ops = []
    for n, item in enumerate(raw):
        try:
            ops.append(Op.from_json(item))
        except BadOp as exc:
            return 400, f"ops[{n}]: {exc}"
    return ops


def _summary(ops: Sequence[Op]) -> str:
    """The ops of a grant in a few words: ``put snapshots/1.snap, head manifest.json``."""
    named = [f"{op.op} {_where(op)}{op.key!r}" for op in ops[:_LOGGED]]
    more = f" (+{len(ops) - _LOGGED} more)" if len(ops) > _LOGGED else ""
    return ", ".join(named) + more


def _where(op: Op) -> str:
    if op.scope is not None:
        return f"scope {op.scope}:"
    return f"{op.space}:" if op.space else ""


def _answer(respond: Any, status: int, error: str, client: str, uid: str | None = None) -> Any:
    """A refusal, logged with who asked."""
    log.info("refused a grant to %s from %s: HTTP %d: %s", uid or "?", client, status, error)
    headers = {"Connection": "close"}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return respond({"error": error}, status_code=status, headers=headers)
