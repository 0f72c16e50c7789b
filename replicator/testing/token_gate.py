"""TokenGate: the Firestore emulator behind the token checks production makes.

The Firestore emulator takes any ID token that parses and never checks its
expiry, and it takes ``Bearer owner`` (the admin token google-cloud-firestore
sends under ``FIRESTORE_EMULATOR_HOST``) as a licence to bypass every rule.
Production does neither: an expired or malformed ID token is refused with
``UNAUTHENTICATED`` before any rule runs, and a device never holds an admin
credential. :class:`TokenGate` is a gRPC server on 127.0.0.1 that forwards
every Firestore call to the emulator unchanged, byte for byte, after the
checks production makes:

* a call without ``authorization: Bearer <token>``, or with a token that is not
  a JWT, names no user, belongs to another project or has expired, is answered
  ``UNAUTHENTICATED``, as production answers it;
* a call carrying the emulator's admin token ``owner`` is answered
  ``PERMISSION_DENIED``: a test that claims to act as users and reaches
  Firestore as admin fails instead of passing silently;
* ``refuse_next(n)`` answers the next ``n`` calls ``UNAUTHENTICATED`` whatever
  they carry (a token the server stopped accepting); ``delay`` slows every call.

Point clients at it with ``FIRESTORE_EMULATOR_HOST = gate.host``. It counts
``calls``, ``forwarded`` and ``refused`` (reason → count), and keeps every
token it saw expire in ``expired_tokens``, so a test can prove a credential
refreshed in time.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from .tokens import token_claims

#: Firestore's streaming methods; every other method is unary
_SERVER_STREAMING = frozenset(
    {"BatchGetDocuments", "RunQuery", "RunAggregationQuery", "ExecutePipeline"}
)
_BIDI_STREAMING = frozenset({"Write", "Listen"})
#: headers gRPC sets itself: never forwarded as the caller's metadata
_OWN_HEADERS = ("user-agent", "grpc-", ":")


class TokenGate:
    """A gRPC front for the Firestore emulator at ``upstream`` (``host:port``) that
    verifies ID tokens as production does (see the module's docstring)."""

    def __init__(self, upstream: str, *, delay: float = 0.0) -> None:
        self.upstream = upstream
        self.delay = delay
        self.calls = 0
        self.forwarded = 0
        self.refused: collections.Counter[str] = collections.Counter()
        self.expired_tokens: list[str] = []
        #: user id (the token's ``sub``) -> calls forwarded as that user
        self.users: collections.Counter[str] = collections.Counter()
        self._refuse = 0
        self._lock = threading.Lock()
        # the emulator's refusal of a large batch names every rule it evaluated: its
        # trailers pass gRPC's default 8 KiB metadata limit
        big = [("grpc.max_metadata_size", 1 << 20), ("grpc.absolute_max_metadata_size", 1 << 20)]
        self._channel = grpc.insecure_channel(upstream, options=big)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=big)
        self._server.add_generic_rpc_handlers((_Handler(self),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.host = f"127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        return f"TokenGate({self.host} -> {self.upstream})"

    def start(self) -> TokenGate:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)
        self._channel.close()

    def refuse_next(self, n: int = 1) -> None:
        """Answer the next ``n`` calls ``UNAUTHENTICATED``, whatever token they carry."""
        with self._lock:
            self._refuse = n

    def admit(self, context: grpc.ServicerContext) -> list[tuple[str, str]]:
        """Check one call's token; abort the call as production would, else return the
        metadata to forward."""
        metadata = [
            (k, v) for k, v in context.invocation_metadata() if not k.startswith(_OWN_HEADERS)
        ]
        with self._lock:
            self.calls += 1
            forced = self._refuse > 0
            if forced:
                self._refuse -= 1
        reason, code = self._verdict(metadata, forced)
        if code != grpc.StatusCode.OK:
            with self._lock:
                self.refused[reason] += 1
            context.abort(code, f"TokenGate: {reason}")
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.forwarded += 1
            self.users[reason] += 1
        return metadata

    def _verdict(
        self, metadata: list[tuple[str, str]], forced: bool
    ) -> tuple[str, grpc.StatusCode]:
        """Why the call is refused and with which status, or (the user id, OK)."""
        unauthenticated = grpc.StatusCode.UNAUTHENTICATED
        if forced:
            return "the server stopped accepting this token", unauthenticated
        auth = [v for k, v in metadata if k.lower() == "authorization"]
        if len(auth) != 1 or not auth[0].startswith("Bearer "):
            return "no single 'authorization: Bearer <ID token>' header", unauthenticated
        token = auth[0][len("Bearer ") :]
        if token == "owner":
            return "the emulator's admin token ('Bearer owner')", grpc.StatusCode.PERMISSION_DENIED
        try:
            claims = token_claims(token)
        except ValueError as exc:
            return str(exc), unauthenticated
        if not claims.get("sub"):
            return "the token names no user", unauthenticated
        prefix = dict(metadata).get("google-cloud-resource-prefix", "")
        if prefix.startswith("projects/") and prefix.split("/")[1] != claims.get("aud"):
            return "the token belongs to another project", unauthenticated
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= time.time():
            with self._lock:
                self.expired_tokens.append(token)
            return "the ID token has expired", unauthenticated
        return str(claims["sub"]), grpc.StatusCode.OK

    # -- forwarding -----------------------------------------------------------------------

    def unary(self, method: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            metadata = self.admit(context)
            call = self._channel.unary_unary(method)
            try:
                response: bytes = call(request, metadata=metadata, timeout=_timeout(context))
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details() or "")
            return response

        return handle

    def streaming(
        self, method: str, bidi: bool
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[bytes]]:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[bytes]:
            metadata = self.admit(context)
            stub = (
                self._channel.stream_stream(method) if bidi else self._channel.unary_stream(method)
            )
            call = stub(request, metadata=metadata, timeout=_timeout(context))
            context.add_callback(call.cancel)
            try:
                yield from call
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    context.abort(exc.code(), exc.details() or "")

        return handle


def _timeout(context: grpc.ServicerContext) -> float | None:
    left = context.time_remaining()
    return None if left is None or left > 1e6 else max(0.0, left)


class _Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, gate: TokenGate) -> None:
        self.gate = gate

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = details.method
        name = method.rsplit("/", 1)[-1]
        if name in _SERVER_STREAMING:
            return grpc.unary_stream_rpc_method_handler(self.gate.streaming(method, bidi=False))
        if name in _BIDI_STREAMING:
            return grpc.stream_stream_rpc_method_handler(self.gate.streaming(method, bidi=True))
        return grpc.unary_unary_rpc_method_handler(self.gate.unary(method))
