"""FaultProxy: a TCP proxy on 127.0.0.1 that breaks connections as real networks do.

Invariants: in mode ``pass`` with no latency and no reset scheduled, bytes go
through unchanged in both directions. A fault never closes a connection
politely: a reset, a refused connection or a dropped one is closed with RST
(:func:`hard_close`), as a peer sees a network failure, never a clean end of
stream. A scheduled reset fires once, on every connection open at that moment;
later connections pass.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class FaultProxy:
    """A TCP proxy on 127.0.0.1 with injectable faults, for tests of real clients.

    ``FaultProxy(upstream_port).start()`` listens on ``.port`` and forwards each
    connection to the upstream port. Faults, changeable at any time:

    * ``reset_after(n)``: once ``n`` more bytes have gone from the server to the
      client, every open connection is reset (RST); later connections pass.
    * ``mode = "refuse"``: new connections are reset as soon as they arrive.
    * ``mode = "blackhole"``: connections are accepted, nothing is forwarded
      either way (a half-open network).
    * ``latency = seconds``: each forwarded chunk waits that long.
    """

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.mode = "pass"
        self.latency = 0.0
        self.resets = 0
        self._budget: int | None = None
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self.port = self._listener.getsockname()[1]
        self.host = f"{host}:{self.port}"
        self._closed = False

    def start(self) -> FaultProxy:
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def reset_after(self, n: int) -> None:
        with self._lock:
            self._budget = n

    def stop(self) -> None:
        self._closed = True
        # a thread blocked in accept() keeps a closed listener listening (Linux frees
        # it only once no call uses it): shut it down first, which wakes that thread
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.reset_all(count=False)

    def reset_all(self, count: bool = True) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            hard_close(conn)
        if count and conns:
            self.resets += 1

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse" or self._closed:
                hard_close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                hard_close(client)
                continue
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.mode == "blackhole" and not self._closed:
                    time.sleep(0.05)
                if self.latency:
                    time.sleep(self.latency)
                if downstream:
                    with self._lock:
                        if self._budget is not None:
                            self._budget -= len(data)
                            fire = self._budget <= 0
                            if fire:
                                self._budget = None
                        else:
                            fire = False
                    if fire:
                        self.reset_all()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def hard_close(conn: socket.socket) -> None:
    """Close with RST (linger 0), as a dropped connection looks to the peer.

    A pump thread may be blocked reading this socket, and Linux tears a connection
    down only once no call uses it: shutting the reading side first wakes that
    reader (nothing is sent to the peer), so the close sends its RST at once rather
    than when the peer gives up."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        conn.close()
