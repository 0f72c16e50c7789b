"""The FaultProxy itself: once stopped, nothing reaches the server through it."""

from __future__ import annotations

import socket

from replicator.testing import FaultProxy


def test_a_stopped_proxy_refuses_every_connection() -> None:
    """A thread blocked in accept() kept the closed listener listening, so a
    connection made after stop() was still taken and forwarded ("a closed port"
    tests then reached the server)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        reached = 0
        for _ in range(20):
            proxy = FaultProxy(server.getsockname()[1]).start()
            proxy.stop()
            try:
                socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
                reached += 1
            except OSError:
                pass
        assert reached == 0
